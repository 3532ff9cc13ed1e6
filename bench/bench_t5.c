/* bench_t5.c — times one T5 encoder forward (FLUX.1's text_encoder_2) of a
 * diffusers folder: tandem's side of bench/run_t5_vae_gpu.sh (reference:
 * bench/ref_t5_gpu.py, same token ids). Not a test.
 * usage: bench_t5 ROOT TOKENS ITERS THREADS [cpu|cuda:N [fp32|fp16|bf16]] */
#include "bench_util.h"
#include "models/t5.h"

typedef struct {
    tdm_t5_t *m;
    const int32_t *ids;   /* host (1, T) */
    int64_t T;
    float *hidden;        /* device (1, T, d_model) */
} t5_call_t;

static tdm_status t5_call(void *ctx) {
    t5_call_t *c = ctx;
    return tdm_t5_forward(c->m, c->ids, 1, c->T, c->hidden);
}

int main(int argc, char **argv) {
    if (argc < 5 || argc > 7) {
        fprintf(stderr, "usage: %s ROOT TOKENS ITERS THREADS [cpu|cuda:N [fp32|fp16|bf16]]\n", argv[0]);
        return 2;
    }
    const int64_t T = atoll(argv[2]);
    const int iters = atoi(argv[3]);
    tdm_set_num_threads(atoi(argv[4]));
    bench_dev_t b;
    int rc = bench_dev_open(&b, "bench_t5", argc > 5 ? argv[5] : "cpu", argc > 6 ? argv[6] : "fp32");
    if (rc) return rc;
    t5_call_t c = {.T = T};
    double t0 = bench_now();
    if (tdm_t5_load(&c.m, argv[1], "text_encoder_2", NULL, &b.dev) != TDM_OK) {
        fprintf(stderr, "bench_t5: %s\n", tdm_last_error());
        return 1;
    }
    const double load = bench_now() - t0;
    const int64_t V = tdm_t5_vocab_size(c.m), nout = T * tdm_t5_d_model(c.m);
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    for (int64_t i = 0; i < T; i++) ids[i] = (int32_t)(bench_hash(i, 0) % (uint32_t)V);
    c.ids = ids;
    c.hidden = tdm_dev_alloc(&b.dev, nout * 4, "hidden");
    if (!c.hidden) {
        fprintf(stderr, "bench_t5: %s\n", tdm_last_error());
        return 1;
    }
    double best, mean;
    bench_summary_t s;
    if (bench_time(&b, t5_call, &c, iters, &best, &mean) || bench_summarize(&b, c.hidden, nout, &s))
        return 1;
    char extra[64];
    snprintf(extra, sizeof extra, "\"batch\": 1, \"tokens\": %lld", (long long)T);
    bench_report(&b, "t5_encoder", extra, load, iters, best, mean, &s);
    tdm_dev_free(&b.dev, c.hidden, nout * 4);
    tdm_t5_free(c.m);
    bench_dev_close(&b);
    free(ids);
    return 0;
}
