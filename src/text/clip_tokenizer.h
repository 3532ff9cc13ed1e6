/* clip_tokenizer.h — the CLIP byte-level BPE tokenizer of Stable Diffusion
 * 1.x/2.x text encoders, reproducing transformers' CLIPTokenizer (5.x, the
 * tokenizers-backed class that diffusers' pipelines load) as
 * StableDiffusionPipeline calls it. Reads a diffusers "tokenizer" folder; no
 * vocabulary is compiled in. Not a general tokenizer.json engine. */
#ifndef TDM_CLIP_TOKENIZER_H
#define TDM_CLIP_TOKENIZER_H

#include <stdint.h>
#include "core/core.h"

typedef struct tdm_clip_tok tdm_clip_tok_t;

/* Loads the tokenizer in `dir`, a diffusers "tokenizer" folder. The BPE
 * vocabulary and merges come from vocab.json + merges.txt when both exist,
 * else from tokenizer.json (model.type "BPE", model.vocab, model.merges as
 * "a b" strings or ["a", "b"] pairs; another model type is
 * TDM_ERR_UNSUPPORTED); with neither, TDM_ERR_IO names the folder and the
 * files looked for. tokenizer_config.json and special_tokens_map.json are
 * optional (bos/eos/unk/pad tokens as strings or as {"content": ...}
 * objects, added_tokens_decoder, model_max_length). Special tokens are
 * resolved as transformers does: special_tokens_map.json overrides
 * tokenizer_config.json unless the latter has added_tokens_decoder, in which
 * case tokenizer.json's added_tokens are also ignored; a token that is an
 * added token takes that entry's flags; a token given as a plain string is
 * matched on the raw text, one with "normalized": true on the lower-cased
 * NFC text. On success *out owns the tokenizer (free with
 * tdm_clip_tok_free); on failure *out is NULL and the error names the file
 * at fault. */
tdm_status tdm_clip_tok_load(tdm_clip_tok_t **out, const char *dir);

/* Frees the tokenizer; NULL is a no-op. */
void tdm_clip_tok_free(tdm_clip_tok_t *t);

/* model_max_length from tokenizer_config.json (77 for SD); 77 when absent. */
int tdm_clip_tok_max_length(const tdm_clip_tok_t *t);

/* Ids of the pad token (49407 "<|endoftext|>" for SD1.x, 0 "!" for SD2.x),
 * of the end-of-text and of the start-of-text tokens. */
int32_t tdm_clip_tok_pad_id(const tdm_clip_tok_t *t);
int32_t tdm_clip_tok_eos_id(const tdm_clip_tok_t *t);
int32_t tdm_clip_tok_bos_id(const tdm_clip_tok_t *t);

/* Number of tokens in the vocabulary (vocab.json or tokenizer.json's
 * model.vocab) plus added tokens not in it. */
int64_t tdm_clip_tok_vocab_size(const tdm_clip_tok_t *t);

/* Encodes `utf8` (NUL-terminated) as the SD pipeline calls the tokenizer:
 * tokenizer(text, padding="max_length", max_length=L, truncation=True):
 * BOS, the text's tokens truncated to L-2, EOS, then pad ids up to L.
 * `ids` has room for L ids; L >= 2. Invalid UTF-8 gives TDM_ERR_INVALID_ARG
 * naming the byte offset; `ids` is then unspecified. Thread-safe: the
 * tokenizer is only read. */
tdm_status tdm_clip_tok_encode(const tdm_clip_tok_t *t, const char *utf8, int32_t *ids, int L);

#endif
