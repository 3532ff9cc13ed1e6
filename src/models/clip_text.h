/* clip_text.h — the CLIP text encoder (transformers CLIPTextModel) of Stable
 * Diffusion 1.x/2.x folders on the device it is loaded onto (CPU or CUDA;
 * float32 activations, Linear weights in the device's gemm_dtype): config,
 * weights, forward.
 * Not a tokenizer (src/text/). A CLIPTextModelWithProjection (SDXL's
 * text_encoder_2) has its text_projection loaded too. */
#ifndef TDM_CLIP_TEXT_H
#define TDM_CLIP_TEXT_H

#include "core/core.h"
#include "nn/ptree.h"

typedef struct tdm_clip_text tdm_clip_text_t;

/* Loads the text encoder of pipeline folder `root`, component `sub`
 * (normally "text_encoder"): reads root/sub/config.json (absent keys take
 * CLIPTextConfig's defaults) and the weights found by tdm_folder_weights(root,
 * sub, variant) (variant may be NULL). Tensor names are accepted with the
 * "text_model." prefix (transformers 4.x checkpoints) or without it
 * (transformers 5). Every tensor's shape is checked against the config; the
 * error names the tensor and the file. hidden_act must be quick_gelu, gelu,
 * gelu_new or gelu_pytorch_tanh. Weights are loaded onto `dev` (F32/F16/BF16
 * files): Linear weights in dev->gemm_dtype, the others in float32. OUT: *out, freed with
 * tdm_clip_text_free. */
tdm_status tdm_clip_text_load(tdm_clip_text_t **out, const char *root, const char *sub,
                              const char *variant, tdm_device_t *dev);
/* tdm_clip_text_load with the tensors placed by a device map (nn/offload.h),
 * as tdm_t5_load_placed: tensors on a GPU stay there, those in host RAM or on
 * disk are brought to pl->main one encoder layer at a time (the embeddings
 * and final norm for the whole forward). Bit-identical to a one-device load. */
struct tdm_placement;
tdm_status tdm_clip_text_load_placed(tdm_clip_text_t **out, const char *root, const char *sub,
                                     const char *variant, const struct tdm_placement *pl);

/* Frees the model and its weights; NULL is a no-op. */
void tdm_clip_text_free(tdm_clip_text_t *m);

/* The parameter list (nn/ptree.h) of the module that config.json at
 * `config_path` describes, from the config alone (no weights read), checked
 * as tdm_clip_text_load checks it: transformers 5 CLIPTextModel's
 * parameters in registration order, floating ones as `dt`, then the int64
 * buffer embeddings.position_ids (1, max_position_embeddings); no-split
 * modules "embeddings" and "encoder.layers.{i}"; no ties. When
 * architectures[0] is CLIPTextModelWithProjection, every name gets the
 * "text_model." prefix and text_projection.weight (projection_dim,
 * hidden_size) follows the text model's parameters (the loader does not
 * read it, but PyTorch allocates it). OUT: *out, initialized here (any
 * previous content is not freed), freed with tdm_plist_free; left empty on
 * error. */
tdm_status tdm_clip_text_plist(const char *config_path, tdm_dtype dt, tdm_plist_t *out);

/* Config values: hidden_size (D), max_position_embeddings (longest T),
 * num_hidden_layers; projection_dim of a CLIPTextModelWithProjection (0
 * for a CLIPTextModel). */
int64_t tdm_clip_text_hidden_size(const tdm_clip_text_t *m);
int64_t tdm_clip_text_max_positions(const tdm_clip_text_t *m);
int64_t tdm_clip_text_num_hidden_layers(const tdm_clip_text_t *m);
int64_t tdm_clip_text_projection_dim(const tdm_clip_text_t *m);

/* ids (B, T), HOST memory on every device → hidden (B, T, D) and pooled,
 * memory of the model's device (host memory for a CPU device; on a CUDA
 * device the work is queued on its stream and the outputs are ready after
 * tdm_dev_download). hidden: last_hidden_state after final_layer_norm,
 * causal self-attention, position ids 0..T-1, no padding mask (as diffusers
 * calls the encoder). pooled (B, D) or NULL: the row of `hidden` at the
 * position transformers pools: eos_token_id == 2 (legacy configs) → the
 * first argmax of the ids; otherwise the first position whose id equals
 * eos_token_id (position 0 when there is none). Errors: B or T < 1,
 * T > max_position_embeddings, an id outside [0, vocab_size) (the message
 * names batch row and position), activation memory over the device cap.
 * Activation memory (B·T·(6D + intermediate) floats) is taken from the
 * model's device for the call and released before returning. */
tdm_status tdm_clip_text_forward(tdm_clip_text_t *m, const int32_t *ids, int64_t B, int64_t T,
                                 float *hidden, float *pooled);

/* Same, stopping `skip` layers before the end (diffusers `clip_skip`):
 * hidden = final_layer_norm(hidden_states[-(skip + 1)]), i.e. the output of
 * layer num_hidden_layers - skip, normalized. skip = 0 is
 * tdm_clip_text_forward; 0 <= skip < num_hidden_layers. pooled (or NULL) is
 * taken from this `hidden` by the same EOS rule. */
tdm_status tdm_clip_text_forward_skip(tdm_clip_text_t *m, const int32_t *ids, int64_t B,
                                      int64_t T, int64_t skip, float *hidden, float *pooled);

/* As SDXL's encode_prompt uses a text encoder: hidden (B, T, D) =
 * hidden_states[-(skip + 2)] — the output of encoder layer L - 1 - skip, not
 * final-normalized (skip 0: the penultimate layer) — and, when text_embeds
 * is not NULL, text_embeds (B, projection_dim) = the text_embeds output of
 * CLIPTextModelWithProjection: text_projection of the pooled row (the EOS
 * rule above) of the whole model's final-normalized output; an encoder
 * without the projection is then an error. 0 <= skip < num_hidden_layers - 1.
 * Memory and other errors as tdm_clip_text_forward. */
tdm_status tdm_clip_text_forward_penultimate(tdm_clip_text_t *m, const int32_t *ids, int64_t B,
                                             int64_t T, int64_t skip, float *hidden,
                                             float *text_embeds);

#endif
