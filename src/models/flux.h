/* flux.h — the diffusers FluxTransformer2DModel (FLUX.1 dev / schnell) on
 * any device (CPU, or CUDA where built): config parsing, weight loading (single file, variant or
 * sharded index) with every tensor's shape checked against the config, and a
 * forward pass with float32 activations (Linear weights in the device's
 * gemm_dtype: float32, or fp16/bf16 on CUDA) that reproduces diffusers 0.42.
 *
 * Covered: the double-stream blocks (FluxTransformerBlock: AdaLayerNormZero
 * on both streams, joint attention over [text, image] with per-head RMSNorm
 * of q/k, RoPE, GELU-tanh feed-forwards), the single-stream blocks
 * (FluxSingleTransformerBlock), the timestep / guidance / pooled-text
 * embedding, AdaLayerNormContinuous and proj_out. Not covered (TDM_ERR_
 * UNSUPPORTED naming the key): patch_size != 1, fused QKV checkpoints,
 * IP-adapter and ControlNet residuals. Not a pipeline: packing latents,
 * building ids and the scheduler loop belong to the caller. */
#ifndef TDM_FLUX_H
#define TDM_FLUX_H

#include "core/core.h"
#include "nn/ptree.h"

typedef struct tdm_flux tdm_flux_t;

typedef struct {
    int64_t in_channels, out_channels;      /* out_channels = in_channels when null */
    int64_t num_layers, num_single_layers;  /* double- and single-stream blocks */
    int64_t attention_head_dim, num_attention_heads;
    int64_t joint_attention_dim;            /* width of encoder_hidden_states (T5) */
    int64_t pooled_projection_dim;          /* width of pooled_projections (CLIP) */
    int64_t axes_dims_rope[3];              /* RoPE dims per id axis, sum = head dim */
    int     guidance_embeds;                /* 1: FLUX.1-dev style guidance input */
    int64_t param_bytes;                    /* device bytes of all loaded weights */
} tdm_flux_info_t;

/* Loads the transformer of a diffusers folder: reads root/sub/config.json and
 * the weights found by tdm_folder_weights(root, sub, variant) — one file or a
 * *.safetensors.index.json with its shards; converted to float32, Linear
 * weights to the device's gemm_dtype —
 * onto `dev` (counted there). Every tensor's shape is checked against the
 * config; a missing or wrong-shaped tensor is TDM_ERR_MODEL naming the tensor
 * and file. Unsupported config values give TDM_ERR_UNSUPPORTED naming the key
 * and value. variant may be NULL. OUT: *out, freed with tdm_flux_free. */
tdm_status tdm_flux_load(tdm_flux_t **out, const char *root, const char *sub,
                         const char *variant, tdm_device_t *dev);

/* Tensor parallelism (FLUX issue 14 item 4): rank r of the T ranks of nn
 * group `tp` (nn/group.h; dist fills one from the TP communicator) loads
 * only its shard of every block:
 *   - attention: to_q/k/v and add_q/k/v_proj column-split (rank r keeps
 *     heads [r·H/T, (r+1)·H/T), whole heads), to_out.0 / to_add_out
 *     row-split (their input columns of those heads);
 *   - feed-forwards: net.0.proj column-split, net.2 row-split;
 *   - single blocks: proj_mlp and to_q/k/v column-split, proj_out row-split
 *     over both of its input parts ([attention D | MLP 4D]).
 * A row-split Linear's bias is loaded on rank 0 only (added once). The
 * embedders, the norms (q/k RMSNorm weights are per head-dim, the same for
 * every head), the AdaLN modulation linears, norm_out and proj_out stay
 * whole on every rank. So a rank holds about 1/T of the blocks' weights
 * (param_bytes reports what it holds). T must divide num_attention_heads
 * (and thereby the MLP width 4·D): else TDM_ERR_INVALID_ARG naming tp and
 * the counts. The model keeps `tp` (borrowed: it must outlive the model).
 * tdm_flux_forward and tdm_flux_forward_cp of such a model are collective
 * over tp: every TP rank calls them with the same arguments, each block's
 * pair of output projections is summed over the ranks by one allreduce_sum
 * (float32 partial sums, whatever the activation dtype: they are computed
 * in float32, so bf16/fp16 activations are not rounded before the sum) and
 * every rank gets the whole output. The sums run in another order than on
 * one device: the output is within float tolerance of tdm_flux_forward's,
 * not bit-identical. Combined with tdm_flux_forward_cp (T × U): the Ulysses
 * group's ranks share this rank's TP coordinate and exchange its H/T heads.
 * tp NULL or of one rank: exactly tdm_flux_load. No device map (a split
 * placement and TP do not combine). OUT: *out, freed with tdm_flux_free. */
