/* unet2d_internal.h — structures and block-level forward functions shared by
 * unet2d.c (config, loading, the whole forward) and unet2d_blocks.c (ResNet,
 * Transformer2D, convolution buffers). Not public API. Every weight and
 * activation pointer lives on the model's device. */
#ifndef TDM_UNET2D_INTERNAL_H
#define TDM_UNET2D_INTERNAL_H

#include "models/unet2d.h"
#include "nn/attention.h"
#include "nn/conv.h"
#include "nn/ffn.h"
#include "nn/norm.h"
#include "nn/resnet.h"
#include "nn/weights.h"

/* BasicTransformerBlock (layer_norm, GEGLU feed-forward, 4x inner). */
typedef struct {
    tdm_nn_norm_t      norm1, norm2, norm3;  /* LayerNorms (inner), eps 1e-5 */
    tdm_nn_attention_t attn1, attn2;         /* to_q/k/v without bias; attn2 cross */
    int                attn1_cross;          /* only_cross_attention: attn1 reads ctx too */
    tdm_nn_ffn_t       ff;                   /* GEGLU, hidden 4 * inner */
} unet_tblock_t;

/* Transformer2DModel with continuous input. */
typedef struct {
    int64_t C, inner, heads, head_dim, depth;
    int     linear;                          /* use_linear_projection */
    tdm_nn_norm_t norm;                      /* GroupNorm (C), eps 1e-6 */
    const float *pin_w, *pin_b;              /* (inner, C[,1,1]), (inner) */
    const float *pout_w, *pout_b;            /* (C, inner[,1,1]), (C) */
    unet_tblock_t *blocks;                   /* depth */
} unet_transformer_t;

/* One down or up block (or the mid block: resnets = nlayers+1, attns = nlayers). */
typedef struct {
    int      cross;                          /* has attentions */
    int64_t  nres, nattn;
    tdm_nn_resnet_t    *res;
    unet_transformer_t *attn;
    tdm_nn_conv_t       samp;                /* downsampler/upsampler conv */
    int                 has_samp;            /* 1 when the block has one (samp.w may be
                                              * NULL while offloaded) */
    int64_t cout;
} unet_block_t;

struct tdm_unet {
    tdm_unet_info_t info;
    tdm_device_t   *dev;
    /* config */
    int64_t nblocks;
    int64_t block_out[8];
    int     flip_sin_to_cos;
    double  freq_shift;
    int     center_input;
    int64_t down_pad;                        /* downsample_padding */
    /* weights */
    tdm_nn_conv_t conv_in;                   /* in → C0, 3×3 */
    tdm_nn_ffn_t  time_emb;                  /* time_embedding: C0 → 4 C0 → 4 C0, SiLU */
    /* addition_embed_type "text_time" (SDXL): add_embedding: add_in → 4 C0 →
     * 4 C0, SiLU, on [text_embeds, sinusoid(time_ids) of add_time_dim each];
     * add_in = 0 without it */
    tdm_nn_ffn_t  add_emb;
    int64_t add_in, add_time_dim;
    unet_block_t down[8], mid, up[8];
    tdm_nn_norm_t norm_out;                  /* GroupNorm (C0) */
    tdm_nn_conv_t conv_out;                  /* C0 → out, 3×3 */
    /* the loaded tensors; w.off: those of a split load kept in host RAM or
     * on disk, brought to `dev` one unit at a time (unet_unit_of ids; -1:
     * the top-level ones) */
    tdm_weights_t w;
    /* CUDA graph of the forward pass (tdm_op_graph_*; unet2d.c,
     * unet_forward_graphed): g_state 1 after an eager call with the
     * arguments `gkey`, 2 once `graph` holds the
     * capture of that call; g_emb (g_emb_n floats, counted on dev) is the
     * timestep embedding (B × C0) and the added embedding's input (B ×
     * add_in) the graph reads, uploaded before each replay. */
    void        *graph;
    int          g_state;
    struct unet_gkey { const float *x, *ctx; float *out; int64_t B, H, W, T; } gkey;
    float       *g_emb;
    int64_t      g_emb_n;
};

/* ---- activation buffers (counted on the device) ---------------------- */
typedef struct { float *p; int64_t n; } unet_buf_t;

tdm_status unet_buf_new(tdm_device_t *dev, unet_buf_t *b, int64_t n, const char *what);
void       unet_buf_free(tdm_device_t *dev, unet_buf_t *b);

/* ---- blocks (unet2d_blocks.c); outputs are new buffers, inputs untouched */

/* y (B, cout, H, W) = resnet(x (B, cin, H, W), temb_act (B, temb_dim) = SiLU(temb)),
 * y a new buffer; the block's temporaries are taken for it and freed. */
tdm_status unet_resnet_forward(tdm_device_t *dev, const tdm_nn_resnet_t *r, const float *x,
                               int64_t B, int64_t H, int64_t W, const float *temb_act,
                               unet_buf_t *y);

/* y (B, C, H, W) = transformer(x (B, C, H, W), ctx (B, T, cross_attention_dim)). */
tdm_status unet_transformer_forward(tdm_device_t *dev, const unet_transformer_t *t,
                                    const float *x, int64_t B, int64_t H, int64_t W,
                                    const float *ctx, int64_t T, unet_buf_t *y);

/* y (B, cout, Ho, Wo) = conv c of x (B, cin, H, W) with `stride` and `pad`
 * (symmetric, or TDM_NN_PAD_DOWN), written into `dst` when it is not NULL,
 * else into a new buffer *y; the scratch is taken for the call. *Ho, *Wo
 * (may be NULL) receive the output size. */
tdm_status unet_conv(tdm_device_t *dev, const tdm_nn_conv_t *c, const float *x, int64_t B,
                     int64_t H, int64_t W, int64_t stride, int64_t pad, unet_buf_t *y,
                     float *dst, int64_t *Ho, int64_t *Wo);

#endif
