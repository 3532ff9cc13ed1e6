/* norm.h — nn.GroupNorm (optionally fused with the SiLU that follows it in
 * ResNet blocks and output heads) and nn.LayerNorm, bound by name and run
 * over caller-given buffers. Not here: allocation, RMS norm (T5 alone has
 * one, typed), the norms fused into FLUX's ops. */
#ifndef TDM_NN_NORM_H
#define TDM_NN_NORM_H

#include <stdint.h>

#include "core/core.h"
#include "nn/weights.h"

typedef struct {
    const float *w, *b;      /* (c), (c) float32 */
    int64_t c, groups;       /* groups: GroupNorm's; 0 for a LayerNorm */
    float   eps;
} tdm_nn_norm_t;

/* Binds "<prefix>.weight" and "<prefix>.bias" (c, float32) through w,
 * prefix printf-style, and sets c, groups, eps. Does not check that groups
 * divides c (the model's config check does, naming its file). */
tdm_status tdm_nn_norm_bind(tdm_weights_t *w, tdm_nn_norm_t *n, int64_t c, int64_t groups,
                            float eps, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* y (B, c, S) = group_norm(x (B, c, S)), then SiLU when silu != 0; y may be x. */
void tdm_nn_group_norm_forward(tdm_device_t *dev, const tdm_nn_norm_t *n, float *y,
                               const float *x, int64_t B, int64_t S, int silu);
/* y (rows, c) = layer_norm(x (rows, c)) over the last dim; y may be x. */
void tdm_nn_layer_norm_forward(tdm_device_t *dev, const tdm_nn_norm_t *n, float *y,
                               const float *x, int64_t rows);

#endif
