// label: unit
/* test_ptree_sd.c — the parameter lists of the SD UNet and the AutoencoderKL
 * (tdm_unet_plist, tdm_vae_plist) against the ones diffusers builds on the
 * meta device (tests/fixtures/ptree/, tools/ref/ptree_ref.py): every tiny
 * fixture config plus the real SD1.5 / SD2 UNets and the SD / FLUX VAEs,
 * whose sizes in bf16 are printed for the record. */
#include <stdio.h>

#include "models/unet2d.h"
#include "models/vae.h"
#include "test.h"
#include "test_ptree.h"

static const char *const unet_cases[] = {
    "sd15_unet",
    "sd2_unet",
    "sdxl_unet",   /* text_time micro-conditioning: add_embedding */
    "tiny_sdxl_pipelines_sdxl_tiny_unet",
    "tiny_sdxl_pipelines_sdxl_tiny_te2_unet",
    "tiny_pipelines_sd15_tiny_unet",
    "tiny_pipelines_sd2_tiny_v_unet",
    "tiny_pipelines_sd_tiny_3level_unet",
    "tiny_unet_misc_unet",
    "tiny_unet_sd15_unet",
    "tiny_unet_sd2_unet",
    NULL};

static const char *const vae_cases[] = {
    "sd_vae",
    "flux_vae",
    "tiny_flux_pipelines_flux_dev_tiny_vae",
    "tiny_flux_pipelines_flux_schnell_tiny_vae",
    "tiny_pipelines_sd15_tiny_vae",
    "tiny_sdxl_pipelines_sdxl_tiny_vae",
    "tiny_sdxl_pipelines_sdxl_tiny_te2_vae",
    "tiny_pipelines_sd2_tiny_v_vae",
    "tiny_pipelines_sd_tiny_3level_vae",
    "tiny_vae_f32_vae",
    "tiny_vae_flux_vae",
    "tiny_vae_sd_vae",
    NULL};

/* Checks every case of `cases` with `build`; each must check > 0 tensors. */
static void check_cases(const char *const *cases, ptree_builder_fn build) {
    for (int i = 0; cases[i]; i++) {
        int64_t n = ptree_check_case(TDM_FIXTURES, cases[i], build);
        CHECK_MSG(n > 0, "%s: no tensor checked", cases[i]);
        printf("  %-44s %5lld tensors match\n", cases[i], (long long)n);
    }
}

TEST(ptree_unet) { check_cases(unet_cases, tdm_unet_plist); }

TEST(ptree_vae) { check_cases(vae_cases, tdm_vae_plist); }

/* Writes the embedded config of fixture `case_name` to a temporary file,
 * lists it in BF16 and prints its tensor, parameter and byte counts; checks
 * the parameter count against want_numel when that is not 0. */
static void real_size(const char *case_name, ptree_builder_fn build, int64_t want_numel) {
    char path[1024], dir[] = "/tmp/tdm_ptree_sd_XXXXXX", cfg[1100];
    snprintf(path, sizeof path, "%s/ptree/%s.json", TDM_FIXTURES, case_name);
    char *text = test_slurp(path);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    CHECK_MSG(j != NULL, "cannot read %s", path);
    if (!j) return;
    char *c = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "config"));
    cJSON_Delete(j);
    int made = mkdtemp(dir) != NULL;
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    FILE *f = made ? fopen(cfg, "w") : NULL;
    if (f) { fputs(c, f); fclose(f); }
    cJSON_free(c);
    CHECK_MSG(f != NULL, "cannot write %s", cfg);
    tdm_plist_t l;
    tdm_status st = build(cfg, TDM_BF16, &l);
    CHECK_MSG(st == TDM_OK, "%s: %s", case_name, tdm_last_error());
    if (st == TDM_OK) {
        int64_t numel = 0, bytes = 0;
        for (int64_t i = 0; i < l.n; i++) {
            int64_t e = 1;
            for (int d = 0; d < l.e[i].ndim; d++) e *= l.e[i].shape[d];
            numel += e;
            bytes += tdm_pentry_bytes(&l.e[i]);
        }
        printf("  %-10s %5lld tensors, %13lld params, %14lld bytes in bf16 (%.3f GB)\n",
               case_name, (long long)l.n, (long long)numel, (long long)bytes, (double)bytes / 1e9);
        if (want_numel)
            CHECK_MSG(numel == want_numel, "%s: %lld parameters, diffusers has %lld", case_name,
                      (long long)numel, (long long)want_numel);
        CHECK_MSG(bytes == 2 * numel, "%s: %lld bytes for %lld bf16 parameters", case_name,
                  (long long)bytes, (long long)numel);
    }
    tdm_plist_free(&l);
    if (made) {
        unlink(cfg);
        rmdir(dir);
    }
}

TEST(ptree_sd_sizes) {
    real_size("sd15_unet", tdm_unet_plist, 859520964);
    real_size("sd2_unet", tdm_unet_plist, 0);
    real_size("sdxl_unet", tdm_unet_plist, 2567463684);   /* SDXL base's 2.57 B */
    real_size("sd_vae", tdm_vae_plist, 0);
    real_size("flux_vae", tdm_vae_plist, 0);
}

/* An unsupported config is refused by the list as by the loader, and the
 * list is left empty. */
TEST(ptree_unet_rejects) {
    char dir[] = "/tmp/tdm_ptree_sd_XXXXXX", cfg[1100];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    FILE *f = fopen(cfg, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs("{\"_class_name\": \"UNet2DConditionModel\", \"class_embed_type\": \"timestep\"}", f);
    fclose(f);
    tdm_plist_t l;
    tdm_status st = tdm_unet_plist(cfg, TDM_BF16, &l);
    CHECK_MSG(st == TDM_ERR_UNSUPPORTED && strstr(tdm_last_error(), "class_embed_type"), "%d: %s",
              (int)st, tdm_last_error());
    CHECK(l.n == 0 && l.e == NULL && l.nnosplit == 0);
    tdm_plist_free(&l);
    st = tdm_vae_plist(cfg, TDM_BF16, &l);
    CHECK_MSG(st == TDM_ERR_UNSUPPORTED, "%d: %s", (int)st, tdm_last_error());
    CHECK(l.n == 0 && l.e == NULL);
    tdm_plist_free(&l);
    unlink(cfg);
    rmdir(dir);
}

int main(void) {
    RUN(ptree_unet);
    RUN(ptree_vae);
    RUN(ptree_sd_sizes);
    RUN(ptree_unet_rejects);
    return test_summary();
}
