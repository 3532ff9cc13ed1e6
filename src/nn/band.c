/* band.c — row-band convolutions, group norms, ResNet blocks and the gather
 * of bands (band.h). Layout copies are tdm_op_copy_2d on dev; the exchanges
 * are the group's; the buffers are the caller's. */
#include "nn/band.h"

#include <stdlib.h>

#include "backend/ops.h"
#include "nn/ulysses.h"

int tdm_nn_band_ranks(const tdm_nn_band_t *b) { return b->g ? b->g->size : 1; }

static int band_rank(const tdm_nn_band_t *b) { return b->g ? b->g->rank : 0; }

void tdm_nn_band_of(const tdm_nn_band_t *b, int r, int64_t *r0, int64_t *rows) {
    tdm_nn_ulysses_split(b->H0, r, tdm_nn_band_ranks(b), r0, rows);
    *r0 *= b->scale;
    *rows *= b->scale;
}

void tdm_nn_band_init(tdm_nn_band_t *b, const tdm_nn_group_t *g, int64_t H0, int64_t W) {
    b->g = g;
    b->H0 = H0;
    b->scale = 1;
    b->H = H0;
    b->W = W;
    tdm_nn_band_of(b, band_rank(b), &b->r0, &b->rows);
}

void tdm_nn_band_scale2(tdm_nn_band_t *b) {
    b->scale *= 2;
    b->H *= 2;
    b->W *= 2;
    b->r0 *= 2;
    b->rows *= 2;
}

/* Halo rows of c: k/2 when the group has several ranks, else none (the
 * one-device convolution pads by itself). */
static int64_t halo(const tdm_nn_band_t *b, const tdm_nn_conv_t *c) {
    return tdm_nn_band_ranks(b) > 1 ? c->k / 2 : 0;
}

int64_t tdm_nn_band_conv_ext(const tdm_nn_band_t *b, const tdm_nn_conv_t *c, int64_t B) {
    const int64_t p = halo(b, c);
    return p ? B * c->cin * (b->rows + 2 * p) * b->W : 0;
}

int64_t tdm_nn_band_conv_edge(const tdm_nn_band_t *b, const tdm_nn_conv_t *c, int64_t B) {
    return 4 * B * c->cin * halo(b, c) * b->W;
}

int64_t tdm_nn_band_conv_scratch(tdm_device_t *dev, const tdm_nn_band_t *b,
                                 const tdm_nn_conv_t *c) {
    const int64_t p = halo(b, c);
    if (!p) return tdm_nn_conv_scratch(dev, c, b->rows, b->W, 1, c->k / 2);
    /* the interior rank's case (rows + 2p rows, no row padding): the same
     * output rows and column matrix height as an edge rank's */
    return tdm_op_conv2d_pad4_scratch(dev, c->cin, c->cout, b->rows + 2 * p, b->W, c->k, c->k, 1, 0, 0,
                                      c->k / 2, c->k / 2);
}

int64_t tdm_nn_band_norm_stats(const tdm_nn_band_t *b, const tdm_nn_norm_t *n, int64_t B) {
    return tdm_nn_band_ranks(b) > 1 ? (tdm_nn_band_ranks(b) + 3) * B * n->groups : 0;
}

tdm_status tdm_nn_band_conv_forward(tdm_device_t *dev, const tdm_nn_band_t *b,
                                    const tdm_nn_conv_t *c, float *y, const float *x, int64_t B,
                                    const tdm_nn_band_buf_t *buf) {
    tdm_status st;
    const int64_t p = halo(b, c), W = b->W, rows = b->rows, BC = B * c->cin;
    if (!p) {
        tdm_nn_conv_forward(dev, c, y, x, B, rows, W, 1, c->k / 2, buf->scratch);
        return TDM_OK;
    }
    const int n = tdm_nn_band_ranks(b), r = band_rank(b);
    if ((b->H0 / n) * b->scale < p)   /* the thinnest band, the same test on every rank */
        return tdm_errorf(TDM_ERR_INVALID_ARG, "band convolution on rank %d: %lld rows over %d "
                          "ranks leave a band thinner than the %lld halo rows of a %lldx%lld "
                          "kernel", r, (long long)b->H, n, (long long)p, (long long)c->k,
                          (long long)c->k);
    const int up = r > 0 ? r - 1 : -1, down = r < n - 1 ? r + 1 : -1;
    const int64_t top = up >= 0 ? p : 0, bot = down >= 0 ? p : 0, Hx = rows + top + bot;
    const int64_t blk = BC * p * W;   /* one set of halo rows */
    float *s_dn = buf->edge, *r_up = buf->edge + blk, *s_up = buf->edge + 2 * blk,
          *r_dn = buf->edge + 3 * blk;
    /* my last p rows go down, my top halo comes from above; then the reverse */
    tdm_op_copy_2d(dev, TDM_F32, s_dn, p * W, x + (rows - p) * W, rows * W, BC, p * W);
    tdm_op_copy_2d(dev, TDM_F32, s_up, p * W, x, rows * W, BC, p * W);
    TDM_TRY(tdm_nn_group_sendrecv(b->g, dev, s_dn, down, r_up, up, blk, TDM_F32));
    TDM_TRY(tdm_nn_group_sendrecv(b->g, dev, s_up, up, r_dn, down, blk, TDM_F32));
    /* ext (B, cin, Hx, W): [top halo; band; bottom halo] */
    tdm_op_copy_2d(dev, TDM_F32, buf->ext + top * W, Hx * W, x, rows * W, BC, rows * W);
    if (top) tdm_op_copy_2d(dev, TDM_F32, buf->ext, Hx * W, r_up, p * W, BC, p * W);
    if (bot)
        tdm_op_copy_2d(dev, TDM_F32, buf->ext + (top + rows) * W, Hx * W, r_dn, p * W, BC, p * W);
    tdm_op_conv2d_pad4(dev, y, buf->ext, c->w, c->b, B, c->cin, Hx, W, c->cout, c->k, c->k, 1,
                       p - top, p - bot, c->k / 2, c->k / 2, buf->scratch);
fail:
    return st;
}

