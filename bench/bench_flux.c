/* bench_flux.c — times one FluxTransformer2DModel evaluation of a diffusers
 * folder on the CPU: tandem's side of bench/run_flux_cpu.sh. Not a test.
 * usage: bench_flux ROOT IMG_TOKENS_H IMG_TOKENS_W TXT_TOKENS ITERS THREADS [cpu|cuda:N [fp32|fp16|bf16]] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "core/core.h"
#include "core/rng.h"
#include "models/flux.h"
#ifdef TDM_HAVE_CUDA
#include "backend/cuda/cuda_ops.h"
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 7 || argc > 9) {
        fprintf(stderr, "usage: %s ROOT IMG_TOKENS_H IMG_TOKENS_W TXT_TOKENS ITERS THREADS [cpu|cuda:N]\n", argv[0]);
        return 2;
    }
    int64_t gh = atoll(argv[2]), gw = atoll(argv[3]), T = atoll(argv[4]), N = gh * gw;
    int iters = atoi(argv[5]);
    tdm_set_num_threads(atoi(argv[6]));
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    dev.cache_enabled = 1;
    const char *dtname = argc == 9 ? argv[8] : "fp32";
    if (argc >= 8 && !strncmp(argv[7], "cuda", 4)) {
#ifdef TDM_HAVE_CUDA
        if (tdm_cuda_device_init(&dev, argv[7][4] == ':' ? atoi(argv[7] + 5) : 0) != TDM_OK) {
            fprintf(stderr, "bench_flux: %s\n", tdm_last_error());
            return 1;
        }
        dev.cache_enabled = 1;
        dev.gemm_dtype = !strcmp(dtname, "fp16") ? TDM_F16 : !strcmp(dtname, "bf16") ? TDM_BF16 : TDM_F32;
#else
        fprintf(stderr, "bench_flux: built without CUDA\n");
        return 1;
#endif
    }
    tdm_flux_t *m = NULL;
    double t0 = now();
    if (tdm_flux_load(&m, argv[1], "transformer", NULL, &dev) != TDM_OK) {
        fprintf(stderr, "bench_flux: %s\n", tdm_last_error());
        return 1;
    }
    double load = now() - t0;
    const tdm_flux_info_t *fi = tdm_flux_info(m);
    const int64_t ib = N * fi->in_channels * 4, tb = T * fi->joint_attention_dim * 4,
                  pb = fi->pooled_projection_dim * 4;
    float *img = malloc(ib), *txt = malloc(tb), *pooled = malloc(pb);
    float *d_img = tdm_dev_alloc(&dev, ib, "img"), *d_txt = tdm_dev_alloc(&dev, tb, "txt");
    float *d_pool = tdm_dev_alloc(&dev, pb, "pooled"), *d_out = tdm_dev_alloc(&dev, ib, "out");
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
    if (tdm_dev_upload(&dev, d_img, img, ib, "img") != TDM_OK || tdm_dev_upload(&dev, d_txt, txt, tb, "txt") != TDM_OK ||
        tdm_dev_upload(&dev, d_pool, pooled, pb, "pooled") != TDM_OK) {
        fprintf(stderr, "bench_flux: %s\n", tdm_last_error());
        return 1;
    }
    float ts = 0.7f, g = 3.5f;
    double best = 1e30, sum = 0;
    for (int i = 0; i < iters; i++) {
        t0 = now();
        if (tdm_flux_forward(m, d_img, 1, N, d_txt, T, d_pool, &ts, fi->guidance_embeds ? &g : NULL, img_ids,
                             txt_ids, d_out) != TDM_OK ||
            tdm_dev_download(&dev, img, d_out, 4, "out") != TDM_OK) {   /* waits for the device */
            fprintf(stderr, "bench_flux: %s\n", tdm_last_error());
            return 1;
        }
        double dt = now() - t0;
        sum += dt;
        if (dt < best) best = dt;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"impl\": \"tandem\", \"dtype\": \"%s\", \"device\": \"%s\", \"load_s\": %.2f, \"step_s_best\": %.4f, "
           "\"step_s_mean\": %.4f, \"peak_rss_mib\": %.1f, \"peak_tracked_mib\": %.1f}\n",
           dtname, argc >= 8 ? argv[7] : "cpu", load, best, sum / iters, ru.ru_maxrss / 1024.0, dev.peak_bytes / 1048576.0);
    tdm_dev_free(&dev, d_img, ib);
    tdm_dev_free(&dev, d_txt, tb);
    tdm_dev_free(&dev, d_pool, pb);
    tdm_dev_free(&dev, d_out, ib);
    tdm_flux_free(m);
    tdm_dev_trim(&dev);
#ifdef TDM_HAVE_CUDA
    if (dev.kind == TDM_DEV_CUDA) tdm_cuda_device_free(&dev);
#endif
    free(img); free(txt); free(pooled); free(img_ids); free(txt_ids);
    return 0;
}
