/* fuzz_clip_tokenizer.c — libFuzzer target for the CLIP tokenizer. The first
 * byte picks the mode:
 *  - even: the rest is a prompt, encoded with the committed fixture
 *    vocabulary (tests/fixtures/tokenizer/json_only) at a length from the
 *    second byte; every id must be a vocabulary id, BOS first, EOS after
 *    the text's ids, pad ids after it;
 *  - odd: the rest is a tokenizer folder (fuzz_tok_files.h: vocab.json,
 *    merges.txt, tokenizer.json, tokenizer_config.json,
 *    special_tokens_map.json, then a prompt). A failed load leaves NULL and
 *    a message; a loaded tokenizer encodes the prompt. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_tok_files.h"
#include "text/clip_tokenizer.h"

static tdm_clip_tok_t *fixture;

/* BOS first, every id a vocabulary id (vmax > 0), an EOS somewhere (the
 * prompt may hold more: "<|endoftext|>" is one). */
static void check_ids(const tdm_clip_tok_t *t, const int32_t *ids, int L, int64_t vmax) {
    if (ids[0] != tdm_clip_tok_bos_id(t)) __builtin_trap();
    int eos = 0;
    for (int i = 0; i < L; i++) {
        if (ids[i] < 0 || (vmax > 0 && ids[i] >= vmax)) __builtin_trap();
        eos |= ids[i] == tdm_clip_tok_eos_id(t);
    }
    if (!eos) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    const int L = 2 + data[1] % 160;
    int32_t *ids = malloc((size_t)L * sizeof *ids);
    if (!ids) abort();
    if (data[0] % 2 == 0) {
        if (!fixture && tdm_clip_tok_load(&fixture, TDM_FIXTURES "/tokenizer/json_only") != TDM_OK) abort();
        char *prompt = malloc(size - 1);
        if (!prompt) abort();
        memcpy(prompt, data + 2, size - 2);
        prompt[size - 2] = 0;
        if (tdm_clip_tok_encode(fixture, prompt, ids, L) == TDM_OK)
            check_ids(fixture, ids, L, tdm_clip_tok_vocab_size(fixture));
        else if (!tdm_last_error()[0]) __builtin_trap();
        free(prompt);
    } else {
        static const char *const names[] = {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                                            "special_tokens_map.json"};
        char *prompt = NULL;
        fuzz_tok_write(data + 2, size - 2, names, 5, &prompt);
        tdm_clip_tok_t *t = (tdm_clip_tok_t *)&t;
        if (tdm_clip_tok_load(&t, fuzz_tok_dir()) != TDM_OK) {
            if (t) __builtin_trap();
            if (!tdm_last_error()[0]) __builtin_trap();
        } else {
            if (tdm_clip_tok_max_length(t) < 2) __builtin_trap();
            if (tdm_clip_tok_encode(t, prompt, ids, L) == TDM_OK) check_ids(t, ids, L, 0);
            tdm_clip_tok_free(t);
        }
        free(prompt);
    }
    free(ids);
    return 0;
}
