/* ring.c — ring attention and USP over nn groups (contracts in ring.h).
 * Ring: pack this rank's K/V into a block, then R steps of shift (next
 * block in) and attention_lse (block in hand merged into the float32
 * output); USP: the Ulysses exchange (nn/ulysses.c) with ring attention as
 * its inner attention. Layout copies are tdm_op_copy_2d on dev; no
 * allocation. */
#include "nn/ring.h"

#include <string.h>

#include "backend/ops.h"

#define ALIGN 64   /* bytes: every workspace part starts on such a boundary */

static int64_t up(int64_t b) { return (b + ALIGN - 1) / ALIGN * ALIGN; }

/* The derived sizes of one ring call. */
typedef struct {
    tdm_nn_ring_sizes_t n;
    int64_t HD;          /* H·D: a row */
    int64_t blk;         /* elements of one tensor's block: B · rows_pad · HD */
    int64_t off_buf[2];  /* bytes: the two K/V blocks (2·blk elements of at each) */
    int64_t off_o32;     /* bytes: float32 output (B, rows, HD); -1: o itself (at F32) */
    int64_t off_lse;     /* bytes: float32 log-sum-exp (B, H, rows) */
} plan_t;

static tdm_status make_plan(const tdm_nn_ulysses_shape_t *s, int rank, int R, tdm_dtype at,
                            plan_t *p) {
    tdm_nn_ulysses_sizes_t u;
    tdm_status st;
    int64_t es, buf, o32 = 0, lse, total;
    memset(p, 0, sizeof *p);
    /* the shape, rank and split checks and the row arithmetic are Ulysses's */
    if ((st = tdm_nn_ulysses_sizes(s, rank, R, at, &u)) != TDM_OK) return st;
    p->n.S = u.S, p->n.rows = u.rows, p->n.rows_pad = u.rows_pad;
    memcpy(p->n.begin, u.begin, sizeof u.begin);
    memcpy(p->n.count, u.count, sizeof u.count);
    p->off_o32 = -1;
    if (R == 1) return TDM_OK;   /* the attention op itself: no workspace */
    es = (int64_t)tdm_dtype_size(at);
    if (!tdm_mul_ok(s->H, s->D, &p->HD) || !tdm_mul_ok(s->B, u.rows_pad, &p->blk) ||
        !tdm_mul_ok(p->blk, p->HD, &p->blk) || !tdm_mul_ok(2 * es, p->blk, &buf) ||
        buf > INT64_MAX / 8 || !tdm_mul_ok(s->B, s->H, &lse) || !tdm_mul_ok(lse, u.rows, &lse) ||
        lse > INT64_MAX / 64 || !tdm_mul_ok(s->B, u.rows, &o32) ||
        !tdm_mul_ok(o32, p->HD, &o32) || o32 > INT64_MAX / 64)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "ring attention: sizes overflow");
    p->off_buf[0] = 0;
    p->off_buf[1] = up(buf);
    total = 2 * up(buf);
    if (at != TDM_F32) {
        p->off_o32 = total;
        total += up(o32 * 4);
    }
    p->off_lse = total;
    if (up(lse * 4) > INT64_MAX / 2 - total)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "ring attention: workspace size overflows");
    p->n.ws_bytes = total + up(lse * 4);
    return TDM_OK;
}

tdm_status tdm_nn_ring_sizes(const tdm_nn_ulysses_shape_t *s, int rank, int R, tdm_dtype at,
                             tdm_nn_ring_sizes_t *n) {
    plan_t p;
    tdm_status st = make_plan(s, rank, R, at, &p);
    if (n) *n = p.n;
    return st;
}

/* Rows rank i of R holds (its block's valid rows). */
static int64_t rows_of(const tdm_nn_ulysses_shape_t *s, int i, int R) {
    int64_t rows = 0, b, c;
    for (int g = 0; g < s->nseg; g++) {
        tdm_nn_ulysses_split(s->seg[g], i, R, &b, &c);
        rows += c;
    }
    return rows;
}

static void copy_n(tdm_device_t *dev, tdm_dtype at, void *y, const void *x, int64_t n) {
    if (n > 0) tdm_op_copy_2d(dev, at, y, n, x, n, 1, n);
}

