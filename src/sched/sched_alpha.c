/* sched_alpha.c — the schedulers that step on alphas_cumprod at integer
 * timesteps: PNDMScheduler (PLMS, with the Runge-Kutta warm-up when
 * skip_prk_steps is false) and DDIMScheduler (eta = 0). Float32 math in
 * the operation order of diffusers' torch code. */
#include "sched/sched_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The increasing integer timesteps of PNDM's _timesteps / DDIM's
 * timesteps (before DDIM reverses them). OUT: *out (malloc), *m. */
static tdm_status base_timesteps(tdm_sched_t *s, int n, int64_t **out, int64_t *m) {
    int64_t N = s->num_train_timesteps, cnt = n;
    double *d = NULL;
    int64_t *t = NULL;
    if (s->spacing == TDM_SPACING_TRAILING)
        cnt = tdm_np_arange_down_len((double)N, (double)N / (double)n);
    d = malloc((size_t)(cnt > 0 ? cnt : 1) * sizeof *d);
    t = malloc((size_t)(cnt > 0 ? cnt : 1) * sizeof *t);
    if (!d || !t) {
        free(d);
        free(t);
        return tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory for timesteps", s->path);
    }
    switch (s->spacing) {
    case TDM_SPACING_LINSPACE:
        tdm_np_linspace(0.0, (double)(N - 1), n, d);
        for (int64_t k = 0; k < cnt; k++) t[k] = (int64_t)rint(d[k]);
        break;
    case TDM_SPACING_LEADING: {
        int64_t ratio = N / n;
        for (int64_t k = 0; k < cnt; k++) t[k] = k * ratio + s->steps_offset;
        break;
    }
    case TDM_SPACING_TRAILING:
        tdm_np_arange_down((double)N, (double)N / (double)n, cnt, d);
        for (int64_t k = 0; k < cnt; k++) t[cnt - 1 - k] = (int64_t)rint(d[k]) - 1;
        break;
    }
    free(d);
    *out = t;
    *m = cnt;
    return TDM_OK;
}

tdm_status tdm_sched_alpha_set_timesteps(tdm_sched_t *s, int n) {
    tdm_status st = TDM_OK;
    int64_t *base = NULL, m = 0, len = 0;
    TDM_TRY(base_timesteps(s, n, &base, &m));
    int64_t N = s->num_train_timesteps;
    if (s->kind == TDM_SCHED_DDIM) {
        len = m;
        s->ts_int = malloc((size_t)(len > 0 ? len : 1) * sizeof(int64_t));
        if (!s->ts_int) goto nomem;
        for (int64_t k = 0; k < m; k++) s->ts_int[k] = base[m - 1 - k];
    } else if (s->skip_prk_steps) {
        /* concat(_ts[:-1], _ts[-2:-1], _ts[-1:])[::-1] */
        len = m >= 2 ? m + 1 : m;
        s->ts_int = malloc((size_t)(len > 0 ? len : 1) * sizeof(int64_t));
        if (!s->ts_int) goto nomem;
        int64_t k = 0, *fw = malloc((size_t)(len > 0 ? len : 1) * sizeof(int64_t));
        if (!fw) goto nomem;
        for (int64_t q = 0; q + 1 < m; q++) fw[k++] = base[q];
        if (m >= 2) fw[k++] = base[m - 2];
        if (m >= 1) fw[k++] = base[m - 1];
        for (int64_t q = 0; q < len; q++) s->ts_int[q] = fw[len - 1 - q];
        free(fw);
    } else {
        if (m < 4) {
            st = tdm_errorf(TDM_ERR_UNSUPPORTED,
                            "%s: PNDMScheduler with skip_prk_steps=false needs at least 4 "
                            "timesteps, got %lld (%d steps)", s->path, (long long)m, n);
            goto fail;
        }
        /* prk = (_ts[-4:].repeat(2) + tile([0, N//n//2], 4)); prk_timesteps =
         * prk[:-1].repeat(2)[1:-1][::-1]; plms = _ts[:-3][::-1]. */
        int64_t p[8], r[14], half = N / n / 2;
        for (int k = 0; k < 4; k++) {
            p[2 * k] = base[m - 4 + k];
            p[2 * k + 1] = base[m - 4 + k] + half;
        }
        for (int k = 0; k < 7; k++) r[2 * k] = r[2 * k + 1] = p[k];
        len = 12 + (m - 3);
        s->ts_int = malloc((size_t)len * sizeof(int64_t));
        if (!s->ts_int) goto nomem;
        for (int k = 0; k < 12; k++) s->ts_int[k] = r[12 - k];   /* r[1..12] reversed */
        for (int64_t k = 0; k < m - 3; k++) s->ts_int[12 + k] = base[m - 4 - k];
        s->n_prk = 12;
    }
    for (int64_t k = 0; k < len; k++) {
        /* alphas_cumprod[t] must exist (diffusers would raise IndexError) */
        if (s->ts_int[k] < 0 || s->ts_int[k] >= N + (s->n_prk ? N / n / 2 : 0) ||
            (s->kind == TDM_SCHED_DDIM && s->ts_int[k] >= N)) {
            st = tdm_errorf(TDM_ERR_INVALID_ARG,
                            "%s: timestep %lld of the %d-step schedule is outside [0, %lld) "
                            "(steps_offset %lld)", s->path, (long long)s->ts_int[k], n,
                            (long long)N, (long long)s->steps_offset);
            goto fail;
        }
    }
    s->ts = malloc((size_t)(len > 0 ? len : 1) * sizeof(float));
    if (!s->ts) goto nomem;
    for (int64_t k = 0; k < len; k++) s->ts[k] = (float)s->ts_int[k];
    s->len = (int)len;
    s->init_noise_sigma = 1.0f;
    free(base);
    return TDM_OK;
nomem:
    st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory for timesteps", s->path);
fail:
    free(base);
    return st;
}

