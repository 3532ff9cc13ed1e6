/* resnet.h — diffusers' ResnetBlock2D (time_embedding_norm "default",
 * pre-norm, SiLU, dropout off), with or without a time embedding, bound by
 * name and run over caller-given buffers:
 *   h = conv1(SiLU(norm1(x))) [+ time_emb_proj(temb_act)[:, :, None, None]]
 *   h = conv2(SiLU(norm2(h)))
 *   y = (shortcut(x) + h) / output_scale_factor   (shortcut: a 1×1 conv when
 *                                                    cin != cout, else x)
 * The UNet (with temb) and the VAE (temb None) both run it. Not here:
 * allocation (tdm_nn_resnet_sizes says what to give), the time embedding's
 * SiLU (the caller passes SiLU(temb), shared by every block). */
#ifndef TDM_NN_RESNET_H
#define TDM_NN_RESNET_H

#include <stdint.h>

#include "core/core.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "nn/weights.h"

typedef struct {
    tdm_nn_norm_t   norm1, norm2;            /* (cin), (cout) */
    tdm_nn_conv_t   conv1, conv2;            /* 3×3: cin → cout, cout → cout */
    tdm_nn_conv_t   shortcut;                /* 1×1 cin → cout; bound only when cin != cout */
    tdm_nn_linear_t temb;                    /* time_emb_proj temb_dim → cout; temb_dim 0: none */
    int64_t cin, cout, temb_dim;
    float   out_scale;                       /* output_scale_factor */
} tdm_nn_resnet_t;

/* Marks module <prefix> (printf-style) as a no-split ResnetBlock2D and binds
 * its tensors in diffusers' registration order: norm1, conv1,
 * time_emb_proj (when temb_dim > 0), norm2, conv2, conv_shortcut (when
 * cin != cout). Norms use `groups` and `eps`. */
tdm_status tdm_nn_resnet_bind(tdm_weights_t *w, tdm_nn_resnet_t *r, int64_t cin, int64_t cout,
                              int64_t temb_dim, int64_t groups, float eps, float out_scale,
                              const char *fmt, ...) __attribute__((format(printf, 9, 10)));

/* The buffers of tdm_nn_resnet_forward, floats each (0: not used, may be
 * NULL). Aliasing allowed: o with t or y; sc with t or h; y with x or o.
 * Nothing else may overlap, and none may overlap x but y. */
typedef struct {
    float *t;        /* (B, cin, S)  SiLU(norm1(x)) */
    float *h;        /* (B, cout, S) conv1 (+ temb), normalized in place */
    float *o;        /* (B, cout, S) conv2 */
    float *sc;       /* (B, cout, S) shortcut(x), when cin != cout */
    float *tp;       /* (B, cout)    time_emb_proj(temb_act), when temb_dim > 0 */
    float *scratch;  /* the convolutions' scratch */
} tdm_nn_resnet_buf_t;

typedef struct { int64_t t, h, o, sc, tp, scratch; } tdm_nn_resnet_sizes_t;

/* The floats each buffer needs for x (B, cin, H, W) on dev. */
void tdm_nn_resnet_sizes(tdm_device_t *dev, const tdm_nn_resnet_t *r, int64_t B, int64_t H,
                         int64_t W, tdm_nn_resnet_sizes_t *n);

/* y (B, cout, H, W) = resnet(x (B, cin, H, W), temb_act (B, temb_dim) =
 * SiLU(temb), NULL without a time embedding), through the buffers b. */
void tdm_nn_resnet_forward(tdm_device_t *dev, const tdm_nn_resnet_t *r, float *y, const float *x,
                           const float *temb_act, int64_t B, int64_t H, int64_t W,
                           const tdm_nn_resnet_buf_t *b);

#endif
