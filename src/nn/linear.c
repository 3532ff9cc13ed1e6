/* linear.c — nn.Linear over caller-given buffers (linear.h). */
#include "nn/linear.h"

#include "backend/ops.h"
#include "nn/nn_internal.h"

tdm_status tdm_nn_linear_bind(tdm_weights_t *w, tdm_nn_linear_t *l, int64_t in, int64_t out,
                              int bias, const char *fmt, ...) {
    tdm_status st = TDM_OK;
    char p[TDM_NN_PREFIX_MAX];
    TDM_NN_PREFIX(w, p, fmt);
    const int64_t ws[2] = {out, in};
    l->in = in;
    l->out = out;
    l->b = NULL;
    l->f8 = w->f8;
    TDM_TRY(tdm_weights_bind(w, &l->w, w->f8 ? TDM_WEIGHT_F8 : TDM_WEIGHT_GEMM, 2, ws,
                             "%s.weight", p));
    if (bias) TDM_TRY(tdm_weights_bind(w, &l->b, 0, 1, &out, "%s.bias", p));
fail:
    return st;
}

void tdm_nn_linear_forward(tdm_device_t *dev, const tdm_nn_linear_t *l, float *y, const float *x,
                           int64_t rows) {
    if (l->f8) tdm_op_linear_f8(dev, y, TDM_F32, l->out, x, TDM_F32, l->w, l->b, rows, l->in, l->out, 0);
    else tdm_op_linear(dev, y, x, l->w, l->b, rows, l->in, l->out);
}

void tdm_nn_linear_forward_ex(tdm_device_t *dev, const tdm_nn_linear_t *l, void *y,
                              tdm_dtype yt, int64_t ldy, const void *x, tdm_dtype xt,
                              int64_t rows, int gelu) {
    if (l->f8) tdm_op_linear_f8(dev, y, yt, ldy, x, xt, l->w, l->b, rows, l->in, l->out, gelu);
    else tdm_op_linear_ex(dev, y, yt, ldy, x, xt, l->w, l->b, rows, l->in, l->out, gelu);
}
