/* fuzz_serve_request.c — libFuzzer target for `tandem serve`'s request
 * parser: the input bytes as a JSON body for each API (native jobs, OpenAI,
 * A1111) under the server's default limits. A request is either refused with
 * a one-line message and nothing allocated, or becomes a job inside every
 * limit; it must never crash or leak. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tdm_serve_params_t p;
    tdm_serve_params_init(&p);
    tdm_pipeline_info_t info;
    memset(&info, 0, sizeof info);
    info.class_name = "StableDiffusionPipeline";
    info.scheduler = "PNDMScheduler";
    info.default_width = info.default_height = 512;
    info.size_multiple = 8;
    info.default_steps = 50;
    info.default_guidance = 7.5f;
    cJSON *body = cJSON_ParseWithLength((const char *)data, size);
    for (int api = SERVE_API_JOBS; api <= SERVE_API_A1111; api++) {
        job_req_t r;
        char msg[256];
        int url = 0;
        if (serve_parse_request(&p, &info, api, body, &r, &url, msg, sizeof msg)) {
            if (!memchr(msg, 0, sizeof msg) || strchr(msg, '\n')) __builtin_trap();
            continue;
        }
        if (!r.prompt || strlen(r.prompt) > 64 * 1024 || r.steps < 1 || r.steps > p.max_steps ||
            r.n < 1 || r.n > p.max_images || r.width % 8 || r.height % 8 ||
            (int64_t)r.width * r.height > p.max_pixels || !isfinite(r.guidance) ||
            r.seed + (uint64_t)(r.n - 1) < r.seed)
            __builtin_trap();
        free(r.prompt);
        free(r.negative);
    }
    cJSON_Delete(body);
    return 0;
}