struct tdm_nn_group;
tdm_status tdm_flux_load_tp(tdm_flux_t **out, const char *root, const char *sub,
                            const char *variant, tdm_device_t *dev,
                            const struct tdm_nn_group *tp);

/* A split transformer (nn/offload.h): each tensor where the device map
 * puts it, "cpu" weights in host RAM and "disk" ones left in the files, each
 * brought to the main device just before its block runs (the top-level ones
 * for the whole forward); activations live on the main device. Results are
 * bit-identical to a one-device load. */
struct tdm_placement;
/* tdm_flux_load with the tensors placed by `pl` (see above); the model's
 * device (activations, execution of offloaded blocks) is pl->main. Errors:
 * a tensor the map does not cover, a GPU id without a device, a CUDA device.
 * OUT: *out, freed with tdm_flux_free. */
tdm_status tdm_flux_load_placed(tdm_flux_t **out, const char *root, const char *sub,
                                const char *variant, const struct tdm_placement *pl);

/* Frees the model and its weights; NULL is a no-op. */
void tdm_flux_free(tdm_flux_t *m);

/* The parameter list (nn/ptree.h) of the FluxTransformer2DModel that
 * config.json at `config_path` describes, from the config alone (no weights
 * read), checked as tdm_flux_load checks it: diffusers 0.42 registration
 * order (time_text_embed with guidance_embedder only when guidance_embeds,
 * context_embedder, x_embedder, transformer_blocks, single_transformer_blocks,
 * norm_out, proj_out), floating tensors as `dt`; no buffers, no ties.
 * No-split modules: "transformer_blocks.{i}" then
 * "single_transformer_blocks.{i}". OUT: *out, initialized here (any previous
 * content is not freed), freed with tdm_plist_free; left empty on error. */
tdm_status tdm_flux_plist(const char *config_path, tdm_dtype dt, tdm_plist_t *out);

/* tdm_flux_plist of what rank `rank` of `tp` tensor-parallel ranks holds
 * (tdm_flux_load_tp): the split tensors with their shard's shape, a
 * row-split bias on rank 0 only, the rest whole. tp = 1 is tdm_flux_plist;
 * a tp not dividing the heads is tdm_flux_load_tp's error. OUT: *out, as
 * tdm_flux_plist. */
tdm_status tdm_flux_plist_tp(const char *config_path, tdm_dtype dt, int tp, int rank,
                             tdm_plist_t *out);

/* The model's sizes; valid until tdm_flux_free. NULL for NULL. */
const tdm_flux_info_t *tdm_flux_info(const tdm_flux_t *m);

/* One transformer evaluation, as FluxTransformer2DModel.forward(
 * hidden_states=img, encoder_hidden_states=txt, pooled_projections=pooled,
 * timestep, img_ids, txt_ids, guidance).sample. img, txt, pooled and out live
 * on the model's device (host memory for a CPU device, device memory for a
 * CUDA one); timestep, guidance, img_ids and txt_ids are HOST arrays on every
 * device. On a CUDA device the work is queued on its stream; a failure of a
 * queued op is reported by the next tdm_dev_download (e.g. of out).
 *   img       (B, N, in_channels)        packed latents
 *   txt       (B, T, joint_attention_dim)
 *   pooled    (B, pooled_projection_dim)
 *   timestep  (B)  as the pipeline passes it (sigma, i.e. t/1000); the model
 *                  multiplies by 1000 inside
 *   guidance  (B)  guidance scale, also multiplied by 1000 inside; required
 *                  iff guidance_embeds, must be NULL otherwise (diffusers
 *                  fails both ways too); either mistake is TDM_ERR_INVALID_ARG
 *   img_ids   (N, 3), txt_ids (T, 3)   position ids as floats (shared by
 *                  the whole batch); the RoPE sequence is [txt, img]
 *   out       (B, N, out_channels)     caller-allocated, must not alias inputs
 * Activations live in one workspace of about 12·B·(T+N)·inner floats
 * allocated from the model's device (counted there) and freed before return;
 * a host buffer of max(B·256, 2·(T+N)·head_dim) floats stages the sinusoid
 * and the RoPE tables. */
tdm_status tdm_flux_forward(tdm_flux_t *m, const float *img, int64_t B, int64_t N,
                            const float *txt, int64_t T, const float *pooled,
                            const float *timestep, const float *guidance,
                            const float *img_ids, const float *txt_ids, float *out);

