/* norm.c — group norm (+SiLU) and layer norm over caller-given buffers
 * (norm.h), and the prefix formatting the nn binders share (nn_internal.h). */
#include "nn/norm.h"

#include <stdio.h>

#include "backend/ops.h"
#include "nn/nn_internal.h"

tdm_status tdm_nn_prefix(const tdm_weights_t *w, char *p, const char *fmt, va_list ap) {
    int len = vsnprintf(p, TDM_NN_PREFIX_MAX, fmt, ap);
    if (len < 0 || len >= TDM_NN_PREFIX_MAX)
        return tdm_errorf(TDM_ERR_INTERNAL, "%s: module name too long: %s...", w->what, p);
    return TDM_OK;
}

tdm_status tdm_nn_norm_bind(tdm_weights_t *w, tdm_nn_norm_t *n, int64_t c, int64_t groups,
                            float eps, const char *fmt, ...) {
    tdm_status st = TDM_OK;
    char p[TDM_NN_PREFIX_MAX];
    TDM_NN_PREFIX(w, p, fmt);
    n->c = c;
    n->groups = groups;
    n->eps = eps;
    TDM_TRY(tdm_weights_bind(w, &n->w, 0, 1, &c, "%s.weight", p));
    TDM_TRY(tdm_weights_bind(w, &n->b, 0, 1, &c, "%s.bias", p));
fail:
    return st;
}

void tdm_nn_group_norm_forward(tdm_device_t *dev, const tdm_nn_norm_t *n, float *y,
                               const float *x, int64_t B, int64_t S, int silu) {
    tdm_op_group_norm(dev, y, x, n->w, n->b, B, n->c, S, n->groups, n->eps, silu);
}

void tdm_nn_layer_norm_forward(tdm_device_t *dev, const tdm_nn_norm_t *n, float *y,
                               const float *x, int64_t rows) {
    tdm_op_layer_norm(dev, y, x, n->w, n->b, rows, n->c, n->eps);
}
