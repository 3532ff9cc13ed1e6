/* t5_tokenizer.h — the T5 sentencepiece-Unigram tokenizer of FLUX.1
 * (FluxPipeline's tokenizer_2), reproducing transformers' T5TokenizerFast
 * (5.x, tokenizers backend) as FluxPipeline calls it. Reads a diffusers
 * "tokenizer_2" folder; no vocabulary is compiled in. Not a general
 * tokenizer.json engine and not a sentencepiece trainer or decoder. */
#ifndef TDM_T5_TOKENIZER_H
#define TDM_T5_TOKENIZER_H

#include <stdint.h>
#include "core/core.h"

typedef struct tdm_t5_tok tdm_t5_tok_t;

/* Loads the tokenizer in `dir`, a "tokenizer_2" folder:
 *  - tokenizer.json when present: model type "Unigram" (vocab [[piece,
 *    score], ...], unk_id), the Precompiled charsmap of its normalizer and its
 *    added_tokens. Any other model type (BPE, WordPiece, ...) gives
 *    TDM_ERR_UNSUPPORTED naming the file and the type. Its pre-tokenizer and
 *    Replace normalizer are not read: transformers 5 rebuilds T5's pipeline
 *    as Precompiled → WhitespaceSplit → Metaspace("▁", always, split) and so
 *    does this tokenizer;
 *  - else spiece.model (a sentencepiece ModelProto, model type UNIGRAM):
 *    pieces and scores, trainer_spec.unk_id, the normalizer's
 *    precompiled_charsmap, followed by `extra_ids` (tokenizer_config.json,
 *    default 100) sentinel tokens "<extra_id_N>" in T5's reverse order.
 * tokenizer_config.json and special_tokens_map.json (optional) give the pad,
 * eos and unk tokens (strings or {"content": ...}), added_tokens_decoder,
 * extra_ids and model_max_length. Added special tokens are split out of the
 * raw text before normalization. On success *out owns the tokenizer (free
 * with tdm_t5_tok_free); on failure *out is NULL and the error names the
 * file at fault. */
tdm_status tdm_t5_tok_load(tdm_t5_tok_t **out, const char *dir);

/* Frees the tokenizer; NULL is a no-op. */
void tdm_t5_tok_free(tdm_t5_tok_t *t);

/* Ids of the pad ("<pad>", 0 for T5) and end-of-sequence ("</s>", 1) tokens. */
int32_t tdm_t5_tok_pad_id(const tdm_t5_tok_t *t);
int32_t tdm_t5_tok_eos_id(const tdm_t5_tok_t *t);

/* Number of ids: model pieces plus added tokens outside them (len(tokenizer)
 * in transformers; 32100 for FLUX's T5). */
int64_t tdm_t5_tok_vocab_size(const tdm_t5_tok_t *t);

/* model_max_length from tokenizer_config.json (512 for FLUX); 512 when absent
 * or out of int range. */
int tdm_t5_tok_max_length(const tdm_t5_tok_t *t);

/* Encodes `utf8` (NUL-terminated) as FluxPipeline calls tokenizer_2:
 * tokenizer(text, padding="max_length", max_length=L, truncation=True,
 * add_special_tokens=True): the text's ids truncated to L-1, the eos id, then
 * pad ids up to L. `ids` has room for L ids; L >= 1. Invalid UTF-8 gives
 * TDM_ERR_INVALID_ARG naming the byte offset; `ids` is then unspecified.
 * Thread-safe: the tokenizer is only read. */
tdm_status tdm_t5_tok_encode(const tdm_t5_tok_t *t, const char *utf8, int32_t *ids, int L);

#endif
