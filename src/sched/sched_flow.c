/* sched_flow.c — FlowMatchEulerDiscreteScheduler as FluxPipeline drives it:
 * the sigma schedule (static shift, or resolution-dependent "exponential" /
 * "linear" time shift from mu; optional shift_terminal stretch, Karras or
 * exponential sigmas, invert_sigmas) and the deterministic Euler step.
 *
 * diffusers computes the schedule in two precisions: from caller sigmas
 * (the pipeline's linspace) numpy works in float32, with Python scalars
 * rounded to float32 (NEP 50); without them it works in float64 from the
 * training sigma range. Both are reproduced here; the final sigmas are
 * float32 and timesteps = sigmas * num_train_timesteps in float32.
 *
 * Not here: stochastic_sampling, beta sigmas, per-token timesteps, custom
 * timestep lists, scale_noise (img2img). */
#include "sched/sched_impl.h"

#include <math.h>
#include <stdlib.h>

/* The float64 path (diffusers set_timesteps without sigmas). d[n] holds
 * np.linspace(sigma_max * N, sigma_min * N, n) / N on entry and the
 * shifted, stretched sigmas on exit. */
static void shift_f64(const tdm_sched_t *s, double *d, int n, double mu) {
    if (s->dynamic_shift) {
        double e = s->time_shift_linear ? mu : exp(mu);
        for (int k = 0; k < n; k++) d[k] = e / (e + (1.0 / d[k] - 1.0));
    } else {
        double sh = s->shift;
        for (int k = 0; k < n; k++) d[k] = sh * d[k] / (1.0 + (sh - 1.0) * d[k]);
    }
    if (s->shift_terminal != 0.0) {
        double scale = (1.0 - d[n - 1]) / (1.0 - s->shift_terminal);
        for (int k = 0; k < n; k++) d[k] = 1.0 - (1.0 - d[k]) / scale;
    }
}

/* The float32 path (caller sigmas): numpy float32 arithmetic, each Python
 * scalar rounded to float32 first. */
static void shift_f32(const tdm_sched_t *s, float *f, int n, double mu) {
    if (s->dynamic_shift) {
        float e = (float)(s->time_shift_linear ? mu : exp(mu));
        for (int k = 0; k < n; k++) f[k] = e / (e + (1.0f / f[k] - 1.0f));
    } else {
        float sh = (float)s->shift, sh1 = (float)(s->shift - 1.0);
        for (int k = 0; k < n; k++) f[k] = sh * f[k] / (1.0f + sh1 * f[k]);
    }
    if (s->shift_terminal != 0.0) {
        float scale = (1.0f - f[n - 1]) / (float)(1.0 - s->shift_terminal);
        for (int k = 0; k < n; k++) f[k] = 1.0f - (1.0f - f[k]) / scale;
    }
}

/* _convert_to_karras / _convert_to_exponential over d[n] (float64), the
 * range from the config's sigma_min/sigma_max keys where present, else
 * from the schedule's ends. */
static void convert_sigmas(const tdm_sched_t *s, double *d, int n) {
    double smin = s->has_sigma_min ? s->sigma_min : d[n - 1];
    double smax = s->has_sigma_max ? s->sigma_max : d[0];
    if (s->use_karras) {
        tdm_karras_sigmas(smin, smax, n, d);
    } else {
        tdm_np_linspace(log(smax), log(smin), n, d);
        for (int k = 0; k < n; k++) d[k] = exp(d[k]);
    }
}

tdm_status tdm_sched_flow_set_timesteps(tdm_sched_t *s, int n, const float *sigmas, double mu) {
    tdm_status st = TDM_OK;
    double *d = NULL;
    const float N = (float)s->num_train_timesteps;
    if (s->dynamic_shift && isnan(mu))
        return tdm_errorf(TDM_ERR_INVALID_ARG,
                          "%s: FlowMatchEulerDiscreteScheduler has use_dynamic_shifting = true and "
                          "needs mu (the image-size shift, tdm_sched_flux_mu) through "
                          "tdm_sched_set_timesteps_flow", s->path);
    d = malloc((size_t)n * sizeof *d);
    s->sigmas = malloc((size_t)(n + 1) * sizeof(float));
    s->ts = malloc((size_t)n * sizeof(float));
    if (!d || !s->sigmas || !s->ts) {
        st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory for %d sigmas", s->path, n);
        goto fail;
    }
    float *f = s->sigmas;
    int convert = s->use_karras || s->use_exponential;
    if (sigmas) {                               /* np.array(sigmas).astype(float32) */
        for (int k = 0; k < n; k++) f[k] = sigmas[k];
        shift_f32(s, f, n, mu);
        if (convert) {
            for (int k = 0; k < n; k++) d[k] = (double)f[k];
            convert_sigmas(s, d, n);
            for (int k = 0; k < n; k++) f[k] = (float)d[k];
        }
    } else {
        tdm_np_linspace((double)s->flow_sigma_max * (double)s->num_train_timesteps,
                        (double)s->flow_sigma_min * (double)s->num_train_timesteps, n, d);
        for (int k = 0; k < n; k++) d[k] = d[k] / (double)s->num_train_timesteps;
        shift_f64(s, d, n, mu);
        if (convert) convert_sigmas(s, d, n);
        for (int k = 0; k < n; k++) f[k] = (float)d[k];
    }
    if (s->invert_sigmas)
        for (int k = 0; k < n; k++) f[k] = 1.0f - f[k];
    for (int k = 0; k < n; k++) {
        if (!isfinite(f[k])) {
            st = tdm_errorf(TDM_ERR_INVALID_ARG,
                            "%s: the %d-step flow schedule has sigma[%d] = %g%s", s->path, n, k,
                            (double)f[k],
                            s->shift_terminal != 0.0
                                ? " (shift_terminal divides by 1 - last sigma, which is 0 here)"
                                : "");
            goto fail;
        }
        s->ts[k] = f[k] * N;
    }
    f[n] = s->invert_sigmas ? 1.0f : 0.0f;      /* terminal sigma */
    s->len = n;
    s->init_noise_sigma = 1.0f;
    s->begin = tdm_sched_index_for_timestep(s->ts, n, s->ts[0]);
fail:
    free(d);
    return st;
}

tdm_status tdm_sched_flow_step(tdm_sched_t *s, int i, const float *mo, float *x, int64_t n) {
    int si = s->begin + i;
    if (si + 1 > s->len)
        return tdm_errorf(TDM_ERR_INVALID_ARG,
                          "%s: %s step %d runs past the schedule (first timestep repeats, "
                          "so stepping starts at index %d)", s->path, tdm_sched_class(s), i,
                          s->begin);
    float dt = s->sigmas[si + 1] - s->sigmas[si];
    for (int64_t k = 0; k < n; k++) x[k] = x[k] + dt * mo[k];
    return TDM_OK;
}
