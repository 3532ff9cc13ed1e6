/* devmap.c — freeing and looking up a device map (devmap.h). */
#include "nn/devmap.h"

#include <stdlib.h>
#include <string.h>

void tdm_place_map_free(tdm_place_map_t *m) {
    if (!m) return;
    for (int64_t i = 0; i < m->n; i++) free(m->e[i].name);
    free(m->e);
    memset(m, 0, sizeof *m);
}

int tdm_place_map_lookup(const tdm_place_map_t *m, const char *name) {
    int best = TDM_PLACE_DISK - 1;
    size_t bl = 0;
    int found = 0;
    for (int64_t i = 0; i < m->n; i++) {
        const char *k = m->e[i].name;
        size_t l = strlen(k);
        int match = l == 0 || (!strncmp(name, k, l) && (name[l] == 0 || name[l] == '.'));
        if (match && (!found || l > bl)) {
            best = m->e[i].dev;
            bl = l;
            found = 1;
        }
    }
    return best;
}
