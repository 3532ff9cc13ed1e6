/* sched_impl.h — private to src/sched/: the scheduler struct, its parsed
 * config, and the numpy/torch arithmetic helpers the scheduler families
 * share. Not included outside src/sched/.
 *
 * Floating-point contraction is turned off for every file including this
 * header: torch and numpy round each multiply and add separately (where
 * torch fuses, the helpers call fmaf explicitly), and a compiler-fused
 * a*b+c would change the last bit. */
#ifndef TDM_SCHED_IMPL_H
#define TDM_SCHED_IMPL_H

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "sched/sched.h"

typedef enum {
    TDM_SCHED_PNDM = 0,
    TDM_SCHED_DDIM,
    TDM_SCHED_EULER,
    TDM_SCHED_EULER_A,
    TDM_SCHED_DPM,
    TDM_SCHED_FLOW,                 /* FlowMatchEulerDiscreteScheduler */
    TDM_SCHED_KIND_COUNT
} tdm_sched_kind;

typedef enum { TDM_SPACING_LINSPACE = 0, TDM_SPACING_LEADING, TDM_SPACING_TRAILING } tdm_spacing;
typedef enum { TDM_PRED_EPSILON = 0, TDM_PRED_V, TDM_PRED_SAMPLE } tdm_pred;
typedef enum { TDM_BETAS_LINEAR = 0, TDM_BETAS_SCALED_LINEAR, TDM_BETAS_SQUAREDCOS, TDM_BETAS_TRAINED } tdm_betas_kind;

struct tdm_sched {
    tdm_sched_kind kind;
    char     path[1024];            /* config file, for messages */

    /* ---- config (diffusers names) ---- */
    int64_t  num_train_timesteps;   /* N */
    tdm_betas_kind beta_schedule;
    tdm_spacing spacing;
    int64_t  steps_offset;
    tdm_pred pred;
    int      rescale_zero_snr;
    int      set_alpha_to_one;      /* PNDM, DDIM */
    int      skip_prk_steps;        /* PNDM */
    int      clip_sample;           /* DDIM */
    double   clip_sample_range;     /* DDIM */
    int      use_karras;            /* Euler, DPM, Flow */
    int      has_sigma_min, has_sigma_max;
    double   sigma_min, sigma_max;  /* karras range overrides (config keys) */
    int      final_sigma_min;       /* final_sigmas_type == "sigma_min" */
    int      solver_order;          /* DPM: 1..3 */
    int      solver_heun;           /* DPM: solver_type == "heun" */
    int      lower_order_final;     /* DPM */
    int      euler_at_final;        /* DPM */
    double   lambda_min_clipped;    /* DPM */
    int      use_exponential;       /* Flow: use_exponential_sigmas */
    double   shift;                 /* Flow: static shift */
    int      dynamic_shift;         /* Flow: use_dynamic_shifting */
    int      time_shift_linear;     /* Flow: time_shift_type == "linear" */
    double   base_shift, max_shift; /* Flow: calculate_shift inputs */
    double   base_seq_len, max_seq_len;
    int      invert_sigmas;         /* Flow */
    int      use_flow_sigmas;       /* Flow: FluxPipeline then passes no sigmas */
    double   shift_terminal;        /* Flow: 0 = none (diffusers: falsy) */
    float    flow_sigma_max, flow_sigma_min;  /* Flow: sigmas[0], sigmas[-1] of the training table */

    /* ---- training tables, N entries each (float32 as torch) ---- */
    float   *alphas_cumprod;        /* NULL for Flow */
    float   *train_sigmas;          /* ((1 - ac) / ac) ** 0.5 */
    float    final_alpha_cumprod;

