/* test_ring.h — what the ring attention / USP tests share: the cases, and
 * the check of one rank's rows (rank (r, u) of an R × U grid: the Ulysses
 * share u of the ring share r of every segment) against the one-device
 * attention, within 1e-5 relative (ring attention merges blocks in float32
 * in another order than one call sums: float tolerance, not bits). Used by
 * test_ring.c (threads as ranks) and test_ring_mpi.c (ranks under mpirun).
 * The inputs and the reference are test_ulysses.h's. */
#ifndef TDM_TEST_RING_H
#define TDM_TEST_RING_H

#include "nn/ring.h"
#include "test_ulysses.h"

#define RING_TOL 1e-5

/* Non-causal (ring attention is): one segment, [text; image] with shares
 * uneven over 2, 3 and 4 ranks, segments shorter than the ring (ranks
 * without text rows), batch 2, heads that 2 and 4 do not divide (USP pads
 * them), three segments, sequences over one 64-row query tile. */
static const uly_case_t ring_cases[] = {
    { { 1, 3, 8, 1, { 7 } }, 0 },
    { { 2, 3, 4, 2, { 5, 70 } }, 0 },
    { { 1, 4, 16, 2, { 13, 37 } }, 0 },
    { { 1, 2, 16, 2, { 0, 13 } }, 0 },
    { { 2, 6, 8, 2, { 2, 3 } }, 0 },
    { { 1, 5, 8, 3, { 3, 2, 66 } }, 0 },
    { { 2, 3, 8, 2, { 9, 131 } }, 0 },
};
#define RING_NCASES ((int)(sizeof ring_cases / sizeof ring_cases[0]))

/* Runs case c on rank (r, u) (gr: the ring, gu: the Ulysses group; NULL:
 * one rank) through tdm_nn_usp_attention and checks its rows against the
 * one-device reference within RING_TOL relative (max |got - ref| over max
 * |ref| of the whole output). Returns the measured error (-1 when it could
 * not run); a failure is a failed check naming the case and ranks. */
static inline double ring_check_case(int ci, const uly_case_t *c, const tdm_nn_group_t *gu,
                                     const tdm_nn_group_t *gr) {
    const tdm_nn_ulysses_shape_t *s = &c->s;
    const int u = gu ? gu->rank : 0, U = gu ? gu->size : 1;
    const int r = gr ? gr->rank : 0, R = gr ? gr->size : 1;
    float *q = NULL, *k = NULL, *v = NULL, *ref = NULL, *x[4] = { NULL }, *lo = NULL;
    void *ws = NULL;
    double err = -1;
    tdm_nn_usp_sizes_t n;
    tdm_status st = tdm_nn_usp_sizes(s, r, R, u, U, TDM_F32, &n);
    CHECK_MSG(st == TDM_OK, "case %d: %s", ci, tdm_last_error());
    if (st != TDM_OK || !uly_full(c, ci, &q, &k, &v, &ref)) goto done;
    const int64_t HD = s->H * s->D, S = uly_S(s), ln = s->B * n.rows * HD;
    const size_t lb = (size_t)(ln > 0 ? ln : 1) * sizeof(float);
    const float *full[4] = { q, k, v, ref };
    for (int t = 0; t < 4; t++) x[t] = malloc(lb);
    lo = malloc(lb), ws = malloc((size_t)n.ws_bytes + 1);
    CHECK(x[0] && x[1] && x[2] && x[3] && lo && ws);
    if (!x[0] || !x[1] || !x[2] || !x[3] || !lo || !ws) goto done;
    for (int t = 0; t < 4; t++)   /* this rank's rows of q, k, v and the reference */
        for (int64_t b = 0, l = 0; b < s->B; b++) {
            int64_t seg0 = 0;
            for (int g = 0; g < s->nseg; g++) {
                memcpy(x[t] + l * HD, full[t] + (b * S + seg0 + n.begin[g]) * HD,
                       (size_t)(n.count[g] * HD) * sizeof(float));
                l += n.count[g];
                seg0 += s->seg[g];
            }
        }
    memset(lo, 0xff, lb);   /* NaNs: every element must be written */
    st = tdm_nn_usp_attention(NULL, gu, gr, TDM_F32, lo, x[0], x[1], x[2], s,
                              1.0f / sqrtf((float)s->D), ws, n.ws_bytes);
    CHECK_MSG(st == TDM_OK, "case %d ring %d of %d, ulysses %d of %d: %s", ci, r, R, u, U,
              tdm_last_error());
    if (st != TDM_OK) goto done;
    double md = 0, mr = 0;
    for (int64_t i = 0; i < s->B * S * HD; i++) mr = fmax(mr, fabs((double)ref[i]));
    for (int64_t i = 0; i < ln; i++) {
        const double d = fabs((double)lo[i] - (double)x[3][i]);
        if (!(d <= md)) md = d;   /* NaN propagates */
    }
    err = mr > 0 ? md / mr : md;
    CHECK_MSG(err <= RING_TOL, "case %d (B %lld H %lld D %lld S %lld) ring %d of %d, ulysses %d "
              "of %d: rel err %.3g", ci, (long long)s->B, (long long)s->H, (long long)s->D,
              (long long)S, r, R, u, U, err);
done:
    free(q), free(k), free(v), free(ref), free(lo), free(ws);
    for (int t = 0; t < 4; t++) free(x[t]);
    return err;
}

#endif
