/* weights.c — a model's weights bound by name (weights.h). */
#include "nn/weights.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/folder.h"
#include "io/ldm.h"

#define TDM_WEIGHTS_NAME_MAX 256

void tdm_weights_init(tdm_weights_t *w, const char *what, tdm_device_t *dev,
                      const tdm_placement_t *place) {
    memset(w, 0, sizeof *w);
    w->what = what;
    w->dev = dev;
    w->place = place;
}

void tdm_weights_init_list(tdm_weights_t *w, const char *what, tdm_plist_t *list) {
    memset(w, 0, sizeof *w);
    w->what = what;
    w->list = list;
}

tdm_status tdm_weights_open(tdm_weights_t *w, const char *root, const char *sub,
                            const char *variant) {
    char path[TDM_PATH_MAX];
    int single = 0;   /* a single-file checkpoint attached to root (io/ldm.h) */
    tdm_status st = tdm_ldm_open(root, sub, &w->set, &single);
    if (st != TDM_OK || single) return st;
    st = tdm_folder_weights(root, sub, variant, path, sizeof path);
    if (st != TDM_OK) return st;
    return tdm_st_set_open(&w->set, path);
}

/* Load mode: reads `name` into *slot (tensor_slot: a tdm_tensor_t * field,
 * else a float *) and keeps what it loaded. */
static tdm_status load(tdm_weights_t *w, void *slot, int tensor_slot, int gemm, int ndim,
                       const int64_t *shape, const char *name) {
    char mname[TDM_WEIGHTS_NAME_MAX];
    tdm_tensor_t *t = NULL;
    if (w->nowned == w->capowned) {   /* grown first: a loaded tensor always finds its place */
        int64_t cap = w->capowned ? 2 * w->capowned : 256;
        tdm_tensor_t **p = realloc(w->owned, (size_t)cap * sizeof *p);
        if (!p) return tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory for the tensor list", w->what);
        w->owned = p;
        w->capowned = cap;
    }
    if (w->map_name) w->map_name(w->ctx, mname, sizeof mname, name);
    const int64_t unit = w->unit_of ? w->unit_of(w->ctx, name) : -1;
    tdm_status st = tdm_offload_load(&w->off, w->place, w->set, w->dev, w->what, name,
                                     w->map_name ? mname : NULL, ndim, shape, gemm, slot,
                                     tensor_slot, unit, &t);
    if (st != TDM_OK || !t) return st;   /* t NULL: on disk, read when its unit runs */
    w->owned[w->nowned++] = t;           /* resident, or the host copy */
    w->bytes += t->nbytes;
    return TDM_OK;
}

static tdm_status bind(tdm_weights_t *w, void *slot, int tensor_slot, int gemm, int ndim,
                       const int64_t *shape, const char *fmt, va_list ap) {
    char name[TDM_WEIGHTS_NAME_MAX];
    int len = vsnprintf(name, sizeof name, fmt, ap);
    if (len < 0 || (size_t)len >= sizeof name)
        return tdm_errorf(TDM_ERR_INTERNAL, "%s: tensor name too long: %s...", w->what, name);
    if (!w->list) return load(w, slot, tensor_slot, gemm, ndim, shape, name);
    if (slot) memset(slot, 0, tensor_slot ? sizeof(tdm_tensor_t *) : sizeof(float *));
    return tdm_plist_add(w->list, 0, gemm == TDM_WEIGHT_F8 ? TDM_F8E4M3 : TDM_F32, ndim, shape,
                         "%s", name);
}

tdm_status tdm_weights_bind(tdm_weights_t *w, const float **slot, int gemm, int ndim,
                            const int64_t *shape, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    tdm_status st = bind(w, (void *)slot, 0, gemm, ndim, shape, fmt, ap);
    va_end(ap);
    return st;
}

tdm_status tdm_weights_bind_tensor(tdm_weights_t *w, tdm_tensor_t **slot, int gemm, int ndim,
                                   const int64_t *shape, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    tdm_status st = bind(w, (void *)slot, 1, gemm, ndim, shape, fmt, ap);
    va_end(ap);
    return st;
}

tdm_status tdm_weights_bind_slice(tdm_weights_t *w, const float **slot, int gemm, int ndim,
                                  const int64_t *shape, int dim, int nr, const int64_t *begin,
                                  const int64_t *count, const char *fmt, ...) {
    char name[TDM_WEIGHTS_NAME_MAX];
    int64_t part[TDM_MAX_DIMS];
    tdm_tensor_t *t = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (len < 0 || (size_t)len >= sizeof name)
        return tdm_errorf(TDM_ERR_INTERNAL, "%s: tensor name too long: %s...", w->what, name);
    if (ndim < 1 || ndim > TDM_MAX_DIMS || dim < 0 || dim >= ndim || nr < 1)
        return tdm_errorf(TDM_ERR_INTERNAL, "%s: tensor \"%s\": bad slice", w->what, name);
    if (w->list) {
        memcpy(part, shape, (size_t)ndim * sizeof *part);
        part[dim] = 0;
        for (int i = 0; i < nr; i++) part[dim] += count[i];
        if (slot) *slot = NULL;
        return tdm_plist_add(w->list, 0, TDM_F32, ndim, part, "%s", name);
    }
    if (w->place)
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: tensor \"%s\": a tensor-parallel shard cannot "
                          "be placed by a device map", w->what, name);
    if (w->nowned == w->capowned) {
        int64_t cap = w->capowned ? 2 * w->capowned : 256;
        tdm_tensor_t **p = realloc(w->owned, (size_t)cap * sizeof *p);
        if (!p) return tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory for the tensor list", w->what);
        w->owned = p;
        w->capowned = cap;
    }
    tdm_status st = tdm_st_set_load_slice(w->set, name, w->dev, gemm, ndim, shape, dim, nr, begin,
                                          count, &t);
    if (st != TDM_OK) return st;
    w->owned[w->nowned++] = t;
    w->bytes += t->nbytes;
    *slot = tdm_f32(t);
    return TDM_OK;
}

tdm_status tdm_weights_nosplit(tdm_weights_t *w, const char *cls, const char *fmt, ...) {
    char path[TDM_WEIGHTS_NAME_MAX];
    va_list ap;
    if (!w->list) return TDM_OK;
    va_start(ap, fmt);
    int len = vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    if (len < 0 || (size_t)len >= sizeof path)
        return tdm_errorf(TDM_ERR_INTERNAL, "%s: module path too long: %s...", w->what, path);
    return tdm_plist_nosplit(w->list, cls, "%s", path);
}

void tdm_weights_finish(tdm_weights_t *w) {
    if (w->set && !tdm_offload_keep_set(&w->off, w->set))   /* kept: disk tensors are read on use */
        tdm_st_set_close(w->set);
    w->set = NULL;
    w->place = NULL;
    w->list = NULL;
}

void tdm_weights_free(tdm_weights_t *w) {
    if (!w) return;
    tdm_offload_free(&w->off);   /* first: unpins host copies the list below frees */
    for (int64_t i = 0; i < w->nowned; i++) tdm_tensor_free(w->owned[i]);
    free(w->owned);
    tdm_st_set_close(w->set);
    memset(w, 0, sizeof *w);
}
