/* sched.c — scheduler creation from scheduler_config.json (class selection,
 * typed config keys with per-class defaults), the training tables (betas,
 * alphas_cumprod, sigmas) computed as torch does in float32, the numpy
 * float64 helpers shared by the families (linspace, arange, interp,
 * Karras sigmas, sigma_to_t), and dispatch of the public calls. The
 * per-family schedules and steps live in sched_alpha.c (PNDM, DDIM),
 * sched_euler.c, sched_dpm.c and sched_flow.c. */
#include "sched/sched_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "io/config.h"

static const char *const k_class_names[TDM_SCHED_KIND_COUNT] = {
    "PNDMScheduler", "DDIMScheduler", "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler",
    "FlowMatchEulerDiscreteScheduler",
};

#define SUPPORTED_LIST                                                                     \
    "PNDMScheduler, DDIMScheduler, EulerDiscreteScheduler, "                               \
    "EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler, "                       \
    "FlowMatchEulerDiscreteScheduler"

/* Short names, as the common UIs call the samplers (index: tdm_sched_kind). */
static const char *const k_short_names[TDM_SCHED_KIND_COUNT] = {
    "pndm", "ddim", "euler", "euler_a", "dpmpp_2m", "flow_euler",
};

const char *tdm_sched_resolve(const char *name) {
    if (!name) return NULL;
    for (int k = 0; k < TDM_SCHED_KIND_COUNT; k++)
        if (!strcasecmp(name, k_class_names[k]) || !strcasecmp(name, k_short_names[k]))
            return k_class_names[k];
    return NULL;
}

int tdm_sched_class_is_flow(const char *class_name) {
    return class_name && !strcmp(class_name, k_class_names[TDM_SCHED_FLOW]);
}

void tdm_sched_list(int flow, char *buf, size_t cap) {
    size_t n = 0;
    if (cap) buf[0] = 0;
    for (int k = 0; k < TDM_SCHED_KIND_COUNT; k++) {
        if ((k == TDM_SCHED_FLOW) != (flow != 0) || n >= cap) continue;
        int w = snprintf(buf + n, cap - n, "%s%s (%s)", n ? ", " : "", k_class_names[k], k_short_names[k]);
        if (w > 0) n += (size_t)w;
    }
}

/* ---- numpy / torch arithmetic ---------------------------------------- */

void tdm_np_linspace(double start, double stop, int64_t n, double *out) {
    if (n <= 0) return;
    if (n == 1) { out[0] = start; return; }
    double div = (double)(n - 1), delta = stop - start, step = delta / div;
    for (int64_t i = 0; i < n; i++) {
        double y = (step == 0) ? ((double)i / div) * delta : (double)i * step;
        out[i] = y + start;
    }
    out[n - 1] = stop;
}

int64_t tdm_np_arange_down_len(double start, double step) {
    double len = ceil((0.0 - start) / -step);
    return len > 0 ? (int64_t)len : 0;
}

void tdm_np_arange_down(double start, double step, int64_t n, double *out) {
    if (n <= 0) return;
    out[0] = start;
    if (n == 1) return;
    out[1] = start + -step;
    double delta = out[1] - out[0];
    for (int64_t i = 2; i < n; i++) out[i] = start + (double)i * delta;
}

double tdm_np_interp_grid(double x, const float *fp, int64_t n) {
    /* xp = 0, 1, ..., n-1 */
    if (isnan(x)) return x;
    if (x > (double)(n - 1)) return fp[n - 1];
    if (x < 0.0) return fp[0];
    int64_t j = (int64_t)floor(x);
    if (j >= n - 1) return fp[n - 1];
    if (x == (double)j) return fp[j];
    double slope = ((double)fp[j + 1] - (double)fp[j]) / (double)((j + 1) - j);
    double r = slope * (x - (double)j) + (double)fp[j];
    if (isnan(r)) {
        r = slope * (x - (double)(j + 1)) + (double)fp[j + 1];
        if (isnan(r) && fp[j] == fp[j + 1]) r = fp[j];
    }
    return r;
}

double tdm_sigma_to_t(double sigma, const float *log_sigmas, int64_t n) {
    double ls = log(sigma > 1e-10 || isnan(sigma) ? sigma : 1e-10);
    int64_t low = 0;
    for (int64_t k = 0; k < n; k++)
        if (ls - (double)log_sigmas[k] >= 0) low = k;   /* last index where dist >= 0 */
    if (low > n - 2) low = n - 2;
    float lo = log_sigmas[low], hi = log_sigmas[low + 1];
    float den = lo - hi;                                /* float32 - float32 */
    double w = ((double)lo - ls) / (double)den;
    if (w < 0) w = 0;
    else if (w > 1) w = 1;
    return (1.0 - w) * (double)low + w * (double)(low + 1);
}

