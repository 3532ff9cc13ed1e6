/* safetensors.c — mmap reader for .safetensors files with full header
 * validation, sharded sets (*.safetensors.index.json), float32 loading with
 * shape checks, and an atomic float32 writer. Not a general JSON library:
 * the header is parsed with cJSON. */
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/atomic.h"
#include "io/config.h"
#include "io/folder.h"

#define TDM_ST_MAX_HEADER (100LL << 20)   /* 100 MiB, as the reference loader */

struct tdm_safetensors {
    char            *path;
    uint8_t         *map;        /* whole file (mmap) or NULL for parsed buffers */
    size_t           map_len;
    int              n;
    tdm_st_tensor_t *tensors;
    int              nmeta;
    char           **meta;       /* key, value, key, value, ... */
};

static const struct { const char *name; tdm_dtype dt; } st_dtypes[] = {
    {"F32", TDM_F32}, {"F16", TDM_F16}, {"BF16", TDM_BF16}, {"F64", TDM_F64},
    {"I8", TDM_I8},   {"U8", TDM_U8},   {"I16", TDM_I16},   {"U16", TDM_U16},
    {"I32", TDM_I32}, {"U32", TDM_U32}, {"I64", TDM_I64},   {"U64", TDM_U64},
    {"BOOL", TDM_BOOL}, {"F8_E4M3", TDM_F8E4M3},
};

static int st_dtype_parse(const char *s, tdm_dtype *out) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (!strcmp(s, st_dtypes[i].name)) { *out = st_dtypes[i].dt; return 1; }
    return 0;
}

void tdm_safetensors_close(tdm_safetensors_t *st) {
    if (!st) return;
    for (int i = 0; i < st->n; i++) free(st->tensors[i].name);
    for (int i = 0; i < 2 * st->nmeta; i++) free(st->meta[i]);
    free(st->meta);
    free(st->tensors);
    if (st->map) munmap(st->map, st->map_len);
    free(st->path);
    free(st);
}

/* Reads a JSON number that must be a non-negative integer below 2^53. */
static int st_uint(const cJSON *v, int64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(int64_t)d) return 0;
    *out = (int64_t)d;
    return 1;
}

static tdm_status st_parse_entry(tdm_safetensors_t *st, const cJSON *e, tdm_st_tensor_t *t,
                                 const uint8_t *data, int64_t data_len) {
    const char *f = st->path, *name = t->name;
    if (!cJSON_IsObject(e))
        return tdm_errorf(TDM_ERR_FORMAT, "%s: tensor \"%s\": header entry is not an object", f, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return tdm_errorf(TDM_ERR_FORMAT, "%s: tensor \"%s\": missing or non-string dtype", f, name);
    if (!st_dtype_parse(dt->valuestring, &t->dtype))
        return tdm_errorf(TDM_ERR_FORMAT, "%s: tensor \"%s\": unknown dtype \"%.32s\"", f, name,
                          dt->valuestring);
    if (!cJSON_IsArray(sh))
        return tdm_errorf(TDM_ERR_FORMAT, "%s: tensor \"%s\": missing or non-array shape", f, name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > TDM_MAX_DIMS)
        return tdm_errorf(TDM_ERR_FORMAT, "%s: tensor \"%s\": %d dims (at most %d supported)", f,
                          name, nd, TDM_MAX_DIMS);
    t->ndim = nd;
    int64_t numel = 1;
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, sh) {
        if (!st_uint(d, &t->shape[i]))
            return tdm_errorf(TDM_ERR_FORMAT, "%s: tensor \"%s\": shape[%d] is not a non-negative integer",
                              f, name, i);
        if (!tdm_mul_ok(numel, t->shape[i], &numel))
            return tdm_errorf(TDM_ERR_FORMAT, "%s: tensor \"%s\": shape overflows", f, name);
        i++;
    }
    int64_t nbytes;
    if (!tdm_mul_ok(numel, (int64_t)tdm_dtype_size(t->dtype), &nbytes))
        return tdm_errorf(TDM_ERR_FORMAT, "%s: tensor \"%s\": byte size overflows", f, name);
    int64_t b, en;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        !st_uint(cJSON_GetArrayItem(off, 0), &b) || !st_uint(cJSON_GetArrayItem(off, 1), &en))
        return tdm_errorf(TDM_ERR_FORMAT, "%s: tensor \"%s\": data_offsets must be [begin, end]", f,
                          name);
    if (b > en || en > data_len)
        return tdm_errorf(TDM_ERR_FORMAT,
                          "%s: tensor \"%s\": data_offsets [%lld, %lld] outside the %lld-byte data section",
                          f, name, (long long)b, (long long)en, (long long)data_len);
    if (en - b != nbytes)
        return tdm_errorf(TDM_ERR_FORMAT,
                          "%s: tensor \"%s\": shape and dtype %s need %lld bytes but data_offsets span %lld",
                          f, name, tdm_dtype_name(t->dtype), (long long)nbytes, (long long)(en - b));
    t->data = data + b;
    t->nbytes = nbytes;
    t->file = st->path;
    return TDM_OK;
}

