/* fuzz_place.c — libFuzzer target for the placement planner's inputs: the
 * first byte picks the parser; the rest is
 *   0: a --max-memory string (tdm_max_memory_parse, then tdm_size_parse);
 *   1-5: a config.json for the UNet / VAE / CLIP / T5 / FLUX parameter-list
 *        builders (config files only: what `tandem plan` reads), and, when
 *        one is accepted, the planner on its list under fixed budgets.
 * Parsers may refuse with a message; they must never crash, overrun, leak or
 * hang. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "models/clip_text.h"
#include "models/flux.h"
#include "models/t5.h"
#include "models/unet2d.h"
#include "models/vae.h"
#include "place/place.h"

typedef tdm_status (*builder_fn)(const char *config_path, tdm_dtype dt, tdm_plist_t *out);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int which = data[0] % 6;
    const char *body = (const char *)data + 1;
    size_t n = size - 1;
    if (which == 0) {
        char *s = malloc(n + 1);
        if (!s) return 0;
        memcpy(s, body, n);
        s[n] = 0;
        tdm_max_memory_t mm;
        if (tdm_max_memory_parse(s, &mm) == TDM_OK && (mm.n < 1 || mm.n > TDM_PLACE_MAX_DEVICES))
            __builtin_trap();
        int64_t b;
        if (tdm_size_parse(s, &b) == TDM_OK && b < 0) __builtin_trap();
        free(s);
        return 0;
    }
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/fuzz_place_%d.json", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(body, 1, n, f);
    fclose(f);
    static const builder_fn fns[5] = {tdm_unet_plist, tdm_vae_plist, tdm_clip_text_plist,
                                      tdm_t5_plist, tdm_flux_plist};
    tdm_plist_t pl;
    if (fns[which - 1](path, TDM_BF16, &pl) == TDM_OK) {
        if (pl.n < 0 || pl.nnosplit < 0) __builtin_trap();
        tdm_max_memory_t mm;
        tdm_place_map_t map;
        if (tdm_max_memory_parse("0=1GB,1=1GB,cpu=1GB,disk=1TB", &mm) == TDM_OK) {
            for (int s = 0; s < 3; s++)
                if (tdm_place_plan(&pl, &mm, (tdm_place_strategy)s, 0, &map) == TDM_OK)
                    tdm_place_map_free(&map);
        }
    } else if (pl.n != 0) {
        __builtin_trap();   /* a refused config leaves an empty list */
    }
    tdm_plist_free(&pl);
    return 0;
}
