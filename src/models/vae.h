/* vae.h — diffusers AutoencoderKL (Stable Diffusion 1.x/2.x VAE, and the
 * 16-channel, quant-conv-free variant FLUX uses) with float32 activations on
 * the device it is loaded onto (CPU or CUDA; conv weights in the device's
 * gemm_dtype, see backend/ops.h): config parsing, weight loading with shape checks, encoder and decoder
 * forward passes, and the image post-processing of diffusers'
 * VaeImageProcessor. Not here: tiling, slicing, latent scaling (the caller
 * divides by scaling_factor and adds shift_factor, as the pipelines do). */
#ifndef TDM_MODELS_VAE_H
#define TDM_MODELS_VAE_H

#include "core/core.h"
#include "nn/ptree.h"

typedef struct tdm_vae tdm_vae_t;

typedef struct {
    int64_t in_channels, out_channels, latent_channels;
    int64_t scale_factor;      /* 2^(len(block_out_channels)-1) */
    double  scaling_factor;
    double  shift_factor;      /* 0 when null in the config */
    int64_t sample_size;
} tdm_vae_info_t;

/* Loads the AutoencoderKL in root/sub (sub is usually "vae"): sub/config.json
 * and the weights found by tdm_folder_weights(root, sub, variant). Every tensor
 * is loaded onto `dev` as float32 (conv/linear weights: the device's
 * gemm_dtype; F16/BF16/F32 converted as needed) with its shape checked.
 * Unknown config keys and unsupported values (block types, act_fn, ...) give
 * TDM_ERR_UNSUPPORTED naming the key; a missing or misshapen tensor gives
 * TDM_ERR_MODEL naming it. Attention weights saved under the deprecated names
 * (query/key/value/proj_attn) are accepted, as diffusers converts them.
 * OUT: *out, freed with tdm_vae_free. */
tdm_status tdm_vae_load(tdm_vae_t **out, const char *root, const char *sub, const char *variant,
                        tdm_device_t *dev);
/* tdm_vae_load with the tensors placed by a device map (nn/offload.h):
 * tensors on a GPU stay there, those in host RAM or on disk are brought to
 * pl->main one unit at a time (each resnet, each sampler, each mid block; the
 * top-level convs and norms for the whole call). Bit-identical to a
 * one-device load. */
struct tdm_placement;
tdm_status tdm_vae_load_placed(tdm_vae_t **out, const char *root, const char *sub,
                               const char *variant, const struct tdm_placement *pl);

/* The decode path only (what txt2img's decode stage runs, as diffusers'
 * AutoencoderKL.decode): the decoder and post_quant_conv; the encoder and
 * quant_conv are neither read nor allocated, and tdm_vae_encode refuses.
 * pl NULL: every tensor onto `dev` (as tdm_vae_load); else placed by the
 * map (as tdm_vae_load_placed; `dev` unused), which needs to cover only
 * those tensors. */
tdm_status tdm_vae_load_decoder(tdm_vae_t **out, const char *root, const char *sub,
                                const char *variant, tdm_device_t *dev,
                                const struct tdm_placement *pl);

/* Frees the model and its weights; NULL is a no-op. */
void tdm_vae_free(tdm_vae_t *v);

/* The parameter list (nn/ptree.h) of the AutoencoderKL that the
 * config.json at config_path describes, read with the same parsing and
 * checks as tdm_vae_load but no weights: every parameter by its diffusers
 * name in named_parameters() order (the model has no buffers), floating as
 * `dt`, and the no-split modules (the ResnetBlock2Ds) in named_modules()
 * order. OUT: *out, initialised here and freed by the caller with
 * tdm_plist_free; left empty on error. */
tdm_status tdm_vae_plist(const char *config_path, tdm_dtype dt, tdm_plist_t *out);
/* tdm_vae_plist of the decode path only (decoder.*, then post_quant_conv.*,
 * in named_parameters() order): what tdm_vae_load_decoder loads and what a
 * plan of the decode stage places. */
tdm_status tdm_vae_decoder_plist(const char *config_path, tdm_dtype dt, tdm_plist_t *out);

/* The configuration summary (owned by v). */
const tdm_vae_info_t *tdm_vae_info(const tdm_vae_t *v);

