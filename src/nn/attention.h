/* attention.h — multi-head attention with q/k/v projections
 * (optional biases) and an output projection, bound by name and run over
 * caller-given buffers: diffusers' Attention (self or cross; the UNet's
 * attn1/attn2, the VAE mid block's single head) and CLIP's causal
 * self-attention. Not here: allocation, the norms and residuals around it,
 * the attention kernel (backend/ops.h). */
#ifndef TDM_NN_ATTENTION_H
#define TDM_NN_ATTENTION_H

#include <stdint.h>

#include "core/core.h"
#include "nn/linear.h"
#include "nn/weights.h"

typedef struct {
    tdm_nn_linear_t q, k, v;   /* dim → inner, kv_dim → inner, kv_dim → inner */
    tdm_nn_linear_t o;         /* inner → dim */
    int64_t heads;             /* head_dim = inner / heads */
} tdm_nn_attention_t;

/* Binds diffusers' Attention <prefix> (printf-style) in registration order:
 * to_q, to_k, to_v (with biases when qkv_bias != 0), to_out.0 (with bias). */
tdm_status tdm_nn_attention_bind(tdm_weights_t *w, tdm_nn_attention_t *a, int64_t dim,
                                 int64_t kv_dim, int64_t inner, int64_t heads, int qkv_bias,
                                 const char *fmt, ...) __attribute__((format(printf, 8, 9)));

/* The buffers of tdm_nn_attention_forward for S queries and T keys. */
typedef struct {
    float *q;        /* (B, S, inner) */
    float *k, *v;    /* (B, T, inner) */
    float *o;        /* (B, S, inner) attention output, before to_out */
} tdm_nn_attention_buf_t;

typedef struct { int64_t q, kv, o, y; } tdm_nn_attention_sizes_t;   /* floats; kv: each of k, v */

void tdm_nn_attention_sizes(const tdm_nn_attention_t *a, int64_t B, int64_t S, int64_t T,
                            tdm_nn_attention_sizes_t *n);

/* y (B, S, dim) = to_out(softmax(q kᵀ · scale [+ causal mask]) v) with
 * q = to_q(x (B, S, dim)), k, v = to_k, to_v(ctx (B, T, kv_dim)), or of x
 * (T = S) when ctx is NULL. y may be x or b->q; nothing else may overlap.
 * The attention kernel's own scratch is tdm_op_attention_scratch_bytes. */
void tdm_nn_attention_forward(tdm_device_t *dev, const tdm_nn_attention_t *a, float *y,
                              const float *x, const float *ctx, int64_t B, int64_t S, int64_t T,
                              float scale, int causal, const tdm_nn_attention_buf_t *b);

#endif