    /* ---- schedule built by set_timesteps ---- */
    int      num_inference_steps;   /* as requested */
    int      len;                   /* len(timesteps) */
    int64_t *ts_int;                /* PNDM, DDIM, DPM: len */
    float   *ts;                    /* timesteps as float32: len */
    float   *sigmas;                /* Euler, Euler-a, DPM, Flow: len + 1 */
    int      begin;                 /* step index of loop index 0 */
    float    init_noise_sigma;
    int      n_prk;                 /* PNDM: PRK warm-up entries at the front */

    /* ---- per-run state ---- */
    int      steps_taken;
    int64_t  state_n;               /* B * item the buffers were made for, 0 = none */
    float   *buf;                   /* one allocation for all buffers below */
    float   *ets[4];                /* PNDM history (newest last) */
    int      n_ets;
    float   *cur_sample;            /* PNDM */
    int      has_cur_sample;
    float   *cur_model_output;      /* PNDM PRK accumulator */
    float   *mo[3];                 /* DPM model_outputs (newest last) */
    int      lower_order_nums;      /* DPM */
    float   *tmp;                   /* scratch (combined model output, noise) */
};

/* ---- numpy / torch arithmetic --------------------------------------- */

/* np.linspace(start, stop, n) in float64 (endpoint included). */
void tdm_np_linspace(double start, double stop, int64_t n, double *out);
/* Length of np.arange(start, 0, -step) for float step > 0. */
int64_t tdm_np_arange_down_len(double start, double step);
/* np.arange(start, 0, -step) values (numpy's fill: start + i * delta). */
void tdm_np_arange_down(double start, double step, int64_t n, double *out);
/* np.interp(x, arange(n), fp) with fp float32. */
double tdm_np_interp_grid(double x, const float *fp, int64_t n);
/* The diffusers _sigma_to_t for one sigma against float32 log_sigmas. */
double tdm_sigma_to_t(double sigma, const float *log_sigmas, int64_t n);
/* _convert_to_karras: n sigmas (float64) from sigma_max down to sigma_min. */
void tdm_karras_sigmas(double sigma_min, double sigma_max, int64_t n, double *out);
/* float32 log / exp as used on 0-dim torch tensors (correctly rounded). */
float tdm_sched_logf(float x);
float tdm_sched_expf(float x);
/* Index of the first occurrence of `t` in ts, or the second when it occurs
 * more than once (diffusers index_for_timestep); -1 if absent. */
int tdm_sched_index_for_timestep(const float *ts, int n, float t);

/* Makes sure the state buffers exist for n floats; `nbuf` scratch-sized
 * buffers are carved from one allocation. */
tdm_status tdm_sched_state_alloc(tdm_sched_t *s, int64_t n);

/* ---- families ------------------------------------------------------- */
tdm_status tdm_sched_alpha_set_timesteps(tdm_sched_t *s, int n);   /* PNDM, DDIM */
tdm_status tdm_sched_pndm_step(tdm_sched_t *s, int i, const float *mo, float *x, int64_t n);
tdm_status tdm_sched_ddim_step(tdm_sched_t *s, int i, const float *mo, float *x, int64_t n);
tdm_status tdm_sched_euler_set_timesteps(tdm_sched_t *s, int n);   /* Euler, Euler-a */
tdm_status tdm_sched_euler_step(tdm_sched_t *s, int i, const float *mo, float *x, int64_t B,
                                int64_t item, tdm_rng_t *rngs);
tdm_status tdm_sched_dpm_set_timesteps(tdm_sched_t *s, int n);
tdm_status tdm_sched_dpm_step(tdm_sched_t *s, int i, const float *mo, float *x, int64_t n);
/* Flow: `sigmas` NULL = diffusers' default schedule from the training
 * sigma range (float64), else the n caller sigmas (float32 path); mu NaN
 * = not given. */
tdm_status tdm_sched_flow_set_timesteps(tdm_sched_t *s, int n, const float *sigmas, double mu);
tdm_status tdm_sched_flow_step(tdm_sched_t *s, int i, const float *mo, float *x, int64_t n);

#endif