void tdm_karras_sigmas(double sigma_min, double sigma_max, int64_t n, double *out) {
    const double rho = 7.0;
    tdm_np_linspace(0.0, 1.0, n, out);                  /* ramp */
    double min_inv = pow(sigma_min, 1.0 / rho), max_inv = pow(sigma_max, 1.0 / rho);
    for (int64_t k = 0; k < n; k++) out[k] = pow(max_inv + out[k] * (min_inv - max_inv), rho);
}

float tdm_sched_logf(float x) { return (float)log((double)x); }
float tdm_sched_expf(float x) { return (float)exp((double)x); }

int tdm_sched_index_for_timestep(const float *ts, int n, float t) {
    int first = -1;
    for (int k = 0; k < n; k++) {
        if (ts[k] == t) {
            if (first >= 0) return k;
            first = k;
        }
    }
    return first;
}

/* torch.linspace(a, b, n, dtype=float32) on CPU: float step, the first
 * half counted up from start and the second half down from end, each
 * value one fused multiply-add (as torch's build contracts it). */
static void torch_linspace_f32(double a, double b, int64_t n, float *out) {
    float start = (float)a, end = (float)b;
    if (n == 1) { out[0] = start; return; }
    float step = (end - start) / (float)(n - 1);
    int64_t half = n / 2;
    for (int64_t i = 0; i < n; i++)
        out[i] = i < half ? fmaf(step, (float)i, start) : fmaf(-step, (float)(n - 1 - i), end);
}

/* diffusers betas_for_alpha_bar(N) with the cosine transform, in Python
 * float64, then cast to float32. */
static double alpha_bar_cos(double t) { return pow(cos((t + 0.008) / 1.008 * M_PI / 2), 2.0); }

/* ---- config ---------------------------------------------------------- */

static tdm_status unsupported(const tdm_sched_t *s, const char *key, const char *val,
                              const char *allowed) {
    return tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: %s \"%s\" is not supported by %s (supported: %s)",
                      s->path, key, val, k_class_names[s->kind], allowed);
}

static tdm_status unsupported_true(const tdm_sched_t *s, const tdm_json_t *j, const char *key) {
    int v = 0;
    tdm_status st = tdm_json_bool(j, key, 0, &v);
    if (st != TDM_OK) return st;
    if (v)
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: %s = true is not supported by %s", s->path,
                          key, k_class_names[s->kind]);
    return TDM_OK;
}

/* Reads the betas of the config into betas[N] (float32). */
static tdm_status load_betas(tdm_sched_t *s, const tdm_json_t *j, double beta_start,
                             double beta_end, float *betas) {
    int64_t N = s->num_train_timesteps;
    switch (s->beta_schedule) {
    case TDM_BETAS_LINEAR: torch_linspace_f32(beta_start, beta_end, N, betas); break;
    case TDM_BETAS_SCALED_LINEAR:
        torch_linspace_f32(pow(beta_start, 0.5), pow(beta_end, 0.5), N, betas);
        for (int64_t k = 0; k < N; k++) betas[k] = betas[k] * betas[k];
        break;
    case TDM_BETAS_SQUAREDCOS:
        for (int64_t k = 0; k < N; k++) {
            double t1 = (double)k / (double)N, t2 = (double)(k + 1) / (double)N;
            double b = 1 - alpha_bar_cos(t2) / alpha_bar_cos(t1);
            betas[k] = (float)(b < 0.999 ? b : 0.999);
        }
        break;
    case TDM_BETAS_TRAINED: {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j->root, "trained_betas");
        if (!cJSON_IsArray(a))
            return tdm_errorf(TDM_ERR_FORMAT, "%s: key \"trained_betas\" must be an array",
                              s->path);
        if (cJSON_GetArraySize(a) != N)
            return tdm_errorf(TDM_ERR_MODEL,
                              "%s: \"trained_betas\" has %d entries, num_train_timesteps is %lld",
                              s->path, cJSON_GetArraySize(a), (long long)N);
        int64_t k = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, a) {
            if (!cJSON_IsNumber(e))
                return tdm_errorf(TDM_ERR_FORMAT,
                                  "%s: key \"trained_betas\" entry %lld is not a number", s->path,
                                  (long long)k);
            betas[k++] = (float)e->valuedouble;
        }
        break;
    }
    }
    return TDM_OK;
}

/* alphas_cumprod = torch.cumprod(1 - betas): float32 products accumulated
 * in double (torch's CPU cumprod), each output rounded to float32. */
static void cumprod_alphas(const float *betas, int64_t N, float *ac) {
    double acc = 1.0;
    for (int64_t k = 0; k < N; k++) {
        float a = 1.0f - betas[k];
        acc *= (double)a;
        ac[k] = (float)acc;
    }
}

