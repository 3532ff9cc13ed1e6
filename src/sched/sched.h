/* sched.h — the diffusers noise schedulers used by Stable Diffusion 1.x/2.x
 * (PNDMScheduler, DDIMScheduler, EulerDiscreteScheduler,
 * EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler) and FLUX.1
 * (FlowMatchEulerDiscreteScheduler), selected by class name and configured
 * from a diffusers scheduler_config.json.
 *
 * Each scheduler reproduces diffusers 0.42's arithmetic: the training
 * tables (betas, alphas_cumprod, sigmas) and all per-step math in float32
 * in torch's operation order, the timestep/sigma schedules in float64 as
 * numpy computes them. The pipeline loop is
 *
 *     tdm_sched_set_timesteps(s, steps);
 *     latents *= tdm_sched_init_noise_sigma(s);
 *     for (i = 0; i < tdm_sched_len(s); i++) {
 *         x = copy of latents; tdm_sched_scale_model_input(s, x, n, i);
 *         eps = unet(x, tdm_sched_timestep(s, i));           (CFG-combined)
 *         tdm_sched_step(s, i, eps, latents, B, item, rngs);
 *     }
 *
 * A flow-matching scheduler is driven as FluxPipeline does it:
 *
 *     mu = tdm_sched_flux_mu(s, image_seq_len);        (packed tokens)
 *     tdm_sched_set_timesteps_flow(s, steps, NULL, mu);
 *     for (i = 0; i < tdm_sched_len(s); i++) {
 *         v = transformer(latents, tdm_sched_timestep(s, i) / 1000);
 *         tdm_sched_step(s, i, v, latents, B, item, NULL);
 *     }
 *
 * (init_noise_sigma is 1 and scale_model_input does nothing for it.)
 *
 * Not here: img2img strength/begin_index, custom timestep lists, add_noise /
 * scale_noise, stochastic flow sampling. A scheduler holds per-run state (PNDM
 * history, DPM-Solver model outputs); it is not safe to share one between
 * threads. */
#ifndef TDM_SCHED_H
#define TDM_SCHED_H

#include "core/core.h"
#include "core/rng.h"

typedef struct tdm_sched tdm_sched_t;

/* Creates a scheduler from `config_path` (scheduler_config.json). When
 * `class_name` is not NULL it replaces the file's "_class_name" while the
 * file's keys are kept (diffusers from_config); keys a class does not use
 * are ignored and missing keys take that class's defaults. Errors: the
 * file cannot be read or a key has the wrong type (naming file and key);
 * an unknown class (TDM_ERR_UNSUPPORTED naming it and listing the
 * supported ones); a config value the class cannot run (TDM_ERR_UNSUPPORTED
 * naming key and value). OUT: *out, freed with tdm_sched_free. */
tdm_status tdm_sched_create(tdm_sched_t **out, const char *config_path, const char *class_name);

/* The diffusers class name a user's scheduler name stands for: a class
 * name in any case ("eulerdiscretescheduler") or a short name — pndm, ddim,
 * euler, euler_a (EulerAncestralDiscreteScheduler), dpmpp_2m
 * (DPMSolverMultistepScheduler), flow_euler (FlowMatchEulerDiscreteScheduler).
 * Returns a static string, or NULL for an unknown name (or NULL). */
const char *tdm_sched_resolve(const char *name);

/* 1 if `class_name` (canonical) is the flow-matching scheduler FLUX uses. */
int tdm_sched_class_is_flow(const char *class_name);

/* Writes "Class (short), ..." for the flow-matching schedulers (flow != 0)
 * or the noise schedulers (flow == 0) into buf (cap bytes, NUL-terminated). */
void tdm_sched_list(int flow, char *buf, size_t cap);

/* Frees the scheduler and its state; NULL is a no-op. */
void tdm_sched_free(tdm_sched_t *s);

/* The diffusers class name the scheduler runs, e.g. "PNDMScheduler". */
const char *tdm_sched_class(const tdm_sched_t *s);

/* Builds the timestep (and sigma) schedule for `num_inference_steps`
 * (1 .. num_train_timesteps; 1 .. 100000 for flow schedulers) and resets
 * all per-run state. Must be called (or tdm_sched_set_timesteps_flow)
 * before the other per-run functions. For FlowMatchEulerDiscreteScheduler
 * this is diffusers' set_timesteps(n) without sigmas (float64 schedule
 * from the training sigma range); with use_dynamic_shifting it fails with
 * TDM_ERR_INVALID_ARG, as it needs mu: use tdm_sched_set_timesteps_flow. */
