/* bench_flux.c — times one FluxTransformer2DModel evaluation of a diffusers
 * folder, batch 1: tandem's side of bench/run_flux_cpu.sh, run_flux_gpu.sh and
 * run_flux_full_gpu.sh (reference: bench/ref_flux_gpu.py, same inputs). Not a test.
 * usage: bench_flux ROOT IMG_TOKENS_H IMG_TOKENS_W TXT_TOKENS ITERS THREADS [cpu|cuda:N [fp32|fp16|bf16]] */
#include "bench_util.h"
#include "models/flux.h"

typedef struct {
    tdm_flux_t *m;
    const float *img, *txt, *pooled;      /* device */
    const float *img_ids, *txt_ids;       /* host (N, 3), (T, 3) */
    int64_t N, T;
    float ts, guidance;
    float *out;                           /* device (1, N, out_channels) */
} flux_call_t;

static tdm_status flux_call(void *ctx) {
    flux_call_t *c = ctx;
    return tdm_flux_forward(c->m, c->img, 1, c->N, c->txt, c->T, c->pooled, &c->ts,
                            tdm_flux_info(c->m)->guidance_embeds ? &c->guidance : NULL, c->img_ids,
                            c->txt_ids, c->out);
}

int main(int argc, char **argv) {
    if (argc < 7 || argc > 9) {
        fprintf(stderr, "usage: %s ROOT IMG_TOKENS_H IMG_TOKENS_W TXT_TOKENS ITERS THREADS "
                "[cpu|cuda:N [fp32|fp16|bf16]]\n", argv[0]);
        return 2;
    }
    const int64_t gh = atoll(argv[2]), gw = atoll(argv[3]), T = atoll(argv[4]), N = gh * gw;
    const int iters = atoi(argv[5]);
    tdm_set_num_threads(atoi(argv[6]));
    bench_dev_t b;
    int rc = bench_dev_open(&b, "bench_flux", argc > 7 ? argv[7] : "cpu", argc > 8 ? argv[8] : "fp32");
    if (rc) return rc;
    flux_call_t c = {.N = N, .T = T, .ts = 0.7f, .guidance = 3.5f};
    double t0 = bench_now();
    if (tdm_flux_load(&c.m, argv[1], "transformer", NULL, &b.dev) != TDM_OK) {
        fprintf(stderr, "bench_flux: %s\n", tdm_last_error());
        return 1;
    }
    const double load = bench_now() - t0;
    const tdm_flux_info_t *fi = tdm_flux_info(c.m);
    const int64_t ni = N * fi->in_channels, nt = T * fi->joint_attention_dim,
                  np = fi->pooled_projection_dim, no = N * fi->out_channels;
    float *img = malloc(ni * 4), *txt = malloc(nt * 4), *pooled = malloc(np * 4);
    float *img_ids = calloc(N * 3, 4), *txt_ids = calloc(T * 3, 4);
    bench_input(img, ni, 2);
    bench_input(txt, nt, 3);
    bench_input(pooled, np, 4);
    for (int64_t i = 0; i < gh; i++)
        for (int64_t j = 0; j < gw; j++) {
            img_ids[(i * gw + j) * 3 + 1] = (float)i;
            img_ids[(i * gw + j) * 3 + 2] = (float)j;
        }
    float *d_img = tdm_dev_alloc(&b.dev, ni * 4, "img"), *d_txt = tdm_dev_alloc(&b.dev, nt * 4, "txt");
    float *d_pool = tdm_dev_alloc(&b.dev, np * 4, "pooled");
    c.out = tdm_dev_alloc(&b.dev, no * 4, "out");
    if (!d_img || !d_txt || !d_pool || !c.out || tdm_dev_upload(&b.dev, d_img, img, ni * 4, "img") != TDM_OK ||
        tdm_dev_upload(&b.dev, d_txt, txt, nt * 4, "txt") != TDM_OK ||
        tdm_dev_upload(&b.dev, d_pool, pooled, np * 4, "pooled") != TDM_OK) {
        fprintf(stderr, "bench_flux: %s\n", tdm_last_error());
        return 1;
    }
    c.img = d_img;
    c.txt = d_txt;
    c.pooled = d_pool;
    c.img_ids = img_ids;
    c.txt_ids = txt_ids;
    double best, mean;
    bench_summary_t s;
    if (bench_time(&b, flux_call, &c, iters, &best, &mean) || bench_summarize(&b, c.out, no, &s)) return 1;
    char extra[160];
    snprintf(extra, sizeof extra, "\"batch\": 1, \"img_tokens\": %lld, \"txt_tokens\": %lld, "
             "\"blocks\": [%lld, %lld]", (long long)N, (long long)T, (long long)fi->num_layers,
             (long long)fi->num_single_layers);
    bench_report(&b, "flux_transformer", extra, load, iters, best, mean, &s);
    tdm_dev_free(&b.dev, d_img, ni * 4);
    tdm_dev_free(&b.dev, d_txt, nt * 4);
    tdm_dev_free(&b.dev, d_pool, np * 4);
    tdm_dev_free(&b.dev, c.out, no * 4);
    tdm_flux_free(c.m);
    bench_dev_close(&b);
    free(img); free(txt); free(pooled); free(img_ids); free(txt_ids);
    return 0;
}
