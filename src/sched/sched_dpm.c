/* sched_dpm.c — DPMSolverMultistepScheduler with algorithm_type
 * dpmsolver++ (solver orders 1-3, midpoint or heun second-order form,
 * lower_order_final, euler_at_final, Karras sigmas, final sigma zero or
 * sigma_min). Integer timesteps, float32 sigmas; per-step math in float32
 * in torch's operation order. Not here: dpmsolver (deprecated), SDE
 * variants, thresholding, lu/exponential/beta/flow sigmas. */
#include "sched/sched_impl.h"

#include <math.h>
#include <stdlib.h>

tdm_status tdm_sched_dpm_set_timesteps(tdm_sched_t *s, int n) {
    tdm_status st = TDM_OK;
    int64_t N = s->num_train_timesteps, m = n;
    double *d = NULL;
    float *log_sigmas = NULL;

    /* last_timestep = N - searchsorted(flip(lambda_t), lambda_min_clipped) */
    int64_t clipped = 0;
    if (!(s->lambda_min_clipped == -INFINITY)) {
        while (clipped < N) {
            float ac = s->alphas_cumprod[N - 1 - clipped];
            float lam = tdm_sched_logf(sqrtf(ac)) - tdm_sched_logf(sqrtf(1.0f - ac));
            if ((double)lam >= s->lambda_min_clipped) break;
            clipped++;
        }
    }
    int64_t last = N - clipped;
    if (last < 1) {
        return tdm_errorf(TDM_ERR_MODEL, "%s: lambda_min_clipped %g clips every timestep",
                          s->path, s->lambda_min_clipped);
    }
    if (s->spacing == TDM_SPACING_TRAILING)
        m = tdm_np_arange_down_len((double)last, (double)N / (double)n);
    int64_t cap = (m > n ? m : n) + 2;
    d = malloc((size_t)cap * sizeof *d);
    s->ts_int = malloc((size_t)cap * sizeof(int64_t));
    s->ts = malloc((size_t)cap * sizeof(float));
    s->sigmas = malloc((size_t)cap * sizeof(float));
    log_sigmas = malloc((size_t)N * sizeof *log_sigmas);
    if (!d || !s->ts_int || !s->ts || !s->sigmas || !log_sigmas) {
        st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory for timesteps", s->path);
        goto fail;
    }
    switch (s->spacing) {
    case TDM_SPACING_LINSPACE:   /* linspace(0, last-1, n+1).round()[::-1][:-1] */
        tdm_np_linspace(0.0, (double)(last - 1), n + 1, d);
        for (int64_t k = 0; k < n; k++) s->ts_int[k] = (int64_t)rint(d[n - k]);
        break;
    case TDM_SPACING_LEADING: {  /* (arange(n+1) * (last // (n+1)))[::-1][:-1] + offset */
        int64_t ratio = last / (n + 1);
        for (int64_t k = 0; k < n; k++) s->ts_int[k] = (n - k) * ratio + s->steps_offset;
        break;
    }
    case TDM_SPACING_TRAILING:   /* arange(last, 0, -N/n).round() - 1 */
        tdm_np_arange_down((double)last, (double)N / (double)n, m, d);
        for (int64_t k = 0; k < m; k++) s->ts_int[k] = (int64_t)rint(d[k]) - 1;
        break;
    }
    int64_t len = m;
    if (s->use_karras) {
        /* in_sigmas = flip(train sigmas): max first */
        double smin = s->has_sigma_min ? s->sigma_min : (double)s->train_sigmas[0];
        double smax = s->has_sigma_max ? s->sigma_max : (double)s->train_sigmas[N - 1];
        len = n;
        tdm_karras_sigmas(smin, smax, len, d);
        for (int64_t k = 0; k < N; k++) log_sigmas[k] = tdm_sched_logf(s->train_sigmas[k]);
        for (int64_t k = 0; k < len; k++) {
            double t = tdm_sigma_to_t(d[k], log_sigmas, N);
            if (s->beta_schedule != TDM_BETAS_SQUAREDCOS) t = rint(t);
            s->ts_int[k] = (int64_t)t;   /* torch .to(int64) truncates */
        }
    } else {
        for (int64_t k = 0; k < len; k++)
            d[k] = tdm_np_interp_grid((double)s->ts_int[k], s->train_sigmas, N);
    }
    for (int64_t k = 0; k < len; k++) {
        s->sigmas[k] = (float)d[k];
        s->ts[k] = (float)s->ts_int[k];
    }
    if (s->final_sigma_min) {
        float ac = s->alphas_cumprod[0];
        s->sigmas[len] = sqrtf((1.0f - ac) / ac);
    } else {
        s->sigmas[len] = 0.0f;
    }
    s->len = (int)len;
    s->init_noise_sigma = 1.0f;
    /* index_for_timestep(timesteps[0]) */
    s->begin = len > 0 ? tdm_sched_index_for_timestep(s->ts, (int)len, s->ts[0]) : 0;
fail:
    free(d);
    free(log_sigmas);
    return st;
}

/* _sigma_to_alpha_sigma_t */
static void alpha_sigma(float sigma, float *alpha_t, float *sigma_t) {
    *alpha_t = 1.0f / sqrtf(sigma * sigma + 1.0f);
    *sigma_t = sigma * *alpha_t;
}