/* diffusers rescale_zero_terminal_snr, in place on betas[N]. */
static void rescale_zero_terminal_snr(float *betas, int64_t N, float *tmp) {
    cumprod_alphas(betas, N, tmp);
    for (int64_t k = 0; k < N; k++) tmp[k] = sqrtf(tmp[k]);
    float s0 = tmp[0], sT = tmp[N - 1];
    float scale = s0 / (s0 - sT);
    for (int64_t k = 0; k < N; k++) {
        tmp[k] = tmp[k] - sT;
        tmp[k] = tmp[k] * scale;
        tmp[k] = tmp[k] * tmp[k];                       /* alphas_bar */
    }
    float prev = tmp[0];
    betas[0] = 1.0f - tmp[0];
    for (int64_t k = 1; k < N; k++) {
        float cur = tmp[k];
        betas[k] = 1.0f - cur / prev;
        prev = cur;
    }
}

/* The karras/exponential range keys: diffusers reads config.sigma_min and
 * sigma_max whichever class wrote them (from_config keeps unknown keys as
 * hidden config). */
static tdm_status parse_sigma_range(tdm_sched_t *s, const tdm_json_t *j) {
    tdm_status st = TDM_OK;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j->root, "sigma_min");
    s->has_sigma_min = v && !cJSON_IsNull(v);
    if (s->has_sigma_min) TDM_TRY(tdm_json_float(j, "sigma_min", 0, &s->sigma_min));
    v = cJSON_GetObjectItemCaseSensitive(j->root, "sigma_max");
    s->has_sigma_max = v && !cJSON_IsNull(v);
    if (s->has_sigma_max) TDM_TRY(tdm_json_float(j, "sigma_max", 0, &s->sigma_max));
fail:
    return st;
}

/* FlowMatchEulerDiscreteScheduler keys (every other key of the file is
 * ignored, as diffusers' from_config does) and its training sigma range:
 * sigmas = linspace(1, N, N)[::-1] / N in float32, shifted by `shift` in
 * float32 unless use_dynamic_shifting. */
static tdm_status parse_flow_config(tdm_sched_t *s, const tdm_json_t *j) {
    tdm_status st = TDM_OK;
    int64_t N;
    int beta = 0, stochastic = 0;
    char buf[64];
    TDM_TRY(tdm_json_int(j, "num_train_timesteps", 1000, &N));
    if (N < 2 || N > 100000)
        return tdm_errorf(TDM_ERR_MODEL, "%s: num_train_timesteps %lld is out of range [2, 100000]",
                          s->path, (long long)N);
    s->num_train_timesteps = N;
    TDM_TRY(tdm_json_float(j, "shift", 1.0, &s->shift));
    TDM_TRY(tdm_json_bool(j, "use_dynamic_shifting", 0, &s->dynamic_shift));
    TDM_TRY(tdm_json_float(j, "base_shift", 0.5, &s->base_shift));
    TDM_TRY(tdm_json_float(j, "max_shift", 1.15, &s->max_shift));
    TDM_TRY(tdm_json_float(j, "base_image_seq_len", 256, &s->base_seq_len));
    TDM_TRY(tdm_json_float(j, "max_image_seq_len", 4096, &s->max_seq_len));
    TDM_TRY(tdm_json_bool(j, "invert_sigmas", 0, &s->invert_sigmas));
    /* not a FlowMatch key: FluxPipeline checks the config for it */
    TDM_TRY(tdm_json_bool(j, "use_flow_sigmas", 0, &s->use_flow_sigmas));
    TDM_TRY(tdm_json_float(j, "shift_terminal", 0.0, &s->shift_terminal));
    if (s->shift_terminal == 1.0)
        return tdm_errorf(TDM_ERR_MODEL, "%s: shift_terminal 1.0 stretches the schedule by 1/0",
                          s->path);
    TDM_TRY(tdm_json_bool(j, "use_karras_sigmas", 0, &s->use_karras));
    TDM_TRY(tdm_json_bool(j, "use_exponential_sigmas", 0, &s->use_exponential));
    TDM_TRY(tdm_json_bool(j, "use_beta_sigmas", 0, &beta));
    if (s->use_karras + s->use_exponential + beta > 1)
        return tdm_errorf(TDM_ERR_MODEL,
                          "%s: only one of use_karras_sigmas, use_exponential_sigmas and "
                          "use_beta_sigmas can be true", s->path);
    if (beta) return unsupported_true(s, j, "use_beta_sigmas");
    TDM_TRY(tdm_json_str(j, "time_shift_type", "exponential", buf, sizeof buf));
    if (!strcmp(buf, "linear")) s->time_shift_linear = 1;
    else if (strcmp(buf, "exponential"))
        return unsupported(s, "time_shift_type", buf, "exponential, linear");
    TDM_TRY(tdm_json_bool(j, "stochastic_sampling", 0, &stochastic));
    if (stochastic) return unsupported_true(s, j, "stochastic_sampling");
    TDM_TRY(parse_sigma_range(s, j));
    float hi = (float)N / (float)N, lo = 1.0f / (float)N;   /* timesteps / N */
    if (!s->dynamic_shift) {
        float sh = (float)s->shift, sh1 = (float)(s->shift - 1.0);
        hi = sh * hi / (1.0f + sh1 * hi);
        lo = sh * lo / (1.0f + sh1 * lo);
    }
    s->flow_sigma_max = hi;
    s->flow_sigma_min = lo;
fail:
    return st;
}

