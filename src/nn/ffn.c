/* ffn.c — two Linears around an activation (ffn.h). */
#include "nn/ffn.h"

#include "backend/ops.h"
#include "nn/nn_internal.h"

tdm_status tdm_nn_ffn_bind(tdm_weights_t *w, tdm_nn_ffn_t *f, int64_t dim, int64_t hidden,
                           int64_t out_dim, tdm_nn_act_fn act, const char *in_name,
                           const char *out_name, const char *fmt, ...) {
    char p[TDM_NN_PREFIX_MAX];
    TDM_NN_PREFIX(w, p, fmt);
    f->act = act;
    tdm_status st = tdm_nn_linear_bind(w, &f->in, dim, act ? hidden : 2 * hidden, 1, "%s.%s", p,
                                       in_name);
    if (st == TDM_OK) st = tdm_nn_linear_bind(w, &f->out, hidden, out_dim, 1, "%s.%s", p, out_name);
    return st;
}

void tdm_nn_ffn_forward(tdm_device_t *dev, const tdm_nn_ffn_t *f, float *y, const float *x,
                        float *h, float *g, int64_t rows) {
    tdm_nn_linear_forward(dev, &f->in, h, x, rows);
    if (f->act) {
        f->act(dev, h, rows * f->out.in);
    } else {
        tdm_op_geglu(dev, g, h, rows, f->out.in);
        h = g;
    }
    tdm_nn_linear_forward(dev, &f->out, y, h, rows);
}
