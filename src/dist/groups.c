/* groups.c — the `--parallel` spec (tdm_parallel_parse), the rank layout
 * of the DP × CFG × ring × Ulysses × TP grid and its sub-communicators
 * (groups.h says the layout). Not a schedule: which images a group makes
 * is the caller's split over the DP rank and size. */
#include "dist/groups.h"

#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* The degrees of the grid from the innermost (TP) out, as fields of
 * tdm_parallel_t, with the names the spec uses. */
static const struct {
    const char *name;
    size_t      off;
} k_dims[] = {
    {"tp", offsetof(tdm_parallel_t, tp)},
    {"ulysses", offsetof(tdm_parallel_t, ulysses)},
    {"ring", offsetof(tdm_parallel_t, ring)},
    {"cfg", offsetof(tdm_parallel_t, cfg)},
};
#define NDIMS ((int)(sizeof k_dims / sizeof k_dims[0]))

static int *field(tdm_parallel_t *p, int k) { return (int *)((char *)p + k_dims[k].off); }
static int cfield(const tdm_parallel_t *p, int k) {
    return *(const int *)((const char *)p + k_dims[k].off);
}

int tdm_parallel_per_image(const tdm_parallel_t *deg) {
    return deg->cfg * deg->ring * deg->ulysses * deg->tp;
}

void tdm_parallel_coords(const tdm_parallel_t *deg, int rank, tdm_parallel_t *at) {
    for (int k = 0; k < NDIMS; k++) {
        *field(at, k) = rank % cfield(deg, k);
        rank /= cfield(deg, k);
    }
    at->dp = rank;
}

int tdm_parallel_rank(const tdm_parallel_t *deg, const tdm_parallel_t *at) {
    int r = at->dp;
    for (int k = NDIMS - 1; k >= 0; k--) r = r * cfield(deg, k) + cfield(at, k);
    return r;
}

/* ---- the spec -------------------------------------------------------------- */

/* One "key=value" item of spec (len bytes at item) into *deg; seen marks the
 * keys already given. */
static tdm_status parse_item(const char *spec, const char *item, size_t len, tdm_parallel_t *deg,
                             int *seen) {
    const char *eq = memchr(item, '=', len);
    if (!eq)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--parallel %s: \"%.*s\" is not KEY=N (keys: ulysses, "
                          "ring, tp, cfg)", spec, (int)len, item);
    const size_t klen = (size_t)(eq - item);
    int k = 0;
    while (k < NDIMS && !(strlen(k_dims[k].name) == klen && !memcmp(k_dims[k].name, item, klen))) k++;
    if (k == NDIMS)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--parallel %s: unknown degree \"%.*s\" (expected "
                          "ulysses, ring, tp or cfg)", spec, (int)klen, item);
    const char *v = eq + 1, *end = item + len;
    long x = 0;
    int ok = v < end && end - v <= 9;
    for (const char *c = v; ok && c < end; c++) ok = *c >= '0' && *c <= '9';
    if (ok) x = strtol(v, NULL, 10);
    if (!ok || x < 1)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--parallel %s: %s=%.*s: the degree must be an "
                          "integer >= 1", spec, k_dims[k].name, (int)(end - v), v);
    if (seen[k])
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--parallel %s: %s is given twice", spec,
                          k_dims[k].name);
    if (!strcmp(k_dims[k].name, "cfg") && x > 2)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--parallel %s: cfg must be 1 or 2 (classifier-"
                          "free guidance has two halves, unconditional and conditional)", spec);
    seen[k] = 1;
    *field(deg, k) = (int)x;
    return TDM_OK;
}

