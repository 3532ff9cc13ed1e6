/* test_ulysses.h — what the Ulysses attention tests share: the cases, the
 * seeded inputs, the one-device reference and the check of one rank's rows
 * against it (bit for bit). Used by test_ulysses.c (one process, one rank
 * and threads as ranks) and test_ulysses_mpi.c (ranks under mpirun). */
#ifndef TDM_TEST_ULYSSES_H
#define TDM_TEST_ULYSSES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "nn/ulysses.h"
#include "test.h"

typedef struct {
    tdm_nn_ulysses_shape_t s;
    int causal;
} uly_case_t;

/* H divisible by U and not (3 heads over 2 and 4 ranks: padding; 24 over
 * 5 and 16), S divisible and not, segments shorter than U (ranks without
 * rows), sequences over one 64-row query tile, batch 2, three segments. */
static const uly_case_t uly_cases[] = {
    { { 1, 3, 8, 1, { 7 } }, 0 },
    { { 1, 4, 8, 1, { 12 } }, 0 },
    { { 2, 3, 4, 2, { 5, 70 } }, 0 },
    { { 1, 24, 4, 2, { 7, 80 } }, 0 },
    { { 1, 2, 16, 2, { 0, 13 } }, 0 },
    { { 2, 6, 8, 2, { 2, 3 } }, 0 },
    { { 1, 5, 8, 3, { 3, 2, 66 } }, 0 },
    { { 2, 3, 8, 2, { 9, 67 } }, 1 },
};
#define ULY_NCASES ((int)(sizeof uly_cases / sizeof uly_cases[0]))

static inline int64_t uly_S(const tdm_nn_ulysses_shape_t *s) {
    int64_t S = 0;
    for (int g = 0; g < s->nseg; g++) S += s->seg[g];
    return S;
}

/* Seeded values in [-2, 2) (the same on every rank). */
static inline void uly_fill(float *x, int64_t n, uint32_t seed) {
    uint32_t z = seed * 2654435761u + 12345u;
    for (int64_t i = 0; i < n; i++) {
        z = z * 1664525u + 1013904223u;
        x[i] = (float)((z >> 8) & 0xffff) / 16384.0f - 2.0f;
    }
}

/* Full q, k, v (B, S, H·D) of a case and the one-device output ref. Each a
 * malloc'd buffer; 0 on allocation failure. */
static inline int uly_full(const uly_case_t *c, int seed, float **q, float **k, float **v,
                           float **ref) {
    const tdm_nn_ulysses_shape_t *s = &c->s;
    int64_t n = s->B * uly_S(s) * s->H * s->D;
    size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(float);
    *q = malloc(bytes), *k = malloc(bytes), *v = malloc(bytes), *ref = malloc(bytes);
    if (!*q || !*k || !*v || !*ref) return 0;
    uly_fill(*q, n, 3u * (uint32_t)seed + 1u);
    uly_fill(*k, n, 3u * (uint32_t)seed + 2u);
    uly_fill(*v, n, 3u * (uint32_t)seed + 3u);
    if (n > 0)
        tdm_op_attention(NULL, *ref, *q, *k, *v, s->B, uly_S(s), uly_S(s), s->H, s->D,
                         1.0f / sqrtf((float)s->D), c->causal);
    return 1;
}

/* y (B, rows, H·D) = rank r's rows of x (B, S, H·D), elements of es
 * bytes: its share of each segment, in sequence order (nn/ulysses.h). */
static inline void uly_rows_of(const tdm_nn_ulysses_shape_t *s, int r, int U, size_t es,
                               void *yv, const void *xv, int64_t rows) {
    int64_t HD = s->H * s->D, S = uly_S(s);
    char *y = yv;
    const char *x = xv;
    for (int64_t b = 0; b < s->B; b++) {
        int64_t seg0 = 0, l = 0;
        for (int g = 0; g < s->nseg; g++) {
            int64_t begin, count;
            tdm_nn_ulysses_split(s->seg[g], r, U, &begin, &count);
            memcpy(y + (size_t)((b * rows + l) * HD) * es, x + (size_t)((b * S + seg0 + begin) * HD) * es,
                   (size_t)(count * HD) * es);
            l += count;
            seg0 += s->seg[g];
        }
    }
}

/* Runs case c on rank r of group g (U ranks) and checks its rows against
 * the one-device reference bit for bit; a failure is a failed check naming
 * the case, rank and first differing element. */
static inline void uly_check_case(int ci, const uly_case_t *c, const tdm_nn_group_t *g) {
    const tdm_nn_ulysses_shape_t *s = &c->s;
    int r = g ? g->rank : 0, U = g ? g->size : 1;
    float *q = NULL, *k = NULL, *v = NULL, *ref = NULL, *lq = NULL, *lk = NULL, *lv = NULL,
          *lo = NULL, *want = NULL;
    void *ws = NULL;
    tdm_nn_ulysses_sizes_t n;
    tdm_status st = tdm_nn_ulysses_sizes(s, r, U, TDM_F32, &n);
    CHECK_MSG(st == TDM_OK, "case %d: %s", ci, tdm_last_error());
    if (st != TDM_OK || !uly_full(c, ci, &q, &k, &v, &ref)) goto done;
    int64_t ln = s->B * n.rows * s->H * s->D;
    size_t lb = (size_t)(ln > 0 ? ln : 1) * sizeof(float);
    lq = malloc(lb), lk = malloc(lb), lv = malloc(lb), lo = malloc(lb), want = malloc(lb);
    ws = malloc((size_t)n.ws_bytes + 1);
    CHECK(lq && lk && lv && lo && want && ws);
    if (!lq || !lk || !lv || !lo || !want || !ws) goto done;
    uly_rows_of(s, r, U, sizeof(float), lq, q, n.rows);
    uly_rows_of(s, r, U, sizeof(float), lk, k, n.rows);
    uly_rows_of(s, r, U, sizeof(float), lv, v, n.rows);
    uly_rows_of(s, r, U, sizeof(float), want, ref, n.rows);
    memset(lo, 0xff, lb);   /* NaNs: every element must be written */
    st = tdm_nn_ulysses_attention(NULL, g, TDM_F32, lo, lq, lk, lv, s, 1.0f / sqrtf((float)s->D),
                                  c->causal, ws, n.ws_bytes);
    CHECK_MSG(st == TDM_OK, "case %d rank %d of %d: %s", ci, r, U, tdm_last_error());
    if (st == TDM_OK && ln > 0 && memcmp(lo, want, (size_t)ln * sizeof(float)) != 0) {
        int64_t i = 0;
        while (i < ln && memcmp(&lo[i], &want[i], sizeof(float)) == 0) i++;
        CHECK_MSG(0, "case %d (B %lld H %lld D %lld S %lld causal %d) rank %d of %d: element "
                  "%lld (row %lld) is %.9g, one device %.9g", ci, (long long)s->B, (long long)s->H,
                  (long long)s->D, (long long)uly_S(s), c->causal, r, U, (long long)i,
                  (long long)(i / (s->H * s->D)), lo[i], want[i]);
    }
done:
    free(q), free(k), free(v), free(ref), free(lq), free(lk), free(lv), free(lo), free(want);
    free(ws);
}

#endif
