/* test_ptree.c — parameter lists built from config.json alone (CLIP text
 * encoder, T5 encoder, FLUX transformer) against the ones PyTorch builds:
 * tests/fixtures/ptree/<case>.json from tools/ref/ptree_ref.py (see
 * test_ptree.h for what is compared). Cases: the real CLIP-L, T5-XXL and
 * FLUX.1-dev configs embedded in their fixtures, and every tiny fixture
 * config of these models. Prints the bf16 bytes of the real models and
 * checks their parameter counts: CLIP-L 123.06 M, FLUX.1-dev transformer
 * 11.90 B, T5-XXL encoder 4.76 B plus its second embedding copy (4.89 B as
 * the module is constructed, see tdm_t5_plist). Also: a config the loader
 * rejects is rejected here too, with an empty list. */
#include <stdint.h>

#include "core/core.h"
#include "models/clip_text.h"
#include "models/flux.h"
#include "models/t5.h"
#include "test.h"
#include "test_ptree.h"

/* Checks each case; returns the number of tensors checked over all. */
static int64_t check_cases(const char *const *cases, int n, ptree_builder_fn build) {
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        int64_t k = ptree_check_case(TDM_FIXTURES, cases[i], build);
        CHECK_MSG(k > 0, "%s: no tensors checked", cases[i]);
        total += k;
    }
    return total;
}

TEST(clip_text_cases) {
    static const char *const cases[] = {
        "clip_l",
        "clip_bigg",   /* SDXL's text_encoder_2: CLIPTextModelWithProjection */
        "tiny_sdxl_pipelines_sdxl_tiny_text_encoder",
        "tiny_sdxl_pipelines_sdxl_tiny_text_encoder_2",
        "tiny_sdxl_pipelines_sdxl_tiny_te2_text_encoder_2",
        "tiny_clip_text_bad_shape_text_encoder",
        "tiny_clip_text_gelu_eos_text_encoder",
        "tiny_clip_text_quick_eos2_text_encoder",
        "tiny_clip_text_tanh_noeos_text_encoder",
        "tiny_flux_pipelines_flux_dev_tiny_text_encoder",
        "tiny_flux_pipelines_flux_schnell_tiny_text_encoder",
        "tiny_pipelines_sd15_tiny_text_encoder",
        "tiny_pipelines_sd2_tiny_v_text_encoder",
        "tiny_pipelines_sd_tiny_3level_text_encoder",
    };
    check_cases(cases, (int)(sizeof cases / sizeof cases[0]), tdm_clip_text_plist);
}

TEST(t5_cases) {
    static const char *const cases[] = {
        "t5_xxl",
        "tiny_flux_pipelines_flux_dev_tiny_text_encoder_2",
        "tiny_flux_pipelines_flux_schnell_tiny_text_encoder_2",
        "tiny_t5_bad_shape_text_encoder_2",
        "tiny_t5_gg_fp16_text_encoder_2",
        "tiny_t5_gg_sharded_text_encoder_2",
        "tiny_t5_no_rel_bias_text_encoder_2",
        "tiny_t5_relu_embed_text_encoder_2",
    };
    check_cases(cases, (int)(sizeof cases / sizeof cases[0]), tdm_t5_plist);
}

TEST(flux_cases) {
    static const char *const cases[] = {
        "flux_dev",
        "tiny_flux_bf16_transformer",
        "tiny_flux_dev_transformer",
        "tiny_flux_pipelines_flux_dev_tiny_transformer",
        "tiny_flux_pipelines_flux_schnell_tiny_transformer",
        "tiny_flux_schnell_transformer",
    };
    check_cases(cases, (int)(sizeof cases / sizeof cases[0]), tdm_flux_plist);
}

/* Writes the config embedded in fixture `case_name` to `dir`/config.json
 * (dir made by mkdtemp); returns 1 on success. */
static int write_embedded_config(const char *case_name, char *dir, char *cfg, size_t cap) {
    char path[1024];
    snprintf(path, sizeof path, "%s/ptree/%s.json", TDM_FIXTURES, case_name);
    char *text = test_slurp(path);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    char *c = j ? cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "config")) : NULL;
    int ok = c && mkdtemp(dir) != NULL;
    FILE *f = NULL;
    if (ok) {
        snprintf(cfg, cap, "%s/config.json", dir);
        f = fopen(cfg, "w");
        ok = f && fputs(c, f) >= 0;
        if (f) fclose(f);
    }
    if (c) cJSON_free(c);
    cJSON_Delete(j);
    return ok;
}

