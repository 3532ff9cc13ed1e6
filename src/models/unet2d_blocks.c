/* unet2d_blocks.c — the building blocks of the SD UNet: the buffers of
 * ResnetBlock2D (nn/resnet.h) and of convolutions (nn/conv.h),
 * Transformer2DModel with BasicTransformerBlocks (self-attention,
 * cross-attention, GEGLU feed-forward), all through the
 * device-dispatching ops (backend/ops.h) on the model's device. Each function
 * reads its inputs, writes a new device-counted buffer and frees its
 * temporaries; it does not know about block lists or skip connections
 * (unet2d.c does). */
#include <math.h>
#include <string.h>

#include "backend/ops.h"
#include "models/unet2d_internal.h"

/* ---- buffers ---------------------------------------------------------- */

tdm_status unet_buf_new(tdm_device_t *dev, unet_buf_t *b, int64_t n, const char *what) {
    int64_t bytes;
    b->p = NULL;
    b->n = 0;
    if (!tdm_mul_ok(n, (int64_t)sizeof(float), &bytes))
        return tdm_errorf(TDM_ERR_NOMEM, "unet: %s: size overflow (%lld floats)", what,
                          (long long)n);
    b->p = tdm_dev_alloc(dev, bytes, what);
    if (!b->p) return TDM_ERR_NOMEM;
    b->n = n;
    return TDM_OK;
}

void unet_buf_free(tdm_device_t *dev, unet_buf_t *b) {
    if (!b->p) return;
    tdm_dev_free(dev, b->p, b->n * (int64_t)sizeof(float));
    b->p = NULL;
    b->n = 0;
}

/* ---- convolution ------------------------------------------------------------ */

tdm_status unet_conv(tdm_device_t *dev, const tdm_nn_conv_t *c, const float *x, int64_t B,
                     int64_t H, int64_t W, int64_t stride, int64_t pad, unet_buf_t *y,
                     float *dst, int64_t *Ho, int64_t *Wo) {
    tdm_status st = TDM_OK;
    unet_buf_t scr = {0};
    int64_t ho, wo, ny, ns;
    if (!tdm_nn_conv_out_size(c, H, W, stride, pad, &ho, &wo))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "unet: a %lldx%lld input is too small for a "
                          "%lldx%lld convolution", (long long)H, (long long)W, (long long)c->k,
                          (long long)c->k);
    {
        int64_t kk, hw;   /* overflow check of the im2col size before asking for it */
        if (!tdm_mul_ok(c->cin, c->k * c->k, &kk) || !tdm_mul_ok(ho, wo, &hw) ||
            !tdm_mul_ok(kk, hw, &ns))
            return tdm_errorf(TDM_ERR_NOMEM, "unet: convolution scratch size overflow");
    }
    ns = tdm_nn_conv_scratch(dev, c, H, W, stride, pad);
    if (ns > 0) TDM_TRY(unet_buf_new(dev, &scr, ns, "unet conv scratch"));
    if (!tdm_mul_ok(B * c->cout, ho * wo, &ny)) {
        st = tdm_errorf(TDM_ERR_NOMEM, "unet: convolution output size overflow");
        goto fail;
    }
    if (!dst) {
        TDM_TRY(unet_buf_new(dev, y, ny, "unet activation"));
        dst = y->p;
    }
    tdm_nn_conv_forward(dev, c, dst, x, B, H, W, stride, pad, scr.p);
    if (Ho) *Ho = ho;
    if (Wo) *Wo = wo;
fail:
    unet_buf_free(dev, &scr);
    return st;
}

/* ---- ResnetBlock2D: the buffers of tdm_nn_resnet_forward, taken for the
 * block and given back after it (unet2d.c's wk_resnet mirrors this): the
 * output, conv1's h, one buffer for norm1's t and the shortcut, the time
 * projection and the conv scratch. */
