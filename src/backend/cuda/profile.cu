/* profile.cu — an op-level GPU profile of a CUDA device, on when the
 * device's opts.profile is set at device init (there is no Nsight Systems
 * on our GPU machines, and this names tandem's own ops rather than kernels).
 *
 * Every tdm_op_* dispatched to the device is bracketed by two CUDA events
 * (backend/ops.c); nested brackets (the activation cast inside a half GEMM)
 * are allowed. Events are read back in batches, so profiling adds a sync
 * every few thousand ops and no other. The report lists, per op name, calls
 * and GPU time, and the "window" — GPU time from the first to the last
 * profiled op of each batch — so that window minus the sum of the top-level
 * ops is time the GPU sat idle waiting for the host (launch overhead,
 * synchronizations). Off: two predictable branches per op. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_common.cuh"

#define PROF_BATCH 4096
#define PROF_KEYS 128
#define PROF_DEPTH 8

typedef struct tdm_cuda_prof {
    cudaEvent_t ev0[PROF_BATCH], ev1[PROF_BATCH];
    const char *name[PROF_BATCH];
    int         depth[PROF_BATCH];
    int         n;                      /* records queued in this batch */
    int         stack[PROF_DEPTH], sp;  /* open brackets */
    int         skipped;                /* open brackets that were not recorded */
    const char *key[PROF_KEYS];
    int         key_depth[PROF_KEYS];
    double      ms[PROF_KEYS];
    long        calls[PROF_KEYS];
    int         nkeys;
    double      window_ms, top_ms;
} tdm_cuda_prof_t;

static tdm_cuda_prof_t *prof_of(tdm_device_t *d) {
    return d && d->impl ? (tdm_cuda_prof_t *)((tdm_cuda_impl_t *)d->impl)->prof : NULL;
}

extern "C" void tdm_cuda_prof_init(tdm_device_t *d) {
    if (!d->opts.profile) return;
    tdm_cuda_prof_t *p = (tdm_cuda_prof_t *)calloc(1, sizeof *p);
    if (!p) return;
    for (int i = 0; i < PROF_BATCH; i++) {
        if (cudaEventCreate(&p->ev0[i]) != cudaSuccess || cudaEventCreate(&p->ev1[i]) != cudaSuccess) {
            (void)cudaGetLastError();
            for (int j = 0; j <= i; j++) {
                if (p->ev0[j]) cudaEventDestroy(p->ev0[j]);
                if (p->ev1[j]) cudaEventDestroy(p->ev1[j]);
            }
            free(p);
            return;
        }
    }
    ((tdm_cuda_impl_t *)d->impl)->prof = p;
}

/* Reads the queued events back into the per-name totals. */
static void prof_flush(tdm_cuda_prof_t *p) {
    if (p->n == 0) return;
    cudaEventSynchronize(p->ev1[p->n - 1]);
    int first = -1, last = -1;
    for (int i = 0; i < p->n; i++) {
        if (!p->name[i]) continue;   /* still open (flushed mid-bracket): dropped */
        float ms = 0;
        if (cudaEventElapsedTime(&ms, p->ev0[i], p->ev1[i]) != cudaSuccess) {
            (void)cudaGetLastError();
            continue;
        }
        int k = 0;
        while (k < p->nkeys && strcmp(p->key[k], p->name[i])) k++;
        if (k == p->nkeys) {
            if (k == PROF_KEYS) continue;
            p->key[k] = p->name[i];
            p->key_depth[k] = p->depth[i];
            p->nkeys++;
        }
        p->ms[k] += ms;
        p->calls[k]++;
        if (p->depth[i] == 0) {
            p->top_ms += ms;
            if (first < 0) first = i;
            last = i;
        }
    }
    if (first >= 0) {
        float w = 0;
        if (cudaEventElapsedTime(&w, p->ev0[first], p->ev1[last]) == cudaSuccess) p->window_ms += w;
        else (void)cudaGetLastError();
    }
    p->n = 0;
}

extern "C" void tdm_cuda_prof_begin(tdm_device_t *d) {
    tdm_cuda_prof_t *p = prof_of(d);
    if (!p) return;
    if (p->skipped || p->sp == PROF_DEPTH || (p->n == PROF_BATCH && p->sp)) {
        p->skipped++;   /* too deep, or a full batch inside a bracket: not recorded */
        return;
    }
    if (p->n == PROF_BATCH) prof_flush(p);
    int i = p->n++;
    p->name[i] = NULL;
    p->depth[i] = p->sp;
    p->stack[p->sp++] = i;
    cudaEventRecord(p->ev0[i], ((tdm_cuda_impl_t *)d->impl)->stream);
}

extern "C" void tdm_cuda_prof_end(tdm_device_t *d, const char *name) {
    tdm_cuda_prof_t *p = prof_of(d);
    if (!p) return;
    if (p->skipped) {
        p->skipped--;
        return;
    }
    if (p->sp == 0) return;
    int i = p->stack[--p->sp];
    cudaEventRecord(p->ev1[i], ((tdm_cuda_impl_t *)d->impl)->stream);
    p->name[i] = name;
}

static int by_ms(const void *a, const void *b, void *ctx) {
    const double *ms = (const double *)ctx;
    double x = ms[*(const int *)a], y = ms[*(const int *)b];
    return x < y ? 1 : x > y ? -1 : 0;
}

extern "C" void tdm_cuda_prof_report(tdm_device_t *d, const char *title) {
    tdm_cuda_prof_t *p = prof_of(d);
    if (!p) return;
    prof_flush(p);
    if (p->nkeys == 0) return;
    int order[PROF_KEYS];
    for (int k = 0; k < p->nkeys; k++) order[k] = k;
    qsort_r(order, (size_t)p->nkeys, sizeof order[0], by_ms, p->ms);
    double w = p->window_ms > 0 ? p->window_ms : 1;
    fprintf(stderr, "profile cuda:%d %s: window %.3f ms, ops %.3f ms, GPU idle %.3f ms (%.1f%%)\n",
            d->index, title ? title : "", p->window_ms, p->top_ms, p->window_ms - p->top_ms,
            100.0 * (p->window_ms - p->top_ms) / w);
    fprintf(stderr, "  %-28s %8s %11s %10s %6s\n", "op", "calls", "total ms", "us/call", "%win");
    for (int j = 0; j < p->nkeys; j++) {
        int k = order[j];
        fprintf(stderr, "  %s%-*s %8ld %11.3f %10.1f %6.1f\n", p->key_depth[k] ? "  " : "",
                p->key_depth[k] ? 26 : 28, p->key[k], p->calls[k], p->ms[k],
                1000.0 * p->ms[k] / (double)p->calls[k], 100.0 * p->ms[k] / w);
    }
    p->nkeys = 0;
    p->window_ms = p->top_ms = 0;
    memset(p->ms, 0, sizeof p->ms);
    memset(p->calls, 0, sizeof p->calls);
}

extern "C" void tdm_cuda_prof_free(tdm_device_t *d) {
    tdm_cuda_prof_t *p = prof_of(d);
    if (!p) return;
    tdm_cuda_prof_report(d, "(rest of run)");
    for (int i = 0; i < PROF_BATCH; i++) {
        cudaEventDestroy(p->ev0[i]);
        cudaEventDestroy(p->ev1[i]);
    }
    free(p);
    ((tdm_cuda_impl_t *)d->impl)->prof = NULL;
}
