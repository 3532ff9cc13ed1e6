/* conv.c — nn.Conv2d and nearest upsampling over caller-given buffers (conv.h). */
#include "nn/conv.h"

#include <stdio.h>

#include "backend/ops.h"
#include "nn/nn_internal.h"

tdm_status tdm_nn_conv_bind(tdm_weights_t *w, tdm_nn_conv_t *c, int64_t cin, int64_t cout,
                            int64_t k, const char *fmt, ...) {
    tdm_status st = TDM_OK;
    char p[TDM_NN_PREFIX_MAX];
    TDM_NN_PREFIX(w, p, fmt);
    const int64_t ws[4] = {cout, cin, k, k};
    c->cin = cin;
    c->cout = cout;
    c->k = k;
    TDM_TRY(tdm_weights_bind(w, &c->w, 1, 4, ws, "%s.weight", p));
    TDM_TRY(tdm_weights_bind(w, &c->b, 0, 1, &cout, "%s.bias", p));
fail:
    return st;
}

/* The four paddings (top, bottom, left, right) of `pad`. */
static void pads(int64_t pad, int64_t p[4]) {
    int down = pad == TDM_NN_PAD_DOWN;
    p[0] = down ? 0 : pad;
    p[1] = down ? 1 : pad;
    p[2] = down ? 0 : pad;
    p[3] = down ? 1 : pad;
}

int tdm_nn_conv_out_size(const tdm_nn_conv_t *c, int64_t H, int64_t W, int64_t stride,
                         int64_t pad, int64_t *Ho, int64_t *Wo) {
    int64_t p[4];
    pads(pad, p);
    *Ho = (H + p[0] + p[1] - c->k) / stride + 1;
    *Wo = (W + p[2] + p[3] - c->k) / stride + 1;
    return *Ho >= 1 && *Wo >= 1 && H + p[0] + p[1] >= c->k && W + p[2] + p[3] >= c->k;
}

int64_t tdm_nn_conv_scratch(tdm_device_t *dev, const tdm_nn_conv_t *c, int64_t H, int64_t W,
                            int64_t stride, int64_t pad) {
    int64_t p[4];
    pads(pad, p);
    return tdm_op_conv2d_pad4_scratch(dev, c->cin, c->cout, H, W, c->k, c->k, stride, p[0], p[1], p[2],
                                      p[3]);
}

void tdm_nn_conv_forward(tdm_device_t *dev, const tdm_nn_conv_t *c, float *y, const float *x,
                         int64_t B, int64_t H, int64_t W, int64_t stride, int64_t pad,
                         float *scratch) {
    int64_t p[4];
    pads(pad, p);
    tdm_op_conv2d_pad4(dev, y, x, c->w, c->b, B, c->cin, H, W, c->cout, c->k, c->k, stride, p[0],
                       p[1], p[2], p[3], scratch);
}

void tdm_nn_upsample_nearest(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C,
                             int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    if (Ho == 2 * H && Wo == 2 * W)
        tdm_op_upsample_nearest2x(dev, y, x, B, C, H, W);
    else
        tdm_op_resize_nearest(dev, y, x, B, C, H, W, Ho, Wo);
}