/* Decodes latents z (B, latent_channels, h, w) — already divided by
 * scaling_factor and shifted by the caller — through post_quant_conv (when the
 * config has one) and the decoder into img (B, out_channels, h*scale,
 * w*scale), unclamped, as vae.decode(z).sample. z and img are memory of the
 * model's device (tdm_dev_alloc / tdm_dev_upload; host memory for a CPU
 * device); on a CUDA device the work is queued on its stream and img is
 * ready after tdm_dev_download. Work buffers are taken from the model's
 * device for the duration of the call and given back before it returns. */
tdm_status tdm_vae_decode(tdm_vae_t *v, const float *z, int64_t B, int64_t h, int64_t w,
                          float *img);
/* Parallel decode over the ranks of group g (nn/group.h; dist fills one
 * from a communicator), each holding the same model on its own device.
 * Collective: every rank of g calls it with the same arguments; z is the
 * whole latent on every rank (memory of the model's device, as for
 * tdm_vae_decode) and img (B, out_channels, h*scale, w*scale) is the whole
 * image on every rank when it returns. Rank r decodes a band of latent rows
 * (the split of nn/band.h: the first h mod n ranks one row more), scaled
 * with each upsampling: its convolutions exchange one halo row with each
 * neighbour, its group norms reduce their statistics over the group, the
 * mid-block attention takes its queries from the band and its keys and
 * values from the whole image (gathered); the output bands are gathered at
 * the end. The image equals tdm_vae_decode's up to float summation order
 * (of the group-norm statistics, in double, and of the GEMMs over shorter
 * strips). Each rank's work buffers are about its share of the image's
 * (tdm_vae_decode_work_bytes_cp). g NULL or of one rank: exactly
 * tdm_vae_decode. Needs h >= the group's size (every rank one latent row).
 * A failed exchange is returned (the other ranks see theirs fail or wait,
 * as the group's calls do). */
struct tdm_nn_group;
tdm_status tdm_vae_decode_cp(tdm_vae_t *v, const struct tdm_nn_group *g, const float *z, int64_t B,
                             int64_t h, int64_t w, float *img);

/* The working memory of tdm_vae_decode(B, h, w) for the VAE that the
 * config.json at config_path describes (read and checked as the loaders do,
 * no weights) on `dev`: the work buffers the decode allocates (sized by the
 * same dry run) and the attention kernel's own scratch — weights, z and img
 * not included. Bytes; an error when the sizes overflow. OUT: *out. */
tdm_status tdm_vae_decode_work_bytes(const char *config_path, tdm_device_t *dev, int64_t B,
                                     int64_t h, int64_t w, int64_t *out);
/* tdm_vae_decode_work_bytes of one rank of tdm_vae_decode_cp over `ranks`
 * ranks: the most any rank holds (rank 0's, the largest band: its band of
 * the activations, the halo and group-norm buffers, the whole keys and
 * values of the mid-block attention). ranks = 1 is
 * tdm_vae_decode_work_bytes. Errors as tdm_vae_decode_cp's for h < ranks.
 * OUT: *out. */
tdm_status tdm_vae_decode_work_bytes_cp(const char *config_path, tdm_device_t *dev, int64_t B,
                                        int64_t h, int64_t w, int ranks, int64_t *out);

/* Encodes img (B, in_channels, H, W), values in [-1, 1], through the encoder
 * and quant_conv (when present) into the mean and logvar (B, latent_channels,
 * H/scale, W/scale) (integer division; H and W must be >= scale) of
 * diffusers' DiagonalGaussianDistribution; logvar is clamped to [-30, 20].
 * img, mean and logvar are memory of the model's device, as for
 * tdm_vae_decode. Either output may be NULL. */
tdm_status tdm_vae_encode(tdm_vae_t *v, const float *img, int64_t B, int64_t H, int64_t W,
                          float *mean, float *logvar);

/* Converts decoded images (B, 3, H, W) in HOST memory (download a device's
 * output first) to uint8 HWC RGB (B*H*W*3 bytes) as
 * VaeImageProcessor.postprocess(output_type="pil") does in diffusers 0.42.1:
 * x*0.5 + 0.5 clamped to [0, 1] in float32, then numpy's
 * (x * 255).round().astype(uint8) (round half to even). NaN gives 0. */
void tdm_vae_to_rgb8(const float *img, int64_t B, int64_t H, int64_t W, uint8_t *out);

#endif