tdm_status tdm_parallel_parse(const char *spec, int world_size, tdm_parallel_t *out) {
    tdm_parallel_t deg = {.dp = 1, .cfg = 1, .ring = 1, .ulysses = 1, .tp = 1};
    int seen[NDIMS] = {0};
    tdm_status st;
    if (!out) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_parallel_parse: NULL output");
    if (!spec) spec = "";
    if (!strcmp(spec, "auto"))
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "--parallel auto: choose the degrees first "
                          "(tdm_parallel_choose, as tandem generate does) and pass them "
                          "(ulysses=U,ring=R,tp=T,cfg=C)");
    for (const char *p = spec; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--parallel %s: empty item (expected KEY=N items "
                              "separated by commas)", spec);
        if ((st = parse_item(spec, p, len, &deg, seen)) != TDM_OK) return st;
        p += len + (comma ? 1 : 0);
        if (comma && !*p)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--parallel %s: trailing comma", spec);
    }
    /* each degree < 2^30: the product fits in int64 */
    const int64_t per = (int64_t)deg.cfg * deg.ring * deg.ulysses * deg.tp;
    if (per > INT_MAX)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--parallel %s: %lld ranks per image is too many",
                          spec, (long long)per);
    if (world_size > 0) {
        if (world_size % per != 0)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--parallel %s: the degrees multiply to %lld ranks "
                              "per image (cfg %d x ring %d x ulysses %d x tp %d), which does not "
                              "divide the world size %d%s", spec, (long long)per, deg.cfg, deg.ring,
                              deg.ulysses, deg.tp, world_size,
                              world_size == 1 ? " (run it under tandem launch -n N)" : "");
        deg.dp = world_size / (int)per;
    }
    *out = deg;
    return TDM_OK;
}

/* ---- the groups ------------------------------------------------------------- */

void tdm_groups_free(tdm_groups_t *g) {
    if (!g) return;
    for (int k = TDM_GROUP_COUNT - 1; k >= 0; k--) tdm_comm_free(g->comm[k]);
    free(g);
}

/* Color and key of this rank's group along `dim`: the rank with its
 * coordinate along dim set to 0 names the group (unique per group); the
 * coordinate orders it. */
static void color_key(const tdm_parallel_t *deg, const tdm_parallel_t *at, int dim, int *color,
                      int *key) {
    tdm_parallel_t base = *at;
    const int per = tdm_parallel_per_image(deg);
    switch (dim) {
    case TDM_GROUP_DP: base.dp = 0, *key = at->dp; break;
    case TDM_GROUP_CFG: base.cfg = 0, *key = at->cfg; break;
    case TDM_GROUP_RING: base.ring = 0, *key = at->ring; break;
    case TDM_GROUP_ULYSSES: base.ulysses = 0, *key = at->ulysses; break;
    case TDM_GROUP_TP: base.tp = 0, *key = at->tp; break;
    default:   /* TDM_GROUP_IMAGE */
        *color = at->dp;
        *key = tdm_parallel_rank(deg, at) - at->dp * per;
        return;
    }
    *color = tdm_parallel_rank(deg, &base);
}

tdm_status tdm_groups_create(tdm_comm_t *world, const tdm_parallel_t *deg, tdm_groups_t **out) {
    tdm_status st = TDM_OK;
    tdm_groups_t *g = NULL;
    if (!world || !deg || !out)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_groups_create: NULL argument");
    *out = NULL;
    const int size = tdm_comm_size(world);
    if (deg->dp < 1 || deg->cfg < 1 || deg->ring < 1 || deg->ulysses < 1 || deg->tp < 1 ||
        (int64_t)deg->dp * tdm_parallel_per_image(deg) != size)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_groups_create on rank %d: dp %d x cfg %d x ring %d "
                          "x ulysses %d x tp %d is not the world size %d", world->world_rank, deg->dp,
                          deg->cfg, deg->ring, deg->ulysses, deg->tp, size);
    g = calloc(1, sizeof *g);
    if (!g) return tdm_errorf(TDM_ERR_NOMEM, "tdm_groups_create: out of memory");
    g->deg = *deg;
    tdm_parallel_coords(deg, tdm_comm_rank(world), &g->at);
    /* every rank splits along every dimension in the same order (collective) */
    for (int dim = 0; dim < TDM_GROUP_COUNT; dim++) {
        int color = 0, key = 0;
        color_key(deg, &g->at, dim, &color, &key);
        TDM_TRY(tdm_comm_split(world, color, key, &g->comm[dim]));
    }
    *out = g;
    return TDM_OK;
fail:
    tdm_groups_free(g);
    return st;
}
