/* bench_util.h — what tandem's side of the tandem-vs-reference benchmarks
 * (bench_t5, bench_vae, bench_flux) shares: the device named on the command
 * line ("cpu" or "cuda:N" with a GEMM dtype), a timing loop between device
 * synchronizations, the deterministic inputs that bench/ref_common.py
 * recreates bit for bit, a summary of the output (all finite? mean |x|) and
 * the JSON line. Header-only (static inline) because each bench is one .c
 * file built on its own; not library API and not a test. */
#ifndef TDM_BENCH_UTIL_H
#define TDM_BENCH_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "backend/ops.h"
#include "bench_env.h"
#include "core/core.h"
#ifdef TDM_HAVE_CUDA   /* cudaMemGetInfo, tdm_cuda_prof_report: not backend interface */
#include <cuda_runtime_api.h>
#include "backend/cuda/cuda_ops.h"
#endif

typedef struct {
    tdm_device_t dev;
    const char *prog;      /* for messages */
    const char *name;      /* "cpu" or "cuda:N", as given */
    const char *dtype;     /* "fp32", "fp16" or "bf16": dev.gemm_dtype */
    int64_t gpu_base;      /* CUDA: bytes in use on the GPU after init (context, cuBLAS) */
    int64_t weight_bytes;  /* tracked bytes when bench_time starts: the loaded weights */
} bench_dev_t;

static inline double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Bytes in use on the current GPU (all processes, as nvidia-smi counts
 * them); -1 without CUDA. */
static inline int64_t bench_gpu_used(void) {
#ifdef TDM_HAVE_CUDA
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) return (int64_t)(tot - fr);
#endif
    return -1;
}

static inline int bench_is_cuda(const bench_dev_t *b) { return b->dev.kind == TDM_DEV_CUDA; }

/* Makes b->dev the device `name` ("cpu", "cuda" or "cuda:N") with GEMM dtype
 * `dtype` ("fp32", "fp16", "bf16"; half types on CUDA only), the free-block
 * cache on. Returns 0, or the exit code after printing why (2: bad argument). */
static inline int bench_dev_open(bench_dev_t *b, const char *prog, const char *name, const char *dtype) {
    memset(b, 0, sizeof *b);
    b->prog = prog;
    b->name = name;
    b->dtype = dtype;
    /* fp8: bf16 GEMMs and activations, the model's FP8 Linears (tdm_device_t.fp8_linears) */
    const int fp8 = !strcmp(dtype, "fp8");
    tdm_dtype dt = !strcmp(dtype, "fp16") ? TDM_F16
                   : !strcmp(dtype, "bf16") || fp8 ? TDM_BF16 : TDM_F32;
    if (dt == TDM_F32 && strcmp(dtype, "fp32") != 0) {
        fprintf(stderr, "%s: dtype %s: expected fp32, fp16, bf16 or fp8\n", prog, dtype);
        return 2;
    }
    if (fp8 && !strcmp(name, "cpu")) dt = TDM_F32;   /* the CPU's FP8 reference */
    tdm_backend_params_t opts;
    tdm_backend_params_init(&opts);
    cli_env_log_level();
    cli_env_backend(&opts);
    if (strcmp(name, "cpu") != 0 && strncmp(name, "cuda", 4) != 0) {
        fprintf(stderr, "%s: device %s: expected cpu or cuda:N\n", prog, name);
        return 2;
    }
    if (!strcmp(name, "cpu") && dt != TDM_F32) {
        fprintf(stderr, "%s: dtype %s: the CPU backend computes in fp32\n", prog, dtype);
        return 2;
    }
    if (tdm_backend_device_open(&b->dev, name, &opts) != TDM_OK) {
        fprintf(stderr, "%s: %s\n", prog, tdm_last_error());
        return 1;
    }
    b->dev.cache_enabled = 1;
    b->dev.gemm_dtype = dt;   /* before loading: GEMM weights are stored in it */
    b->dev.fp8_linears = fp8;
    if (bench_is_cuda(b)) b->gpu_base = bench_gpu_used();
    return 0;
}

/* Releases what bench_dev_open made (call after freeing the model). */
static inline void bench_dev_close(bench_dev_t *b) { tdm_backend_device_close(&b->dev); }

/* Waits until every op queued on the device has finished; 0 and the last
 * error set when one of them failed. */
static inline int bench_sync(bench_dev_t *b) {
    return !b->dev.ops || !b->dev.ops->sync || b->dev.ops->sync(&b->dev);
}

typedef tdm_status (*bench_fn)(void *ctx);

/* Times fn(ctx): untimed warm-up calls (2 on CUDA, none on the CPU, where
 * a call is long and best_ms already discounts the first), then `iters`
 * calls, each from a synchronized device to a synchronized device. The
 * device's peak is reset to the bytes in use first, so peak_bytes afterwards
 * is the weights plus the largest call, as torch.cuda.reset_peak_memory_stats
 * does on the reference side. Returns 0 with *best_ms and *mean_ms set, or 1
 * after printing the error. */