tdm_status unet_resnet_forward(tdm_device_t *dev, const tdm_nn_resnet_t *r, const float *x,
                               int64_t B, int64_t H, int64_t W, const float *temb_act,
                               unet_buf_t *y) {
    tdm_status st = TDM_OK;
    unet_buf_t h = {0}, t = {0}, tp = {0}, scr = {0};
    tdm_nn_resnet_sizes_t n;
    tdm_nn_resnet_sizes(dev, r, B, H, W, &n);
    y->p = NULL;
    TDM_TRY(unet_buf_new(dev, y, n.o, "unet activation"));
    TDM_TRY(unet_buf_new(dev, &h, n.h, "unet resnet hidden"));
    TDM_TRY(unet_buf_new(dev, &t, n.t > n.sc ? n.t : n.sc, "unet resnet norm1"));
    TDM_TRY(unet_buf_new(dev, &tp, n.tp, "unet resnet temb"));
    if (n.scratch > 0) TDM_TRY(unet_buf_new(dev, &scr, n.scratch, "unet conv scratch"));
    const tdm_nn_resnet_buf_t b = {.t = t.p, .h = h.p, .o = y->p, .sc = t.p, .tp = tp.p,
                                   .scratch = scr.p};
    tdm_nn_resnet_forward(dev, r, y->p, x, temb_act, B, H, W, &b);
fail:
    if (st != TDM_OK) unet_buf_free(dev, y);
    unet_buf_free(dev, &h);
    unet_buf_free(dev, &t);
    unet_buf_free(dev, &tp);
    unet_buf_free(dev, &scr);
    return st;
}

/* ---- Attention ------------------------------------------------------------
 * tok (B, S, dim) += attention a (nn/attention.h) of nrm (B, S, dim) and ctx
 * (B, T, kv_dim), or self-attention when ctx is NULL, scale 1/sqrt(head_dim);
 * its buffers are taken for the call. */
static tdm_status attn_forward(tdm_device_t *dev, const tdm_nn_attention_t *a, float *tok,
                               const float *nrm, int64_t B, int64_t S, const float *ctx,
                               int64_t T) {
    tdm_status st = TDM_OK;
    unet_buf_t q = {0}, k = {0}, v = {0}, o = {0}, p = {0};
    tdm_nn_attention_sizes_t n;
    const int64_t Tk = ctx ? T : S, d = a->q.out / a->heads;
    tdm_nn_attention_sizes(a, B, S, Tk, &n);
    TDM_TRY(unet_buf_new(dev, &q, n.q, "unet attention q"));
    TDM_TRY(unet_buf_new(dev, &k, n.kv, "unet attention k"));
    TDM_TRY(unet_buf_new(dev, &v, n.kv, "unet attention v"));
    TDM_TRY(unet_buf_new(dev, &o, n.o, "unet attention out"));
    TDM_TRY(unet_buf_new(dev, &p, n.y, "unet attention proj"));
    const tdm_nn_attention_buf_t b = {q.p, k.p, v.p, o.p};
    tdm_nn_attention_forward(dev, a, p.p, nrm, ctx, B, S, Tk, (float)(1.0 / sqrt((double)d)), 0,
                             &b);
    tdm_op_add(dev, tok, p.p, tok, n.y);
fail:
    unet_buf_free(dev, &q);
    unet_buf_free(dev, &k);
    unet_buf_free(dev, &v);
    unet_buf_free(dev, &o);
    unet_buf_free(dev, &p);
    return st;
}

/* BasicTransformerBlock on tok (B, S, dim), in place:
 * tok += attn1(norm1(tok)); tok += attn2(norm2(tok), ctx);
 * tok += ff(norm3(tok)), ff's output written over its first projection h. */
