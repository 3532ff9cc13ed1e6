/* bench_vae.c — times one AutoencoderKL decode (vae.decode(z).sample) of a
 * diffusers folder: tandem's side of bench/run_t5_vae_gpu.sh (reference:
 * bench/ref_vae_gpu.py, same latents). Batch 1. Not a test.
 * usage: bench_vae ROOT LATENT_H LATENT_W ITERS THREADS [cpu|cuda:N [fp32|fp16|bf16]]
 * On CUDA the dtype is the device's GEMM dtype: conv/linear weights stored in
 * it, activations and norms float32 (what a pipeline on that device uses). */
#include "bench_util.h"
#include "models/vae.h"

typedef struct {
    tdm_vae_t *v;
    const float *z;   /* device (1, latent_channels, h, w) */
    int64_t h, w;
    float *img;       /* device (1, out_channels, h*f, w*f) */
} vae_call_t;

static tdm_status vae_call(void *ctx) {
    vae_call_t *c = ctx;
    return tdm_vae_decode(c->v, c->z, 1, c->h, c->w, c->img);
}

int main(int argc, char **argv) {
    if (argc < 6 || argc > 8) {
        fprintf(stderr, "usage: %s ROOT LATENT_H LATENT_W ITERS THREADS [cpu|cuda:N [fp32|fp16|bf16]]\n",
                argv[0]);
        return 2;
    }
    const int64_t h = atoll(argv[2]), w = atoll(argv[3]);
    const int iters = atoi(argv[4]);
    tdm_set_num_threads(atoi(argv[5]));
    bench_dev_t b;
    int rc = bench_dev_open(&b, "bench_vae", argc > 6 ? argv[6] : "cpu", argc > 7 ? argv[7] : "fp32");
    if (rc) return rc;
    vae_call_t c = {.h = h, .w = w};
    double t0 = bench_now();
    if (tdm_vae_load(&c.v, argv[1], "vae", NULL, &b.dev) != TDM_OK) {
        fprintf(stderr, "bench_vae: %s\n", tdm_last_error());
        return 1;
    }
    const double load = bench_now() - t0;
    const tdm_vae_info_t *vi = tdm_vae_info(c.v);
    const int64_t f = vi->scale_factor, nz = vi->latent_channels * h * w,
                  nimg = vi->out_channels * h * f * w * f;
    float *hz = malloc((size_t)nz * sizeof *hz);
    bench_input(hz, nz, 1);
    float *dz = tdm_dev_alloc(&b.dev, nz * 4, "latents");
    c.img = tdm_dev_alloc(&b.dev, nimg * 4, "image");
    if (!dz || !c.img || tdm_dev_upload(&b.dev, dz, hz, nz * 4, "latents") != TDM_OK) {
        fprintf(stderr, "bench_vae: %s\n", tdm_last_error());
        return 1;
    }
    c.z = dz;
    double best, mean;
    bench_summary_t s;
    if (bench_time(&b, vae_call, &c, iters, &best, &mean) || bench_summarize(&b, c.img, nimg, &s))
        return 1;
    char extra[96];
    snprintf(extra, sizeof extra, "\"batch\": 1, \"latent\": [%lld, %lld, %lld], \"image\": [%lld, %lld]",
             (long long)vi->latent_channels, (long long)h, (long long)w, (long long)(h * f), (long long)(w * f));
    bench_report(&b, "vae_decode", extra, load, iters, best, mean, &s);
    tdm_dev_free(&b.dev, dz, nz * 4);
    tdm_dev_free(&b.dev, c.img, nimg * 4);
    tdm_vae_free(c.v);
    bench_dev_close(&b);
    free(hz);
    return 0;
}
