/* bench_unet.c — times one UNet2DConditionModel evaluation of a diffusers
 * folder on the CPU: tandem's side of bench/run_cpu.sh. Not a test.
 * usage: bench_unet ROOT LATENT_H LATENT_W BATCH TOKENS ITERS THREADS */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "core/core.h"
#include "core/rng.h"
#include "models/unet2d.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s ROOT LATENT_H LATENT_W BATCH TOKENS ITERS THREADS\n", argv[0]);
        return 2;
    }
    int64_t H = atoll(argv[2]), W = atoll(argv[3]), B = atoll(argv[4]), T = atoll(argv[5]);
    int iters = atoi(argv[6]);
    tdm_set_num_threads(atoi(argv[7]));
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    dev.cache_enabled = 1;
    tdm_unet_t *u = NULL;
    double t0 = now();
    if (tdm_unet_load(&u, argv[1], "unet", NULL, &dev) != TDM_OK) {
        fprintf(stderr, "bench_unet: %s\n", tdm_last_error());
        return 1;
    }
    double load = now() - t0;
    const tdm_unet_info_t *info = tdm_unet_info(u);
    int64_t nx = B * info->in_channels * H * W, nc = B * T * info->cross_attention_dim;
    float *x = malloc(nx * 4), *ctx = malloc(nc * 4), *out = malloc(nx * 4), *ts = malloc(B * 4);
    tdm_rng_t r;
    tdm_rng_seed(&r, 0);
    tdm_rng_randn(&r, x, nx);
    tdm_rng_randn(&r, ctx, nc);
    for (int b = 0; b < B; b++) ts[b] = 981;
    double best = 1e30, sum = 0;
    for (int i = 0; i < iters; i++) {
        t0 = now();
        if (tdm_unet_forward(u, x, B, H, W, ts, ctx, T, out) != TDM_OK) {
            fprintf(stderr, "bench_unet: %s\n", tdm_last_error());
            return 1;
        }
        double dt = now() - t0;
        sum += dt;
        if (dt < best) best = dt;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"impl\": \"tandem\", \"load_s\": %.3f, \"step_s_best\": %.4f, \"step_s_mean\": %.4f, "
           "\"peak_rss_mib\": %.1f, \"peak_tracked_mib\": %.1f}\n",
           load, best, sum / iters, ru.ru_maxrss / 1024.0, dev.peak_bytes / 1048576.0);
    tdm_unet_free(u);
    tdm_dev_trim(&dev);
    free(x); free(ctx); free(out); free(ts);
    return 0;
}