tdm_status tdm_sched_set_timesteps(tdm_sched_t *s, int num_inference_steps);

/* Flow-matching schedulers, as FluxPipeline calls retrieve_timesteps:
 * `sigmas` holds n values (NULL = FluxPipeline's
 * np.linspace(1, 1/n, n)), which diffusers turns into float32 before
 * shifting; mu is the resolution-dependent shift, used when the config has
 * use_dynamic_shifting (must not be NaN then) and ignored otherwise. When
 * the config has use_flow_sigmas = true, `sigmas` is ignored and the
 * float64 schedule of tdm_sched_set_timesteps is shifted by mu, as
 * FluxPipeline does. n in 1 .. 100000. Resets per-run state. For other
 * classes returns TDM_ERR_INVALID_ARG. The caller keeps `sigmas`. */
tdm_status tdm_sched_set_timesteps_flow(tdm_sched_t *s, int n, const float *sigmas, double mu);

/* mu for an image of image_seq_len packed tokens ((H // 16) * (W // 16) for
 * FLUX.1) from the scheduler config's base_image_seq_len,
 * max_image_seq_len, base_shift and max_shift (diffusers defaults 256,
 * 4096, 0.5, 1.15), in float64 exactly as FluxPipeline's calculate_shift.
 * NaN for non-flow schedulers and when max_image_seq_len equals
 * base_image_seq_len (diffusers divides by zero there). */
double tdm_sched_flux_mu(const tdm_sched_t *s, int64_t image_seq_len);

/* 1 for flow-matching schedulers (FlowMatchEulerDiscreteScheduler), else 0. */
int tdm_sched_is_flow(const tdm_sched_t *s);

/* len(scheduler.timesteps): how many times the pipeline calls the model
 * (PNDM with skip_prk_steps runs one more than the step count). 0 before
 * set_timesteps. */
int tdm_sched_len(const tdm_sched_t *s);

/* timesteps[i] as the UNet receives it (integers for PNDM, DDIM and
 * DPM-Solver, float32 for the Euler schedulers; for flow schedulers
 * float32 sigma * num_train_timesteps, which FluxPipeline divides by 1000
 * in float32, t / 1000.0f, before the transformer). i in [0, len); NaN
 * outside. */
float tdm_sched_timestep(const tdm_sched_t *s, int i);

/* The sigma of loop index i (Euler, Euler-ancestral, DPM-Solver and Flow;
 * their sigmas array has len + 1 entries, so i in [0, len]; the last is
 * the terminal sigma, 0, or 1 for flow with invert_sigmas); 0 for the others.
 * For tests and diagnostics. */
float tdm_sched_sigma(const tdm_sched_t *s, int i);

/* The factor the initial noise is multiplied by (1 for PNDM, DDIM,
 * DPM-Solver and Flow; the largest sigma, or sqrt(sigma_max^2 + 1) with
 * "leading" spacing, for the Euler schedulers). */
float tdm_sched_init_noise_sigma(const tdm_sched_t *s);

/* scale_model_input for loop index i: scales the n floats of x in place
 * (x / sqrt(sigma^2 + 1) for the Euler schedulers; nothing for others). */
void tdm_sched_scale_model_input(tdm_sched_t *s, float *x, int64_t n, int i);

/* One denoising step for loop index i. `sample` holds B items of `item`
 * floats each and is replaced by the previous (less noisy) sample;
 * `model_out` (the CFG-combined model output) has the same shape. rngs[b]
 * is the generator of batch item b: the ancestral noise of item b is
 * torch.randn(item) drawn from it, as diffusers' randn_tensor does with a
 * list of generators. rngs may be NULL for schedulers that draw no noise.
 * PNDM and DPM-Solver keep a history and must be stepped with i = 0, 1, 2,
 * ... in order after set_timesteps; B * item must stay the same during a
 * run. Flow: sample + (sigma[i+1] - sigma[i]) * model_out in float32
 * (model_out is the predicted velocity; rngs unused). Errors: out-of-order
 * or out-of-range i, size change, missing rngs, allocation failure. */
tdm_status tdm_sched_step(tdm_sched_t *s, int i, const float *model_out, float *sample,
                          int64_t B, int64_t item, tdm_rng_t *rngs);

#endif