static int st_cmp_name(const void *a, const void *b) {
    return strcmp(((const tdm_st_tensor_t *)a)->name, ((const tdm_st_tensor_t *)b)->name);
}

/* Orders tensors by their data range [begin, end). */
static int st_cmp_range(const void *a, const void *b) {
    const tdm_st_tensor_t *x = *(const tdm_st_tensor_t *const *)a, *y = *(const tdm_st_tensor_t *const *)b;
    if (x->data != y->data) return (const uint8_t *)x->data < (const uint8_t *)y->data ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* The header's bytes, as the format has them: a JSON object from the first
 * byte, then only spaces (0x20) up to the header length; no raw control
 * characters (cJSON would take a NUL as whitespace) and valid UTF-8.
 * Returns 1 when they are well-formed; else 0 with *why set. `end` is where
 * cJSON stopped parsing the object. */
static int st_header_bytes_ok(const uint8_t *h, size_t hl, const uint8_t *end, const char **why) {
    if (h[0] != '{') { *why = "does not begin with '{'"; return 0; }
    for (size_t i = 0; i < hl;) {
        uint8_t c = h[i];
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            *why = c == 0 ? "holds a NUL byte" : "holds a raw control character";
            return 0;
        }
        if (c < 0x80) { i++; continue; }
        size_t k = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
        if (k == 0 || c > 0xF4 || i + k > hl) { *why = "is not valid UTF-8"; return 0; }
        uint32_t cp = c & (k == 2 ? 0x1F : k == 3 ? 0x0F : 0x07);
        for (size_t j = 1; j < k; j++) {
            if ((h[i + j] & 0xC0) != 0x80) { *why = "is not valid UTF-8"; return 0; }
            cp = (cp << 6) | (h[i + j] & 0x3F);
        }
        if ((k == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (k == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
            *why = "is not valid UTF-8";
            return 0;
        }
        i += k;
    }
    for (const uint8_t *p = end; p < h + hl; p++)
        if (*p != ' ') { *why = "has bytes other than spaces after the JSON object"; return 0; }
    return 1;
}

/* The tensors' data ranges must tile the data section: sorted by offset,
 * each begins where the previous one ends, the first at 0 and the last at
 * the section's end (as the reference implementation checks). Two tensors
 * sharing bytes, bytes that belong to no tensor and a data section longer
 * than its tensors are errors. */
static tdm_status st_check_ranges(const tdm_safetensors_t *s, const uint8_t *data, int64_t data_len) {
    if (s->n == 0) {
        if (data_len != 0)
            return tdm_errorf(TDM_ERR_FORMAT, "%s: %lld bytes of data after a header with no tensors", s->path,
                              (long long)data_len);
        return TDM_OK;
    }
    const tdm_st_tensor_t **by = malloc((size_t)s->n * sizeof *by);
    if (!by) return tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", s->path);
    for (int i = 0; i < s->n; i++) by[i] = &s->tensors[i];
    qsort(by, (size_t)s->n, sizeof *by, st_cmp_range);
    tdm_status st = TDM_OK;
    int64_t pos = 0;
    for (int i = 0; i < s->n && st == TDM_OK; i++) {
        int64_t b = (const uint8_t *)by[i]->data - data, e = b + by[i]->nbytes;
        if (b < pos)
            st = tdm_errorf(TDM_ERR_FORMAT, "%s: tensors \"%s\" and \"%s\" share bytes [%lld, %lld) of the data "
                            "section", s->path, by[i - 1]->name, by[i]->name, (long long)b,
                            (long long)(e < pos ? e : pos));
        else if (b > pos)
            st = tdm_errorf(TDM_ERR_FORMAT, "%s: bytes [%lld, %lld) of the data section belong to no tensor "
                            "(the next is \"%s\")", s->path, (long long)pos, (long long)b, by[i]->name);
        pos = e;
    }
    if (st == TDM_OK && pos != data_len)
        st = tdm_errorf(TDM_ERR_FORMAT, "%s: the data section has %lld bytes after its last tensor \"%s\"", s->path,
                        (long long)(data_len - pos), by[s->n - 1]->name);
    free(by);
    return st;
}

tdm_status tdm_safetensors_parse(tdm_safetensors_t **out, const uint8_t *buf, size_t len,
                                 const char *name) {
    tdm_status st = TDM_OK;
    cJSON *hdr = NULL;
    *out = NULL;
    tdm_safetensors_t *s = calloc(1, sizeof *s);
    if (!s) return tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", name);
    s->path = strdup(name ? name : "<buffer>");
    if (!s->path) { free(s); return tdm_errorf(TDM_ERR_NOMEM, "out of memory"); }
    const char *f = s->path;
    if (len < 8) { st = tdm_errorf(TDM_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors file", f, len); goto fail; }
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | buf[i];
    if (hl > (uint64_t)TDM_ST_MAX_HEADER) {
        st = tdm_errorf(TDM_ERR_FORMAT, "%s: header length %llu is larger than %lld bytes", f,
                        (unsigned long long)hl, TDM_ST_MAX_HEADER);
        goto fail;
    }
    if (hl > len - 8) {
        st = tdm_errorf(TDM_ERR_FORMAT, "%s: header length %llu runs past the end of the %zu-byte file",
                        f, (unsigned long long)hl, len);
        goto fail;
    }
    if (hl < 2) { st = tdm_errorf(TDM_ERR_FORMAT, "%s: empty header", f); goto fail; }
    const char *hend = NULL, *why = NULL;
    hdr = cJSON_ParseWithLengthOpts((const char *)buf + 8, (size_t)hl, &hend, 0);
    if (!hdr || !cJSON_IsObject(hdr)) {
        st = tdm_errorf(TDM_ERR_FORMAT, "%s: header is not a JSON object", f);
        goto fail;
    }
    if (!st_header_bytes_ok(buf + 8, (size_t)hl, (const uint8_t *)hend, &why)) {
        st = tdm_errorf(TDM_ERR_FORMAT, "%s: the %llu-byte header %s", f, (unsigned long long)hl, why);
        goto fail;
    }
    const uint8_t *data = buf + 8 + hl;
    int64_t data_len = (int64_t)(len - 8 - hl);
    int cnt = cJSON_GetArraySize(hdr);
    s->tensors = calloc((size_t)cnt + 1, sizeof *s->tensors);
    if (!s->tensors) { st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", f); goto fail; }
    const cJSON *e;
    cJSON_ArrayForEach(e, hdr) {
        if (!e->string) { st = tdm_errorf(TDM_ERR_FORMAT, "%s: header entry without a name", f); goto fail; }
        if (!strcmp(e->string, "__metadata__")) {
            if (!cJSON_IsObject(e)) { st = tdm_errorf(TDM_ERR_FORMAT, "%s: __metadata__ is not an object", f); goto fail; }
            if (s->meta) { st = tdm_errorf(TDM_ERR_FORMAT, "%s: __metadata__ appears twice", f); goto fail; }
            int m = cJSON_GetArraySize(e);
            s->meta = calloc(2 * (size_t)m + 1, sizeof *s->meta);
            if (!s->meta) { st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", f); goto fail; }
            const cJSON *kv;
            cJSON_ArrayForEach(kv, e) {
                if (!cJSON_IsString(kv)) {
                    st = tdm_errorf(TDM_ERR_FORMAT, "%s: __metadata__ value \"%s\" is not a string", f,
                                    kv->string);
                    goto fail;
                }
                s->meta[2 * s->nmeta] = strdup(kv->string);
                s->meta[2 * s->nmeta + 1] = strdup(kv->valuestring);
                s->nmeta++;
                if (!s->meta[2 * s->nmeta - 2] || !s->meta[2 * s->nmeta - 1]) {
                    st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", f);
                    goto fail;
                }
            }
            continue;
        }
        tdm_st_tensor_t *t = &s->tensors[s->n];
        t->name = strdup(e->string);
        if (!t->name) { st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", f); goto fail; }
        s->n++;
        TDM_TRY(st_parse_entry(s, e, t, data, data_len));
    }
    TDM_TRY(st_check_ranges(s, data, data_len));
    qsort(s->tensors, (size_t)s->n, sizeof *s->tensors, st_cmp_name);
    for (int i = 1; i < s->n; i++)
        if (!strcmp(s->tensors[i].name, s->tensors[i - 1].name)) {
            st = tdm_errorf(TDM_ERR_FORMAT, "%s: tensor \"%s\" appears twice", f, s->tensors[i].name);
            goto fail;
        }
    cJSON_Delete(hdr);
    *out = s;
    return TDM_OK;
fail:
    cJSON_Delete(hdr);
    tdm_safetensors_close(s);
    return st;
}

tdm_status tdm_safetensors_open(tdm_safetensors_t **out, const char *path) {
    *out = NULL;
    int fd;
    tdm_status ost = tdm_file_open(path, &fd);   /* a regular file, or an error naming what it is */
    if (ost != TDM_OK) return ost;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return tdm_errorf(TDM_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    size_t len = (size_t)sb.st_size;
    if (len < 8) {
        close(fd);
        return tdm_errorf(TDM_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors file", path, len);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return tdm_errorf(TDM_ERR_IO, "%s: cannot mmap: %s", path, strerror(errno));
    tdm_status st = tdm_safetensors_parse(out, map, len, path);
    if (st != TDM_OK) { munmap(map, len); return st; }
    (*out)->map = map;
    (*out)->map_len = len;
    return TDM_OK;
}

int tdm_safetensors_count(const tdm_safetensors_t *st) { return st->n; }

const tdm_st_tensor_t *tdm_safetensors_at(const tdm_safetensors_t *st, int i) {
    return (i >= 0 && i < st->n) ? &st->tensors[i] : NULL;
}

const tdm_st_tensor_t *tdm_safetensors_find(const tdm_safetensors_t *st, const char *name) {
    tdm_st_tensor_t key = {.name = (char *)name};
    return bsearch(&key, st->tensors, (size_t)st->n, sizeof key, st_cmp_name);
}

const char *tdm_safetensors_meta(const tdm_safetensors_t *st, const char *key) {
    for (int i = 0; i < st->nmeta; i++)
        if (!strcmp(st->meta[2 * i], key)) return st->meta[2 * i + 1];
    return NULL;
}

/* ---- sets ------------------------------------------------------------ */

struct tdm_st_set {
    char               *path;
    int                 nfiles;
    tdm_safetensors_t **files;
    /* a renamed set (tdm_st_set_open_renamed): only the views are found by
     * name; a view's data points into a file or into an owned copy */
    int                 renamed;
    tdm_st_tensor_t    *views;
    int                 nviews, capviews;
    void              **owned;
    int                 nowned;
};

void tdm_st_set_close(tdm_st_set_t *set) {
    if (!set) return;
    for (int i = 0; i < set->nfiles; i++) tdm_safetensors_close(set->files[i]);
    for (int i = 0; i < set->nviews; i++) free(set->views[i].name);
    for (int i = 0; i < set->nowned; i++) free(set->owned[i]);
    free(set->views);
    free(set->owned);
    free(set->files);
    free(set->path);
    free(set);
}

tdm_status tdm_st_set_open_renamed(tdm_st_set_t **out, const char *path) {
    tdm_status st = tdm_st_set_open(out, path);
    if (st == TDM_OK) (*out)->renamed = 1;
    return st;
}

int tdm_st_set_raw_count(const tdm_st_set_t *set) {
    int n = 0;
    for (int i = 0; i < set->nfiles; i++) n += tdm_safetensors_count(set->files[i]);
    return n;
}

const tdm_st_tensor_t *tdm_st_set_raw_at(const tdm_st_set_t *set, int i) {
    for (int f = 0; f < set->nfiles; f++) {
        const int n = tdm_safetensors_count(set->files[f]);
        if (i < n) return tdm_safetensors_at(set->files[f], i);
        i -= n;
    }
    return NULL;
}

const tdm_st_tensor_t *tdm_st_set_raw_find(const tdm_st_set_t *set, const char *name) {
    for (int i = 0; i < set->nfiles; i++) {
        const tdm_st_tensor_t *t = tdm_safetensors_find(set->files[i], name);
        if (t) return t;
    }
    return NULL;
}

int tdm_st_set_view_count(const tdm_st_set_t *set) { return set->nviews; }

const tdm_st_tensor_t *tdm_st_set_view_at(const tdm_st_set_t *set, int i) {
    return i >= 0 && i < set->nviews ? &set->views[i] : NULL;
}

/* A new view slot named `name` (copied). OUT: *out. */
static tdm_status view_new(tdm_st_set_t *set, const char *name, tdm_st_tensor_t **out) {
    for (int i = 0; i < set->nviews; i++)
        if (!strcmp(set->views[i].name, name))
            return tdm_errorf(TDM_ERR_MODEL, "%s: two tensors of the file map to \"%s\"", set->path, name);
    if (set->nviews == set->capviews) {
        const int cap = set->capviews ? 2 * set->capviews : 256;
        tdm_st_tensor_t *v = realloc(set->views, (size_t)cap * sizeof *v);
        if (!v) return tdm_errorf(TDM_ERR_NOMEM, "out of memory");
        set->views = v;
        set->capviews = cap;
    }
    tdm_st_tensor_t *v = &set->views[set->nviews];
    memset(v, 0, sizeof *v);
    if (!(v->name = strdup(name))) return tdm_errorf(TDM_ERR_NOMEM, "out of memory");
    set->nviews++;
    *out = v;
    return TDM_OK;
}

tdm_status tdm_st_set_add_view(tdm_st_set_t *set, const char *name, const tdm_st_tensor_t *src,
                               int64_t row0, int64_t rows, int ndim, const int64_t *shape) {
    const int64_t es = (int64_t)tdm_dtype_size(src->dtype);
    int64_t row = 1, n = 1;
    for (int d = 1; d < src->ndim; d++) row *= src->shape[d];
    for (int d = 0; d < ndim; d++) n *= shape[d];
    const int64_t have = src->ndim ? src->shape[0] : 1;
    if (ndim < 1 || ndim > TDM_MAX_DIMS || row0 < 0 || rows < 1 || row0 + rows > have || n != rows * row)
        return tdm_errorf(TDM_ERR_MODEL, "%s: tensor \"%s\" does not have the shape of %s", set->path,
                          src->name, name);
    tdm_st_tensor_t *v = NULL;
    tdm_status st = view_new(set, name, &v);
    if (st != TDM_OK) return st;
    v->dtype = src->dtype;
    v->ndim = ndim;
    memcpy(v->shape, shape, (size_t)ndim * sizeof *shape);
    v->data = (const uint8_t *)src->data + row0 * row * es;
    v->nbytes = rows * row * es;
    v->file = src->file;
    return TDM_OK;
}

/* A new owned buffer of n bytes, kept until the set closes. OUT: *out. */
static tdm_status owned_new(tdm_st_set_t *set, const char *name, int64_t n, uint8_t **out) {
    void **ow = realloc(set->owned, (size_t)(set->nowned + 1) * sizeof *ow);
    if (!ow) return tdm_errorf(TDM_ERR_NOMEM, "out of memory");
    set->owned = ow;
    if (!(*out = malloc((size_t)(n > 0 ? n : 1)))) return tdm_errorf(TDM_ERR_NOMEM, "out of memory for \"%s\"", name);
    set->owned[set->nowned++] = *out;
    return TDM_OK;
}

tdm_status tdm_st_set_add_halves_swapped(tdm_st_set_t *set, const char *name, const tdm_st_tensor_t *src) {
    if (src->ndim < 1 || src->shape[0] % 2)
        return tdm_errorf(TDM_ERR_MODEL, "%s: tensor \"%s\" has no two halves", set->path, src->name);
    uint8_t *d = NULL;
    tdm_status st = owned_new(set, name, src->nbytes, &d);
    if (st != TDM_OK) return st;
    const int64_t h = src->nbytes / 2;
    memcpy(d, (const uint8_t *)src->data + h, (size_t)h);
    memcpy(d + h, src->data, (size_t)h);
    tdm_st_tensor_t *v = NULL;
    if ((st = view_new(set, name, &v)) != TDM_OK) return st;
    char *own = v->name;   /* the view's own copy of its name */
    *v = *src;
    v->name = own;
    v->data = d;
    return TDM_OK;
}

tdm_status tdm_st_set_add_transposed(tdm_st_set_t *set, const char *name, const tdm_st_tensor_t *src) {
    if (src->ndim != 2)
        return tdm_errorf(TDM_ERR_MODEL, "%s: tensor \"%s\" is not a matrix", set->path, src->name);
    const int64_t r = src->shape[0], c = src->shape[1], es = (int64_t)tdm_dtype_size(src->dtype);
    uint8_t *d = NULL;
    tdm_status st0 = owned_new(set, name, r * c * es, &d);
    if (st0 != TDM_OK) return st0;
    const uint8_t *s = src->data;
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++) memcpy(d + (j * r + i) * es, s + (i * c + j) * es, (size_t)es);
    tdm_st_tensor_t *v = NULL;
    tdm_status st = view_new(set, name, &v);
    if (st != TDM_OK) return st;
    v->dtype = src->dtype;
    v->ndim = 2;
    v->shape[0] = c;
    v->shape[1] = r;
    v->data = d;
    v->nbytes = r * c * es;
    v->file = src->file;
    return TDM_OK;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static tdm_status st_set_open_index(tdm_st_set_t *set, const char *path) {
    tdm_json_t j;
    tdm_status st = tdm_json_load(&j, path);
    if (st != TDM_OK) return st;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0; else snprintf(dir, sizeof dir, ".");
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(j.root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        st = tdm_errorf(TDM_ERR_FORMAT, "%s: missing \"weight_map\" object", path);
        goto fail;
    }
    int n = cJSON_GetArraySize(wm);
    set->files = calloc((size_t)n + 1, sizeof *set->files);
    if (!set->files) { st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", path); goto fail; }
    const cJSON *e;
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || !strcmp(e->valuestring, "..")) {
            st = tdm_errorf(TDM_ERR_FORMAT, "%s: weight_map[\"%s\"] must name a shard file in the same folder",
                            path, e->string);
            goto fail;
        }
        char shard[4096];
        if ((size_t)snprintf(shard, sizeof shard, "%s/%s", dir, e->valuestring) >= sizeof shard) {
            st = tdm_errorf(TDM_ERR_IO, "%s: shard path too long", path);
            goto fail;
        }
        tdm_safetensors_t *file = NULL;
        for (int i = 0; i < set->nfiles; i++)
            if (!strcmp(set->files[i]->path, shard)) file = set->files[i];
        if (!file) {
            TDM_TRY(tdm_safetensors_open(&file, shard));
            set->files[set->nfiles++] = file;
        }
        if (!tdm_safetensors_find(file, e->string)) {
            st = tdm_errorf(TDM_ERR_MODEL, "%s: weight_map places tensor \"%s\" in %s, which does not hold it",
                            path, e->string, shard);
            goto fail;
        }
    }
    if (set->nfiles == 0) st = tdm_errorf(TDM_ERR_FORMAT, "%s: weight_map is empty", path);
fail:
    tdm_json_free(&j);
    return st;
}

tdm_status tdm_st_set_open(tdm_st_set_t **out, const char *path) {
    *out = NULL;
    tdm_status st = TDM_OK;
    tdm_st_set_t *set = calloc(1, sizeof *set);
    if (!set || !(set->path = strdup(path))) {
        free(set);
        return tdm_errorf(TDM_ERR_NOMEM, "out of memory");
    }
    if (ends_with(path, ".json")) {
        TDM_TRY(st_set_open_index(set, path));
    } else {
        set->files = calloc(1, sizeof *set->files);
        if (!set->files) { st = tdm_errorf(TDM_ERR_NOMEM, "out of memory"); goto fail; }
        TDM_TRY(tdm_safetensors_open(&set->files[0], path));
        set->nfiles = 1;
    }
    *out = set;
    return TDM_OK;
fail:
    tdm_st_set_close(set);
    return st;
}

const tdm_st_tensor_t *tdm_st_set_find(const tdm_st_set_t *set, const char *name) {
    if (set->renamed) {
        for (int i = 0; i < set->nviews; i++)
            if (!strcmp(set->views[i].name, name)) return &set->views[i];
        return NULL;
    }
    for (int i = 0; i < set->nfiles; i++) {
        const tdm_st_tensor_t *t = tdm_safetensors_find(set->files[i], name);
        if (t) return t;
    }
    return NULL;
}

static void shape_str(char *buf, size_t cap, int nd, const int64_t *sh) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < nd && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)sh[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* Finds `name` in set and checks it against shape[0..ndim) (ndim 0: any
 * shape) and for a float dtype. *t NULL without error: absent and optional. */
static tdm_status st_find_checked(const tdm_st_set_t *set, const char *name, int ndim,
                                  const int64_t *shape, int optional, const tdm_st_tensor_t **out) {
    *out = NULL;
    const tdm_st_tensor_t *t = tdm_st_set_find(set, name);
    if (!t) {
        if (optional) return TDM_OK;
        return tdm_errorf(TDM_ERR_MODEL, "%s: missing tensor \"%s\"%s", set->path, name,
                          set->renamed ? " (diffusers' name: no key of the file's original layout maps to it)" : "");
    }
    if (ndim > 0) {
        int same = t->ndim == ndim;
        for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
        if (!same) {
            char a[128], b[128];
            shape_str(a, sizeof a, ndim, shape);
            shape_str(b, sizeof b, t->ndim, t->shape);
            return tdm_errorf(TDM_ERR_MODEL, "%s: tensor \"%s\" has shape %s, the config implies %s",
                              t->file, name, b, a);
        }
    }
    if (t->dtype == TDM_BOOL)
        return tdm_errorf(TDM_ERR_MODEL, "%s: tensor \"%s\" has dtype BOOL, expected a float dtype",
                          t->file, name);
    *out = t;
    return TDM_OK;
}

/* Fills r (on its device, of its dtype `to`) from the r->nbytes / size(to)
 * elements of dtype `sdt` at src, converting as needed; t names the
 * tensor in errors. */
/* st_fill of a row-scaled FP8 tensor r (rows = shape[0]): each row
 * converted to float32 and quantized (tdm_f8_quantize_row), threaded over
 * rows, into r itself on the host or a host buffer uploaded whole. */
static tdm_status st_fill_f8(tdm_tensor_t *r, const void *src, tdm_dtype sdt,
                             const tdm_st_tensor_t *t, const char *name) {
    const int64_t rows = r->shape[0], cols = tdm_tensor_numel(r) / rows;
    const size_t es = tdm_dtype_size(sdt);
    const int host = tdm_dev_is_host(r->dev);
    uint8_t *q = host ? r->data : malloc((size_t)r->nbytes);
    float *rowf = malloc((size_t)cols * sizeof(float) * (size_t)omp_get_max_threads() + 4);
    tdm_status st = TDM_OK;
    int bad = 0;
    if (!q || !rowf) {
        st = tdm_errorf(TDM_ERR_NOMEM, "%s: tensor \"%s\": out of host memory", t->file, name);
        goto done;
    }
    memset(q + rows * cols, 0, (size_t)(r->nbytes - rows * cols));   /* the padding too */
    float *scale = (float *)(q + tdm_f8_scale_offset(rows, cols));
    if (sdt == TDM_F8E4M3) {   /* an FP8 checkpoint: its codes as they are, scale 1 */
        memcpy(q, src, (size_t)(rows * cols));
        for (int64_t i = 0; i < rows; i++) scale[i] = 1.0f;
        goto upload;
    }
#pragma omp parallel for schedule(dynamic, 16) reduction(| : bad)
    for (int64_t i = 0; i < rows; i++) {
        float *f = rowf + (size_t)omp_get_thread_num() * (size_t)cols;
        if (tdm_convert_to_f32(f, (const char *)src + (size_t)(i * cols) * es, sdt, cols) != TDM_OK)
            bad = 1;
        else
            tdm_f8_quantize_row(q + i * cols, &scale[i], f, cols);
    }
    if (bad) {
        st = tdm_errorf(TDM_ERR_MODEL, "%s: tensor \"%s\": dtype %s cannot be quantized",
                        t->file, name, tdm_dtype_name(sdt));
        goto done;
    }
upload:
    if (!host) st = tdm_dev_upload(r->dev, r->data, q, r->nbytes, name);
done:
    if (!host) free(q);
    free(rowf);
    return st;
}

static tdm_status st_fill(tdm_tensor_t *r, const void *src, tdm_dtype sdt,
                          const tdm_st_tensor_t *t, const char *name) {
    tdm_device_t *dev = r->dev;
    const tdm_dtype to = r->dtype;
    const int64_t n = tdm_tensor_numel(r);
    tdm_status st = TDM_OK;
    /* tdm_convert_to_f32 reads elements with memcpy: the data section need
     * not be aligned (any header length is legal). */
    if (to == TDM_F8E4M3) {   /* quantized row by row on the host, then copied */
        st = st_fill_f8(r, src, sdt, t, name);
    } else if (tdm_dev_is_host(dev) && to == TDM_F32) {
        st = tdm_convert_to_f32(tdm_f32(r), src, sdt, n);
    } else if (sdt == to) {   /* stored as wanted (fp16/bf16 checkpoints): copy as is */
        st = tdm_dev_upload(dev, r->data, src, r->nbytes, name);
    } else if (!tdm_dev_is_host(dev) && dev->ops->upload_convert &&
               (sdt == TDM_F32 || sdt == TDM_F16 || sdt == TDM_BF16)) {
        /* the file's bytes go up as they are and the device converts them */
        if (!dev->ops->upload_convert(dev, r->data, to, src, sdt, n))
            st = tdm_errorf(TDM_ERR_INTERNAL, "%s: tensor \"%s\": upload to %s:%d failed: %s",
                            t->file, name, dev->kind == TDM_DEV_CUDA ? "cuda" : "cpu",
                            dev->index, tdm_last_error());
    } else {   /* convert on the host, threaded, then copy to the device */
        void *tmp = malloc((size_t)r->nbytes + 4);
        if (!tmp) st = tdm_errorf(TDM_ERR_NOMEM, "%s: tensor \"%s\": out of host memory", t->file, name);
        else if (to == TDM_F32) st = tdm_convert_to_f32(tmp, src, sdt, n);
        else st = tdm_convert_to_half(tmp, src, sdt, n, to);
        if (st == TDM_OK) st = tdm_dev_upload(dev, r->data, tmp, r->nbytes, name);
        free(tmp);
    }
    return st;
}

/* The converted copy is what stays: let the kernel drop the mapped source
 * pages [p, p + n) now, so loading never holds a model twice in resident
 * memory. (Private read-only file pages are re-read if touched again.) */
static void st_drop_pages(const void *p, int64_t n) {
    const long pg = sysconf(_SC_PAGESIZE);
    uintptr_t b = ((uintptr_t)p + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
    uintptr_t e = ((uintptr_t)p + (uintptr_t)n) & ~((uintptr_t)pg - 1);
    if (pg > 0 && e > b) madvise((void *)b, e - b, MADV_DONTNEED);
}

/* Loads `name` as a new tensor of dtype `to` (F32, or F16/BF16 rounded to
 * nearest even from the float32 value) on `dev`. */
static tdm_status st_load(const tdm_st_set_t *set, const char *name, tdm_device_t *dev, int ndim,
                          const int64_t *shape, tdm_tensor_t **out, int optional, tdm_dtype to) {
    const tdm_st_tensor_t *t = NULL;
    tdm_tensor_t *r = NULL;
    *out = NULL;
    tdm_status st = st_find_checked(set, name, ndim, shape, optional, &t);
    if (st != TDM_OK || !t) return st;
    st = tdm_tensor_create(&r, dev, to, t->ndim, t->shape, name);
    if (st != TDM_OK) return st;
    st = st_fill(r, t->data, t->dtype, t, name);
    st_drop_pages(t->data, t->nbytes);
    if (st != TDM_OK) { tdm_tensor_free(r); return st; }
    *out = r;
    return TDM_OK;
}

tdm_status tdm_st_set_load_slice(const tdm_st_set_t *set, const char *name, tdm_device_t *dev,
                                 int gemm, int ndim, const int64_t *shape, int dim, int nr,
                                 const int64_t *begin, const int64_t *count, tdm_tensor_t **out) {
    const tdm_st_tensor_t *t = NULL;
    tdm_tensor_t *r = NULL;
    int64_t sh[TDM_MAX_DIMS], outer = 1, inner = 1, kept = 0;
    char *tmp = NULL;
    *out = NULL;
    if (ndim < 1 || ndim > TDM_MAX_DIMS || dim < 0 || dim >= ndim || nr < 1)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tensor \"%s\": slice of dim %d of %d with %d "
                          "ranges", name, dim, ndim, nr);
    tdm_status st = st_find_checked(set, name, ndim, shape, 0, &t);
    if (st != TDM_OK) return st;
    for (int i = 0; i < ndim; i++) {   /* the stored shape is validated: no overflow */
        sh[i] = shape[i];
        if (i < dim) outer *= shape[i];
        if (i > dim) inner *= shape[i];
    }
    for (int i = 0; i < nr; i++) {
        if (begin[i] < 0 || count[i] < 1 || begin[i] > shape[dim] - count[i])
            return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: tensor \"%s\": rows [%lld, %lld) of "
                              "dimension %d (size %lld) do not exist", t->file, name,
                              (long long)begin[i], (long long)(begin[i] + count[i]), dim,
                              (long long)shape[dim]);
        kept += count[i];
    }
    sh[dim] = kept;
    st = tdm_tensor_create(&r, dev, tdm_st_weight_dtype(dev, gemm), ndim, sh, name);
    if (st != TDM_OK) return st;
    const size_t es = tdm_dtype_size(t->dtype), row = (size_t)inner * es;
    const char *src = (const char *)t->data + (size_t)begin[0] * row;
    if (outer > 1 || nr > 1) {   /* gather the kept rows, in the file's dtype */
        char *p = tmp = malloc((size_t)(outer * kept) * row + 1);
        if (!tmp) {
            tdm_tensor_free(r);
            return tdm_errorf(TDM_ERR_NOMEM, "%s: tensor \"%s\": out of host memory", t->file, name);
        }
        for (int64_t o = 0; o < outer; o++)
            for (int i = 0; i < nr; i++) {
                memcpy(p, (const char *)t->data + ((size_t)(o * shape[dim] + begin[i])) * row,
                       (size_t)count[i] * row);
                p += (size_t)count[i] * row;
            }
        src = tmp;
    }
    st = st_fill(r, src, t->dtype, t, name);
    free(tmp);
    if (outer == 1 && nr == 1) st_drop_pages(src, (int64_t)((size_t)count[0] * row));
    if (st != TDM_OK) { tdm_tensor_free(r); return st; }
    *out = r;
    return TDM_OK;
}

tdm_status tdm_st_set_load_f32(const tdm_st_set_t *set, const char *name, tdm_device_t *dev,
                               int ndim, const int64_t *shape, tdm_tensor_t **out) {
    return st_load(set, name, dev, ndim, shape, out, 0, TDM_F32);
}

tdm_status tdm_st_set_load_f32_opt(const tdm_st_set_t *set, const char *name, tdm_device_t *dev,
                                   int ndim, const int64_t *shape, tdm_tensor_t **out) {
    return st_load(set, name, dev, ndim, shape, out, 1, TDM_F32);
}

tdm_dtype tdm_st_gemm_weight_dtype(const tdm_device_t *dev) {
    if (tdm_dev_is_host(dev)) return TDM_F32;
    return dev->gemm_dtype == TDM_F16 || dev->gemm_dtype == TDM_BF16 ? dev->gemm_dtype : TDM_F32;
}

tdm_dtype tdm_st_weight_dtype(const tdm_device_t *dev, int gemm) {
    return gemm == 2 ? TDM_F8E4M3 : gemm ? tdm_st_gemm_weight_dtype(dev) : TDM_F32;
}

tdm_status tdm_st_set_load_gemm_weight(const tdm_st_set_t *set, const char *name,
                                       tdm_device_t *dev, int gemm, int ndim,
                                       const int64_t *shape, tdm_tensor_t **out) {
    return st_load(set, name, dev, ndim, shape, out, 0, tdm_st_weight_dtype(dev, gemm));
}

tdm_status tdm_st_set_load_gemm_host_copy(const tdm_st_set_t *set, const char *name,
                                          tdm_device_t *host, const tdm_device_t *exec, int gemm,
                                          int ndim, const int64_t *shape, tdm_tensor_t **out) {
    return st_load(set, name, host, ndim, shape, out, 0, tdm_st_weight_dtype(exec, gemm));
}

/* ---- writer ------------------------------------------------------------- */

tdm_status tdm_safetensors_write_f32(const char *path, int n, const char *const *names,
                                     const int *ndims, const int64_t *const *shapes,
                                     const float *const *data, int nmeta,
                                     const char *const *meta_kv) {
    tdm_status st = TDM_OK;
    char *hdr_txt = NULL;
    tdm_atomic_file_t *af = NULL;
    int64_t *sizes = NULL;
    cJSON *hdr = cJSON_CreateObject();
    sizes = calloc((size_t)n + 1, sizeof *sizes);
    if (!hdr || !sizes) { st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", path); goto fail; }
    if (nmeta > 0) {
        cJSON *m = cJSON_AddObjectToObject(hdr, "__metadata__");
        for (int i = 0; m && i < nmeta; i++) cJSON_AddStringToObject(m, meta_kv[2 * i], meta_kv[2 * i + 1]);
    }
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t numel = 1;
        for (int d = 0; d < ndims[i]; d++) numel *= shapes[i][d];
        sizes[i] = numel * 4;
        cJSON *e = cJSON_AddObjectToObject(hdr, names[i]);
        if (!e) { st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", path); goto fail; }
        cJSON_AddStringToObject(e, "dtype", "F32");
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < ndims[i]; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)shapes[i][d]));
        cJSON *o = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(off + sizes[i])));
        off += sizes[i];
    }
    hdr_txt = cJSON_PrintUnformatted(hdr);
    if (!hdr_txt) { st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", path); goto fail; }
    size_t hl = strlen(hdr_txt), padded = (hl + 7) & ~(size_t)7;
    TDM_TRY(tdm_atomic_open(&af, path));
    FILE *f = tdm_atomic_stream(af);
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int ok = fwrite(le, 1, 8, f) == 8 && fwrite(hdr_txt, 1, hl, f) == hl;
    for (size_t i = hl; ok && i < padded; i++) ok = fputc(' ', f) != EOF;
    for (int i = 0; ok && i < n; i++)
        ok = sizes[i] == 0 || fwrite(data[i], 1, (size_t)sizes[i], f) == (size_t)sizes[i];
    if (!ok) { st = tdm_errorf(TDM_ERR_IO, "%s: write failed: %s", path, strerror(errno)); goto fail; }
    st = tdm_atomic_commit(af);
    af = NULL;
fail:
    tdm_atomic_abort(af);
    free(hdr_txt);
    free(sizes);
    cJSON_Delete(hdr);
    return st;
}
