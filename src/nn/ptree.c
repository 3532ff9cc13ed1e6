/* ptree.c — the parameter list (ptree.h). */
#include "nn/ptree.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tdm_plist_init(tdm_plist_t *l, tdm_dtype float_dtype) {
    memset(l, 0, sizeof *l);
    /* a --dtype fp8 pipeline keeps its tensors in bf16 except the FP8
     * Linears, which their model adds with their own dtype */
    l->dtype = float_dtype == TDM_F8E4M3 ? TDM_BF16 : float_dtype;
}

static void free_strs(char **s, int64_t n) {
    for (int64_t i = 0; i < n; i++) free(s[i]);
    free(s);
}

void tdm_plist_free(tdm_plist_t *l) {
    if (!l) return;
    for (int64_t i = 0; i < l->n; i++) free(l->e[i].name);
    free(l->e);
    free_strs(l->nosplit, l->nnosplit);
    free_strs(l->nosplit_class, l->nnosplit);
    free_strs(l->tied, l->ntied);
    memset(l, 0, sizeof *l);
}

static int is_float(tdm_dtype t) {
    return t == TDM_F32 || t == TDM_F16 || t == TDM_BF16 || t == TDM_F64;
}

/* Grows *p (n used of *cap elements of `sz` bytes) for one more. */
static int grow(void **p, int64_t n, int64_t *cap, size_t sz) {
    if (n < *cap) return 1;
    int64_t nc = *cap ? *cap * 2 : 64;
    void *q = realloc(*p, (size_t)nc * sz);
    if (!q) return 0;
    *p = q;
    *cap = nc;
    return 1;
}

static char *vfmt(const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int len = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (len < 0) return NULL;
    char *s = malloc((size_t)len + 1);
    if (s) vsnprintf(s, (size_t)len + 1, fmt, ap);
    return s;
}

tdm_status tdm_plist_add(tdm_plist_t *l, int is_buffer, tdm_dtype own, int ndim,
                         const int64_t *shape, const char *fmt, ...) {
    if (ndim < 0 || ndim > TDM_PTREE_MAX_DIMS)
        return tdm_errorf(TDM_ERR_INTERNAL, "parameter list: %d dims", ndim);
    if (l->n >= TDM_PLIST_MAX_ENTRIES)
        return tdm_errorf(TDM_ERR_MODEL, "parameter list: more than %d tensors: the config "
                          "describes a model too large to plan", TDM_PLIST_MAX_ENTRIES);
    int64_t numel = 1, bytes;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || !tdm_mul_ok(numel, shape[i], &numel))
            return tdm_errorf(TDM_ERR_MODEL, "parameter list: a tensor of shape dimension %lld "
                              "is out of range", (long long)shape[i]);
    if (!tdm_mul_ok(numel, 8, &bytes) || bytes > TDM_PLIST_MAX_BYTES ||
        l->bytes > TDM_PLIST_MAX_BYTES - bytes)
        return tdm_errorf(TDM_ERR_MODEL, "parameter list: the config describes more than %lld "
                          "bytes of weights", (long long)TDM_PLIST_MAX_BYTES);
    if (!grow((void **)&l->e, l->n, &l->cap, sizeof *l->e))
        return tdm_errorf(TDM_ERR_NOMEM, "parameter list: out of memory");
    va_list ap;
    va_start(ap, fmt);
    char *name = vfmt(fmt, ap);
    va_end(ap);
    if (!name) return tdm_errorf(TDM_ERR_NOMEM, "parameter list: out of memory");
    tdm_pentry_t *e = &l->e[l->n++];
    memset(e, 0, sizeof *e);
    e->name = name;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->dtype = is_float(own) ? l->dtype : own;
    e->is_buffer = is_buffer;
    l->bytes += tdm_pentry_bytes(e);
    return TDM_OK;
}

tdm_status tdm_plist_nosplit(tdm_plist_t *l, const char *cls, const char *fmt, ...) {
    int64_t cap = l->capnosplit;
    if (!grow((void **)&l->nosplit, l->nnosplit, &cap, sizeof *l->nosplit))
        return tdm_errorf(TDM_ERR_NOMEM, "parameter list: out of memory");
    cap = l->capnosplit;
    if (!grow((void **)&l->nosplit_class, l->nnosplit, &cap, sizeof *l->nosplit_class))
        return tdm_errorf(TDM_ERR_NOMEM, "parameter list: out of memory");
    l->capnosplit = cap;
    va_list ap;
    va_start(ap, fmt);
    char *s = vfmt(fmt, ap);
    va_end(ap);
    char *c = strdup(cls);
    if (!s || !c) {
        free(s);
        free(c);
        return tdm_errorf(TDM_ERR_NOMEM, "parameter list: out of memory");
    }
    l->nosplit[l->nnosplit] = s;
    l->nosplit_class[l->nnosplit++] = c;
    return TDM_OK;
}

tdm_status tdm_plist_tie(tdm_plist_t *l, const char *first, const char *other) {
    if (!grow((void **)&l->tied, l->ntied, &l->captied, sizeof *l->tied))
        return tdm_errorf(TDM_ERR_NOMEM, "parameter list: out of memory");
    size_t n = strlen(first) + strlen(other) + 2;
    char *s = malloc(n);
    if (!s) return tdm_errorf(TDM_ERR_NOMEM, "parameter list: out of memory");
    snprintf(s, n, "%s=%s", first, other);
    l->tied[l->ntied++] = s;
    return TDM_OK;
}

int64_t tdm_pentry_bytes(const tdm_pentry_t *e) {
    int64_t n = 1;
    for (int i = 0; i < e->ndim; i++) n *= e->shape[i];
    if (e->dtype == TDM_BOOL) return (n + 7) / 8;
    if (e->dtype == TDM_F8E4M3 && e->ndim > 0 && e->shape[0] > 0)   /* codes + row scales */
        return tdm_f8_bytes(e->shape[0], n / e->shape[0]);
    return n * (int64_t)tdm_dtype_size(e->dtype);
}
