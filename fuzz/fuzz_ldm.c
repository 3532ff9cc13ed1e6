/* fuzz_ldm.c — libFuzzer target for the single-file renaming (io/ldm.c): the
 * input is a whole .safetensors image, written to a file and attached to a
 * small config folder made once — as a single file, then as every
 * component's own file — (unet, vae, both text encoders, a FLUX
 * transformer); every component's renamed set is opened and each view's
 * bytes read, so ASan/UBSan see any view that leaves its tensor or a name
 * the parsing mishandles. A view must keep the element count of its shape. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/ldm.h"

static char g_dir[64], g_file[128];

static void put(const char *sub, const char *json) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", g_dir, sub);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/%s/config.json", g_dir, sub);
    FILE *f = fopen(p, "w");
    if (!f) __builtin_trap();
    fputs(json, f);
    fclose(f);
}

static void setup(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/tdm_fuzz_ldm_XXXXXX");
    if (!mkdtemp(g_dir)) __builtin_trap();
    put("unet", "{\"layers_per_block\": 2}");
    put("vae", "{\"block_out_channels\": [8, 16, 16]}");
    put("text_encoder", "{}");
    put("text_encoder_2", "{}");
    put("transformer", "{\"num_attention_heads\": 2, \"attention_head_dim\": 4}");
    snprintf(g_file, sizeof g_file, "%s/model.safetensors", g_dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const subs[] = {"unet", "vae", "text_encoder", "text_encoder_2", "transformer"};
    if (!g_dir[0]) setup();
    int fd = open(g_file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) __builtin_trap();
    close(fd);
    volatile uint8_t sink = 0;
    /* pass 0: the input as a single file; pass 1: as every component's own file */
    const char *const comps[3] = {g_file, g_file, g_file};
    for (int pass = 0; pass < 2; pass++) {
        if (tdm_ldm_attach(g_dir, pass ? NULL : g_file, pass ? comps : NULL) != TDM_OK) {
            if (!tdm_last_error()[0]) __builtin_trap();   /* a refusal explains itself */
            continue;
        }
        for (size_t s = 0; s < sizeof subs / sizeof *subs; s++) {
            tdm_st_set_t *set = NULL;
            int attached = 0;
            if (tdm_ldm_open(g_dir, subs[s], &set, &attached) != TDM_OK || !set) continue;
            for (int i = 0; i < tdm_st_set_view_count(set); i++) {
                const tdm_st_tensor_t *v = tdm_st_set_view_at(set, i);
                int64_t numel = 1;
                for (int d = 0; d < v->ndim; d++) numel *= v->shape[d];
                if (numel * (int64_t)tdm_dtype_size(v->dtype) != v->nbytes) __builtin_trap();
                if (tdm_st_set_find(set, v->name) != v) __builtin_trap();
                for (int64_t k = 0; k < v->nbytes; k++) sink ^= ((const uint8_t *)v->data)[k];
            }
            tdm_st_set_close(set);
        }
        tdm_ldm_detach(g_dir);
    }
    (void)sink;
    return 0;
}