static float lambda_of(float alpha_t, float sigma_t) {
    return tdm_sched_logf(alpha_t) - tdm_sched_logf(sigma_t);
}

tdm_status tdm_sched_dpm_step(tdm_sched_t *s, int i, const float *mo, float *x, int64_t n) {
    int si = s->begin + i, len = s->len, order = s->solver_order;
    if (si + 1 > len)
        return tdm_errorf(TDM_ERR_INVALID_ARG,
                          "%s: DPMSolverMultistepScheduler step %d runs past the schedule "
                          "(first timestep repeats, so stepping starts at index %d)",
                          s->path, i, s->begin);
    int lower_final = si == len - 1 &&
                      (s->euler_at_final || (s->lower_order_final && len < 15) ||
                       !s->final_sigma_min);
    int lower_second = si == len - 2 && s->lower_order_final && len < 15;

    /* convert_model_output -> x0 prediction, pushed onto model_outputs */
    float *x0 = s->mo[0];
    for (int q = 0; q + 1 < order; q++) s->mo[q] = s->mo[q + 1];
    s->mo[order - 1] = x0;
    {
        float a, sg;
        alpha_sigma(s->sigmas[si], &a, &sg);
        for (int64_t k = 0; k < n; k++) {
            if (s->pred == TDM_PRED_EPSILON) x0[k] = (x[k] - sg * mo[k]) / a;
            else if (s->pred == TDM_PRED_V) x0[k] = a * x[k] - sg * mo[k];
            else x0[k] = mo[k];
        }
    }

    float alpha_t, sigma_t, alpha_s0, sigma_s0;
    alpha_sigma(s->sigmas[si + 1], &alpha_t, &sigma_t);
    alpha_sigma(s->sigmas[si], &alpha_s0, &sigma_s0);
    float lambda_t = lambda_of(alpha_t, sigma_t), lambda_s0 = lambda_of(alpha_s0, sigma_s0);
    float h = lambda_t - lambda_s0;
    float em1 = tdm_sched_expf(-h) - 1.0f;               /* torch.exp(-h) - 1.0 */
    float c_x = sigma_t / sigma_s0;
    float c0 = alpha_t * em1;

    if (order == 1 || s->lower_order_nums < 1 || lower_final) {
        for (int64_t k = 0; k < n; k++) x[k] = c_x * x[k] - c0 * x0[k];
    } else if (order == 2 || s->lower_order_nums < 2 || lower_second) {
        const float *m0 = s->mo[order - 1], *m1 = s->mo[order - 2];
        float alpha_s1, sigma_s1;
        alpha_sigma(s->sigmas[si - 1], &alpha_s1, &sigma_s1);
        float lambda_s1 = lambda_of(alpha_s1, sigma_s1);
        float h0 = lambda_s0 - lambda_s1;
        float r0 = h0 / h;
        float inv_r0 = 1.0f / r0;
        if (!s->solver_heun) {
            float c1 = 0.5f * c0;
            for (int64_t k = 0; k < n; k++) {
                float D1 = inv_r0 * (m0[k] - m1[k]);
                x[k] = c_x * x[k] - c0 * m0[k] - c1 * D1;
            }
        } else {
            float c1 = alpha_t * (em1 / h + 1.0f);
            for (int64_t k = 0; k < n; k++) {
                float D1 = inv_r0 * (m0[k] - m1[k]);
                x[k] = c_x * x[k] - c0 * m0[k] + c1 * D1;
            }
        }
    } else {
        const float *m0 = s->mo[2], *m1 = s->mo[1], *m2 = s->mo[0];
        float alpha_s1, sigma_s1, alpha_s2, sigma_s2;
        alpha_sigma(s->sigmas[si - 1], &alpha_s1, &sigma_s1);
        alpha_sigma(s->sigmas[si - 2], &alpha_s2, &sigma_s2);
        float lambda_s1 = lambda_of(alpha_s1, sigma_s1), lambda_s2 = lambda_of(alpha_s2, sigma_s2);
        float h0 = lambda_s0 - lambda_s1, h1 = lambda_s1 - lambda_s2;
        float r0 = h0 / h, r1 = h1 / h;
        float inv_r0 = 1.0f / r0, inv_r1 = 1.0f / r1;
        float q = r0 / (r0 + r1), inv_r01 = 1.0f / (r0 + r1);
        float c1 = alpha_t * (em1 / h + 1.0f);
        float c2 = alpha_t * ((tdm_sched_expf(-h) - 1.0f + h) / (h * h) - 0.5f);
        for (int64_t k = 0; k < n; k++) {
            float D1_0 = inv_r0 * (m0[k] - m1[k]), D1_1 = inv_r1 * (m1[k] - m2[k]);
            float D1 = D1_0 + q * (D1_0 - D1_1);
            float D2 = inv_r01 * (D1_0 - D1_1);
            x[k] = c_x * x[k] - c0 * m0[k] + c1 * D1 - c2 * D2;
        }
    }
    if (s->lower_order_nums < order) s->lower_order_nums++;
    return TDM_OK;
}