/* The scheduler class: class_name when given, else the config's
 * "_class_name"; sets s->kind. */
static tdm_status resolve_class(tdm_sched_t *s, const tdm_json_t *j, const char *class_name) {
    tdm_status st = TDM_OK;
    char cls[128];
    if (class_name) {
        if (strlen(class_name) >= sizeof cls)
            return tdm_errorf(TDM_ERR_UNSUPPORTED, "scheduler class \"%.64s...\" is not supported (supported: %s)", class_name, SUPPORTED_LIST);
        strcpy(cls, class_name);
    } else {
        TDM_TRY(tdm_json_str(j, "_class_name", "", cls, sizeof cls));
        if (!cls[0])
            return tdm_errorf(TDM_ERR_FORMAT,
                              "%s: no \"_class_name\" and no scheduler class given (supported: %s)",
                              s->path, SUPPORTED_LIST);
    }
    s->kind = TDM_SCHED_KIND_COUNT;
    for (int k = 0; k < TDM_SCHED_KIND_COUNT; k++)
        if (strcmp(cls, k_class_names[k]) == 0) s->kind = (tdm_sched_kind)k;
    if (s->kind == TDM_SCHED_KIND_COUNT)
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: scheduler class \"%s\" is not supported (supported: %s)",
                          s->path, cls, SUPPORTED_LIST);
fail:
    return st;
}

/* beta_start/beta_end and beta_schedule (trained_betas, when present and
 * not null, wins over beta_schedule). */
static tdm_status parse_beta_keys(tdm_sched_t *s, const tdm_json_t *j, double *beta_start,
                                  double *beta_end) {
    tdm_status st = TDM_OK;
    char buf[64];
    TDM_TRY(tdm_json_float(j, "beta_start", 0.0001, beta_start));
    TDM_TRY(tdm_json_float(j, "beta_end", 0.02, beta_end));
    TDM_TRY(tdm_json_str(j, "beta_schedule", "linear", buf, sizeof buf));
    if (cJSON_GetObjectItemCaseSensitive(j->root, "trained_betas") &&
        !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j->root, "trained_betas")))
        s->beta_schedule = TDM_BETAS_TRAINED;
    else if (!strcmp(buf, "linear")) s->beta_schedule = TDM_BETAS_LINEAR;
    else if (!strcmp(buf, "scaled_linear")) s->beta_schedule = TDM_BETAS_SCALED_LINEAR;
    else if (!strcmp(buf, "squaredcos_cap_v2")) s->beta_schedule = TDM_BETAS_SQUAREDCOS;
    else return unsupported(s, "beta_schedule", buf, "linear, scaled_linear, squaredcos_cap_v2");
fail:
    return st;
}

/* timestep_spacing (default "leading" for PNDM and DDIM, else "linspace")
 * and steps_offset in [0, N). */
static tdm_status parse_spacing_keys(tdm_sched_t *s, const tdm_json_t *j) {
    tdm_status st = TDM_OK;
    int64_t N = s->num_train_timesteps;
    int is_alpha = s->kind == TDM_SCHED_PNDM || s->kind == TDM_SCHED_DDIM;
    char buf[64];
    TDM_TRY(tdm_json_str(j, "timestep_spacing", is_alpha ? "leading" : "linspace", buf, sizeof buf));
    if (!strcmp(buf, "linspace")) s->spacing = TDM_SPACING_LINSPACE;
    else if (!strcmp(buf, "leading")) s->spacing = TDM_SPACING_LEADING;
    else if (!strcmp(buf, "trailing")) s->spacing = TDM_SPACING_TRAILING;
    else return unsupported(s, "timestep_spacing", buf, "linspace, leading, trailing");
    TDM_TRY(tdm_json_int(j, "steps_offset", 0, &s->steps_offset));
    if (s->steps_offset < 0 || s->steps_offset >= N)
        return tdm_errorf(TDM_ERR_MODEL, "%s: steps_offset %lld is out of range [0, %lld)",
                          s->path, (long long)s->steps_offset, (long long)N);
fail:
    return st;
}

/* prediction_type: "sample" is not offered by PNDM and Euler ancestral;
 * "original_sample" is Euler's alias of "sample". */
