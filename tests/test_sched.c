// label: golden
/* test_sched.c — the schedulers against diffusers: for every case in
 * tests/fixtures/sched/cases.json (made by tools/ref/sched_ref.py) the
 * timesteps, sigmas, init_noise_sigma and the sample after every step of a
 * pipeline-shaped loop with a deterministic fake model (FlowMatch cases
 * also FluxPipeline's mu, and the schedule set as FluxPipeline sets it);
 * plus error paths (unknown class, malformed and unsupported config values,
 * misuse). */
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/rng.h"
#include "io/safetensors.h"
#include "sched/sched.h"
#include "test.h"

#define FIX TDM_FIXTURES "/sched"

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    if (buf) buf[n] = 0;
    fclose(f);
    return buf;
}

static const float *tensor(tdm_safetensors_t *st, int idx, const char *key, int64_t want) {
    char name[64];
    snprintf(name, sizeof name, "c%d.%s", idx, key);
    const tdm_st_tensor_t *t = tdm_safetensors_find(st, name);
    if (!t || t->dtype != TDM_F32) return NULL;
    if (want >= 0 && t->nbytes != want * 4) return NULL;
    return (const float *)t->data;
}

/* per-class worst errors, for the summary line */
static double worst_traj[8], worst_sigma[8], worst_ts[8];
static int n_cases[8], n_bitexact[8], n_loose[8];
static const char *class_names[] = {"PNDMScheduler", "DDIMScheduler", "EulerDiscreteScheduler",
                                    "EulerAncestralDiscreteScheduler",
                                    "DPMSolverMultistepScheduler",
                                    "FlowMatchEulerDiscreteScheduler"};
#define N_CLASSES 6
static double worst_mu;

static int class_idx(const char *c) {
    for (int k = 0; k < N_CLASSES; k++)
        if (!strcmp(c, class_names[k])) return k;
    return N_CLASSES;
}

/* Sets the schedule of a case: tdm_sched_set_timesteps, or for FlowMatch
 * cases made as FluxPipeline does (mode "pipeline") mu from image_seq_len
 * (checked against diffusers' calculate_shift) and the pipeline or listed
 * sigmas. */
static tdm_status set_case_timesteps(tdm_sched_t *s, const cJSON *c, int idx, int steps) {
    const cJSON *flow = cJSON_GetObjectItem(c, "flow");
    CHECK_MSG(tdm_sched_is_flow(s) == (flow != NULL), "case %d: is_flow %d", idx,
              tdm_sched_is_flow(s));
    if (!flow || strcmp(cJSON_GetObjectItem(flow, "mode")->valuestring, "pipeline"))
        return tdm_sched_set_timesteps(s, steps);
    int64_t L = (int64_t)cJSON_GetObjectItem(flow, "image_seq_len")->valuedouble;
    double want = cJSON_GetObjectItem(flow, "mu")->valuedouble;
    double mu = tdm_sched_flux_mu(s, L);
    double e = fabs(mu - want);
    if (e > worst_mu) worst_mu = e;
    CHECK_MSG(mu == want, "case %d: mu for %lld tokens %.17g, diffusers %.17g", idx,
              (long long)L, mu, want);
    const cJSON *list = cJSON_GetObjectItem(flow, "sigmas");
    float sig[64];
    if (!cJSON_IsArray(list)) return tdm_sched_set_timesteps_flow(s, steps, NULL, mu);
    int k = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, list) if (k < 64) sig[k++] = (float)v->valuedouble;
    CHECK(k == steps);
    return tdm_sched_set_timesteps_flow(s, steps, sig, mu);
}

