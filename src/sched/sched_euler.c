/* sched_euler.c — EulerDiscreteScheduler (s_churn = 0, optional Karras
 * sigmas) and EulerAncestralDiscreteScheduler: float32 timesteps, sigmas
 * interpolated in float64 as numpy does, steps in float32 in torch's
 * operation order, ancestral noise from per-item torch generators. */
#include "sched/sched_impl.h"

#include <math.h>
#include <stdlib.h>

/* The float32 timesteps of the Euler schedulers (descending). OUT: *ts
 * (malloc), *m. */
static tdm_status euler_timesteps(tdm_sched_t *s, int n, float **ts, int64_t *m) {
    int64_t N = s->num_train_timesteps, cnt = n;
    if (s->spacing == TDM_SPACING_TRAILING)
        cnt = tdm_np_arange_down_len((double)N, (double)N / (double)n);
    double *d = malloc((size_t)(cnt > 0 ? cnt : 1) * sizeof *d);
    float *t = malloc((size_t)(cnt > 0 ? cnt : 1) * sizeof *t);
    if (!d || !t) {
        free(d);
        free(t);
        return tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory for timesteps", s->path);
    }
    switch (s->spacing) {
    case TDM_SPACING_LINSPACE:   /* np.linspace(..., dtype=float32)[::-1] */
        tdm_np_linspace(0.0, (double)(N - 1), n, d);
        for (int64_t k = 0; k < cnt; k++) t[k] = (float)d[cnt - 1 - k];
        break;
    case TDM_SPACING_LEADING: {  /* (arange * ratio).round()[::-1].astype(f32) + offset */
        int64_t ratio = N / n;
        for (int64_t k = 0; k < cnt; k++)
            t[k] = (float)((cnt - 1 - k) * ratio) + (float)s->steps_offset;
        break;
    }
    case TDM_SPACING_TRAILING:   /* arange(N, 0, -ratio).round().astype(f32) - 1 */
        tdm_np_arange_down((double)N, (double)N / (double)n, cnt, d);
        for (int64_t k = 0; k < cnt; k++) t[k] = (float)rint(d[k]) - 1.0f;
        break;
    }
    free(d);
    *ts = t;
    *m = cnt;
    return TDM_OK;
}

tdm_status tdm_sched_euler_set_timesteps(tdm_sched_t *s, int n) {
    tdm_status st = TDM_OK;
    int64_t N = s->num_train_timesteps, m = 0;
    float *ts = NULL, *log_sigmas = NULL;
    double *sig = NULL;
    TDM_TRY(euler_timesteps(s, n, &ts, &m));
    int64_t len = m;
    int karras = s->kind == TDM_SCHED_EULER && s->use_karras;
    if (karras) len = n;
    sig = malloc((size_t)(m > len ? m : len) * sizeof *sig + sizeof *sig);
    s->sigmas = malloc((size_t)(len + 1) * sizeof(float));
    log_sigmas = malloc((size_t)N * sizeof *log_sigmas);
    if (!sig || !s->sigmas || !log_sigmas) {
        st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory for sigmas", s->path);
        goto fail;
    }
    for (int64_t k = 0; k < m; k++) sig[k] = tdm_np_interp_grid((double)ts[k], s->train_sigmas, N);
    if (karras) {
        if (m < 1) {
            st = tdm_errorf(TDM_ERR_INVALID_ARG, "%s: empty schedule for %d steps", s->path, n);
            goto fail;
        }
        double smin = s->has_sigma_min ? s->sigma_min : sig[m - 1];
        double smax = s->has_sigma_max ? s->sigma_max : sig[0];
        tdm_karras_sigmas(smin, smax, len, sig);
        for (int64_t k = 0; k < N; k++) log_sigmas[k] = tdm_sched_logf(s->train_sigmas[k]);
        float *t2 = realloc(ts, (size_t)len * sizeof *t2);
        if (!t2) {
            st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory for timesteps", s->path);
            goto fail;
        }
        ts = t2;
        for (int64_t k = 0; k < len; k++) ts[k] = (float)tdm_sigma_to_t(sig[k], log_sigmas, N);
    }
    for (int64_t k = 0; k < len; k++) s->sigmas[k] = (float)sig[k];
    if (s->kind == TDM_SCHED_EULER && s->final_sigma_min) {
        float ac = s->alphas_cumprod[0];
        s->sigmas[len] = sqrtf((1.0f - ac) / ac);
    } else {
        s->sigmas[len] = 0.0f;
    }
    s->ts = ts;
    ts = NULL;
    s->len = (int)len;
    float mx = s->sigmas[0];
    for (int64_t k = 1; k <= len; k++)
        if (s->sigmas[k] > mx || isnan(s->sigmas[k])) mx = s->sigmas[k];
    s->init_noise_sigma = (s->spacing == TDM_SPACING_LEADING) ? sqrtf(mx * mx + 1.0f) : mx;
    s->begin = len > 0 ? tdm_sched_index_for_timestep(s->ts, (int)len, s->ts[0]) : 0;
fail:
    free(ts);
    free(sig);
    free(log_sigmas);
    return st;
}

tdm_status tdm_sched_euler_step(tdm_sched_t *s, int i, const float *mo, float *x, int64_t B,
                                int64_t item, tdm_rng_t *rngs) {
    int si = s->begin + i;
    int64_t n = B * item;
    if (si + 1 > s->len)
        return tdm_errorf(TDM_ERR_INVALID_ARG,
                          "%s: %s step %d runs past the schedule (first timestep repeats, "
                          "so stepping starts at index %d)", s->path, tdm_sched_class(s), i,
                          s->begin);
    float sigma = s->sigmas[si], sigma_next = s->sigmas[si + 1];
    float s2p1 = sigma * sigma + 1.0f;
    float vcoef = -sigma / sqrtf(s2p1);
    if (s->kind == TDM_SCHED_EULER) {
        float sigma_hat = sigma * (0.0f + 1.0f);     /* gamma = 0 (s_churn = 0) */
        float dt = sigma_next - sigma_hat;
        for (int64_t k = 0; k < n; k++) {
            float xk = x[k], m = mo[k], x0;
            if (s->pred == TDM_PRED_EPSILON) x0 = xk - sigma_hat * m;
            else if (s->pred == TDM_PRED_V) x0 = m * vcoef + xk / s2p1;
            else x0 = m;
            float der = (xk - x0) / sigma_hat;
            x[k] = xk + der * dt;
        }
        return TDM_OK;
    }
    /* Euler ancestral */
    if (!rngs)
        return tdm_errorf(TDM_ERR_INVALID_ARG,
                          "%s: EulerAncestralDiscreteScheduler step needs a generator per batch item",
                          s->path);
    float sf2 = sigma * sigma, st2 = sigma_next * sigma_next;
    float sigma_up = sqrtf(st2 * (sf2 - st2) / sf2);
    float sigma_down = sqrtf(st2 - sigma_up * sigma_up);
    float dt = sigma_down - sigma;
    for (int64_t b = 0; b < B; b++) tdm_rng_randn(&rngs[b], s->tmp + b * item, item);
    for (int64_t k = 0; k < n; k++) {
        float xk = x[k], m = mo[k], x0;
        if (s->pred == TDM_PRED_EPSILON) x0 = xk - sigma * m;
        else x0 = m * vcoef + xk / s2p1;
        float der = (xk - x0) / sigma;
        float prev = xk + der * dt;
        x[k] = prev + s->tmp[k] * sigma_up;
    }
    return TDM_OK;
}