static tdm_status parse_prediction_type(tdm_sched_t *s, const tdm_json_t *j) {
    tdm_status st = TDM_OK;
    tdm_sched_kind kind = s->kind;
    char buf[64];
    TDM_TRY(tdm_json_str(j, "prediction_type", "epsilon", buf, sizeof buf));
    if (!strcmp(buf, "epsilon")) s->pred = TDM_PRED_EPSILON;
    else if (!strcmp(buf, "v_prediction")) s->pred = TDM_PRED_V;
    else if (!strcmp(buf, "sample") && kind != TDM_SCHED_PNDM && kind != TDM_SCHED_EULER_A)
        s->pred = TDM_PRED_SAMPLE;
    else if (!strcmp(buf, "original_sample") && kind == TDM_SCHED_EULER) s->pred = TDM_PRED_SAMPLE;
    else
        return unsupported(s, "prediction_type", buf,
                           (kind == TDM_SCHED_PNDM || kind == TDM_SCHED_EULER_A)
                               ? "epsilon, v_prediction"
                               : "epsilon, v_prediction, sample");
fail:
    return st;
}

/* The sigma-shape keys Euler and DPM-Solver++ share: use_karras_sigmas
 * and final_sigmas_type; exponential and beta sigmas are refused. */
static tdm_status parse_sigma_shape_keys(tdm_sched_t *s, const tdm_json_t *j) {
    tdm_status st = TDM_OK;
    char buf[64];
    TDM_TRY(tdm_json_bool(j, "use_karras_sigmas", 0, &s->use_karras));
    TDM_TRY(unsupported_true(s, j, "use_exponential_sigmas"));
    TDM_TRY(unsupported_true(s, j, "use_beta_sigmas"));
    TDM_TRY(tdm_json_str(j, "final_sigmas_type", "zero", buf, sizeof buf));
    if (!strcmp(buf, "sigma_min")) s->final_sigma_min = 1;
    else if (strcmp(buf, "zero")) return unsupported(s, "final_sigmas_type", buf, "zero, sigma_min");
fail:
    return st;
}

/* EulerDiscreteScheduler keys: linear interpolation only; discrete or
 * continuous timesteps (continuous not with v_prediction). */
static tdm_status parse_euler_keys(tdm_sched_t *s, const tdm_json_t *j) {
    tdm_status st = TDM_OK;
    char buf[64];
    TDM_TRY(tdm_json_str(j, "interpolation_type", "linear", buf, sizeof buf));
    if (strcmp(buf, "linear")) return unsupported(s, "interpolation_type", buf, "linear");
    TDM_TRY(tdm_json_str(j, "timestep_type", "discrete", buf, sizeof buf));
    if (strcmp(buf, "discrete") && strcmp(buf, "continuous"))
        return unsupported(s, "timestep_type", buf, "discrete");
    if (!strcmp(buf, "continuous") && s->pred == TDM_PRED_V)
        return unsupported(s, "timestep_type", buf, "discrete (continuous with v_prediction is not)");
fail:
    return st;
}

/* DPMSolverMultistepScheduler keys: solver order 1-3, dpmsolver++ (or
 * deis, which diffusers maps to it), midpoint or heun solver. */
static tdm_status parse_dpm_keys(tdm_sched_t *s, const tdm_json_t *j) {
    tdm_status st = TDM_OK;
    int64_t order;
    char buf[64];
    TDM_TRY(tdm_json_int(j, "solver_order", 2, &order));
    if (order < 1 || order > 3)
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: solver_order %lld is not supported (1, 2 or 3)",
                          s->path, (long long)order);
    s->solver_order = (int)order;
    TDM_TRY(tdm_json_str(j, "algorithm_type", "dpmsolver++", buf, sizeof buf));
    if (strcmp(buf, "dpmsolver++") && strcmp(buf, "deis"))   /* diffusers maps deis to dpmsolver++ */
        return unsupported(s, "algorithm_type", buf, "dpmsolver++");
    TDM_TRY(tdm_json_str(j, "solver_type", "midpoint", buf, sizeof buf));
    if (!strcmp(buf, "heun")) s->solver_heun = 1;
    else if (strcmp(buf, "midpoint") && strcmp(buf, "logrho") && strcmp(buf, "bh1") && strcmp(buf, "bh2"))
        return unsupported(s, "solver_type", buf, "midpoint, heun");
    TDM_TRY(tdm_json_bool(j, "lower_order_final", 1, &s->lower_order_final));
    TDM_TRY(tdm_json_bool(j, "euler_at_final", 0, &s->euler_at_final));
    TDM_TRY(tdm_json_float(j, "lambda_min_clipped", -INFINITY, &s->lambda_min_clipped));
    TDM_TRY(unsupported_true(s, j, "use_lu_lambdas"));
    TDM_TRY(unsupported_true(s, j, "use_flow_sigmas"));
    TDM_TRY(tdm_json_str(j, "variance_type", "", buf, sizeof buf));
    if (buf[0]) return unsupported(s, "variance_type", buf, "null");
