/* ulysses.c — Ulysses attention (ulysses.h): pack this rank's rows of q, k,
 * v per destination rank's heads, all_to_all, unpack into full-sequence
 * tensors, attention, pack the output per row owner, all_to_all, unpack.
 * Layout copies are tdm_op_copy_2d on dev; no allocation. */
#include "nn/ulysses.h"

#include <string.h>

#include "backend/ops.h"

/* Workspace parts, in elements of at, each start rounded up to ALIGN. */
#define ALIGN 64
enum { P_SEND, P_RECV, P_Q, P_K, P_V, P_ZERO, P_COUNT };

/* The derived sizes of one call: blocks and full tensors in elements. */
typedef struct {
    tdm_nn_ulysses_sizes_t n;
    int64_t hld;        /* heads_local · D: a row of one rank's heads */
    int64_t block;      /* one tensor's exchange block: B · rows_pad · hld */
    int64_t full;       /* one full-sequence tensor: B · S · hld */
    int64_t off[P_COUNT + 1];   /* part starts; off[P_COUNT]: total elements */
} plan_t;

void tdm_nn_ulysses_split(int64_t L, int r, int U, int64_t *begin, int64_t *count) {
    int64_t q, m;
    if (L < 0) L = 0;
    if (U < 1) U = 1;
    q = L / U, m = L % U;
    *begin = (int64_t)r * q + (r < m ? r : m);
    *count = q + (r < m ? 1 : 0);
}

static tdm_status bad(const char *what, long long v) {
    return tdm_errorf(TDM_ERR_INVALID_ARG, "ulysses attention: %s %lld", what, v);
}

/* a += b·c with overflow checks (all >= 0). */
static int mad_ok(int64_t *a, int64_t b, int64_t c) {
    int64_t p;
    if (!tdm_mul_ok(b, c, &p) || *a > INT64_MAX - p) return 0;
    *a += p;
    return 1;
}

static tdm_status make_plan(const tdm_nn_ulysses_shape_t *s, int rank, int U, tdm_dtype at,
                            plan_t *p) {
    tdm_nn_ulysses_sizes_t *n = &p->n;
    int64_t sizes[P_COUNT], total = 0, bytes;
    memset(p, 0, sizeof *p);
    if (!s) return tdm_errorf(TDM_ERR_INVALID_ARG, "ulysses attention: NULL shape");
    if (s->B < 1 || s->H < 1 || s->D < 1)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "ulysses attention: batch %lld, heads %lld, head "
                          "dim %lld (each >= 1)", (long long)s->B, (long long)s->H, (long long)s->D);
    if (s->nseg < 1 || s->nseg > TDM_NN_ULYSSES_MAX_SEG) return bad("segments", s->nseg);
    if (U < 1) return bad("group size", U);
    if (rank < 0 || rank >= U) return bad("rank", rank);
    if ((unsigned)at >= TDM_DTYPE_COUNT) return bad("dtype", at);
    for (int i = 0; i < s->nseg; i++) {
        if (s->seg[i] < 0 || n->S > INT64_MAX - s->seg[i]) return bad("segment rows", s->seg[i]);
        n->S += s->seg[i];
        tdm_nn_ulysses_split(s->seg[i], rank, U, &n->begin[i], &n->count[i]);
        n->rows += n->count[i];
        n->rows_pad += s->seg[i] / U + (s->seg[i] % U ? 1 : 0);
    }
    n->heads_local = s->H / U + (s->H % U ? 1 : 0);
    n->heads_pad = n->heads_local * U;
    if (!tdm_mul_ok(n->heads_local, s->D, &p->hld) || !tdm_mul_ok(s->B, n->rows_pad, &p->block) ||
        !tdm_mul_ok(p->block, p->hld, &p->block) || !tdm_mul_ok(s->B, n->S, &p->full) ||
        !tdm_mul_ok(p->full, p->hld, &p->full) || !tdm_mul_ok(s->H, s->D, &bytes) ||
        !tdm_mul_ok(3 * (int64_t)U, p->block, &sizes[P_SEND]))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "ulysses attention: sizes overflow");
    sizes[P_RECV] = sizes[P_SEND];
    sizes[P_Q] = sizes[P_K] = sizes[P_V] = p->full;
    sizes[P_ZERO] = p->hld;
    for (int i = 0; i < P_COUNT; i++) {
        p->off[i] = total;
        if (!mad_ok(&total, sizes[i], 1) || !mad_ok(&total, ALIGN - 1, 1))
            return tdm_errorf(TDM_ERR_INVALID_ARG, "ulysses attention: workspace size overflows");
        total -= total % ALIGN;
    }
    p->off[P_COUNT] = total;
    if (!tdm_mul_ok(total, (int64_t)tdm_dtype_size(at), &n->ws_bytes))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "ulysses attention: workspace size overflows");
    return TDM_OK;
}

