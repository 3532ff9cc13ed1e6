// label: unit
/* test_mem.c — the working-memory estimate (tdm_pipeline_work_bytes): it
 * grows with the image size and the CFG batch, and on the CPU it covers the
 * real peak of a small run: for the tiny SD and FLUX pipelines at 64x64 the
 * estimate of the denoise and decode stages is at least the bytes the stage
 * allocated on the device beyond its weights (its peak minus what was
 * resident when it began) and at most 2x that. The estimate also counts
 * host buffers and the CPU attention's score tiles, which the device does
 * not count, hence the factor. */
#include <math.h>

#include "tandem.h"
#include "test.h"

static tdm_pipeline_t *open_pipe(const char *dir) {
    tdm_pipeline_t *p = NULL;
    tdm_pipeline_params_t pp;
    tdm_pipeline_params_init(&pp);
    pp.num_threads = 2;
    if (tdm_pipeline_open(&p, dir, &pp) != TDM_OK) {
        printf("  %s: %s\n", dir, tdm_last_error());
        return NULL;
    }
    return p;
}

static int64_t est(tdm_pipeline_t *p, tdm_stage s, int size, float guidance) {
    tdm_generate_params_t g;
    int64_t b = -1;
    tdm_generate_params_init(&g);
    g.width = g.height = size;
    g.guidance = guidance;
    if (tdm_pipeline_work_bytes(p, s, &g, 0, &b) != TDM_OK) printf("  %s\n", tdm_last_error());
    return b;
}

/* Larger images need more; CFG (SD) needs more than batch 1. */
static void monotone(const char *dir, int sd) {
    tdm_pipeline_t *p = open_pipe(dir);
    CHECK(p != NULL);
    if (!p) return;
    for (int st = TDM_STAGE_DENOISE; st <= TDM_STAGE_DECODE; st++) {
        int64_t prev = 0;
        for (int size = 64; size <= 4096; size *= 2) {
            int64_t b = est(p, (tdm_stage)st, size, NAN);
            CHECK_MSG(b > prev, "%s stage %d: %d px needs %lld bytes, %d px %lld", dir, st, size,
                      (long long)b, size / 2, (long long)prev);
            prev = b;
        }
    }
    if (sd) {
        int64_t one = est(p, TDM_STAGE_DENOISE, 256, 1.0f), cfg = est(p, TDM_STAGE_DENOISE, 256, 7.5f);
        CHECK_MSG(cfg > one, "CFG %lld <= batch 1 %lld", (long long)cfg, (long long)one);
    }
    {   /* absurd sizes saturate instead of overflowing */
        int64_t b = est(p, TDM_STAGE_DENOISE, 1 << 20, NAN);
        CHECK_MSG(b > ((int64_t)1 << 40), "%lld", (long long)b);
    }
    tdm_pipeline_close(p);
}

TEST(estimate_grows_sd) { monotone(TDM_FIXTURES "/pipelines/sd15-tiny", 1); }
TEST(estimate_grows_flux) { monotone(TDM_FIXTURES "/flux_pipelines/flux-dev-tiny", 0); }

/* One 64x64 image through the stages; each stage's measured working memory
 * against the estimate. */
static void covers(const char *dir) {
    tdm_pipeline_t *p = open_pipe(dir);
    CHECK(p != NULL);
    if (!p) return;
    tdm_pipeline_info_t info;
    tdm_pipeline_info(p, &info);
    const char *prompt = "a red cube";
    tdm_encode_params_t ep;
    tdm_encode_params_init(&ep);
    ep.prompts = &prompt;
    ep.n = 1;
    ep.with_negative = info.kind == TDM_PIPE_SD;
    tdm_embeddings_t *emb = NULL;
    tdm_generate_params_t g;
    tdm_generate_params_init(&g);
    g.width = g.height = 64;
    g.steps = 2;
    float lat[16 * 8 * 8 * 4];   /* SD (1, 4, 16, 16) or FLUX (1, 16, 64) */
    uint8_t rgb[64 * 64 * 3];
    int64_t cur, peak;
    CHECK(tdm_pipeline_encode(p, &ep, &emb) == TDM_OK);
    for (int st = TDM_STAGE_DENOISE; st <= TDM_STAGE_DECODE && emb; st++) {
        CHECK(tdm_pipeline_load_stage(p, (tdm_stage)st) == TDM_OK);
        tdm_pipeline_memory(p, &cur, &peak);   /* cur: the stage's weights */
        tdm_status s = st == TDM_STAGE_DENOISE ? tdm_pipeline_denoise(p, emb, 0, &g, lat)
                                               : tdm_pipeline_decode(p, lat, 64, 64, rgb);
        CHECK_MSG(s == TDM_OK, "%s", tdm_last_error());
        const int64_t used = tdm_pipeline_stage_peak(p, (tdm_stage)st) - cur;
        const int64_t e = est(p, (tdm_stage)st, 64, NAN);
        printf("  %s stage %d: estimate %lld bytes, measured %lld (x%.2f)\n", dir, st,
               (long long)e, (long long)used, used > 0 ? (double)e / (double)used : 0.0);
        CHECK_MSG(used > 0 && e >= used && e <= 2 * used, "estimate %lld vs measured %lld",
                  (long long)e, (long long)used);
    }
    tdm_embeddings_free(emb);
    tdm_pipeline_close(p);
}

TEST(estimate_covers_peak_sd) { covers(TDM_FIXTURES "/pipelines/sd15-tiny"); }
TEST(estimate_covers_peak_flux) { covers(TDM_FIXTURES "/flux_pipelines/flux-dev-tiny"); }

int main(void) {
    RUN(estimate_grows_sd);
    RUN(estimate_grows_flux);
    RUN(estimate_covers_peak_sd);
    RUN(estimate_covers_peak_flux);
    return test_summary();
}
