/* linear.h — nn.Linear bound by name and run over caller-given buffers.
 * Not here: allocation, typed (half) activations (models that run them call
 * tdm_op_linear_ex with l->w, l->b), the GEMM kernels (backend/ops.h). */
#ifndef TDM_NN_LINEAR_H
#define TDM_NN_LINEAR_H

#include <stdint.h>

#include "core/core.h"
#include "nn/weights.h"

typedef struct {
    const float *w, *b;      /* (out, in) in the device's GEMM dtype, (out) or NULL */
    int64_t in, out;
    int f8;                  /* w is a row-scaled FP8 matrix (weights.h's TDM_WEIGHT_F8) */
} tdm_nn_linear_t;

/* Binds "<prefix>.weight" (out, in; a GEMM weight, FP8 while w->f8) and,
 * when bias != 0, "<prefix>.bias" (out) through w, prefix printf-style. */
tdm_status tdm_nn_linear_bind(tdm_weights_t *w, tdm_nn_linear_t *l, int64_t in, int64_t out,
                              int bias, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* y (rows, out) = x (rows, in) Wᵀ + b; y must not overlap x. */
void tdm_nn_linear_forward(tdm_device_t *dev, const tdm_nn_linear_t *l, float *y, const float *x,
                           int64_t rows);
/* The typed form (tdm_op_linear_ex's arguments): y (rows, out; rows ldy
 * apart, type yt) = act(x (rows, in; type xt) Wᵀ + b), act = tanh GELU when
 * gelu; the FP8 op when l->f8. */
void tdm_nn_linear_forward_ex(tdm_device_t *dev, const tdm_nn_linear_t *l, void *y,
                              tdm_dtype yt, int64_t ldy, const void *x, tdm_dtype xt,
                              int64_t rows, int gelu);

#endif