TEST(golden_trajectories) {
    char *text = read_text(FIX "/cases.json");
    CHECK_MSG(text != NULL, "cannot read %s", FIX "/cases.json");
    if (!text) return;
    cJSON *root = cJSON_Parse(text);
    free(text);
    CHECK_MSG(root != NULL, "%s is not valid JSON", FIX "/cases.json");
    tdm_safetensors_t *st = NULL;
    tdm_status s0 = tdm_safetensors_open(&st, FIX "/sched_ref.safetensors");
    CHECK_MSG(s0 == TDM_OK, "%s", tdm_last_error());
    if (s0 != TDM_OK || !root) { cJSON_Delete(root); return; }
    int B = cJSON_GetObjectItem(root, "batch")->valueint;
    int64_t item = cJSON_GetObjectItem(root, "item")->valueint;
    const cJSON *seeds = cJSON_GetObjectItem(root, "seeds");
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    int64_t n = B * item;
    float *lat = malloc((size_t)n * 4), *xin = malloc((size_t)n * 4), *mo = malloc((size_t)n * 4);
    tdm_rng_t *rngs = malloc((size_t)B * sizeof *rngs);
    int idx = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *cls = cJSON_GetObjectItem(c, "class")->valuestring;
        const char *cfg = cJSON_GetObjectItem(c, "config")->valuestring;
        int steps = cJSON_GetObjectItem(c, "steps")->valueint;
        int len = cJSON_GetObjectItem(c, "len")->valueint;
        int has_sigmas = cJSON_IsTrue(cJSON_GetObjectItem(c, "has_sigmas"));
        double sens = cJSON_GetObjectItem(c, "sensitivity")->valuedouble;
        int ci = class_idx(cls);
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", FIX, cfg);
        tdm_sched_t *s = NULL;
        tdm_status r = tdm_sched_create(&s, path, cls);
        CHECK_MSG(r == TDM_OK, "case %d %s %s: %s", idx, cls, cfg, tdm_last_error());
        if (r != TDM_OK) { idx++; continue; }
        CHECK(strcmp(tdm_sched_class(s), cls) == 0);
        r = set_case_timesteps(s, c, idx, steps);
        CHECK_MSG(r == TDM_OK, "case %d %s %s steps %d: %s", idx, cls, cfg, steps, tdm_last_error());
        CHECK_MSG(tdm_sched_len(s) == len, "case %d %s %s steps %d: len %d, diffusers %d", idx,
                  cls, cfg, steps, tdm_sched_len(s), len);
        const float *ts = tensor(st, idx, "timesteps", len);
        const float *sg = has_sigmas ? tensor(st, idx, "sigmas", len + 1) : NULL;
        const float *ins = tensor(st, idx, "init_noise_sigma", 1);
        const float *init = tensor(st, idx, "init", n);
        const float *traj = tensor(st, idx, "traj", (int64_t)len * n);
        CHECK_MSG(ts && ins && init && traj && (!has_sigmas || sg), "case %d: fixture tensors", idx);
        if (r != TDM_OK || tdm_sched_len(s) != len || !ts || !ins || !init || !traj ||
            (has_sigmas && !sg)) {
            tdm_sched_free(s);
            idx++;
            continue;
        }
        n_cases[ci]++;
        /* schedule */
        /* integer timesteps exactly; the fractional ones of Euler + Karras
         * (from numpy's float32 log of MKL-sqrt sigmas) to 1e-6 relative */
        int ts_bad = 0;
        double ts_err = 0;
        for (int i = 0; i < len; i++) {
            ts_bad += tdm_sched_timestep(s, i) != ts[i];
            double d = fabs((double)tdm_sched_timestep(s, i) - ts[i]) / fmax(1.0, fabs(ts[i]));
            if (d > ts_err) ts_err = d;
        }
        if (ts_err > worst_ts[ci]) worst_ts[ci] = ts_err;
        CHECK_MSG(ts_bad == 0 || ts_err <= 1e-6,
                  "case %d %s %s steps %d: %d timesteps differ, worst rel %.3g", idx, cls, cfg,
                  steps, ts_bad, ts_err);
        if (sg) {
            float mine[1100];
            for (int i = 0; i <= len && i < 1100; i++) mine[i] = tdm_sched_sigma(s, i);
            double e = test_rel_err(mine, sg, len + 1);
            if (e > worst_sigma[ci]) worst_sigma[ci] = e;
            CHECK_MSG(e <= 1e-6, "case %d %s %s steps %d: sigmas rel err %.3g", idx, cls, cfg,
                      steps, e);
        }
        float mine_ins = tdm_sched_init_noise_sigma(s);
        CHECK_MSG(fabsf(mine_ins - ins[0]) <= 1e-6f * fabsf(ins[0]),
                  "case %d: init_noise_sigma %.9g vs %.9g", idx, mine_ins, ins[0]);
        /* initial latents from per-item generators */
        int b = 0;
        const cJSON *sd;
        cJSON_ArrayForEach(sd, seeds) {
            tdm_rng_seed(&rngs[b], (uint64_t)sd->valuedouble);
            tdm_rng_randn(&rngs[b], lat + b * item, item);
            b++;
        }
        double e_init = test_rel_err(lat, init, (long)n);
        CHECK_MSG(e_init == 0, "case %d: initial latents rel err %.3g", idx, e_init);
        memcpy(lat, init, (size_t)n * 4);
        for (int64_t k = 0; k < n; k++) lat[k] = lat[k] * mine_ins;
        /* the loop */
        double worst = 0;
        int worst_i = -1, exact = 1;
        for (int i = 0; i < len; i++) {
            memcpy(xin, lat, (size_t)n * 4);
            tdm_sched_scale_model_input(s, xin, n, i);
            for (int64_t j = 0; j < n; j++)
                mo[j] = 0.125f * xin[j] + (float)(((j * 7 + i * 13) % 17) - 8) * 0.0625f;
            r = tdm_sched_step(s, i, mo, lat, B, item, rngs);
            CHECK_MSG(r == TDM_OK, "case %d step %d: %s", idx, i, tdm_last_error());
            if (r != TDM_OK) break;
            double e = test_rel_err(lat, traj + (int64_t)i * n, (long)n);
            if (e != 0) exact = 0;
            if (!(e <= worst)) { worst = e; worst_i = i; }
        }
        if (worst > worst_traj[ci]) worst_traj[ci] = worst;
        n_bitexact[ci] += exact;
        /* 1e-5, or 4x diffusers' own change under a one-ulp move of its
         * tables where the case is ill-conditioned (zero-terminal-SNR Euler) */
        double tol = ci == 5 ? 1e-6 : fmax(1e-5, 4 * sens);   /* FlowMatch: no tables */
        if (worst > 1e-5) n_loose[ci]++;
        CHECK_MSG(worst <= tol,
                  "case %d %s %s steps %d: trajectory rel err %.3g at step %d (tol %.3g)", idx,
                  cls, cfg, steps, worst, worst_i, tol);
        tdm_sched_free(s);
        idx++;
    }
    printf("  FluxPipeline mu: worst abs err %.3g\n", worst_mu);
    for (int k = 0; k < N_CLASSES; k++)
        printf("  %-32s %3d cases (%d over 1e-5, ill-conditioned), %3d bit-exact, worst rel err: "
               "trajectory %.3g, sigmas %.3g, timesteps %.3g\n", class_names[k], n_cases[k],
               n_loose[k], n_bitexact[k], worst_traj[k], worst_sigma[k], worst_ts[k]);
    CHECK(idx == cJSON_GetArraySize(cases));
    free(lat);
    free(xin);
    free(mo);
    free(rngs);
    tdm_safetensors_close(st);
    cJSON_Delete(root);
}

