/* unet2d_blocks.c — the building blocks of the SD UNet: sinusoidal timestep
 * embedding (host), ResnetBlock2D, Transformer2DModel with
 * BasicTransformerBlocks (self-attention, cross-attention, GEGLU
 * feed-forward), convolutions and nearest resizing, all through the
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

/* ---- timestep embedding -------------------------------------------------
 * As diffusers computes it in float32: exponent_i = -ln(10000) * i (float32),
 * divided by (half - shift); freq = exp(exponent); arg = t * freq; then
 * [sin, cos] (or [cos, sin] when flipped); odd dims get a zero pad. exp, sin
 * and cos are evaluated in double and rounded, i.e. within an ulp of torch. */
void unet_timestep_embedding(float *emb, const float *t, int64_t B, int64_t dim, int flip,
                             double shift) {
    int64_t half = dim / 2;
    float lnp = (float)(-log(10000.0));
    float div = (float)((double)half - shift);
    for (int64_t n = 0; n < B; n++) {
        float *e = emb + n * dim;
        for (int64_t i = 0; i < half; i++) {
            float ex = (lnp * (float)i) / div;
            float freq = (float)exp((double)ex);
            float arg = t[n] * freq;
            float s = (float)sin((double)arg), c = (float)cos((double)arg);
            e[i] = flip ? c : s;
            e[half + i] = flip ? s : c;
        }
        if (dim % 2) e[dim - 1] = 0.0f;
    }
}

/* ---- convolution and resizing ------------------------------------------ */

/* The convolution of unet_conv / unet_conv_to: writes into `dst` when it is
 * not NULL, else into a new buffer *y. */
static tdm_status conv_run(tdm_device_t *dev, const float *x, int64_t B, int64_t Cin, int64_t H,
                           int64_t W, const float *w, const float *b, int64_t Cout, int64_t k,
                           int64_t stride, int64_t pad, unet_buf_t *y, float *dst, int64_t *Ho,
                           int64_t *Wo) {
    tdm_status st = TDM_OK;
    unet_buf_t scr = {0};
    int64_t pt = pad, pb = pad, pl = pad, pr = pad;
    if (pad < 0) { pt = 0; pb = 1; pl = 0; pr = 1; }
    int64_t ho = (H + pt + pb - k) / stride + 1, wo = (W + pl + pr - k) / stride + 1;
    int64_t ny, ns;
    if (ho < 1 || wo < 1 || H + pt + pb < k || W + pl + pr < k)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "unet: a %lldx%lld input is too small for a "
                          "%lldx%lld convolution", (long long)H, (long long)W, (long long)k,
                          (long long)k);
    {
        int64_t kk, hw;   /* overflow check of the im2col size before asking for it */
        if (!tdm_mul_ok(Cin, k * k, &kk) || !tdm_mul_ok(ho, wo, &hw) || !tdm_mul_ok(kk, hw, &ns))
            return tdm_errorf(TDM_ERR_NOMEM, "unet: convolution scratch size overflow");
    }
    ns = tdm_op_conv2d_pad4_scratch(dev, Cin, H, W, k, k, stride, pt, pb, pl, pr);
    if (ns > 0) TDM_TRY(unet_buf_new(dev, &scr, ns, "unet conv scratch"));
    if (!tdm_mul_ok(B * Cout, ho * wo, &ny)) {
        st = tdm_errorf(TDM_ERR_NOMEM, "unet: convolution output size overflow");
        goto fail;
    }
    if (!dst) {
        TDM_TRY(unet_buf_new(dev, y, ny, "unet activation"));
        dst = y->p;
    }
    tdm_op_conv2d_pad4(dev, dst, x, w, b, B, Cin, H, W, Cout, k, k, stride, pt, pb, pl, pr, scr.p);
    if (Ho) *Ho = ho;
    if (Wo) *Wo = wo;
fail:
    unet_buf_free(dev, &scr);
    return st;
}

tdm_status unet_conv(tdm_device_t *dev, const float *x, int64_t B, int64_t Cin, int64_t H,
                     int64_t W, const float *w, const float *b, int64_t Cout, int64_t k,
                     int64_t stride, int64_t pad, unet_buf_t *y, int64_t *Ho, int64_t *Wo) {
    return conv_run(dev, x, B, Cin, H, W, w, b, Cout, k, stride, pad, y, NULL, Ho, Wo);
}

tdm_status unet_conv_to(tdm_device_t *dev, const float *x, int64_t B, int64_t Cin, int64_t H,
                        int64_t W, const float *w, const float *b, int64_t Cout, int64_t k,
                        int64_t stride, int64_t pad, float *y) {
    if (!y) return tdm_errorf(TDM_ERR_INVALID_ARG, "unet: convolution output is NULL");
    return conv_run(dev, x, B, Cin, H, W, w, b, Cout, k, stride, pad, NULL, y, NULL, NULL);
}