/* The groups of one image's context parallelism (nn/group.h; dist fills
 * them from communicators): a Ulysses group of U ranks inside each of R
 * ring slots — rank (r, u) is rank u of its `ulysses` group (the ranks of
 * its ring slot) and rank r of its `ring` group (the ranks of the same u in
 * every slot). Either NULL or of one rank: that dimension is absent. */
struct tdm_nn_group;
typedef struct {
    const struct tdm_nn_group *ulysses;
    const struct tdm_nn_group *ring;
} tdm_flux_cp_groups_t;

/* Context parallelism (Ulysses, ring, or both: USP): tdm_flux_forward on
 * rank (r, u) of the R × U grid of g, each rank holding the same model (or
 * the same TP shard, tdm_flux_load_tp) on its own device. Collective: every rank of the grid calls it with the same
 * arguments (inputs as tdm_flux_forward, whole: every rank reads only its
 * rows of them). A rank computes, through every block, only its share of
 * the text rows and of the image rows (each segment split by
 * tdm_nn_usp_split, nn/ring.h: the Ulysses share u of the ring share r);
 * the joint attention runs over the whole [text; image] sequence through
 * tdm_nn_ulysses_attention (R = 1), tdm_nn_ring_attention (U = 1) or
 * tdm_nn_usp_attention (any T and N, heads padded when U does not divide
 * them), and every rank's image rows of the output are gathered (allgatherv
 * over the Ulysses group into the slot's rows, then over the ring) so that
 * out (B, N, out_channels) is whole on every rank. On the CPU, with R = 1
 * out is bit for bit tdm_flux_forward's whatever U; with R > 1 it is within
 * float tolerance of it (ring attention merges key blocks in another order:
 * about 1e-6 relative), not bit-identical. g NULL, or both groups NULL or
 * of one rank: exactly tdm_flux_forward. Needs N >= R·U (every rank at
 * least one image row). Working memory: tdm_flux_work_bytes_cp. A failed
 * exchange is returned (the other ranks see theirs fail or wait, as the
 * group's calls do). */
tdm_status tdm_flux_forward_cp(tdm_flux_t *m, const tdm_flux_cp_groups_t *g, const float *img,
                               int64_t B, int64_t N, const float *txt, int64_t T,
                               const float *pooled, const float *timestep, const float *guidance,
                               const float *img_ids, const float *txt_ids, float *out);

/* The working memory of one tdm_flux_forward(B, N, T) of the transformer
 * that the config.json at config_path describes (read and checked as
 * tdm_flux_load does, no weights) on `dev`: the activation workspace (sized
 * by the same layout function as the forward's allocation, in the device's
 * activation dtype), the RoPE tables the model keeps, the attention kernel's
 * own scratch and, on a host device, the host staging buffer — weights and
 * the caller's buffers not included. Bytes, saturating at INT64_MAX.
 * OUT: *out. */
tdm_status tdm_flux_work_bytes(const char *config_path, tdm_device_t *dev, int64_t B, int64_t N,
                               int64_t T, int64_t *out);

/* tdm_flux_work_bytes of one rank of tdm_flux_forward_cp over a ring of R
 * slots of U Ulysses ranks: the most any rank holds (rank (0, 0)'s: its
 * rows, the RoPE tables of its rows, the exchange's workspace
 * (tdm_nn_usp_sizes), its output and slot rows, the attention kernel's
 * scratch for heads_local heads over the whole sequence, or over the slot's
 * rows against one ring block). U = R = 1 is tdm_flux_work_bytes. OUT:
 * *out. */
tdm_status tdm_flux_work_bytes_cp(const char *config_path, tdm_device_t *dev, int64_t B,
                                  int64_t N, int64_t T, int U, int R, int64_t *out);

/* tdm_flux_work_bytes_cp of one rank of a model loaded with
 * tdm_flux_load_tp over tp ranks: the attention and MLP activations hold
 * its 1/tp of the heads and MLP columns, the output projections' partial
 * sums are float32, the Ulysses exchange (U > 1) moves its heads. tp = 1 is
 * tdm_flux_work_bytes_cp; a tp not dividing the heads is the error of
 * tdm_flux_load_tp. OUT: *out. */
tdm_status tdm_flux_work_bytes_tp(const char *config_path, tdm_device_t *dev, int64_t B,
                                  int64_t N, int64_t T, int U, int tp, int64_t *out);

#endif
