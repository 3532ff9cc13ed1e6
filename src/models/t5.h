/* t5.h — the T5 encoder (transformers T5EncoderModel) that FLUX.1 folders
 * ship as text_encoder_2, on any device (CPU or CUDA): config, weights,
 * forward. Activations are float32; Linear weights are float32, or the
 * device's gemm_dtype (fp16/bf16 on CUDA, see backend/ops.h).
 * Encoder only (no decoder, no LM head) and no attention mask: FluxPipeline
 * calls text_encoder_2(input_ids)[0]. Not a tokenizer (src/text/). */
#ifndef TDM_T5_H
#define TDM_T5_H

#include "core/core.h"
#include "nn/ptree.h"

typedef struct tdm_t5 tdm_t5_t;

/* Loads the T5 encoder of pipeline folder `root`, component `sub` (normally
 * "text_encoder_2"): reads root/sub/config.json (absent keys take
 * T5Config's defaults: d_model 512, d_kv 64, d_ff 2048, num_layers 6,
 * num_heads 8, relative_attention_num_buckets 32,
 * relative_attention_max_distance 128, layer_norm_epsilon 1e-6,
 * feed_forward_proj "relu", vocab_size 32128) and the weights found by
 * tdm_folder_weights(root, sub, variant) (variant may be NULL): one
 * model.safetensors or the shards listed by model.safetensors.index.json.
 *
 * The feed-forward follows T5Config: feed_forward_proj is "ACT" or
 * "gated-ACT" ("gated-gelu" means the tanh GELU gelu_new); config keys
 * is_gated_act and dense_act_fn, when present, take precedence, as in
 * transformers. ACT must be relu, gelu (erf), gelu_new, gelu_pytorch_tanh,
 * silu or swish; anything else is TDM_ERR_UNSUPPORTED naming the key.
 *
 * Tensors (F32/F16/BF16, converted on `dev` to float32, Linear weights to the
 * device's gemm_dtype; every shape checked
 * against the config, errors name the tensor and the file):
 *   shared.weight or encoder.embed_tokens.weight (vocab, d_model) — tied;
 *     shared.weight is used when both are present
 *   encoder.block.{i}.layer.0.SelfAttention.{q,k,v}.weight (H*d_kv, d_model)
 *   encoder.block.{i}.layer.0.SelfAttention.o.weight        (d_model, H*d_kv)
 *   encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight
 *                                                           (num_buckets, H)
 *   encoder.block.{i}.layer.{0,1}.layer_norm.weight         (d_model)
 *   encoder.block.{i}.layer.1.DenseReluDense.wi_0/wi_1.weight (d_ff, d_model)
 *     (gated) or .wi.weight (d_ff, d_model) (not gated)
 *   encoder.block.{i}.layer.1.DenseReluDense.wo.weight      (d_model, d_ff)
 *   encoder.final_layer_norm.weight                         (d_model)
 * Other tensors (decoder.*, lm_head) are ignored. OUT: *out, freed with
 * tdm_t5_free. */
tdm_status tdm_t5_load(tdm_t5_t **out, const char *root, const char *sub, const char *variant,
                       tdm_device_t *dev);

/* tdm_t5_load with the tensors where a device map puts them (see
 * nn/offload.h): "cpu" weights in host RAM and "disk" ones in the files,
 * each brought to pl->main while its block runs; bit-identical results. */
struct tdm_placement;
tdm_status tdm_t5_load_placed(tdm_t5_t **out, const char *root, const char *sub,
                              const char *variant, const struct tdm_placement *pl);

/* Frees the model and its weights; NULL is a no-op. */
void tdm_t5_free(tdm_t5_t *m);

/* The parameter list (nn/ptree.h) of the T5EncoderModel that config.json
 * at `config_path` describes, from the config alone (no weights read),
 * checked as tdm_t5_load checks it; floating tensors as `dt`, in
 * transformers 5 registration order: shared.weight,
 * encoder.embed_tokens.weight (T5Stack's own Embedding: the constructed
 * module holds two tensors and no tie; from_pretrained ties them only when
 * tie_word_embeddings is true, so the list is an upper bound there), the
 * blocks (relative_attention_bias in block 0 only; wi_0/wi_1 or wi as the
 * config gates), encoder.final_layer_norm.weight. No buffers. No-split
 * modules: "encoder.block.{i}" (T5Block). OUT: *out, initialized here (any
 * previous content is not freed), freed with tdm_plist_free; left empty on
 * error. */
tdm_status tdm_t5_plist(const char *config_path, tdm_dtype dt, tdm_plist_t *out);

/* Config values: d_model (the width of the output rows), num_layers,
 * vocab_size. */
int64_t tdm_t5_d_model(const tdm_t5_t *m);
int64_t tdm_t5_num_layers(const tdm_t5_t *m);
int64_t tdm_t5_vocab_size(const tdm_t5_t *m);

/* ids (B, T) → hidden (B, T, d_model): last_hidden_state (after
 * encoder.final_layer_norm), bidirectional self-attention over all T
 * positions (no padding mask), the relative position bias of block 0 added
 * to the unscaled q·k scores of every block. ids are HOST int32 on every
 * device; hidden lives on the model's device (host memory for a CPU device,
 * device memory for CUDA, where the work is queued on the device's stream
 * and a kernel failure is reported by the next tdm_dev_download / sync).
 * Errors: B or T < 1, T > 2^20, an id outside [0, vocab_size) (the message
 * names batch row and position), activation memory over the device cap.
 * Activation memory (about B·T·(2·d_model + 4·H·d_kv + 2·d_ff) + 4·H·T
 * floats, plus a T·T score matrix on the CPU) is taken from the model's
 * device for the call and released before returning. */
tdm_status tdm_t5_forward(tdm_t5_t *m, const int32_t *ids, int64_t B, int64_t T, float *hidden);

/* The bucket of relative position `rel` (key position − query position) in
 * a bidirectional T5 encoder, exactly as transformers'
 * T5Attention._relative_position_bucket computes it in float32:
 * half the buckets for rel > 0; within a half, |rel| < n/4 exact, larger
 * |rel| on a log scale up to max_distance, the last bucket beyond.
 * Requires num_buckets >= 4 and max_distance > num_buckets / 4 (checked by
 * tdm_t5_load). Exposed for tests. */
int64_t tdm_t5_relative_bucket(int64_t rel, int64_t num_buckets, int64_t max_distance);

#endif