void unet_resize_nearest(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C,
                         int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    if (Ho == 2 * H && Wo == 2 * W)
        tdm_op_upsample_nearest2x(dev, y, x, B, C, H, W);
    else
        tdm_op_resize_nearest(dev, y, x, B, C, H, W, Ho, Wo);
}

/* ---- ResnetBlock2D --------------------------------------------------------
 * h = conv1(SiLU(norm1(x))) + time_emb_proj(SiLU(temb))[:, :, None, None]
 * h = conv2(SiLU(norm2(h)))            (dropout is the identity in eval)
 * y = (shortcut(x) + h) / output_scale_factor */
tdm_status unet_resnet_forward(tdm_device_t *dev, const unet_resnet_t *r, const float *x,
                               int64_t B, int64_t H, int64_t W, const float *temb_act,
                               int64_t temb_dim, unet_buf_t *y) {
    tdm_status st = TDM_OK;
    unet_buf_t t = {0}, h = {0}, tp = {0}, sc = {0};
    int64_t S = H * W;
    y->p = NULL;
    TDM_TRY(unet_buf_new(dev, &t, B * r->cin * S, "unet resnet norm1"));
    tdm_op_group_norm(dev, t.p, x, r->norm1_w, r->norm1_b, B, r->cin, S, r->groups, r->eps, 1);
    TDM_TRY(unet_conv(dev, t.p, B, r->cin, H, W, r->conv1_w, r->conv1_b, r->cout, 3, 1, 1, &h,
                      NULL, NULL));
    unet_buf_free(dev, &t);
    TDM_TRY(unet_buf_new(dev, &tp, B * r->cout, "unet resnet temb"));
    tdm_op_linear(dev, tp.p, temb_act, r->temb_w, r->temb_b, B, temb_dim, r->cout);
    tdm_op_add_channel_bias(dev, h.p, tp.p, B, r->cout, S);
    tdm_op_group_norm(dev, h.p, h.p, r->norm2_w, r->norm2_b, B, r->cout, S, r->groups, r->eps, 1);
    TDM_TRY(unet_conv(dev, h.p, B, r->cout, H, W, r->conv2_w, r->conv2_b, r->cout, 3, 1, 1, y,
                      NULL, NULL));
    if (r->short_w) {
        TDM_TRY(unet_conv(dev, x, B, r->cin, H, W, r->short_w, r->short_b, r->cout, 1, 1, 0, &sc,
                          NULL, NULL));
        tdm_op_add(dev, y->p, sc.p, y->p, y->n);
    } else {
        tdm_op_add(dev, y->p, x, y->p, y->n);
    }
    /* division as a scale by the reciprocal: within an ulp of diffusers' division */
    if (r->out_scale != 1.0f) tdm_op_scale(dev, y->p, y->p, 1.0f / r->out_scale, y->n);
fail:
    if (st != TDM_OK) unet_buf_free(dev, y);
    unet_buf_free(dev, &t);
    unet_buf_free(dev, &h);
    unet_buf_free(dev, &tp);
    unet_buf_free(dev, &sc);
    return st;
}

/* ---- Attention ------------------------------------------------------------
 * tok (B, S, dim) += to_out(softmax(q k^T / sqrt(d)) v), q from nrm (B, S,
 * dim), k and v from nrm (self) or ctx (B, T, kv_dim) (cross). */