/* alphas_cumprod[t], or the final alpha for t < 0; -1 when t >= N. */
static float alpha_at(const tdm_sched_t *s, int64_t t) {
    if (t < 0) return s->final_alpha_cumprod;
    if (t >= s->num_train_timesteps) return -1.0f;
    return s->alphas_cumprod[t];
}

static tdm_status bad_timestep(const tdm_sched_t *s, int64_t t) {
    return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: %s reached timestep %lld outside [0, %lld)",
                      s->path, tdm_sched_class(s), (long long)t,
                      (long long)s->num_train_timesteps);
}

/* PNDM _get_prev_sample: out = x_(t-delta) from x (sample) and e (model
 * output); out may alias x. */
static tdm_status pndm_prev_sample(const tdm_sched_t *s, const float *x, int64_t t, int64_t tp,
                                   const float *e, float *out, int64_t n) {
    if (t < 0 || t >= s->num_train_timesteps) return bad_timestep(s, t);
    if (tp >= s->num_train_timesteps) return bad_timestep(s, tp);
    float at = alpha_at(s, t), atp = alpha_at(s, tp);
    float bt = 1.0f - at, btp = 1.0f - atp;
    float sa = sqrtf(at), sb = sqrtf(bt);
    float coeff = sqrtf(atp / at);
    float denom = at * sqrtf(btp) + sqrtf(at * bt * atp);
    float diff = atp - at;
    for (int64_t k = 0; k < n; k++) {
        float ek = e[k];
        if (s->pred == TDM_PRED_V) ek = sa * ek + sb * x[k];
        out[k] = coeff * x[k] - diff * ek / denom;
    }
    return TDM_OK;
}

static tdm_status pndm_step_prk(tdm_sched_t *s, int64_t t, const float *mo, float *x,
                                int64_t n) {
    int64_t N = s->num_train_timesteps, c = s->steps_taken;
    int64_t diff_to_prev = (c % 2) ? 0 : N / s->num_inference_steps / 2;
    int64_t prev_t = t - diff_to_prev;
    t = s->ts_int[c / 4 * 4];
    const float sixth = (float)(1.0 / 6.0), third = (float)(1.0 / 3.0);
    const float *e = s->tmp;
    float *acc = s->cur_model_output;
    switch (c % 4) {
    case 0:
        for (int64_t k = 0; k < n; k++) acc[k] = sixth * mo[k];
        memcpy(s->ets[s->n_ets++], mo, (size_t)n * sizeof(float));
        memcpy(s->cur_sample, x, (size_t)n * sizeof(float));
        s->has_cur_sample = 1;
        e = mo;
        break;
    case 1:
    case 2:
        for (int64_t k = 0; k < n; k++) acc[k] = acc[k] + third * mo[k];
        e = mo;
        break;
    case 3:
        for (int64_t k = 0; k < n; k++) {
            s->tmp[k] = acc[k] + sixth * mo[k];
            acc[k] = 0.0f;
        }
        break;
    }
    const float *cur = s->has_cur_sample ? s->cur_sample : x;
    return pndm_prev_sample(s, cur, t, prev_t, e, x, n);
}

