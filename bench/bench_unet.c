/* bench_unet.c — times one UNet2DConditionModel evaluation of a diffusers
 * folder: tandem's side of bench/run_cpu.sh and bench/run_gpu.sh. Not a test.
 * usage: bench_unet ROOT LATENT_H LATENT_W BATCH TOKENS ITERS THREADS [cpu|cuda:N [DTYPE]]
 * DTYPE (fp32 default, fp16, bf16; CUDA only): the device's GEMM precision. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "backend/ops.h"
#include "bench_env.h"
#include "core/core.h"
#include "core/rng.h"
#include "models/unet2d.h"
#ifdef TDM_HAVE_CUDA
#include "backend/cuda/cuda_ops.h"   /* tdm_cuda_prof_report */
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 8 || argc > 10) {
        fprintf(stderr, "usage: %s ROOT LATENT_H LATENT_W BATCH TOKENS ITERS THREADS "
                "[cpu|cuda:N [fp32|fp16|bf16]]\n", argv[0]);
        return 2;
    }
    const char *dtname = argc == 10 ? argv[9] : "fp32";
    tdm_dtype gemm_dtype = !strcmp(dtname, "fp16") ? TDM_F16 : !strcmp(dtname, "bf16") ? TDM_BF16 : TDM_F32;
    if (gemm_dtype == TDM_F32 && strcmp(dtname, "fp32") != 0) {
        fprintf(stderr, "bench_unet: dtype %s: expected fp32, fp16 or bf16\n", dtname);
        return 2;
    }
    int64_t H = atoll(argv[2]), W = atoll(argv[3]), B = atoll(argv[4]), T = atoll(argv[5]);
    int iters = atoi(argv[6]);
    tdm_set_num_threads(atoi(argv[7]));
    tdm_device_t dev;
    tdm_backend_params_t opts;
    tdm_backend_params_init(&opts);
    cli_env_log_level();
    cli_env_backend(&opts);
    const int cuda = argc >= 9 && !strncmp(argv[8], "cuda", 4);
    if (tdm_backend_device_open(&dev, cuda ? argv[8] : "cpu", &opts) != TDM_OK) {
        fprintf(stderr, "bench_unet: %s\n", tdm_last_error());
        return 1;
    }
    dev.cache_enabled = 1;
    if (cuda) dev.gemm_dtype = gemm_dtype;   /* before loading: GEMM weights are stored in it */
    if (dev.kind != TDM_DEV_CUDA && gemm_dtype != TDM_F32) {
        fprintf(stderr, "bench_unet: dtype %s: the CPU backend computes in fp32\n", dtname);
        return 2;
    }
    tdm_unet_t *u = NULL;
    double t0 = now();
    if (tdm_unet_load(&u, argv[1], "unet", NULL, &dev) != TDM_OK) {
        fprintf(stderr, "bench_unet: %s\n", tdm_last_error());
        return 1;
    }
    double load = now() - t0;
    const tdm_unet_info_t *info = tdm_unet_info(u);
    int64_t nx = B * info->in_channels * H * W, nc = B * T * info->cross_attention_dim;
    float *hx = malloc(nx * 4), *hctx = malloc(nc * 4), *ts = malloc(B * 4);
    float *x = tdm_dev_alloc(&dev, nx * 4, "x"), *ctx = tdm_dev_alloc(&dev, nc * 4, "ctx");
    float *out = tdm_dev_alloc(&dev, nx * 4, "out");
    tdm_rng_t r;
    tdm_rng_seed(&r, 0);
    tdm_rng_randn(&r, hx, nx);
    tdm_rng_randn(&r, hctx, nc);
    if (tdm_dev_upload(&dev, x, hx, nx * 4, "x") != TDM_OK || tdm_dev_upload(&dev, ctx, hctx, nc * 4, "ctx") != TDM_OK) {
        fprintf(stderr, "bench_unet: %s\n", tdm_last_error());
        return 1;
    }
    for (int b = 0; b < B; b++) ts[b] = 981;
    /* SDXL (addition_embed_type text_time): random pooled embeddings and the
     * time ids of a square image of H·8 pixels, as the pipeline passes them */
    float *ptext = NULL, tids[64 * 6];
    tdm_unet_added_t add = {NULL, info->add_in - 6 * info->add_time_dim, tids, 6};
    if (info->add_in) {
        ptext = malloc((size_t)(B * add.text_dim) * 4);
        tdm_rng_randn(&r, ptext, B * add.text_dim);
        add.text_embeds = ptext;
        for (int b = 0; b < B && b < 64; b++)
            for (int k = 0; k < 6; k++) tids[b * 6 + k] = k == 2 || k == 3 ? 0.0f : (float)(H * 8);
    }
    double best = 1e30, sum = 0;
    for (int i = -1; i < iters; i++) {   /* i = -1: warm-up, not timed */
#ifdef TDM_HAVE_CUDA
        if (i == 0) tdm_cuda_prof_report(&dev, "(load and warm-up)");   /* TDM_PROFILE=1 only */
#endif
        t0 = now();
        if (tdm_unet_forward_added(u, x, B, H, W, ts, ctx, T, info->add_in ? &add : NULL, out) != TDM_OK ||
            tdm_dev_download(&dev, hx, out, 4, "out") != TDM_OK) {   /* waits for the device */
            fprintf(stderr, "bench_unet: %s\n", tdm_last_error());
            return 1;
        }
        double dt = now() - t0;
        if (i < 0) continue;
        sum += dt;
        if (dt < best) best = dt;
    }
#ifdef TDM_HAVE_CUDA
    tdm_cuda_prof_report(&dev, "(timed steps)");
#endif
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"impl\": \"tandem\", \"dtype\": \"%s\", \"load_s\": %.3f, \"step_s_best\": %.4f, \"step_s_mean\": %.4f, "
           "\"peak_rss_mib\": %.1f, \"peak_tracked_mib\": %.1f}\n",
           dtname, load, best, sum / iters, ru.ru_maxrss / 1024.0, dev.peak_bytes / 1048576.0);
    tdm_dev_free(&dev, x, nx * 4);
    tdm_dev_free(&dev, ctx, nc * 4);
    tdm_dev_free(&dev, out, nx * 4);
    tdm_unet_free(u);
    tdm_backend_device_close(&dev);
    free(hx); free(hctx); free(ts); free(ptext);
    return 0;
}