fail:
    return st;
}

/* The keys only some classes read, in a fixed order (the first bad key is
 * the one reported). */
static tdm_status parse_class_keys(tdm_sched_t *s, const tdm_json_t *j) {
    tdm_status st = TDM_OK;
    tdm_sched_kind kind = s->kind;
    if (kind == TDM_SCHED_PNDM || kind == TDM_SCHED_DDIM) {
        TDM_TRY(tdm_json_bool(j, "set_alpha_to_one", kind == TDM_SCHED_DDIM, &s->set_alpha_to_one));
    }
    if (kind == TDM_SCHED_PNDM) TDM_TRY(tdm_json_bool(j, "skip_prk_steps", 0, &s->skip_prk_steps));
    if (kind == TDM_SCHED_DDIM) {
        TDM_TRY(tdm_json_bool(j, "clip_sample", 1, &s->clip_sample));
        TDM_TRY(tdm_json_float(j, "clip_sample_range", 1.0, &s->clip_sample_range));
    }
    if (kind == TDM_SCHED_DDIM || kind == TDM_SCHED_DPM) TDM_TRY(unsupported_true(s, j, "thresholding"));
    if (kind == TDM_SCHED_EULER || kind == TDM_SCHED_DPM) TDM_TRY(parse_sigma_shape_keys(s, j));
    TDM_TRY(parse_sigma_range(s, j));
    if (kind == TDM_SCHED_EULER) TDM_TRY(parse_euler_keys(s, j));
    if (kind == TDM_SCHED_DPM) TDM_TRY(parse_dpm_keys(s, j));
fail:
    return st;
}

/* The training tables: alphas_cumprod[N] and train_sigmas[N] (owned by s,
 * freed with it) and final_alpha_cumprod, from the betas of the config.
 * The scratch row is zeroed so that the compiler, which cannot see N >= 2,
 * does not take it as read before written. */
static tdm_status build_training_tables(tdm_sched_t *s, const tdm_json_t *j, int64_t N,
                                        double beta_start, double beta_end) {
    tdm_status st = TDM_OK;
    float *betas = malloc((size_t)N * sizeof *betas);
    float *tmp = calloc((size_t)N, sizeof *tmp);
    s->alphas_cumprod = malloc((size_t)N * sizeof(float));
    s->train_sigmas = malloc((size_t)N * sizeof(float));
    if (!betas || !tmp || !s->alphas_cumprod || !s->train_sigmas) {
        st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory for scheduler tables", s->path);
        goto fail;
    }
    TDM_TRY(load_betas(s, j, beta_start, beta_end, betas));
    if (s->rescale_zero_snr) rescale_zero_terminal_snr(betas, N, tmp);
    cumprod_alphas(betas, N, s->alphas_cumprod);
    if (s->rescale_zero_snr && s->kind != TDM_SCHED_DDIM) s->alphas_cumprod[N - 1] = 0x1p-24f;
    s->final_alpha_cumprod = s->set_alpha_to_one ? 1.0f : s->alphas_cumprod[0];
    for (int64_t k = 0; k < N; k++) {
        float ac = s->alphas_cumprod[k];
        s->train_sigmas[k] = sqrtf((1.0f - ac) / ac);
    }
fail:
    free(betas);
    free(tmp);
    return st;
}

/* Reads a scheduler config into s: the class, then the keys every
 * non-flow class shares, then the per-class keys (the first bad key is the
 * one reported), then the training tables. */
static tdm_status parse_config(tdm_sched_t *s, const tdm_json_t *j, const char *class_name) {
    tdm_status st = TDM_OK;
    int64_t N;
    double beta_start, beta_end;
    TDM_TRY(resolve_class(s, j, class_name));
    if (s->kind == TDM_SCHED_FLOW) return parse_flow_config(s, j);
    TDM_TRY(tdm_json_int(j, "num_train_timesteps", 1000, &N));
    if (N < 2 || N > 100000)
        return tdm_errorf(TDM_ERR_MODEL, "%s: num_train_timesteps %lld is out of range [2, 100000]",
                          s->path, (long long)N);
    s->num_train_timesteps = N;
    TDM_TRY(parse_beta_keys(s, j, &beta_start, &beta_end));
    TDM_TRY(parse_spacing_keys(s, j));
    TDM_TRY(parse_prediction_type(s, j));
    if (s->kind != TDM_SCHED_PNDM)
        TDM_TRY(tdm_json_bool(j, "rescale_betas_zero_snr", 0, &s->rescale_zero_snr));
    TDM_TRY(parse_class_keys(s, j));
    TDM_TRY(build_training_tables(s, j, N, beta_start, beta_end));
fail:
    return st;
}