tdm_status tdm_nn_ring_attention(tdm_device_t *dev, const tdm_nn_group_t *g, tdm_dtype at, void *o,
                                 const void *q, const void *k, const void *v,
                                 const tdm_nn_ulysses_shape_t *s, float scale, void *ws,
                                 int64_t ws_bytes) {
    tdm_nn_group_t one;
    plan_t p;
    tdm_status st;
    if (!g) tdm_nn_group_single(&one), g = &one;
    if ((st = make_plan(s, g->rank, g->size, at, &p)) != TDM_OK) return st;
    const int R = g->size, r = g->rank;
    const int64_t rows = p.n.rows;
    if (rows > 0 && (!o || !q || !k || !v))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "ring attention on rank %d: NULL q, k, v or o", r);
    if (R == 1) {   /* the whole sequence is here: the attention op, one device's bits */
        if (rows > 0)
            tdm_op_attention_t(dev, at, o, q, k, v, s->B, rows, rows, s->H, s->D, scale, 0);
        return TDM_OK;
    }
    if (ws_bytes < p.n.ws_bytes || !ws)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "ring attention on rank %d: workspace of %lld "
                          "bytes, needs %lld", r, (long long)ws_bytes, (long long)p.n.ws_bytes);
    char *w = ws;
    void *buf[2] = { w + p.off_buf[0], w + p.off_buf[1] };
    float *o32 = p.off_o32 < 0 ? (float *)o : (float *)(w + p.off_o32);
    float *lse = (float *)(w + p.off_lse);
    /* this rank's block: k (B, rows, HD) then, blk elements on, v */
    copy_n(dev, at, buf[0], k, s->B * rows * p.HD);
    copy_n(dev, at, tdm_act_at(buf[0], at, p.blk), v, s->B * rows * p.HD);
    for (int t = 0, cur = 0; t < R; t++, cur ^= 1) {
        const int src = (r - t + R) % R;   /* whose keys are in hand */
        /* the next block comes in while this one is worked on (a blocking
         * group finishes the shift first) */
        if (t + 1 < R &&
            (st = tdm_nn_group_sendrecv(g, dev, buf[cur], (r + 1) % R, buf[cur ^ 1],
                                        (r - 1 + R) % R, 2 * p.blk, at)) != TDM_OK)
            return st;
        if (rows > 0)
            tdm_op_attention_lse(dev, at, o32, lse, q, buf[cur], tdm_act_at(buf[cur], at, p.blk),
                                 s->B, rows, rows_of(s, src, R), s->H, s->D, scale, t > 0);
    }
    if (o32 != o && rows > 0) tdm_op_cast(dev, o, at, o32, TDM_F32, s->B * rows * p.HD);
    return TDM_OK;
}

/* ---- USP ---------------------------------------------------------------------- */

void tdm_nn_usp_split(int64_t L, int r, int R, int u, int U, int64_t *begin, int64_t *count) {
    int64_t rb, rc, ub;
    tdm_nn_ulysses_split(L, r, R, &rb, &rc);
    tdm_nn_ulysses_split(rc, u, U, &ub, count);
    *begin = rb + ub;
}

/* The derived shapes of one USP call: the Ulysses exchange's (the slot's
 * segments) and the ring's (heads_local heads over the full segments). */
typedef struct {
    tdm_nn_usp_sizes_t n;
    tdm_nn_ulysses_shape_t us, rs;
    int64_t uly_ws, ring_ws;   /* bytes; the ring's part starts at up(uly_ws) */
} usp_plan_t;