static inline int bench_time(bench_dev_t *b, bench_fn fn, void *ctx, int iters, double *best_ms,
                             double *mean_ms) {
    b->weight_bytes = b->dev.cur_bytes;
    b->dev.peak_bytes = b->dev.cur_bytes;
    const int warmup = bench_is_cuda(b) ? 2 : 0;
    double best = 1e300, sum = 0;
    for (int i = 0; i < warmup + iters; i++) {
        if (!bench_sync(b)) goto fail;
#ifdef TDM_HAVE_CUDA
        /* TDM_PROFILE=1: one report for load + warm-up, one for the timed calls */
        if (i == warmup && bench_is_cuda(b)) tdm_cuda_prof_report(&b->dev, "(load and warm-up)");
#endif
        double t0 = bench_now();
        if (fn(ctx) != TDM_OK || !bench_sync(b)) goto fail;
        double dt = (bench_now() - t0) * 1e3;
        if (i < warmup) continue;
        sum += dt;
        if (dt < best) best = dt;
    }
    *best_ms = best;
    *mean_ms = sum / (iters > 0 ? iters : 1);
#ifdef TDM_HAVE_CUDA
    if (bench_is_cuda(b)) tdm_cuda_prof_report(&b->dev, "(timed calls)");
#endif
    return 0;
fail:
    fprintf(stderr, "%s: %s\n", b->prog, tdm_last_error());
    return 1;
}

/* The i-th value of the benches' shared input sequence for `seed`: a 32-bit
 * hash of (i, seed) mapped to uniform [-sqrt(3), sqrt(3)) (mean 0, variance 1).
 * bench/ref_common.py bench_input/bench_ids compute the same numbers. */
static inline uint32_t bench_hash(int64_t i, uint32_t seed) {
    uint32_t h = (uint32_t)((uint64_t)i * 2654435761u + (uint64_t)seed * 0x9E3779B9u);
    h ^= h >> 16;
    h = (uint32_t)((uint64_t)h * 0x45d9f3bu);
    h ^= h >> 16;
    return h;
}

static inline void bench_input(float *x, int64_t n, uint32_t seed) {
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(((double)bench_hash(i, seed) / 4294967296.0 * 2.0 - 1.0) * 1.7320508075688772);
}

typedef struct {
    int64_t nonfinite;     /* NaN or Inf elements */
    double mean_abs;       /* mean |x| over the finite elements */
} bench_summary_t;

/* Downloads the n floats at device pointer out and summarizes them. Returns
 * 0, or 1 after printing the error. */
static inline int bench_summarize(bench_dev_t *b, const float *out, int64_t n, bench_summary_t *s) {
    float *h = malloc((size_t)n * sizeof *h);
    if (!h || tdm_dev_download(&b->dev, h, out, n * (int64_t)sizeof *h, "output") != TDM_OK) {
        fprintf(stderr, "%s: %s\n", b->prog, h ? tdm_last_error() : "out of host memory");
        free(h);
        return 1;
    }
    double sum = 0;
    s->nonfinite = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isfinite(h[i])) sum += fabs((double)h[i]);
        else s->nonfinite++;
    }
    s->mean_abs = n > s->nonfinite ? sum / (double)(n - s->nonfinite) : 0.0;
    free(h);
    return 0;
}

/* Prints the measurement as one JSON line. `extra` is more JSON members
 * ("\"tokens\": 512"), or "". On CUDA peak_gpu_mib is the tracked peak
 * (weights + the largest call; not counting cuBLAS workspace and the
 * half-precision staging buffer) and gpu_used_mib what the process holds on
 * the GPU at the end (stream-ordered pool and cache included; compare with
 * torch's reserved bytes). */
static inline void bench_report(const bench_dev_t *b, const char *what, const char *extra, double load_s,
                                int iters, double best_ms, double mean_ms, const bench_summary_t *s) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    char gpu[160] = "";
    if (bench_is_cuda(b)) {
        int64_t used = bench_gpu_used();
        snprintf(gpu, sizeof gpu, "\"weights_mib\": %.1f, \"peak_gpu_mib\": %.1f, \"gpu_used_mib\": %.1f, ",
                 b->weight_bytes / 1048576.0, b->dev.peak_bytes / 1048576.0,
                 used >= 0 ? (used - b->gpu_base) / 1048576.0 : -1.0);
    }
    printf("{\"impl\": \"tandem\", \"what\": \"%s\", \"dtype\": \"%s\", \"device\": \"%s\", %s%s"
           "\"load_s\": %.2f, \"iters\": %d, \"best_ms\": %.2f, \"mean_ms\": %.2f, %s"
           "\"peak_tracked_mib\": %.1f, \"peak_rss_mib\": %.1f, \"finite\": %s, \"nonfinite\": %lld, "
           "\"out_mean_abs\": %.6g}\n",
           what, b->dtype, b->name, extra, *extra ? ", " : "", load_s, iters, best_ms, mean_ms, gpu,
           b->dev.peak_bytes / 1048576.0, ru.ru_maxrss / 1024.0, s->nonfinite ? "false" : "true",
           (long long)s->nonfinite, s->mean_abs);
    fflush(stdout);
}

#endif