/* ---- public ---------------------------------------------------------- */

tdm_status tdm_sched_create(tdm_sched_t **out, const char *config_path, const char *class_name) {
    tdm_status st = TDM_OK;
    tdm_json_t j = {0};
    tdm_sched_t *s = NULL;
    *out = NULL;
    if (!config_path) return tdm_errorf(TDM_ERR_INVALID_ARG, "scheduler: no config path given");
    s = calloc(1, sizeof *s);
    if (!s) return tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory for scheduler", config_path);
    snprintf(s->path, sizeof s->path, "%s", config_path);
    TDM_TRY(tdm_json_load(&j, config_path));
    TDM_TRY(parse_config(s, &j, class_name));
    tdm_json_free(&j);
    *out = s;
    return TDM_OK;
fail:
    tdm_json_free(&j);
    tdm_sched_free(s);
    return st;
}

static void free_schedule(tdm_sched_t *s) {
    free(s->ts_int);
    free(s->ts);
    free(s->sigmas);
    free(s->buf);
    s->ts_int = NULL;
    s->ts = NULL;
    s->sigmas = NULL;
    s->buf = NULL;
    s->len = 0;
    s->state_n = 0;
}

void tdm_sched_free(tdm_sched_t *s) {
    if (!s) return;
    free_schedule(s);
    free(s->alphas_cumprod);
    free(s->train_sigmas);
    free(s);
}

const char *tdm_sched_class(const tdm_sched_t *s) { return k_class_names[s->kind]; }

/* Drops the schedule and per-run state and checks the step count
 * (1 .. num_train_timesteps; flow schedulers, whose timesteps are not
 * indices into a table, 1 .. 100000). */
static tdm_status reset_run(tdm_sched_t *s, int n) {
    free_schedule(s);
    s->steps_taken = 0;
    s->n_ets = 0;
    s->has_cur_sample = 0;
    s->lower_order_nums = 0;
    s->n_prk = 0;
    s->begin = 0;
    s->init_noise_sigma = 1.0f;
    int64_t max = s->kind == TDM_SCHED_FLOW ? 100000 : s->num_train_timesteps;
    if (n < 1 || n > max)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: num_inference_steps %d is out of range [1, %lld]",
                          s->path, n, (long long)max);
    s->num_inference_steps = n;
    return TDM_OK;
}

tdm_status tdm_sched_set_timesteps(tdm_sched_t *s, int n) {
    tdm_status st = reset_run(s, n);
    if (st != TDM_OK) return st;
    switch (s->kind) {
    case TDM_SCHED_PNDM:
    case TDM_SCHED_DDIM: return tdm_sched_alpha_set_timesteps(s, n);
    case TDM_SCHED_EULER:
    case TDM_SCHED_EULER_A: return tdm_sched_euler_set_timesteps(s, n);
    case TDM_SCHED_DPM: return tdm_sched_dpm_set_timesteps(s, n);
    case TDM_SCHED_FLOW: return tdm_sched_flow_set_timesteps(s, n, NULL, NAN);
    default: break;
    }
    return tdm_errorf(TDM_ERR_INTERNAL, "scheduler kind %d", (int)s->kind);
}

tdm_status tdm_sched_set_timesteps_flow(tdm_sched_t *s, int n, const float *sigmas, double mu) {
    if (s->kind != TDM_SCHED_FLOW)
        return tdm_errorf(TDM_ERR_INVALID_ARG,
                          "%s: %s is not a flow-matching scheduler (pipeline sigmas and mu need "
                          "FlowMatchEulerDiscreteScheduler)", s->path, k_class_names[s->kind]);
    tdm_status st = reset_run(s, n);
    if (st != TDM_OK) return st;
    /* FluxPipeline passes no sigmas when the config has use_flow_sigmas */
    if (s->use_flow_sigmas) return tdm_sched_flow_set_timesteps(s, n, NULL, mu);
    if (sigmas) return tdm_sched_flow_set_timesteps(s, n, sigmas, mu);
    /* FluxPipeline: np.linspace(1.0, 1 / n, n), handed over as float32 */
    double *d = malloc((size_t)n * sizeof *d);
    float *f = malloc((size_t)n * sizeof *f);
    if (!d || !f) {
        st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory for %d sigmas", s->path, n);
    } else {
        tdm_np_linspace(1.0, 1.0 / (double)n, n, d);
        for (int k = 0; k < n; k++) f[k] = (float)d[k];
        st = tdm_sched_flow_set_timesteps(s, n, f, mu);
    }
    free(d);
    free(f);
    return st;
}