static tdm_status attn_forward(tdm_device_t *dev, const unet_attn_t *a, float *tok,
                               const float *nrm, int64_t B, int64_t S, int64_t dim,
                               int64_t inner, int64_t heads, const float *ctx, int64_t T) {
    tdm_status st = TDM_OK;
    unet_buf_t q = {0}, k = {0}, v = {0}, o = {0}, p = {0};
    const float *kv = a->cross ? ctx : nrm;
    int64_t Tk = a->cross ? T : S;
    TDM_TRY(unet_buf_new(dev, &q, B * S * inner, "unet attention q"));
    TDM_TRY(unet_buf_new(dev, &k, B * Tk * inner, "unet attention k"));
    TDM_TRY(unet_buf_new(dev, &v, B * Tk * inner, "unet attention v"));
    TDM_TRY(unet_buf_new(dev, &o, B * S * inner, "unet attention out"));
    TDM_TRY(unet_buf_new(dev, &p, B * S * dim, "unet attention proj"));
    tdm_op_linear(dev, q.p, nrm, a->q_w, NULL, B * S, dim, inner);
    tdm_op_linear(dev, k.p, kv, a->k_w, NULL, B * Tk, a->kv_dim, inner);
    tdm_op_linear(dev, v.p, kv, a->v_w, NULL, B * Tk, a->kv_dim, inner);
    int64_t d = inner / heads;
    tdm_op_attention(dev, o.p, q.p, k.p, v.p, B, S, Tk, heads, d,
                     (float)(1.0 / sqrt((double)d)), 0);
    tdm_op_linear(dev, p.p, o.p, a->o_w, a->o_b, B * S, inner, dim);
    tdm_op_add(dev, tok, p.p, tok, B * S * dim);
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
 * tok += ff(norm3(tok)) with ff = Linear(4dim→dim)(GEGLU(Linear(dim→8dim))). */
static tdm_status tblock_forward(tdm_device_t *dev, const unet_tblock_t *tb, float *tok,
                                 int64_t B, int64_t S, int64_t dim, int64_t heads,
                                 const float *ctx, int64_t T) {
    tdm_status st = TDM_OK;
    unet_buf_t nrm = {0}, h = {0}, g = {0}, f = {0};
    int64_t rows = B * S, F = 4 * dim;
    TDM_TRY(unet_buf_new(dev, &nrm, rows * dim, "unet transformer norm"));
    tdm_op_layer_norm(dev, nrm.p, tok, tb->n1_w, tb->n1_b, rows, dim, 1e-5f);
    TDM_TRY(attn_forward(dev, &tb->attn1, tok, nrm.p, B, S, dim, dim, heads, ctx, T));
    tdm_op_layer_norm(dev, nrm.p, tok, tb->n2_w, tb->n2_b, rows, dim, 1e-5f);
    TDM_TRY(attn_forward(dev, &tb->attn2, tok, nrm.p, B, S, dim, dim, heads, ctx, T));
    tdm_op_layer_norm(dev, nrm.p, tok, tb->n3_w, tb->n3_b, rows, dim, 1e-5f);
    TDM_TRY(unet_buf_new(dev, &h, rows * 2 * F, "unet feed-forward proj"));
    tdm_op_linear(dev, h.p, nrm.p, tb->ff1_w, tb->ff1_b, rows, dim, 2 * F);
    TDM_TRY(unet_buf_new(dev, &g, rows * F, "unet feed-forward geglu"));
    tdm_op_geglu(dev, g.p, h.p, rows, F);
    unet_buf_free(dev, &h);
    TDM_TRY(unet_buf_new(dev, &f, rows * dim, "unet feed-forward out"));
    tdm_op_linear(dev, f.p, g.p, tb->ff2_w, tb->ff2_b, rows, F, dim);
    tdm_op_add(dev, tok, f.p, tok, rows * dim);
fail:
    unet_buf_free(dev, &nrm);
    unet_buf_free(dev, &h);
    unet_buf_free(dev, &g);
    unet_buf_free(dev, &f);
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
    tdm_op_group_norm(dev, nrm.p, x, t->norm_w, t->norm_b, B, C, S, t->groups, 1e-6f, 0);
    TDM_TRY(unet_buf_new(dev, &tok, B * S * in, "unet transformer tokens"));
    if (!t->linear) {
        TDM_TRY(unet_conv(dev, nrm.p, B, C, H, W, t->pin_w, t->pin_b, in, 1, 1, 0, &a, NULL,
                          NULL));
        tdm_op_transpose_cs(dev, tok.p, a.p, B, in, S);           /* (B, in, S) → (B, S, in) */
    } else {
        TDM_TRY(unet_buf_new(dev, &a, B * S * C, "unet transformer permute"));
        tdm_op_transpose_cs(dev, a.p, nrm.p, B, C, S);            /* (B, C, S) → (B, S, C) */
        tdm_op_linear(dev, tok.p, a.p, t->pin_w, t->pin_b, B * S, C, in);
    }
    unet_buf_free(dev, &a);
    unet_buf_free(dev, &nrm);
    for (int64_t i = 0; i < t->depth; i++)
        TDM_TRY(tblock_forward(dev, &t->blocks[i], tok.p, B, S, in, t->heads, ctx, T));
    if (!t->linear) {
        TDM_TRY(unet_buf_new(dev, &a, B * in * S, "unet transformer permute"));
        tdm_op_transpose_sc(dev, a.p, tok.p, B, S, in);           /* (B, S, in) → (B, in, S) */
        TDM_TRY(unet_conv(dev, a.p, B, in, H, W, t->pout_w, t->pout_b, C, 1, 1, 0, y, NULL,
                          NULL));
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
