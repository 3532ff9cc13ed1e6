/* unet2d.h — the diffusers UNet2DConditionModel of Stable Diffusion 1.x/2.x
 * on any device (CPU or CUDA, through backend/ops.h): config parsing (the
 * SD1.x/2.x family only), weight loading with every tensor's shape checked
 * against the config, and a forward pass with float32 activations (Linear
 * and Conv weights in the device's gemm_dtype: float32, or fp16/bf16 on
 * CUDA, with float32 accumulation) that reproduces diffusers 0.42.
 *
 * Supported blocks: CrossAttnDownBlock2D, DownBlock2D, UNetMidBlock2DCrossAttn,
 * CrossAttnUpBlock2D, UpBlock2D; SDXL's addition_embed_type "text_time"
 * (tdm_unet_forward_added). Not supported (TDM_ERR_UNSUPPORTED naming the
 * key and value): class embeddings, other addition embeddings, encoder_hid_dim projections,
 * scale-shift resnets, dual cross attention, GLIGEN, non-positional time
 * embeddings, explicit num_attention_heads (diffusers rejects it too). */
#ifndef TDM_UNET2D_H
#define TDM_UNET2D_H

#include "core/core.h"
#include "nn/ptree.h"

typedef struct tdm_unet tdm_unet_t;

typedef struct {
    int64_t in_channels, out_channels;
    int64_t sample_size;           /* latent size the model was trained at (first value) */
    int64_t cross_attention_dim;   /* D of encoder_hidden_states */
    int64_t num_blocks;            /* len(block_out_channels) */
    int64_t num_downsamplers;      /* num_blocks - 1 */
    int64_t time_embed_dim;        /* 4 * block_out_channels[0] */
    int64_t add_time_dim;          /* addition_embed_type "text_time" (SDXL):
                                    * addition_time_embed_dim; 0 without */
    int64_t add_in;                /* projection_class_embeddings_input_dim; 0 without */
    int64_t param_bytes;           /* bytes of the loaded weights as stored (resident or host
                                    * copies; tensors left on disk not counted) */
} tdm_unet_info_t;

/* Loads the UNet of a diffusers folder: reads root/sub/config.json and the
 * weights found by tdm_folder_weights(root, sub, variant) (a file or a
 * sharded index; F32/F16/BF16) onto `dev` (counted): Linear and Conv
 * weights in dev->gemm_dtype, biases and norms in float32.
 * Every tensor's shape is checked against the config; a missing or
 * wrong-shaped tensor is an error naming the tensor and file. Unsupported
 * config values give TDM_ERR_UNSUPPORTED naming the key and value.
 * variant may be NULL. OUT: *out, freed with tdm_unet_free. */
tdm_status tdm_unet_load(tdm_unet_t **out, const char *root, const char *sub,
                         const char *variant, tdm_device_t *dev);
/* tdm_unet_load with the tensors placed by a device map (nn/offload.h),
 * as tdm_flux_load_placed: tensors on a GPU stay there, those in host RAM or
 * on disk are brought to pl->main (the model's device) one no-split unit at a
 * time (each resnet, transformer and sampler; the top-level tensors for the
 * whole forward). Results are bit-identical to a one-device load. */
struct tdm_placement;
tdm_status tdm_unet_load_placed(tdm_unet_t **out, const char *root, const char *sub,
                                const char *variant, const struct tdm_placement *pl);

/* Frees the model and its weights; NULL is a no-op. */
void tdm_unet_free(tdm_unet_t *u);

/* The parameter list (nn/ptree.h) of the UNet2DConditionModel that the
 * config.json at config_path describes, read with the same parsing and
 * checks as tdm_unet_load but no weights: every parameter by its diffusers
 * name in named_parameters() order (the model has no buffers), floating as
 * `dt`, and the no-split modules (BasicTransformerBlock, ResnetBlock2D and
 * the up blocks) in named_modules() order. OUT: *out, initialised here and
 * freed by the caller with tdm_plist_free; left empty on error. */
tdm_status tdm_unet_plist(const char *config_path, tdm_dtype dt, tdm_plist_t *out);

/* The model's sizes; valid until tdm_unet_free. */
const tdm_unet_info_t *tdm_unet_info(const tdm_unet_t *u);
/* Device bytes the model keeps between forward calls for its CUDA graph
 * (the timestep embedding the graph reads; 0 without a graph). */
int64_t tdm_unet_graph_bytes(const tdm_unet_t *u);

/* One UNet evaluation, as UNet2DConditionModel.forward(x, t, ctx).sample:
 *   x         (B, in_channels, H, W)        on the model's device
 *   timesteps (B)   HOST array, one float per sample (pass the scalar t B times)
 *   ctx       (B, T, cross_attention_dim)   encoder_hidden_states, on the device
 *   out       (B, out_channels, H, W)       caller-allocated on the device, must
 *                                           not alias x or ctx
 * "On the device" is host memory for a CPU device and device memory for a
 * CUDA device; on CUDA the work is queued on the device's stream and `out`
 * is ready once tdm_dev_download (or a sync) returns. Any H, W >= 1 work:
 * when they are not multiples of 2^num_downsamplers the upsamplers are sized
 * from the skip connections, as diffusers forwards upsample_size.
 * Activations are allocated from the model's device (counted there) and
 * freed before return. On a CUDA device (unless dev->opts.cuda_graph is 0 or the
 * model is split) the second consecutive call with the same x, ctx, out and
 * sizes is captured as a CUDA graph and every later such call replays it
 * with one launch; the graph keeps tdm_unet_graph_bytes on the device. */
tdm_status tdm_unet_forward(tdm_unet_t *u, const float *x, int64_t B, int64_t H, int64_t W,
                            const float *timesteps, const float *ctx, int64_t T, float *out);

/* SDXL's added conditions (UNet2DConditionModel added_cond_kwargs of
 * addition_embed_type "text_time"), HOST arrays: text_embeds (B, text_dim),
 * the pooled output of the last text encoder; time_ids (B, n_ids), e.g.
 * original_size + crops_coords_top_left + target_size. text_dim + n_ids ·
 * addition_time_embed_dim must be projection_class_embeddings_input_dim. */
typedef struct {
    const float *text_embeds;
    int64_t      text_dim;
    const float *time_ids;
    int64_t      n_ids;
} tdm_unet_added_t;

/* tdm_unet_forward with the added conditions: `add` is required by (and only
 * accepted for) a UNet whose info.add_in is nonzero; the error says which. */
tdm_status tdm_unet_forward_added(tdm_unet_t *u, const float *x, int64_t B, int64_t H, int64_t W,
                                  const float *timesteps, const float *ctx, int64_t T,
                                  const tdm_unet_added_t *add, float *out);

/* The working memory of one tdm_unet_forward(B, H, W, T) of the UNet that
 * the config.json at config_path describes (read and checked as
 * tdm_unet_load does, no weights) on `dev`: the high-water mark of the
 * activations, convolution scratch and attention buffers the forward
 * allocates there, plus the attention kernel's own scratch (on a host device
 * the per-thread score tiles) — weights and the caller's x, ctx and out not
 * included. Bytes, saturating at INT64_MAX; the CUDA-graph path (which keeps
 * a copy of the same working set) is not included. OUT: *out. */
tdm_status tdm_unet_work_bytes(const char *config_path, tdm_device_t *dev, int64_t B, int64_t H,
                               int64_t W, int64_t T, int64_t *out);

#endif
