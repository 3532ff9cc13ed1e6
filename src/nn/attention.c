/* attention.c — multi-head attention over caller-given buffers
 * (attention.h). */
#include "nn/attention.h"

#include "backend/ops.h"
#include "nn/nn_internal.h"

tdm_status tdm_nn_attention_bind(tdm_weights_t *w, tdm_nn_attention_t *a, int64_t dim,
                                 int64_t kv_dim, int64_t inner, int64_t heads, int qkv_bias,
                                 const char *fmt, ...) {
    tdm_status st = TDM_OK;
    char p[TDM_NN_PREFIX_MAX];
    TDM_NN_PREFIX(w, p, fmt);
    a->heads = heads;
    TDM_TRY(tdm_nn_linear_bind(w, &a->q, dim, inner, qkv_bias, "%s.to_q", p));
    TDM_TRY(tdm_nn_linear_bind(w, &a->k, kv_dim, inner, qkv_bias, "%s.to_k", p));
    TDM_TRY(tdm_nn_linear_bind(w, &a->v, kv_dim, inner, qkv_bias, "%s.to_v", p));
    TDM_TRY(tdm_nn_linear_bind(w, &a->o, inner, dim, 1, "%s.to_out.0", p));
fail:
    return st;
}

void tdm_nn_attention_sizes(const tdm_nn_attention_t *a, int64_t B, int64_t S, int64_t T,
                            tdm_nn_attention_sizes_t *n) {
    n->q = n->o = B * S * a->q.out;
    n->kv = B * T * a->k.out;
    n->y = B * S * a->o.out;
}

void tdm_nn_attention_forward(tdm_device_t *dev, const tdm_nn_attention_t *a, float *y,
                              const float *x, const float *ctx, int64_t B, int64_t S, int64_t T,
                              float scale, int causal, const tdm_nn_attention_buf_t *b) {
    const float *kv = ctx ? ctx : x;
    const int64_t inner = a->q.out;
    tdm_nn_linear_forward(dev, &a->q, b->q, x, B * S);
    tdm_nn_linear_forward(dev, &a->k, b->k, kv, B * T);
    tdm_nn_linear_forward(dev, &a->v, b->v, kv, B * T);
    tdm_op_attention(dev, b->o, b->q, b->k, b->v, B, S, T, a->heads, inner / a->heads, scale,
                     causal);
    tdm_nn_linear_forward(dev, &a->o, y, b->o, B * S);
}