double tdm_sched_flux_mu(const tdm_sched_t *s, int64_t image_seq_len) {
    if (s->kind != TDM_SCHED_FLOW || s->max_seq_len == s->base_seq_len) return NAN;
    double m = (s->max_shift - s->base_shift) / (s->max_seq_len - s->base_seq_len);
    double b = s->base_shift - m * s->base_seq_len;
    return (double)image_seq_len * m + b;
}

int tdm_sched_is_flow(const tdm_sched_t *s) { return s->kind == TDM_SCHED_FLOW; }

int tdm_sched_len(const tdm_sched_t *s) { return s->len; }

float tdm_sched_timestep(const tdm_sched_t *s, int i) {
    if (i < 0 || i >= s->len) return NAN;
    return s->ts[i];
}

float tdm_sched_sigma(const tdm_sched_t *s, int i) {
    if (!s->sigmas || i < 0 || i > s->len) return 0.0f;
    return s->sigmas[i];
}

float tdm_sched_init_noise_sigma(const tdm_sched_t *s) { return s->init_noise_sigma; }

void tdm_sched_scale_model_input(tdm_sched_t *s, float *x, int64_t n, int i) {
    if (s->kind != TDM_SCHED_EULER && s->kind != TDM_SCHED_EULER_A) return;
    int si = s->begin + i;
    if (i < 0 || si >= s->len) return;
    float sigma = s->sigmas[si];
    float d = sqrtf(sigma * sigma + 1.0f);
    for (int64_t k = 0; k < n; k++) x[k] = x[k] / d;
}

tdm_status tdm_sched_state_alloc(tdm_sched_t *s, int64_t n) {
    if (s->state_n == n) return TDM_OK;
    if (s->state_n != 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG,
                          "%s: scheduler step got %lld values, the run started with %lld",
                          s->path, (long long)n, (long long)s->state_n);
    int nbuf = s->kind == TDM_SCHED_PNDM ? 7 : s->kind == TDM_SCHED_DPM ? 4 : 1;
    int64_t total;
    if (!tdm_mul_ok(n, nbuf, &total) || total > (int64_t)(SIZE_MAX / sizeof(float)))
        return tdm_errorf(TDM_ERR_NOMEM, "%s: scheduler state of %lld values is too large",
                          s->path, (long long)n);
    s->buf = malloc((size_t)total * sizeof(float));
    if (!s->buf)
        return tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory for scheduler state (%lld values)",
                          s->path, (long long)total);
    float *p = s->buf;
    s->tmp = p; p += n;
    if (s->kind == TDM_SCHED_PNDM) {
        for (int k = 0; k < 4; k++) { s->ets[k] = p; p += n; }
        s->cur_sample = p; p += n;
        s->cur_model_output = p; p += n;
    } else if (s->kind == TDM_SCHED_DPM) {
        for (int k = 0; k < 3; k++) { s->mo[k] = p; p += n; }
    }
    s->state_n = n;
    return TDM_OK;
}

tdm_status tdm_sched_step(tdm_sched_t *s, int i, const float *model_out, float *sample,
                          int64_t B, int64_t item, tdm_rng_t *rngs) {
    int64_t n;
    if (s->len == 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: scheduler step before set_timesteps", s->path);
    if (i < 0 || i >= s->len)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: scheduler step %d is out of range [0, %d)",
                          s->path, i, s->len);
    if (B < 1 || item < 1 || !tdm_mul_ok(B, item, &n))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: scheduler step with batch %lld x %lld values",
                          s->path, (long long)B, (long long)item);
    if ((s->kind == TDM_SCHED_PNDM || s->kind == TDM_SCHED_DPM) && i != s->steps_taken)
        return tdm_errorf(TDM_ERR_INVALID_ARG,
                          "%s: %s must be stepped in order: got step %d, expected %d", s->path,
                          k_class_names[s->kind], i, s->steps_taken);
    tdm_status st = tdm_sched_state_alloc(s, n);
    if (st != TDM_OK) return st;
    switch (s->kind) {
    case TDM_SCHED_PNDM: st = tdm_sched_pndm_step(s, i, model_out, sample, n); break;
    case TDM_SCHED_DDIM: st = tdm_sched_ddim_step(s, i, model_out, sample, n); break;
    case TDM_SCHED_EULER:
    case TDM_SCHED_EULER_A: st = tdm_sched_euler_step(s, i, model_out, sample, B, item, rngs); break;
    case TDM_SCHED_DPM: st = tdm_sched_dpm_step(s, i, model_out, sample, n); break;
    case TDM_SCHED_FLOW: st = tdm_sched_flow_step(s, i, model_out, sample, n); break;
    default: st = tdm_errorf(TDM_ERR_INTERNAL, "scheduler kind %d", (int)s->kind);
    }
    if (st == TDM_OK) s->steps_taken++;
    return st;
}
