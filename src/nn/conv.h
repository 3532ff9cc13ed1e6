/* conv.h — nn.Conv2d bound by name and run over caller-given buffers:
 * stride 1 or 2 with symmetric padding, or Downsample2D's (0, 1, 0, 1)
 * padding with stride 2; and Upsample2D's nearest resize that comes before
 * its conv. Not here: allocation (the caller owns every buffer), dilation,
 * groups, the kernels (backend/ops.h). */
#ifndef TDM_NN_CONV_H
#define TDM_NN_CONV_H

#include <stdint.h>

#include "core/core.h"
#include "nn/weights.h"

/* pad value meaning (top 0, bottom 1, left 0, right 1): Downsample2D with
 * padding=0 (F.pad(x, (0, 1, 0, 1)) then an unpadded conv) */
#define TDM_NN_PAD_DOWN ((int64_t)-1)

typedef struct {
    const float *w, *b;      /* (cout, cin, k, k) in the device's GEMM dtype, (cout) */
    int64_t cin, cout, k;
} tdm_nn_conv_t;

/* Binds "<prefix>.weight" (cout, cin, k, k; a GEMM weight) and
 * "<prefix>.bias" (cout) through w (loads or lists; weights.h), prefix
 * printf-style, and sets the sizes. Errors name the model and tensor. */
tdm_status tdm_nn_conv_bind(tdm_weights_t *w, tdm_nn_conv_t *c, int64_t cin, int64_t cout,
                            int64_t k, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* The output size (*Ho, *Wo) of an H×W input with `stride` and `pad`
 * (symmetric, or TDM_NN_PAD_DOWN); 0 when the input is smaller than the
 * kernel, else 1. */
int     tdm_nn_conv_out_size(const tdm_nn_conv_t *c, int64_t H, int64_t W, int64_t stride,
                             int64_t pad, int64_t *Ho, int64_t *Wo);
/* Floats of scratch tdm_nn_conv_forward needs on dev for one H×W input
 * (0: none, scratch may be NULL). */
int64_t tdm_nn_conv_scratch(tdm_device_t *dev, const tdm_nn_conv_t *c, int64_t H, int64_t W,
                            int64_t stride, int64_t pad);
/* y (B, cout, Ho, Wo) = conv(x (B, cin, H, W)); y must not overlap x;
 * scratch: tdm_nn_conv_scratch floats. All on dev. */
void    tdm_nn_conv_forward(tdm_device_t *dev, const tdm_nn_conv_t *c, float *y, const float *x,
                            int64_t B, int64_t H, int64_t W, int64_t stride, int64_t pad,
                            float *scratch);

/* y (B, C, Ho, Wo) = F.interpolate(x (B, C, H, W), size=(Ho, Wo),
 * mode="nearest") (the exact 2× kernel when Ho, Wo = 2H, 2W). */
void    tdm_nn_upsample_nearest(tdm_device_t *dev, float *y, const float *x, int64_t B,
                                int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo);

#endif
