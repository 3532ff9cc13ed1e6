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
    TDM_TRY(tdm_weights_bind(w, &l->w, 1, 2, ws, "%s.weight", p));
    if (bias) TDM_TRY(tdm_weights_bind(w, &l->b, 0, 1, &out, "%s.bias", p));
fail:
    return st;
}

void tdm_nn_linear_forward(tdm_device_t *dev, const tdm_nn_linear_t *l, float *y, const float *x,
                           int64_t rows) {
    tdm_op_linear(dev, y, x, l->w, l->b, rows, l->in, l->out);
}