static tdm_status usp_plan(const tdm_nn_ulysses_shape_t *s, int r, int R, int u, int U,
                           tdm_dtype at, usp_plan_t *p) {
    tdm_nn_ulysses_sizes_t un;
    tdm_nn_ring_sizes_t rn;
    tdm_status st;
    memset(p, 0, sizeof *p);
    if (!s) return tdm_errorf(TDM_ERR_INVALID_ARG, "usp attention: NULL shape");
    if (U < 1 || u < 0 || u >= U)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "usp attention: Ulysses rank %d of %d", u, U);
    /* the ring split (checks the shape, r and R) gives the slot's segments */
    if ((st = tdm_nn_ring_sizes(s, r, R, at, &rn)) != TDM_OK) return st;
    p->us = *s;
    for (int g = 0; g < s->nseg; g++) p->us.seg[g] = rn.count[g];
    if ((st = tdm_nn_ulysses_sizes(&p->us, u, U, at, &un)) != TDM_OK) return st;
    p->rs = *s;
    p->rs.H = un.heads_local;
    if ((st = tdm_nn_ring_sizes(&p->rs, r, R, at, &rn)) != TDM_OK) return st;
    p->n.S = rn.S;
    p->n.rows = un.rows;
    p->n.slot_rows = un.S;
    p->n.heads_local = un.heads_local;
    for (int g = 0; g < s->nseg; g++) {
        p->n.slot[g] = p->us.seg[g];
        p->n.begin[g] = rn.begin[g] + un.begin[g];
        p->n.count[g] = un.count[g];
    }
    p->uly_ws = U > 1 ? un.ws_bytes : 0;
    p->ring_ws = rn.ws_bytes;
    if (up(p->uly_ws) > INT64_MAX / 2 - p->ring_ws)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "usp attention: workspace size overflows");
    p->n.ws_bytes = up(p->uly_ws) + p->ring_ws;
    return TDM_OK;
}

tdm_status tdm_nn_usp_sizes(const tdm_nn_ulysses_shape_t *s, int r, int R, int u, int U,
                            tdm_dtype at, tdm_nn_usp_sizes_t *n) {
    usp_plan_t p;
    tdm_status st = usp_plan(s, r, R, u, U, at, &p);
    if (n) *n = p.n;
    return st;
}

/* Ring attention as the Ulysses exchange's inner attention. */
typedef struct {
    const tdm_nn_group_t *gr;
    const tdm_nn_ulysses_shape_t *rs;   /* heads_local heads over the full segments */
    float scale;
    void *ws;
    int64_t ws_bytes;
} ring_inner_t;

static tdm_status ring_inner(void *ctx, tdm_device_t *dev, tdm_dtype at, void *o, const void *q,
                             const void *k, const void *v, int64_t B, int64_t S, int64_t heads,
                             int64_t D) {
    const ring_inner_t *c = ctx;
    (void)B, (void)S, (void)heads, (void)D;   /* c->rs says them: B, slot rows, heads, D */
    return tdm_nn_ring_attention(dev, c->gr, at, o, q, k, v, c->rs, c->scale, c->ws, c->ws_bytes);
}

tdm_status tdm_nn_usp_attention(tdm_device_t *dev, const tdm_nn_group_t *gu,
                                const tdm_nn_group_t *gr, tdm_dtype at, void *o, const void *q,
                                const void *k, const void *v, const tdm_nn_ulysses_shape_t *s,
                                float scale, void *ws, int64_t ws_bytes) {
    const int u = gu ? gu->rank : 0, U = gu ? gu->size : 1;
    const int r = gr ? gr->rank : 0, R = gr ? gr->size : 1;
    usp_plan_t p;
    tdm_status st;
    if ((st = usp_plan(s, r, R, u, U, at, &p)) != TDM_OK) return st;
    if (ws_bytes < p.n.ws_bytes || (p.n.ws_bytes > 0 && !ws))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "usp attention on ring rank %d, Ulysses rank %d: "
                          "workspace of %lld bytes, needs %lld", r, u, (long long)ws_bytes,
                          (long long)p.n.ws_bytes);
    if (U == 1)   /* ring alone (R = 1 too: the attention op) */
        return tdm_nn_ring_attention(dev, gr, at, o, q, k, v, s, scale, ws, ws_bytes);
    if (R == 1)   /* Ulysses alone: its bits */
        return tdm_nn_ulysses_attention(dev, gu, at, o, q, k, v, s, scale, 0, ws, ws_bytes);
    ring_inner_t c = { gr, &p.rs, scale, (char *)ws + up(p.uly_ws), p.ring_ws };
    return tdm_nn_ulysses_attention_with(dev, gu, at, o, q, k, v, &p.us, ring_inner, &c, ws,
                                         p.uly_ws);
}
