/* ffn.h — two Linears around an activation, bound by name and run over
 * caller-given buffers: diffusers' FeedForward with GEGLU, CLIP's MLP and
 * the TimestepEmbedding / PixArtAlphaTextProjection MLP (SiLU). Not here:
 * allocation, typed activations (T5's and FLUX's feed-forwards fuse theirs
 * into tdm_op_linear_ex). */
#ifndef TDM_NN_FFN_H
#define TDM_NN_FFN_H

#include "nn/linear.h"

/* An activation in place over n floats: tdm_op_gelu, tdm_op_silu, ... */
typedef void (*tdm_nn_act_fn)(tdm_device_t *dev, float *x, int64_t n);

typedef struct {
    tdm_nn_linear_t in, out;   /* dim → hidden (2 · hidden for GEGLU), hidden → out_dim */
    tdm_nn_act_fn   act;       /* NULL: GEGLU */
} tdm_nn_ffn_t;

/* Binds the Linears (with biases) "<prefix>.<in_name>" and
 * "<prefix>.<out_name>", prefix printf-style, and sets act. */
tdm_status tdm_nn_ffn_bind(tdm_weights_t *w, tdm_nn_ffn_t *f, int64_t dim, int64_t hidden,
                           int64_t out_dim, tdm_nn_act_fn act, const char *in_name,
                           const char *out_name, const char *fmt, ...)
    __attribute__((format(printf, 9, 10)));

/* y (rows, out_dim) = out(act(in(x (rows, dim)))), in(x) written to h (rows,
 * in.out). GEGLU writes its (rows, hidden) result to g and y may be h; an
 * act runs on h in place (g unused). y may be x. */
void tdm_nn_ffn_forward(tdm_device_t *dev, const tdm_nn_ffn_t *f, float *y, const float *x,
                        float *h, float *g, int64_t rows);

#endif
