/* resnet.c — ResnetBlock2D over caller-given buffers (resnet.h). */
#include "nn/resnet.h"

#include "backend/ops.h"
#include "nn/nn_internal.h"

tdm_status tdm_nn_resnet_bind(tdm_weights_t *w, tdm_nn_resnet_t *r, int64_t cin, int64_t cout,
                              int64_t temb_dim, int64_t groups, float eps, float out_scale,
                              const char *fmt, ...) {
    tdm_status st = TDM_OK;
    char p[TDM_NN_PREFIX_MAX];
    TDM_NN_PREFIX(w, p, fmt);
    r->cin = cin;
    r->cout = cout;
    r->temb_dim = temb_dim;
    r->out_scale = out_scale;
    TDM_TRY(tdm_weights_nosplit(w, "ResnetBlock2D", "%s", p));
    TDM_TRY(tdm_nn_norm_bind(w, &r->norm1, cin, groups, eps, "%s.norm1", p));
    TDM_TRY(tdm_nn_conv_bind(w, &r->conv1, cin, cout, 3, "%s.conv1", p));
    if (temb_dim > 0)
        TDM_TRY(tdm_nn_linear_bind(w, &r->temb, temb_dim, cout, 1, "%s.time_emb_proj", p));
    TDM_TRY(tdm_nn_norm_bind(w, &r->norm2, cout, groups, eps, "%s.norm2", p));
    TDM_TRY(tdm_nn_conv_bind(w, &r->conv2, cout, cout, 3, "%s.conv2", p));
    if (cin != cout) TDM_TRY(tdm_nn_conv_bind(w, &r->shortcut, cin, cout, 1, "%s.conv_shortcut", p));
fail:
    return st;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

void tdm_nn_resnet_sizes(tdm_device_t *dev, const tdm_nn_resnet_t *r, int64_t B, int64_t H,
                         int64_t W, tdm_nn_resnet_sizes_t *n) {
    const int64_t S = H * W;
    n->t = B * r->cin * S;
    n->h = n->o = B * r->cout * S;
    n->sc = r->cin != r->cout ? n->o : 0;
    n->tp = r->temb_dim > 0 ? B * r->cout : 0;
    n->scratch = max64(tdm_nn_conv_scratch(dev, &r->conv1, H, W, 1, 1),
                       tdm_nn_conv_scratch(dev, &r->conv2, H, W, 1, 1));
    if (r->cin != r->cout)
        n->scratch = max64(n->scratch, tdm_nn_conv_scratch(dev, &r->shortcut, H, W, 1, 0));
}

void tdm_nn_resnet_forward(tdm_device_t *dev, const tdm_nn_resnet_t *r, float *y, const float *x,
                           const float *temb_act, int64_t B, int64_t H, int64_t W,
                           const tdm_nn_resnet_buf_t *b) {
    const int64_t S = H * W, n = B * r->cout * S;
    tdm_nn_group_norm_forward(dev, &r->norm1, b->t, x, B, S, 1);
    tdm_nn_conv_forward(dev, &r->conv1, b->h, b->t, B, H, W, 1, 1, b->scratch);
    if (r->temb_dim > 0) {
        tdm_nn_linear_forward(dev, &r->temb, b->tp, temb_act, B);
        tdm_op_add_channel_bias(dev, b->h, b->tp, B, r->cout, S);
    }
    tdm_nn_group_norm_forward(dev, &r->norm2, b->h, b->h, B, S, 1);
    tdm_nn_conv_forward(dev, &r->conv2, b->o, b->h, B, H, W, 1, 1, b->scratch);
    if (r->cin != r->cout) {
        tdm_nn_conv_forward(dev, &r->shortcut, b->sc, x, B, H, W, 1, 0, b->scratch);
        tdm_op_add(dev, y, b->sc, b->o, n);
    } else {
        tdm_op_add(dev, y, x, b->o, n);
    }
    /* division as a scale by the reciprocal: within an ulp of diffusers' division */
    if (r->out_scale != 1.0f) tdm_op_scale(dev, y, y, 1.0f / r->out_scale, n);
}