/* Parameters (numel) and bf16 bytes of a real model's list; prints both. */
static void real_size(const char *case_name, ptree_builder_fn build, int64_t *params,
                      int64_t *bytes) {
    char dir[] = "/tmp/tdm_ptree_size_XXXXXX", cfg[1024];
    tdm_plist_t l;
    *params = *bytes = 0;
    tdm_plist_init(&l, TDM_BF16);
    CHECK_MSG(write_embedded_config(case_name, dir, cfg, sizeof cfg), "%s: no config", case_name);
    tdm_status st = build(cfg, TDM_BF16, &l);
    CHECK_MSG(st == TDM_OK, "%s: %s", case_name, tdm_last_error());
    for (int64_t i = 0; i < l.n; i++) {
        int64_t n = 1;
        for (int d = 0; d < l.e[i].ndim; d++) n *= l.e[i].shape[d];
        if (l.e[i].dtype == TDM_BF16) *params += n;
        *bytes += tdm_pentry_bytes(&l.e[i]);
    }
    printf("  %-9s %5lld tensors, %14lld bf16 parameters, %14lld bytes (%.2f GB)\n", case_name,
           (long long)l.n, (long long)*params, (long long)*bytes, (double)*bytes / 1e9);
    tdm_plist_free(&l);
    unlink(cfg);
    rmdir(dir);
}

TEST(real_model_bytes) {
    int64_t p, b;
    real_size("clip_l", tdm_clip_text_plist, &p, &b);
    /* 123,060,480 parameters + the int64 position_ids (77) */
    CHECK_MSG(p == 123060480 && b == 2 * p + 77 * 8, "clip_l: %lld parameters, %lld bytes",
              (long long)p, (long long)b);
    real_size("t5_xxl", tdm_t5_plist, &p, &b);
    /* 4,762,310,656 of the encoder proper + the second (untied) embedding,
     * encoder.embed_tokens (32128 x 4096 = 131,596,288) */
    CHECK_MSG(p == 4762310656LL + 131596288LL && b == 2 * p, "t5_xxl: %lld parameters",
              (long long)p);
    real_size("flux_dev", tdm_flux_plist, &p, &b);
    CHECK_MSG(p == 11901408320LL && b == 2 * p, "flux_dev: %lld parameters", (long long)p);
}

/* A config the loader rejects: same error, empty list. */
TEST(bad_configs) {
    char dir[] = "/tmp/tdm_ptree_bad_XXXXXX", cfg[1024];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    struct { ptree_builder_fn build; const char *json; tdm_status want; } cases[] = {
        {tdm_clip_text_plist, "{\"hidden_act\": \"swish\"}", TDM_ERR_UNSUPPORTED},
        {tdm_clip_text_plist, "{\"hidden_size\": 30, \"num_attention_heads\": 4}", TDM_ERR_MODEL},
        {tdm_t5_plist, "{\"feed_forward_proj\": \"gated-tanh\"}", TDM_ERR_UNSUPPORTED},
        {tdm_t5_plist, "{\"num_layers\": 0}", TDM_ERR_MODEL},
        {tdm_flux_plist, "{\"patch_size\": 2}", TDM_ERR_UNSUPPORTED},
        {tdm_flux_plist, "{\"attention_head_dim\": 64}", TDM_ERR_MODEL},
        /* a config describing a runaway model is refused, not planned for minutes */
        {tdm_flux_plist, "{\"num_layers\": 3000000}", TDM_ERR_MODEL},
        {tdm_t5_plist, "{\"d_model\": 4611686018427387904, \"d_kv\": 4}", TDM_ERR_MODEL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        test_spill(cfg, cases[i].json);
        tdm_plist_t l;
        tdm_plist_init(&l, TDM_BF16);
        tdm_status st = cases[i].build(cfg, TDM_BF16, &l);
        CHECK_MSG(st == cases[i].want && l.n == 0 && l.nnosplit == 0,
                  "%s: status %d (want %d), %lld tensors", cases[i].json, (int)st,
                  (int)cases[i].want, (long long)l.n);
        tdm_plist_free(&l);
    }
    tdm_plist_t l;
    tdm_plist_init(&l, TDM_BF16);
    CHECK(tdm_flux_plist("/nonexistent/config.json", TDM_BF16, &l) != TDM_OK && l.n == 0);
    tdm_plist_free(&l);
    unlink(cfg);
    rmdir(dir);
}

int main(void) {
    RUN(clip_text_cases);
    RUN(t5_cases);
    RUN(flux_cases);
    RUN(real_model_bytes);
    RUN(bad_configs);
    return test_summary();
}