static tdm_status tblock_forward(tdm_device_t *dev, const unet_tblock_t *tb, float *tok,
                                 int64_t B, int64_t S, int64_t dim, const float *ctx, int64_t T) {
    tdm_status st = TDM_OK;
    unet_buf_t nrm = {0}, h = {0}, g = {0};
    const int64_t rows = B * S;
    TDM_TRY(unet_buf_new(dev, &nrm, rows * dim, "unet transformer norm"));
    tdm_nn_layer_norm_forward(dev, &tb->norm1, nrm.p, tok, rows);
    TDM_TRY(attn_forward(dev, &tb->attn1, tok, nrm.p, B, S, tb->attn1_cross ? ctx : NULL, T));
    tdm_nn_layer_norm_forward(dev, &tb->norm2, nrm.p, tok, rows);
    TDM_TRY(attn_forward(dev, &tb->attn2, tok, nrm.p, B, S, ctx, T));
    tdm_nn_layer_norm_forward(dev, &tb->norm3, nrm.p, tok, rows);
    TDM_TRY(unet_buf_new(dev, &h, rows * tb->ff.in.out, "unet feed-forward proj"));
    TDM_TRY(unet_buf_new(dev, &g, rows * tb->ff.out.in, "unet feed-forward geglu"));
    tdm_nn_ffn_forward(dev, &tb->ff, h.p, nrm.p, h.p, g.p, rows);
    tdm_op_add(dev, tok, h.p, tok, rows * dim);
fail:
    unet_buf_free(dev, &nrm);
    unet_buf_free(dev, &h);
    unet_buf_free(dev, &g);
    return st;
}

/* ---- Transformer2DModel ---------------------------------------------------
 * h = GroupNorm(x) (eps 1e-6); proj_in (1x1 conv before, or Linear after, the
 * (B, C, S) → (B, S, C) permute); blocks; proj_out (Linear before, or 1x1
 * conv after, the permute back); y = h + x. */
tdm_status unet_transformer_forward(tdm_device_t *dev, const unet_transformer_t *t,
                                    const float *x, int64_t B, int64_t H, int64_t W,
                                    const float *ctx, int64_t T, unet_buf_t *y) {
    tdm_status st = TDM_OK;
    unet_buf_t nrm = {0}, a = {0}, tok = {0};
    int64_t S = H * W, C = t->C, in = t->inner;
    y->p = NULL;
    TDM_TRY(unet_buf_new(dev, &nrm, B * C * S, "unet transformer groupnorm"));
    tdm_nn_group_norm_forward(dev, &t->norm, nrm.p, x, B, S, 0);
    TDM_TRY(unet_buf_new(dev, &tok, B * S * in, "unet transformer tokens"));
    if (!t->linear) {
        const tdm_nn_conv_t pin = {t->pin_w, t->pin_b, C, in, 1};
        TDM_TRY(unet_conv(dev, &pin, nrm.p, B, H, W, 1, 0, &a, NULL, NULL, NULL));
        tdm_op_transpose_cs(dev, tok.p, a.p, B, in, S);           /* (B, in, S) → (B, S, in) */
    } else {
        TDM_TRY(unet_buf_new(dev, &a, B * S * C, "unet transformer permute"));
        tdm_op_transpose_cs(dev, a.p, nrm.p, B, C, S);            /* (B, C, S) → (B, S, C) */
        tdm_op_linear(dev, tok.p, a.p, t->pin_w, t->pin_b, B * S, C, in);
    }
    unet_buf_free(dev, &a);
    unet_buf_free(dev, &nrm);
    for (int64_t i = 0; i < t->depth; i++)
        TDM_TRY(tblock_forward(dev, &t->blocks[i], tok.p, B, S, in, ctx, T));
    if (!t->linear) {
        TDM_TRY(unet_buf_new(dev, &a, B * in * S, "unet transformer permute"));
        tdm_op_transpose_sc(dev, a.p, tok.p, B, S, in);           /* (B, S, in) → (B, in, S) */
        const tdm_nn_conv_t pout = {t->pout_w, t->pout_b, in, C, 1};
        TDM_TRY(unet_conv(dev, &pout, a.p, B, H, W, 1, 0, y, NULL, NULL, NULL));
    } else {
        TDM_TRY(unet_buf_new(dev, &a, B * S * C, "unet transformer proj_out"));
        tdm_op_linear(dev, a.p, tok.p, t->pout_w, t->pout_b, B * S, in, C);
        TDM_TRY(unet_buf_new(dev, y, B * C * S, "unet activation"));
        tdm_op_transpose_sc(dev, y->p, a.p, B, S, C);             /* (B, S, C) → (B, C, S) */
    }
    tdm_op_add(dev, y->p, y->p, x, y->n);
fail:
    if (st != TDM_OK) unet_buf_free(dev, y);
    unet_buf_free(dev, &nrm);
    unet_buf_free(dev, &a);
    unet_buf_free(dev, &tok);
    return st;
}