tdm_status tdm_nn_ulysses_sizes(const tdm_nn_ulysses_shape_t *s, int rank, int U, tdm_dtype at,
                                tdm_nn_ulysses_sizes_t *n) {
    plan_t p;
    tdm_status st = make_plan(s, rank, U, at, &p);
    if (n) *n = p.n;
    return st;
}

/* Heads of rank j's block that are real heads (the rest are padding). */
static int64_t real_heads(const tdm_nn_ulysses_shape_t *s, const plan_t *p, int j) {
    int64_t r = s->H - (int64_t)j * p->n.heads_local;
    return r < 0 ? 0 : r > p->n.heads_local ? p->n.heads_local : r;
}

static void copy2(tdm_device_t *dev, tdm_dtype at, void *y, int64_t ldy, const void *x,
                  int64_t ldx, int64_t rows, int64_t cols) {
    if (rows > 0 && cols > 0) tdm_op_copy_2d(dev, at, y, ldy, x, ldx, rows, cols);
}

/* send block (j, t, b) = rows of tensor t (q, k, v) of batch b, heads of
 * rank j, padding heads zero: (rows_pad, hld), the first `rows` rows set. */
static void pack_qkv(tdm_device_t *dev, tdm_dtype at, const tdm_nn_ulysses_shape_t *s,
                     const plan_t *p, int U, const void *const x[3], void *send, const void *zero) {
    int64_t HD = s->H * s->D, hl = p->n.heads_local, rows = p->n.rows;
    for (int j = 0; j < U; j++) {
        int64_t real = real_heads(s, p, j);
        for (int t = 0; t < 3; t++)
            for (int64_t b = 0; b < s->B; b++) {
                void *dst = tdm_act_at(send, at, ((j * 3 + t) * s->B + b) * p->n.rows_pad * p->hld);
                if (real > 0)
                    copy2(dev, at, dst, p->hld, tdm_act_at(x[t], at, b * rows * HD + j * hl * s->D),
                          HD, rows, real * s->D);
                copy2(dev, at, tdm_act_at(dst, at, real * s->D), p->hld, zero, 0, rows,
                      (hl - real) * s->D);
            }
    }
}

/* Rank i's share of every segment, and where each starts in its rows. */
static void shares(const tdm_nn_ulysses_shape_t *s, int i, int U, int64_t *begin,
                   int64_t *count, int64_t *local0) {
    int64_t r0 = 0;
    for (int g = 0; g < s->nseg; g++) {
        tdm_nn_ulysses_split(s->seg[g], i, U, &begin[g], &count[g]);
        local0[g] = r0;
        r0 += count[g];
    }
}

/* Full tensors f[t] (B, S, hld) from the received blocks (i, t, b). */
static void unpack_qkv(tdm_device_t *dev, tdm_dtype at, const tdm_nn_ulysses_shape_t *s,
                       const plan_t *p, int U, const void *recv, void *const f[3]) {
    int64_t begin[TDM_NN_ULYSSES_MAX_SEG], count[TDM_NN_ULYSSES_MAX_SEG], l0[TDM_NN_ULYSSES_MAX_SEG];
    for (int i = 0; i < U; i++) {
        shares(s, i, U, begin, count, l0);
        for (int t = 0; t < 3; t++)
            for (int64_t b = 0; b < s->B; b++) {
                const void *blk = tdm_act_at(recv, at, ((i * 3 + t) * s->B + b) * p->n.rows_pad * p->hld);
                int64_t seg0 = 0;
                for (int g = 0; g < s->nseg; g++) {
                    int64_t n = count[g] * p->hld;
                    copy2(dev, at, tdm_act_at(f[t], at, (b * p->n.S + seg0 + begin[g]) * p->hld), n,
                          tdm_act_at(blk, at, l0[g] * p->hld), n, 1, n);
                    seg0 += s->seg[g];
                }
            }
    }
}

/* send block (j, b) = rank j's rows of the full output of (B, S, hld). */
static void pack_o(tdm_device_t *dev, tdm_dtype at, const tdm_nn_ulysses_shape_t *s,
                   const plan_t *p, int U, const void *of, void *send) {
    int64_t begin[TDM_NN_ULYSSES_MAX_SEG], count[TDM_NN_ULYSSES_MAX_SEG], l0[TDM_NN_ULYSSES_MAX_SEG];
    for (int j = 0; j < U; j++) {
        shares(s, j, U, begin, count, l0);
        for (int64_t b = 0; b < s->B; b++) {
            void *blk = tdm_act_at(send, at, (j * s->B + b) * p->n.rows_pad * p->hld);
            int64_t seg0 = 0;
            for (int g = 0; g < s->nseg; g++) {
                int64_t n = count[g] * p->hld;
                copy2(dev, at, tdm_act_at(blk, at, l0[g] * p->hld), n,
                      tdm_act_at(of, at, (b * p->n.S + seg0 + begin[g]) * p->hld), n, 1, n);
                seg0 += s->seg[g];
            }
        }
    }
}

