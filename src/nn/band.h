/* band.h — row-band parallelism of convolutional image blocks (the parallel
 * VAE decode): the n ranks of a group (nn/group.h) each hold a band of
 * consecutive rows of every activation, x (B, C, rows, W) for the image rows
 * [r0, r0 + rows) of H. A convolution exchanges k/2 halo rows with each
 * neighbouring rank (tdm_nn_group_sendrecv; the image's top and bottom keep
 * their zero padding); a group norm sums its statistics per rank in double,
 * gathers the ranks' sums (allgather of F64: every rank then adds them in
 * rank order, so all ranks normalise with the same bits) and normalises its
 * own rows. Not here: attention over the whole image (the model gathers K
 * and V with tdm_nn_band_gather), allocation (the caller gives the buffers
 * the size functions name), time embeddings.
 *
 * Split. The rows that are split are those of the first resolution (the
 * latent's, H0): rank r holds count = H0 / n + (r < H0 mod n) of them from
 * begin = r·(H0 / n) + min(r, H0 mod n) (tdm_nn_ulysses_split's rule, that of
 * dist's tdm_split_between_processes). After nearest 2x upsamplings every
 * band is scaled with the image (scale 2, 4, ...): a rank upsamples its own
 * rows. Every rank must hold at least k/2 rows at a convolution (H0 >= n
 * gives every rank one row at scale 1, enough for the 3x3 convolutions).
 *
 * Results. A band's output rows equal the one-device rows up to the float
 * summation order of the group-norm statistics (double, a few ulps of the
 * statistics) and of the GEMM over a shorter column strip. With g NULL or of
 * one rank each function is exactly the one-device block. */
#ifndef TDM_NN_BAND_H
#define TDM_NN_BAND_H

#include <stdint.h>

#include "core/core.h"
#include "nn/conv.h"
#include "nn/group.h"
#include "nn/norm.h"
#include "nn/resnet.h"

typedef struct {
    const tdm_nn_group_t *g;   /* the group; NULL: one rank holding the whole image */
    int64_t H0;                /* rows split over the ranks (scale 1) */
    int64_t scale;             /* image rows per split row at this resolution */
    int64_t H, W;              /* the whole image at this resolution: H = H0·scale */
    int64_t r0, rows;          /* this rank's band, rows [r0, r0 + rows) of H */
} tdm_nn_band_t;

/* The band of this rank of g (NULL: rank 0 of 1) for an image of H0 x W at
 * scale 1. */
void tdm_nn_band_init(tdm_nn_band_t *b, const tdm_nn_group_t *g, int64_t H0, int64_t W);
/* The same band after a nearest 2x upsampling: H, W, r0, rows doubled. */
void tdm_nn_band_scale2(tdm_nn_band_t *b);
/* Rank r's band of b's image: rows [*r0, *r0 + *rows) of b->H. */
void tdm_nn_band_of(const tdm_nn_band_t *b, int r, int64_t *r0, int64_t *rows);
/* Ranks in b's group (1 when g is NULL). */
int  tdm_nn_band_ranks(const tdm_nn_band_t *b);

/* The work buffers of the band functions, on dev (NULL where a size is 0). */
typedef struct {
    float  *ext;      /* tdm_nn_band_conv_ext floats: a band with its halo rows */
    float  *edge;     /* tdm_nn_band_conv_edge floats: the rows sent and received */
    float  *scratch;  /* tdm_nn_band_conv_scratch floats: the convolution's */
    double *stats;    /* tdm_nn_band_norm_stats doubles: a group norm's sums */
} tdm_nn_band_buf_t;

/* Sizes for a stride-1 convolution c (padding k/2) of B images' bands. */
int64_t tdm_nn_band_conv_ext(const tdm_nn_band_t *b, const tdm_nn_conv_t *c, int64_t B);
int64_t tdm_nn_band_conv_edge(const tdm_nn_band_t *b, const tdm_nn_conv_t *c, int64_t B);
int64_t tdm_nn_band_conv_scratch(tdm_device_t *dev, const tdm_nn_band_t *b,
                                 const tdm_nn_conv_t *c);
/* Doubles of a group norm n of B images' bands. */
int64_t tdm_nn_band_norm_stats(const tdm_nn_band_t *b, const tdm_nn_norm_t *n, int64_t B);

/* y (B, cout, rows, W) = rows [r0, r0 + rows) of conv(x) with stride 1 and
 * padding k/2, x (B, cin, rows, W) this rank's band of the whole input.
 * Collective over b->g (every rank, the same c and B). y must not overlap x
 * or the buffers. Errors: a band thinner than k/2 rows somewhere, the
 * group's. */
tdm_status tdm_nn_band_conv_forward(tdm_device_t *dev, const tdm_nn_band_t *b,
                                    const tdm_nn_conv_t *c, float *y, const float *x, int64_t B,
                                    const tdm_nn_band_buf_t *buf);

/* y (B, c, rows·W) = this rank's rows of group_norm(x) (+ SiLU when silu)
 * over the whole image, x this rank's band. Collective. y may be x;
 * stats: tdm_nn_band_norm_stats doubles. */
tdm_status tdm_nn_band_group_norm_forward(tdm_device_t *dev, const tdm_nn_band_t *b,
                                          const tdm_nn_norm_t *n, float *y, const float *x,
                                          int64_t B, int silu, double *stats);

/* ResnetBlock2D without a time embedding (nn/resnet.h) on this rank's band:
 * y (B, cout, rows, W) from x (B, cin, rows, W), its convolutions and norms
 * as above, through the resnet's buffers rb (tdm_nn_resnet_sizes of the band,
 * same aliasing rules; rb->scratch unused) and the band buffers bb.
 * Collective. TDM_ERR_INVALID_ARG for a block with a time embedding. */
tdm_status tdm_nn_band_resnet_forward(tdm_device_t *dev, const tdm_nn_band_t *b,
                                      const tdm_nn_resnet_t *r, float *y, const float *x,
                                      int64_t B, const tdm_nn_resnet_buf_t *rb,
                                      const tdm_nn_band_buf_t *bb);
/* The largest ext, edge, scratch (floats) and stats (doubles) the resnet's
 * band functions take, each raised to at least its value in *ext ... */
void tdm_nn_band_resnet_sizes(tdm_device_t *dev, const tdm_nn_band_t *b,
                              const tdm_nn_resnet_t *r, int64_t B, int64_t *ext, int64_t *edge,
                              int64_t *scratch, int64_t *stats);

/* y (B, C, H, len) whole on every rank from every rank's band x (B, C,
 * rows, len) (len floats a row: W for an image, W·c for tokens-major rows):
 * B·C allgatherv calls. Collective. y must not overlap x. */
tdm_status tdm_nn_band_gather(tdm_device_t *dev, const tdm_nn_band_t *b, float *y,
                              const float *x, int64_t B, int64_t C, int64_t len);

#endif