static const char *write_tmp(const char *text) {
    static char path[256];
    snprintf(path, sizeof path, "/tmp/tdm_test_sched_%d.json", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    fputs(text, f);
    fclose(f);
    return path;
}

TEST(unknown_class) {
    tdm_sched_t *s = (tdm_sched_t *)1;
    tdm_status r = tdm_sched_create(&s, FIX "/config_sd15.json", "FooScheduler");
    CHECK(r == TDM_ERR_UNSUPPORTED);
    CHECK(s == NULL);
    CHECK_MSG(strstr(tdm_last_error(), "FooScheduler") &&
                  strstr(tdm_last_error(), "DPMSolverMultistepScheduler"),
              "%s", tdm_last_error());
    const char *p = write_tmp("{\"_class_name\": \"LMSDiscreteScheduler\"}");
    r = tdm_sched_create(&s, p, NULL);
    CHECK(r == TDM_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(tdm_last_error(), "LMSDiscreteScheduler"), "%s", tdm_last_error());
    p = write_tmp("{\"beta_start\": 0.001}");
    r = tdm_sched_create(&s, p, NULL);   /* no class anywhere */
    CHECK(r == TDM_ERR_FORMAT);
    unlink(p);
}

TEST(malformed_config) {
    tdm_sched_t *s = NULL;
    const char *p = write_tmp("{\"_class_name\": \"DDIMScheduler\", \"beta_start\": \"abc\"}");
    tdm_status r = tdm_sched_create(&s, p, NULL);
    CHECK(r == TDM_ERR_FORMAT);
    CHECK_MSG(strstr(tdm_last_error(), "beta_start") && strstr(tdm_last_error(), p), "%s",
              tdm_last_error());
    p = write_tmp("{\"_class_name\": \"PNDMScheduler\", \"skip_prk_steps\": 1}");
    CHECK(tdm_sched_create(&s, p, NULL) == TDM_ERR_FORMAT);
    CHECK_MSG(strstr(tdm_last_error(), "skip_prk_steps"), "%s", tdm_last_error());
    p = write_tmp("{\"_class_name\": \"EulerDiscreteScheduler\", \"num_train_timesteps\": 10.5}");
    CHECK(tdm_sched_create(&s, p, NULL) == TDM_ERR_FORMAT);
    p = write_tmp("{\"_class_name\": \"DDIMScheduler\", \"trained_betas\": [0.1, \"x\"], "
                  "\"num_train_timesteps\": 2}");
    CHECK(tdm_sched_create(&s, p, NULL) == TDM_ERR_FORMAT);
    p = write_tmp("{\"_class_name\": \"DDIMScheduler\", ");
    CHECK(tdm_sched_create(&s, p, NULL) == TDM_ERR_FORMAT);
    unlink(p);
    CHECK(tdm_sched_create(&s, FIX "/no_such_config.json", "DDIMScheduler") == TDM_ERR_IO);
    CHECK(s == NULL);
}

TEST(unsupported_values) {
    tdm_sched_t *s = NULL;
    const char *bad[] = {
        "{\"_class_name\": \"DPMSolverMultistepScheduler\", \"algorithm_type\": \"sde-dpmsolver++\"}",
        "{\"_class_name\": \"DPMSolverMultistepScheduler\", \"algorithm_type\": \"dpmsolver\"}",
        "{\"_class_name\": \"DDIMScheduler\", \"thresholding\": true}",
        "{\"_class_name\": \"DDIMScheduler\", \"beta_schedule\": \"sigmoid\"}",
        "{\"_class_name\": \"DDIMScheduler\", \"timestep_spacing\": \"middle\"}",
        "{\"_class_name\": \"PNDMScheduler\", \"prediction_type\": \"sample\"}",
        "{\"_class_name\": \"EulerDiscreteScheduler\", \"interpolation_type\": \"log_linear\"}",
        "{\"_class_name\": \"EulerDiscreteScheduler\", \"use_exponential_sigmas\": true}",
        "{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"use_beta_sigmas\": true}",
        "{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"stochastic_sampling\": true}",
        "{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"time_shift_type\": \"cosine\"}",
    };
    const char *key[] = {"algorithm_type", "algorithm_type", "thresholding", "beta_schedule",
                         "timestep_spacing", "prediction_type", "interpolation_type",
                         "use_exponential_sigmas", "use_beta_sigmas", "stochastic_sampling",
                         "time_shift_type"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        const char *p = write_tmp(bad[k]);
        tdm_status r = tdm_sched_create(&s, p, NULL);
        CHECK_MSG(r == TDM_ERR_UNSUPPORTED && strstr(tdm_last_error(), key[k]),
                  "config %zu: status %d: %s", k, (int)r, tdm_last_error());
        tdm_sched_free(s);
        s = NULL;
        unlink(p);
    }
}

TEST(misuse) {
    tdm_sched_t *s = NULL;
    float x[32] = {0}, m[32] = {0};
    /* PRK warm-up needs >= 4 timesteps */
    const char *p = write_tmp("{\"_class_name\": \"PNDMScheduler\", \"skip_prk_steps\": false}");
    CHECK(tdm_sched_create(&s, p, NULL) == TDM_OK);
    CHECK(tdm_sched_set_timesteps(s, 2) == TDM_ERR_UNSUPPORTED);
    CHECK(tdm_sched_len(s) == 0);
    CHECK(tdm_sched_step(s, 0, m, x, 1, 32, NULL) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_sched_set_timesteps(s, 0) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_sched_set_timesteps(s, 1001) == TDM_ERR_INVALID_ARG);
    tdm_sched_free(s);
    unlink(p);
    /* ancestral noise needs generators */
    CHECK(tdm_sched_create(&s, FIX "/config_sd15.json", "EulerAncestralDiscreteScheduler") == TDM_OK);
    CHECK(tdm_sched_set_timesteps(s, 10) == TDM_OK);
    CHECK(tdm_sched_step(s, 0, m, x, 1, 32, NULL) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_sched_step(s, 10, m, x, 1, 32, NULL) == TDM_ERR_INVALID_ARG);
    tdm_sched_free(s);
    /* multistep history: in order, same size */
    CHECK(tdm_sched_create(&s, FIX "/config_sd15.json", "DPMSolverMultistepScheduler") == TDM_OK);
    CHECK(tdm_sched_set_timesteps(s, 10) == TDM_OK);
    CHECK(tdm_sched_step(s, 1, m, x, 1, 32, NULL) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_sched_step(s, 0, m, x, 1, 32, NULL) == TDM_OK);
    CHECK(tdm_sched_step(s, 1, m, x, 2, 8, NULL) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_sched_step(s, 1, m, x, 2, 16, NULL) == TDM_OK);
    CHECK(tdm_sched_set_timesteps(s, 5) == TDM_OK);       /* resets the run */
    CHECK(tdm_sched_step(s, 0, m, x, 1, 8, NULL) == TDM_OK);
    tdm_sched_free(s);
    tdm_sched_free(NULL);
}

TEST(flow_misuse) {
    tdm_sched_t *s = NULL;
    float x[32] = {0}, m[32] = {0};
    /* dynamic shifting needs mu: plain set_timesteps and a NaN mu fail */
    CHECK(tdm_sched_create(&s, FIX "/config_flux_dev.json", NULL) == TDM_OK);
    CHECK(tdm_sched_is_flow(s));
    CHECK(tdm_sched_set_timesteps(s, 28) == TDM_ERR_INVALID_ARG);
    CHECK_MSG(strstr(tdm_last_error(), "mu") && strstr(tdm_last_error(), "use_dynamic_shifting"),
              "%s", tdm_last_error());
    CHECK(tdm_sched_len(s) == 0);
    CHECK(tdm_sched_set_timesteps_flow(s, 28, NULL, NAN) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_sched_step(s, 0, m, x, 1, 32, NULL) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_sched_set_timesteps_flow(s, 0, NULL, 1.0) == TDM_ERR_INVALID_ARG);
    /* flow timesteps are not table indices: more steps than num_train_timesteps */
    CHECK(tdm_sched_set_timesteps_flow(s, 2000, NULL, 1.0) == TDM_OK);
    CHECK(tdm_sched_len(s) == 2000);
    CHECK(tdm_sched_set_timesteps_flow(s, 4, NULL, tdm_sched_flux_mu(s, 4096)) == TDM_OK);
    CHECK(tdm_sched_timestep(s, 0) == 1000.0f && tdm_sched_sigma(s, 4) == 0.0f);
    CHECK(tdm_sched_init_noise_sigma(s) == 1.0f);
    for (int i = 0; i < 4; i++) CHECK(tdm_sched_step(s, i, m, x, 2, 16, NULL) == TDM_OK);
    CHECK(tdm_sched_step(s, 4, m, x, 2, 16, NULL) == TDM_ERR_INVALID_ARG);
    CHECK(isnan(tdm_sched_timestep(s, 4)));
    x[0] = 3.0f;
    tdm_sched_scale_model_input(s, x, 32, 0);                  /* identity */
    CHECK(x[0] == 3.0f);
    tdm_sched_free(s);
    /* calculate_shift: base 0.5 at 256 tokens */
    CHECK(tdm_sched_create(&s, FIX "/config_flux_schnell.json", NULL) == TDM_OK);
    CHECK(tdm_sched_flux_mu(s, 256) == 0.5);
    CHECK(tdm_sched_set_timesteps(s, 4) == TDM_OK);            /* static shift: no mu needed */
    tdm_sched_free(s);
    const char *p = write_tmp("{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", "
                              "\"base_image_seq_len\": 512, \"max_image_seq_len\": 512}");
    CHECK(tdm_sched_create(&s, p, NULL) == TDM_OK);
    CHECK(isnan(tdm_sched_flux_mu(s, 1024)));
    tdm_sched_free(s);
    /* shift_terminal over a one-step schedule (sigma 1) is 0/0 in diffusers */
    p = write_tmp("{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"shift_terminal\": 0.1}");
    CHECK(tdm_sched_create(&s, p, NULL) == TDM_OK);
    CHECK(tdm_sched_set_timesteps_flow(s, 1, NULL, 0.5) == TDM_ERR_INVALID_ARG);
    CHECK_MSG(strstr(tdm_last_error(), "shift_terminal"), "%s", tdm_last_error());
    CHECK(tdm_sched_step(s, 0, m, x, 1, 32, NULL) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_sched_set_timesteps_flow(s, 2, NULL, 0.5) == TDM_OK);
    tdm_sched_free(s);
    /* only one sigma conversion */
    p = write_tmp("{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", "
                  "\"use_karras_sigmas\": true, \"use_exponential_sigmas\": true}");
    CHECK(tdm_sched_create(&s, p, NULL) == TDM_ERR_MODEL);
    CHECK(s == NULL);
    unlink(p);
    /* other classes have no flow schedule */
    CHECK(tdm_sched_create(&s, FIX "/config_sd15.json", NULL) == TDM_OK);
    CHECK(!tdm_sched_is_flow(s));
    CHECK(tdm_sched_set_timesteps_flow(s, 4, NULL, 1.0) == TDM_ERR_INVALID_ARG);
    CHECK_MSG(strstr(tdm_last_error(), "PNDMScheduler"), "%s", tdm_last_error());
    CHECK(isnan(tdm_sched_flux_mu(s, 4096)));
    tdm_sched_free(s);
    /* a FLUX config asked for another class keeps working (diffusers from_config) */
    CHECK(tdm_sched_create(&s, FIX "/config_flux_dev.json", "EulerDiscreteScheduler") == TDM_OK);
    CHECK(!tdm_sched_is_flow(s) && tdm_sched_set_timesteps(s, 4) == TDM_OK);
    tdm_sched_free(s);
}

/* User names for --scheduler: class names in any case and the short names,
 * resolved to the canonical diffusers class; the lists per family. */
TEST(name_resolution) {
    static const char *cases[][2] = {
        {"euler", "EulerDiscreteScheduler"},           {"EULER_A", "EulerAncestralDiscreteScheduler"},
        {"ddim", "DDIMScheduler"},                     {"pndm", "PNDMScheduler"},
        {"dpmpp_2m", "DPMSolverMultistepScheduler"},   {"flow_euler", "FlowMatchEulerDiscreteScheduler"},
        {"eulerdiscretescheduler", "EulerDiscreteScheduler"}, {"DDIMScheduler", "DDIMScheduler"},
        {"flowmatcheulerdiscretescheduler", "FlowMatchEulerDiscreteScheduler"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *r = tdm_sched_resolve(cases[i][0]);
        CHECK_MSG(r && !strcmp(r, cases[i][1]), "%s -> %s, want %s", cases[i][0], r ? r : "NULL", cases[i][1]);
    }
    CHECK(tdm_sched_resolve("Foo") == NULL);
    CHECK(tdm_sched_resolve("euler ") == NULL);
    CHECK(tdm_sched_resolve("") == NULL);
    CHECK(tdm_sched_resolve(NULL) == NULL);
    CHECK(tdm_sched_class_is_flow("FlowMatchEulerDiscreteScheduler"));
    CHECK(!tdm_sched_class_is_flow("EulerDiscreteScheduler"));
    char buf[512];
    tdm_sched_list(1, buf, sizeof buf);
    CHECK_MSG(!strcmp(buf, "FlowMatchEulerDiscreteScheduler (flow_euler)"), "flow list: %s", buf);
    tdm_sched_list(0, buf, sizeof buf);
    CHECK_MSG(strstr(buf, "PNDMScheduler (pndm)") && strstr(buf, "DPMSolverMultistepScheduler (dpmpp_2m)") &&
                  !strstr(buf, "FlowMatch"), "noise list: %s", buf);
    tdm_sched_list(0, buf, 8);   /* truncates, stays terminated */
    CHECK(strlen(buf) < 8);
    /* the resolved name creates the scheduler, which reports the canonical class */
    tdm_sched_t *s = NULL;
    CHECK(tdm_sched_create(&s, TDM_FIXTURES "/pipelines/sd15-tiny/scheduler/scheduler_config.json",
                           tdm_sched_resolve("euler_a")) == TDM_OK);
    if (s) CHECK(!strcmp(tdm_sched_class(s), "EulerAncestralDiscreteScheduler"));
    tdm_sched_free(s);
}

int main(void) {
    RUN(golden_trajectories);
    RUN(unknown_class);
    RUN(malformed_config);
    RUN(unsupported_values);
    RUN(misuse);
    RUN(flow_misuse);
    RUN(name_resolution);
    return test_summary();
}
