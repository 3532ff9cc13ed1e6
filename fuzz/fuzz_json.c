/* fuzz_json.c — libFuzzer target for JSON configs: tdm_json_parse on the
 * input bytes (not NUL-terminated), then every typed getter on a few fixed
 * keys and on each key the object actually has. Getters may fail with a
 * message; they must never crash or overrun their output buffers. */
#include <stdint.h>
#include <string.h>

#include "io/config.h"

static void probe(const tdm_json_t *j, const char *key) {
    int64_t i64, arr[8];
    double d;
    int b, n;
    char s[32], strs[4][64];
    (void)tdm_json_int(j, key, 0, &i64);
    (void)tdm_json_float(j, key, 0.0, &d);
    (void)tdm_json_bool(j, key, 0, &b);
    (void)tdm_json_str(j, key, "default", s, sizeof s);
    if (tdm_json_int_array(j, key, 1, arr, 8, &n) == TDM_OK && (n < 0 || n > 8))
        __builtin_trap();
    if (tdm_json_int_array(j, key, 0, arr, 8, &n) == TDM_OK && (n < 0 || n > 8))
        __builtin_trap();
    if (tdm_json_str_array(j, key, strs, 4, &n) == TDM_OK) {
        if (n < 0 || n > 4) __builtin_trap();
        for (int k = 0; k < n; k++)
            if (!memchr(strs[k], 0, sizeof strs[k])) __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tdm_json_t j;
    if (tdm_json_parse(&j, (const char *)data, size, "fuzz.json") != TDM_OK) {
        if (j.root) __builtin_trap();
        tdm_json_free(&j);
        return 0;
    }
    static const char *keys[] = {"a", "_class_name", "sample_size", "block_out_channels",
                                 "weight_map", "", "\xff"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) probe(&j, keys[i]);
    int seen = 0;
    for (const cJSON *e = j.root->child; e && seen < 64; e = e->next, seen++)
        if (e->string) probe(&j, e->string);
    tdm_json_free(&j);
    return 0;
}