/* o (B, rows, H·D): the real heads of block (i, b) at heads i·hl. */
static void unpack_o(tdm_device_t *dev, tdm_dtype at, const tdm_nn_ulysses_shape_t *s,
                     const plan_t *p, int U, const void *recv, void *o) {
    int64_t HD = s->H * s->D, rows = p->n.rows;
    for (int i = 0; i < U; i++) {
        int64_t real = real_heads(s, p, i);
        if (real == 0) continue;
        for (int64_t b = 0; b < s->B; b++)
            copy2(dev, at, tdm_act_at(o, at, b * rows * HD + i * p->n.heads_local * s->D), HD,
                  tdm_act_at(recv, at, (i * s->B + b) * p->n.rows_pad * p->hld), p->hld, rows,
                  real * s->D);
    }
}

static tdm_status zero_bytes(tdm_device_t *dev, void *p, int64_t bytes) {
    if (bytes <= 0) return TDM_OK;
    if (tdm_dev_is_host(dev)) {
        memset(p, 0, (size_t)bytes);
        return TDM_OK;
    }
    if (!dev->ops->zero || !dev->ops->zero(dev, p, bytes))
        return tdm_errorf(TDM_ERR_INTERNAL, "ulysses attention: zeroing %lld device bytes failed",
                          (long long)bytes);
    return TDM_OK;
}

/* The attention op on the full sequence: tdm_nn_ulysses_attention's inner. */
typedef struct {
    float scale;
    int causal;
} op_inner_t;

static tdm_status op_inner(void *ctx, tdm_device_t *dev, tdm_dtype at, void *o, const void *q,
                           const void *k, const void *v, int64_t B, int64_t S, int64_t heads,
                           int64_t D) {
    const op_inner_t *c = ctx;
    if (S > 0) tdm_op_attention_t(dev, at, o, q, k, v, B, S, S, heads, D, c->scale, c->causal);
    return TDM_OK;
}

tdm_status tdm_nn_ulysses_attention(tdm_device_t *dev, const tdm_nn_group_t *g, tdm_dtype at,
                                    void *o, const void *q, const void *k, const void *v,
                                    const tdm_nn_ulysses_shape_t *s, float scale, int causal,
                                    void *ws, int64_t ws_bytes) {
    op_inner_t c = { scale, causal };
    return tdm_nn_ulysses_attention_with(dev, g, at, o, q, k, v, s, op_inner, &c, ws, ws_bytes);
}

tdm_status tdm_nn_ulysses_attention_with(tdm_device_t *dev, const tdm_nn_group_t *g, tdm_dtype at,
                                         void *o, const void *q, const void *k, const void *v,
                                         const tdm_nn_ulysses_shape_t *s,
                                         tdm_nn_ulysses_inner_fn inner, void *ctx, void *ws,
                                         int64_t ws_bytes) {
    tdm_nn_group_t one;
    plan_t p;
    tdm_status st, ist;
    if (!g) tdm_nn_group_single(&one), g = &one;
    if ((st = make_plan(s, g->rank, g->size, at, &p)) != TDM_OK) return st;
    if (!inner)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "ulysses attention on rank %d: no attention",
                          g->rank);
    if (ws_bytes < p.n.ws_bytes || !ws)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "ulysses attention on rank %d: workspace of %lld "
                          "bytes, needs %lld", g->rank, (long long)ws_bytes,
                          (long long)p.n.ws_bytes);
    if (p.n.rows > 0 && (!o || !q || !k || !v))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "ulysses attention on rank %d: NULL q, k, v or o",
                          g->rank);
    int U = g->size;
    void *part[P_COUNT];
    for (int i = 0; i < P_COUNT; i++) part[i] = tdm_act_at(ws, at, p.off[i]);
    const void *x[3] = { q, k, v };
    void *f[3] = { part[P_Q], part[P_K], part[P_V] };
    void *of = part[P_RECV];   /* free once unpacked; it holds >= B·S·hld */
    if (p.n.heads_pad > s->H &&
        (st = zero_bytes(dev, part[P_ZERO], p.hld * (int64_t)tdm_dtype_size(at))) != TDM_OK)
        return st;
    pack_qkv(dev, at, s, &p, U, x, part[P_SEND], part[P_ZERO]);
    if ((st = tdm_nn_group_all_to_all(g, dev, part[P_SEND], part[P_RECV], 3 * p.block, at)) != TDM_OK)
        return st;
    unpack_qkv(dev, at, s, &p, U, part[P_RECV], f);
    /* an inner failure still takes part in the exchange back, so that the
     * group's ranks stay in step; it is returned afterwards */
    ist = inner(ctx, dev, at, of, f[0], f[1], f[2], s->B, p.n.S, p.n.heads_local, s->D);
    pack_o(dev, at, s, &p, U, of, part[P_SEND]);
    if ((st = tdm_nn_group_all_to_all(g, dev, part[P_SEND], part[P_RECV], p.block, at)) != TDM_OK)
        return st;
    unpack_o(dev, at, s, &p, U, part[P_RECV], o);
    return ist;
}
