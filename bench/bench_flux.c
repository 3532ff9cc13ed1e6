/* bench_flux.c — times one FluxTransformer2DModel evaluation of a diffusers
 * folder on the CPU: tandem's side of bench/run_flux_cpu.sh. Not a test.
 * usage: bench_flux ROOT IMG_TOKENS_H IMG_TOKENS_W TXT_TOKENS ITERS THREADS */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "core/core.h"
#include "core/rng.h"
#include "models/flux.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s ROOT IMG_TOKENS_H IMG_TOKENS_W TXT_TOKENS ITERS THREADS\n", argv[0]);
        return 2;
    }
    int64_t gh = atoll(argv[2]), gw = atoll(argv[3]), T = atoll(argv[4]), N = gh * gw;
    int iters = atoi(argv[5]);
    tdm_set_num_threads(atoi(argv[6]));
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    dev.cache_enabled = 1;
    tdm_flux_t *m = NULL;
    double t0 = now();
    if (tdm_flux_load(&m, argv[1], "transformer", NULL, &dev) != TDM_OK) {
        fprintf(stderr, "bench_flux: %s\n", tdm_last_error());
        return 1;
    }
    double load = now() - t0;
    const tdm_flux_info_t *fi = tdm_flux_info(m);
    float *img = malloc(N * fi->in_channels * 4), *txt = malloc(T * fi->joint_attention_dim * 4);
    float *pooled = malloc(fi->pooled_projection_dim * 4), *out = malloc(N * fi->in_channels * 4);
    float *img_ids = calloc(N * 3, 4), *txt_ids = calloc(T * 3, 4);
    tdm_rng_t r;
    tdm_rng_seed(&r, 0);
    tdm_rng_randn(&r, img, N * fi->in_channels);
    tdm_rng_randn(&r, txt, T * fi->joint_attention_dim);
    tdm_rng_randn(&r, pooled, fi->pooled_projection_dim);
    for (int64_t i = 0; i < gh; i++)
        for (int64_t j = 0; j < gw; j++) {
            img_ids[(i * gw + j) * 3 + 1] = (float)i;
            img_ids[(i * gw + j) * 3 + 2] = (float)j;
        }
    float ts = 0.7f, g = 3.5f;
    double best = 1e30, sum = 0;
    for (int i = 0; i < iters; i++) {
        t0 = now();
        if (tdm_flux_forward(m, img, 1, N, txt, T, pooled, &ts, fi->guidance_embeds ? &g : NULL, img_ids,
                             txt_ids, out) != TDM_OK) {
            fprintf(stderr, "bench_flux: %s\n", tdm_last_error());
            return 1;
        }
        double dt = now() - t0;
        sum += dt;
        if (dt < best) best = dt;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"impl\": \"tandem\", \"load_s\": %.2f, \"step_s_best\": %.3f, \"step_s_mean\": %.3f, "
           "\"peak_rss_mib\": %.1f}\n", load, best, sum / iters, ru.ru_maxrss / 1024.0);
    tdm_flux_free(m);
    tdm_dev_trim(&dev);
    free(img); free(txt); free(pooled); free(out); free(img_ids); free(txt_ids);
    return 0;
}
