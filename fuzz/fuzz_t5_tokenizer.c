/* fuzz_t5_tokenizer.c — libFuzzer target for the T5 (Unigram) tokenizer.
 * The first byte picks the mode:
 *  - even: the rest is a prompt, encoded with the committed fixture
 *    (tests/fixtures/t5_tokenizer/tok) at a length from the second byte;
 *    every id must be below the vocabulary size, an EOS present;
 *  - odd: the rest is a tokenizer folder (fuzz_tok_files.h: tokenizer.json,
 *    spiece.model, tokenizer_config.json, special_tokens_map.json, then a
 *    prompt). A failed load leaves NULL and a message; a loaded tokenizer
 *    encodes the prompt. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_tok_files.h"
#include "text/t5_tokenizer.h"

static tdm_t5_tok_t *fixture;

/* Every id below the vocabulary size and an EOS somewhere (the prompt may
 * hold more: "</s>" is an added token). */
static void check_ids(const tdm_t5_tok_t *t, const int32_t *ids, int L) {
    const int64_t vmax = tdm_t5_tok_vocab_size(t);
    int eos = 0;
    for (int i = 0; i < L; i++) {
        if (ids[i] < 0 || ids[i] >= vmax) __builtin_trap();
        eos |= ids[i] == tdm_t5_tok_eos_id(t);
    }
    if (!eos) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    const int L = 1 + data[1] % 160;
    int32_t *ids = malloc((size_t)L * sizeof *ids);
    if (!ids) abort();
    if (data[0] % 2 == 0) {
        if (!fixture && tdm_t5_tok_load(&fixture, TDM_FIXTURES "/t5_tokenizer/tok") != TDM_OK) abort();
        char *prompt = malloc(size - 1);
        if (!prompt) abort();
        memcpy(prompt, data + 2, size - 2);
        prompt[size - 2] = 0;
        if (tdm_t5_tok_encode(fixture, prompt, ids, L) == TDM_OK) check_ids(fixture, ids, L);
        else if (!tdm_last_error()[0]) __builtin_trap();
        free(prompt);
    } else {
        static const char *const names[] = {"tokenizer.json", "spiece.model", "tokenizer_config.json",
                                            "special_tokens_map.json"};
        char *prompt = NULL;
        fuzz_tok_write(data + 2, size - 2, names, 4, &prompt);
        tdm_t5_tok_t *t = (tdm_t5_tok_t *)&t;
        if (tdm_t5_tok_load(&t, fuzz_tok_dir()) != TDM_OK) {
            if (t) __builtin_trap();
            if (!tdm_last_error()[0]) __builtin_trap();
        } else {
            if (tdm_t5_tok_encode(t, prompt, ids, L) == TDM_OK) check_ids(t, ids, L);
            tdm_t5_tok_free(t);
        }
        free(prompt);
    }
    free(ids);
    return 0;
}