tdm_status tdm_nn_band_group_norm_forward(tdm_device_t *dev, const tdm_nn_band_t *b,
                                          const tdm_nn_norm_t *n, float *y, const float *x,
                                          int64_t B, int silu, double *stats) {
    tdm_status st;
    const int nr = tdm_nn_band_ranks(b);
    const int64_t S = b->rows * b->W, BG = B * n->groups;
    const double count = (double)(n->c / n->groups) * (double)b->H * (double)b->W;
    if (nr == 1) {
        tdm_nn_group_norm_forward(dev, n, y, x, B, S, silu);
        return TDM_OK;
    }
    double *part = stats, *all = stats + BG, *mean = all + nr * BG, *var = mean + BG;
    tdm_op_group_norm_sums(dev, part, x, NULL, B, n->c, S, n->groups);
    TDM_TRY(tdm_nn_group_allgather(b->g, dev, part, all, BG, TDM_F64));
    tdm_op_sum_parts_f64(dev, mean, all, nr, BG, count);
    tdm_op_group_norm_sums(dev, part, x, mean, B, n->c, S, n->groups);
    TDM_TRY(tdm_nn_group_allgather(b->g, dev, part, all, BG, TDM_F64));
    tdm_op_sum_parts_f64(dev, var, all, nr, BG, count);
    tdm_op_group_norm_apply(dev, y, x, mean, var, n->w, n->b, B, n->c, S, n->groups, n->eps, silu);
fail:
    return st;
}

tdm_status tdm_nn_band_resnet_forward(tdm_device_t *dev, const tdm_nn_band_t *b,
                                      const tdm_nn_resnet_t *r, float *y, const float *x,
                                      int64_t B, const tdm_nn_resnet_buf_t *rb,
                                      const tdm_nn_band_buf_t *bb) {
    tdm_status st;
    const int64_t n = B * r->cout * b->rows * b->W;
    if (r->temb_dim > 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "band resnet: a block with a time embedding "
                          "(%lld) is not supported", (long long)r->temb_dim);
    TDM_TRY(tdm_nn_band_group_norm_forward(dev, b, &r->norm1, rb->t, x, B, 1, bb->stats));
    TDM_TRY(tdm_nn_band_conv_forward(dev, b, &r->conv1, rb->h, rb->t, B, bb));
    TDM_TRY(tdm_nn_band_group_norm_forward(dev, b, &r->norm2, rb->h, rb->h, B, 1, bb->stats));
    TDM_TRY(tdm_nn_band_conv_forward(dev, b, &r->conv2, rb->o, rb->h, B, bb));
    if (r->cin != r->cout) {
        TDM_TRY(tdm_nn_band_conv_forward(dev, b, &r->shortcut, rb->sc, x, B, bb));
        tdm_op_add(dev, y, rb->sc, rb->o, n);
    } else {
        tdm_op_add(dev, y, x, rb->o, n);
    }
    if (r->out_scale != 1.0f) tdm_op_scale(dev, y, y, 1.0f / r->out_scale, n);
fail:
    return st;
}

static void raise_to(int64_t *slot, int64_t v) { if (v > *slot) *slot = v; }

void tdm_nn_band_resnet_sizes(tdm_device_t *dev, const tdm_nn_band_t *b,
                              const tdm_nn_resnet_t *r, int64_t B, int64_t *ext, int64_t *edge,
                              int64_t *scratch, int64_t *stats) {
    const tdm_nn_conv_t *cv[3] = {&r->conv1, &r->conv2, &r->shortcut};
    for (int i = 0; i < (r->cin != r->cout ? 3 : 2); i++) {
        raise_to(ext, tdm_nn_band_conv_ext(b, cv[i], B));
        raise_to(edge, tdm_nn_band_conv_edge(b, cv[i], B));
        raise_to(scratch, tdm_nn_band_conv_scratch(dev, b, cv[i]));
    }
    raise_to(stats, tdm_nn_band_norm_stats(b, &r->norm1, B));
    raise_to(stats, tdm_nn_band_norm_stats(b, &r->norm2, B));
}

tdm_status tdm_nn_band_gather(tdm_device_t *dev, const tdm_nn_band_t *b, float *y,
                              const float *x, int64_t B, int64_t C, int64_t len) {
    tdm_status st = TDM_OK;
    const int n = tdm_nn_band_ranks(b);
    int64_t *counts = malloc(2 * (size_t)n * sizeof *counts), *displs = counts + n;
    if (!counts) return tdm_errorf(TDM_ERR_NOMEM, "band gather: out of memory");
    for (int r = 0; r < n; r++) {
        tdm_nn_band_of(b, r, &displs[r], &counts[r]);
        displs[r] *= len;
        counts[r] *= len;
    }
    const int64_t mine = b->rows * len, whole = b->H * len;
    for (int64_t i = 0; i < B * C; i++)
        TDM_TRY(tdm_nn_group_allgatherv(b->g, dev, x + i * mine, mine, y + i * whole, counts,
                                        displs, TDM_F32));
fail:
    free(counts);
    return st;
}
