/* test_pipeline.c — end-to-end golden test: every case in
 * tests/fixtures/pipelines/cases.json (written by tools/ref/make_pipelines.py
 * from diffusers) is generated through the public API and compared with
 * diffusers' final latents (relative error <= 1e-4) and PNG pixels (±1). */
// label: golden
#include <cjson/cJSON.h>
#include <math.h>

#include "io/config.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "tandem.h"
#include "test.h"

#define DIR TDM_FIXTURES "/pipelines"

static double worst_lat = 0;
static int worst_px = 0;

static void run_case(const cJSON *c) {
    const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
    const char *pipe_name = cJSON_GetObjectItem(c, "pipeline")->valuestring;
    const cJSON *sched = cJSON_GetObjectItem(c, "scheduler");
    int override = cJSON_IsTrue(cJSON_GetObjectItem(c, "scheduler_override"));
    const cJSON *prompts = cJSON_GetObjectItem(c, "prompts");
    const cJSON *neg = cJSON_GetObjectItem(c, "negative_prompt");
    const cJSON *seeds = cJSON_GetObjectItem(c, "seeds");
    const cJSON *images = cJSON_GetObjectItem(c, "images");
    int per = cJSON_GetObjectItem(c, "num_images_per_prompt")->valueint;
    int steps = cJSON_GetObjectItem(c, "steps")->valueint;
    double g = cJSON_GetObjectItem(c, "guidance_scale")->valuedouble;
    int W = cJSON_GetObjectItem(c, "width")->valueint, H = cJSON_GetObjectItem(c, "height")->valueint;
    char path[1024];

    tdm_pipeline_params_t pp;
    tdm_pipeline_params_init(&pp);
    if (override) pp.scheduler = sched->valuestring;
    tdm_pipeline_t *pipe = NULL;
    snprintf(path, sizeof path, "%s/%s", DIR, pipe_name);
    tdm_status st = tdm_pipeline_open(&pipe, path, &pp);
    CHECK_MSG(st == TDM_OK, "%s: open: %s", name, tdm_last_error());
    if (st != TDM_OK) return;
    tdm_pipeline_info_t info;
    tdm_pipeline_info(pipe, &info);
    CHECK_MSG(!strcmp(info.scheduler, sched->valuestring), "%s: scheduler %s, want %s", name,
              info.scheduler, sched->valuestring);

    tdm_safetensors_t *exp = NULL;
    snprintf(path, sizeof path, "%s/%s", DIR, cJSON_GetObjectItem(c, "latents")->valuestring);
    st = tdm_safetensors_open(&exp, path);
    CHECK_MSG(st == TDM_OK, "%s", tdm_last_error());
    const tdm_st_tensor_t *lt = exp ? tdm_safetensors_find(exp, "latents") : NULL;
    CHECK(lt != NULL && lt->dtype == TDM_F32 && lt->ndim == 4);
    int n = cJSON_GetArraySize(seeds);
    int64_t item = lt ? lt->shape[1] * lt->shape[2] * lt->shape[3] : 0;
    float *lat = malloc((size_t)item * 4 + 4);
    uint8_t *rgb = malloc((size_t)W * H * 3);
    for (int i = 0; lt && i < n && st == TDM_OK; i++) {
        tdm_generate_params_t gp;
        tdm_generate_params_init(&gp);
        const char *prompt = cJSON_GetArrayItem(prompts, i / per)->valuestring;
        const char *negative = cJSON_IsString(neg) ? neg->valuestring : NULL;
        gp.seed = (uint64_t)cJSON_GetArrayItem(seeds, i)->valuedouble;
        gp.steps = steps;
        gp.guidance = (float)g;
        gp.width = W;
        gp.height = H;
        st = tdm_pipeline_generate(pipe, prompt, negative, &gp, lat, rgb);
        CHECK_MSG(st == TDM_OK, "%s[%d]: %s", name, i, tdm_last_error());
        if (st != TDM_OK) break;
        double e = test_rel_err(lat, (const float *)lt->data + i * item, (long)item);
        CHECK_MSG(e <= 1e-4, "%s[%d]: latents rel err %.3g", name, i, e);
        if (!(e <= worst_lat)) worst_lat = e;
        uint8_t *ref = NULL;
        int rw = 0, rh = 0;
        snprintf(path, sizeof path, "%s/%s", DIR, cJSON_GetArrayItem(images, i)->valuestring);
        CHECK_MSG(tdm_png_read(path, &ref, &rw, &rh) == TDM_OK, "%s", tdm_last_error());
        if (ref && rw == W && rh == H) {
            int maxd = 0, ndiff = 0;
            for (long k = 0; k < (long)W * H * 3; k++) {
                int d = abs((int)rgb[k] - (int)ref[k]);
                if (d > maxd) maxd = d;
                ndiff += d != 0;
            }
            CHECK_MSG(maxd <= 1, "%s[%d]: pixels differ by up to %d (%d values differ)", name, i, maxd, ndiff);
            if (maxd > worst_px) worst_px = maxd;
        } else {
            CHECK_MSG(0, "%s[%d]: reference image %dx%d, want %dx%d", name, i, rw, rh, W, H);
        }
        free(ref);
    }
    printf("  %-28s %d image(s)\n", name, n);
    free(lat);
    free(rgb);
    tdm_safetensors_close(exp);
    tdm_pipeline_close(pipe);
}

static cJSON *cases;

TEST(all_cases) {
    const cJSON *arr = cJSON_GetObjectItem(cases, "cases");
    CHECK(cJSON_GetArraySize(arr) >= 10);
    const cJSON *c;
    cJSON_ArrayForEach(c, arr) run_case(c);
    printf("  worst latents rel err %.3g, worst pixel diff %d\n", worst_lat, worst_px);
}

int main(void) {
    tdm_json_t j;
    if (tdm_json_load(&j, DIR "/cases.json") != TDM_OK) {
        printf("FAIL: %s\n", tdm_last_error());
        return 1;
    }
    cases = j.root;
    RUN(all_cases);
    tdm_json_free(&j);
    return test_summary();
}
