/* fuzz_safetensors.c — libFuzzer target for the safetensors header parser:
 * the input is a whole file image. A parse that succeeds must describe
 * tensors whose bytes lie inside the input; every byte is read, every
 * tensor is looked up by name, and floating-point tensors are converted to
 * float32 (from an aligned copy) so ASan/UBSan see each access. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tdm_safetensors_t *st = NULL;
    if (tdm_safetensors_parse(&st, data, size, "fuzz.safetensors") != TDM_OK) {
        if (st) __builtin_trap();                 /* failure must leave *st NULL */
        if (!tdm_last_error()[0]) __builtin_trap(); /* and explain itself */
        return 0;
    }
    volatile uint8_t sink = 0;
    int n = tdm_safetensors_count(st);
    for (int i = 0; i < n; i++) {
        const tdm_st_tensor_t *t = tdm_safetensors_at(st, i);
        if (!t || !t->name || tdm_safetensors_find(st, t->name) != t) __builtin_trap();
        if (t->ndim < 0 || t->ndim > TDM_MAX_DIMS || t->nbytes < 0) __builtin_trap();
        const uint8_t *p = t->data;
        if (t->nbytes > 0 && (p < data || p + t->nbytes > data + size)) __builtin_trap();
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
        if (numel * (int64_t)tdm_dtype_size(t->dtype) != t->nbytes) __builtin_trap();
        for (int64_t k = 0; k < t->nbytes; k++) sink ^= p[k];
        if (t->dtype != TDM_BOOL && numel > 0) {
            void *copy = malloc((size_t)t->nbytes);
            float *f = malloc((size_t)numel * sizeof *f);
            if (copy && f) {
                memcpy(copy, p, (size_t)t->nbytes);
                if (tdm_convert_to_f32(f, copy, t->dtype, numel) != TDM_OK) __builtin_trap();
                for (int64_t k = 0; k < numel; k++) sink ^= (uint8_t)(f[k] != f[k]);
            }
            free(copy);
            free(f);
        }
    }
    (void)tdm_safetensors_meta(st, "format");
    (void)tdm_safetensors_find(st, "");
    (void)tdm_safetensors_at(st, n);
    (void)sink;
    tdm_safetensors_close(st);
    return 0;
}