/* ets = ets[-3:] + [mo] */
static void ets_push(tdm_sched_t *s, const float *mo, int64_t n) {
    if (s->n_ets == 4) {
        float *first = s->ets[0];
        s->ets[0] = s->ets[1];
        s->ets[1] = s->ets[2];
        s->ets[2] = s->ets[3];
        s->ets[3] = first;
        s->n_ets = 3;
    }
    memcpy(s->ets[s->n_ets++], mo, (size_t)n * sizeof(float));
}

static tdm_status pndm_step_plms(tdm_sched_t *s, int64_t t, const float *mo, float *x,
                                 int64_t n) {
    int64_t ratio = s->num_train_timesteps / s->num_inference_steps, c = s->steps_taken;
    int64_t prev_t = t - ratio;
    if (!s->skip_prk_steps && s->n_ets < 3)
        return tdm_errorf(TDM_ERR_INTERNAL, "%s: PNDM PLMS step before the PRK warm-up", s->path);
    if (c != 1) {
        ets_push(s, mo, n);
    } else {
        prev_t = t;
        t = t + ratio;
    }
    float *e = s->tmp;
    const float *in = x;
    int ne = s->n_ets;
    float *const *E = s->ets;   /* E[ne-1] is ets[-1] */
    if (ne == 1 && c == 0) {
        memcpy(e, mo, (size_t)n * sizeof(float));
        memcpy(s->cur_sample, x, (size_t)n * sizeof(float));
        s->has_cur_sample = 1;
    } else if (ne == 1 && c == 1) {
        for (int64_t k = 0; k < n; k++) e[k] = (mo[k] + E[0][k]) / 2.0f;
        in = s->cur_sample;
        s->has_cur_sample = 0;
    } else if (ne == 2) {
        for (int64_t k = 0; k < n; k++) e[k] = (3.0f * E[1][k] - E[0][k]) / 2.0f;
    } else if (ne == 3) {
        for (int64_t k = 0; k < n; k++)
            e[k] = (23.0f * E[2][k] - 16.0f * E[1][k] + 5.0f * E[0][k]) / 12.0f;
    } else if (ne == 4) {
        const float c24 = (float)(1.0 / 24.0);
        for (int64_t k = 0; k < n; k++)
            e[k] = c24 * (55.0f * E[3][k] - 59.0f * E[2][k] + 37.0f * E[1][k] - 9.0f * E[0][k]);
    } else {
        return tdm_errorf(TDM_ERR_INTERNAL, "%s: PNDM history of %d at step %lld", s->path, ne,
                          (long long)c);
    }
    return pndm_prev_sample(s, in, t, prev_t, e, x, n);
}

tdm_status tdm_sched_pndm_step(tdm_sched_t *s, int i, const float *mo, float *x, int64_t n) {
    int64_t t = s->ts_int[i];
    if (s->steps_taken < s->n_prk && !s->skip_prk_steps) return pndm_step_prk(s, t, mo, x, n);
    return pndm_step_plms(s, t, mo, x, n);
}

tdm_status tdm_sched_ddim_step(tdm_sched_t *s, int i, const float *mo, float *x, int64_t n) {
    int64_t t = s->ts_int[i];
    int64_t prev_t = t - s->num_train_timesteps / s->num_inference_steps;
    if (t < 0 || t >= s->num_train_timesteps) return bad_timestep(s, t);
    float at = alpha_at(s, t), atp = alpha_at(s, prev_t);
    float bt = 1.0f - at, btp = 1.0f - atp;
    float sa = sqrtf(at), sb = sqrtf(bt), satp = sqrtf(atp);
    float variance = (btp / bt) * (1.0f - at / atp);
    float std_dev = 0.0f * sqrtf(variance);                /* eta = 0 */
    float dir = sqrtf(1.0f - atp - std_dev * std_dev);
    float lo = -(float)s->clip_sample_range, hi = (float)s->clip_sample_range;
    for (int64_t k = 0; k < n; k++) {
        float xk = x[k], m = mo[k], x0, eps;
        switch (s->pred) {
        case TDM_PRED_SAMPLE:
            x0 = m;
            eps = (xk - sa * x0) / sb;
            break;
        case TDM_PRED_V:
            x0 = sa * xk - sb * m;
            eps = sa * m + sb * xk;
            break;
        default:
            x0 = (xk - sb * m) / sa;
            eps = m;
            break;
        }
        if (s->clip_sample) x0 = x0 < lo ? lo : (x0 > hi ? hi : x0);   /* NaN stays NaN */
        x[k] = satp * x0 + dir * eps;
    }
    return TDM_OK;
}
