/* config.c — JSON config files through cJSON with typed getters whose
 * errors name the file and key. Absent keys and JSON null take defaults. */
#include "io/config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/folder.h"

#define TDM_JSON_MAX_BYTES (64 << 20)

tdm_status tdm_json_load_tree(const char *path, int optional, cJSON **root) {
    *root = NULL;
    if (optional) {
        int present;
        tdm_status pst = tdm_file_probe(path, &present);
        if (pst != TDM_OK || !present) return pst;
    }
    tdm_json_t j;
    tdm_status st = tdm_json_load(&j, path);
    if (st == TDM_OK) *root = j.root;
    return st;
}

tdm_status tdm_json_parse(tdm_json_t *j, const char *text, size_t len, const char *name) {
    memset(j, 0, sizeof *j);
    snprintf(j->path, sizeof j->path, "%s", name ? name : "<json>");
    const char *end = NULL;
    j->root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!j->root) {
        long off = end ? (long)(end - text) : -1;
        if (!end) {
            const char *ep = cJSON_GetErrorPtr();
            off = ep && ep >= text && ep <= text + len ? (long)(ep - text) : -1;
        }
        return tdm_errorf(TDM_ERR_FORMAT, "%s: malformed JSON near byte %ld", j->path, off);
    }
    while (end && end < text + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (end && end < text + len && *end) {
        long off = (long)(end - text);
        cJSON_Delete(j->root);
        j->root = NULL;
        return tdm_errorf(TDM_ERR_FORMAT, "%s: unexpected data after the JSON value at byte %ld",
                          j->path, off);
    }
    if (!cJSON_IsObject(j->root)) {
        cJSON_Delete(j->root);
        j->root = NULL;
        return tdm_errorf(TDM_ERR_FORMAT, "%s: expected a JSON object at the top level", j->path);
    }
    return TDM_OK;
}

tdm_status tdm_json_load(tdm_json_t *j, const char *path) {
    memset(j, 0, sizeof *j);
    int fd;
    tdm_status ost = tdm_file_open(path, &fd);   /* a regular file only: a FIFO never blocks */
    if (ost != TDM_OK) return ost;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return tdm_errorf(TDM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    tdm_status st = TDM_OK;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > TDM_JSON_MAX_BYTES) {
                st = tdm_errorf(TDM_ERR_FORMAT, "%s: larger than %d bytes", path, TDM_JSON_MAX_BYTES);
                goto fail;
            }
            char *nb = realloc(buf, cap);
            if (!nb) { st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", path); goto fail; }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    if (ferror(f)) { st = tdm_errorf(TDM_ERR_IO, "%s: read error", path); goto fail; }
    if (len == 0) { st = tdm_errorf(TDM_ERR_FORMAT, "%s: empty file", path); goto fail; }
    st = tdm_json_parse(j, buf, len, path);
fail:
    free(buf);
    fclose(f);
    return st;
}

void tdm_json_free(tdm_json_t *j) {
    if (!j) return;
    cJSON_Delete(j->root);
    j->root = NULL;
}

static const cJSON *get(const tdm_json_t *j, const char *key) {
    const cJSON *v = j->root ? cJSON_GetObjectItemCaseSensitive(j->root, key) : NULL;
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

static int as_int(const cJSON *v, int64_t *out) {
    if (cJSON_IsBool(v)) return 0;
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= -9.2e18 && d <= 9.2e18) || d != (double)(int64_t)d) return 0;
    *out = (int64_t)d;
    return 1;
}

tdm_status tdm_json_int(const tdm_json_t *j, const char *key, int64_t def, int64_t *out) {
    const cJSON *v = get(j, key);
    *out = def;
    if (!v) return TDM_OK;
    if (!as_int(v, out))
        return tdm_errorf(TDM_ERR_FORMAT, "%s: key \"%s\" must be an integer", j->path, key);
    return TDM_OK;
}

tdm_status tdm_json_range_error(const tdm_json_t *j, const char *key, int64_t v, int64_t lo, int64_t hi) {
    return tdm_errorf(TDM_ERR_MODEL, "%s: %s %lld is out of range [%lld, %lld]", j->path, key, (long long)v,
                      (long long)lo, (long long)hi);
}

tdm_status tdm_json_int_range(const tdm_json_t *j, const char *key, int64_t def, int64_t lo, int64_t hi,
                              int64_t *out) {
    tdm_status st = tdm_json_int(j, key, def, out);
    if (st != TDM_OK) return st;
    if (*out < lo || *out > hi) return tdm_json_range_error(j, key, *out, lo, hi);
    return TDM_OK;
}

tdm_status tdm_json_float(const tdm_json_t *j, const char *key, double def, double *out) {
    const cJSON *v = get(j, key);
    *out = def;
    if (!v) return TDM_OK;
    if (!cJSON_IsNumber(v))
        return tdm_errorf(TDM_ERR_FORMAT, "%s: key \"%s\" must be a number", j->path, key);
    *out = v->valuedouble;
    return TDM_OK;
}

tdm_status tdm_json_bool(const tdm_json_t *j, const char *key, int def, int *out) {
    const cJSON *v = get(j, key);
    *out = def;
    if (!v) return TDM_OK;
    if (!cJSON_IsBool(v))
        return tdm_errorf(TDM_ERR_FORMAT, "%s: key \"%s\" must be true or false", j->path, key);
    *out = cJSON_IsTrue(v);
    return TDM_OK;
}

tdm_status tdm_json_str(const tdm_json_t *j, const char *key, const char *def, char *out,
                        size_t cap) {
    const cJSON *v = get(j, key);
    const char *s = def ? def : "";
    if (v) {
        if (!cJSON_IsString(v))
            return tdm_errorf(TDM_ERR_FORMAT, "%s: key \"%s\" must be a string", j->path, key);
        s = v->valuestring;
    }
    if (strlen(s) >= cap)
        return tdm_errorf(TDM_ERR_FORMAT, "%s: key \"%s\" is longer than %zu bytes", j->path, key,
                          cap - 1);
    memcpy(out, s, strlen(s) + 1);
    return TDM_OK;
}

tdm_status tdm_json_int_array(const tdm_json_t *j, const char *key, int scalar_ok, int64_t *out,
                              int cap, int *n) {
    const cJSON *v = get(j, key);
    *n = 0;
    if (!v) return TDM_OK;
    if (scalar_ok && cJSON_IsNumber(v)) {
        if (cap < 1 || !as_int(v, &out[0]))
            return tdm_errorf(TDM_ERR_FORMAT, "%s: key \"%s\" must be an integer", j->path, key);
        *n = 1;
        return TDM_OK;
    }
    if (!cJSON_IsArray(v))
        return tdm_errorf(TDM_ERR_FORMAT, "%s: key \"%s\" must be an array of integers", j->path,
                          key);
    int cnt = cJSON_GetArraySize(v);
    if (cnt > cap)
        return tdm_errorf(TDM_ERR_FORMAT, "%s: key \"%s\" has %d entries (at most %d supported)",
                          j->path, key, cnt, cap);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!as_int(e, &out[i]))
            return tdm_errorf(TDM_ERR_FORMAT, "%s: key \"%s\"[%d] must be an integer", j->path, key,
                              i);
        i++;
    }
    *n = cnt;
    return TDM_OK;
}

tdm_status tdm_json_str_array(const tdm_json_t *j, const char *key, char (*out)[64], int cap,
                              int *n) {
    const cJSON *v = get(j, key);
    *n = 0;
    if (!v) return TDM_OK;
    if (!cJSON_IsArray(v))
        return tdm_errorf(TDM_ERR_FORMAT, "%s: key \"%s\" must be an array of strings", j->path,
                          key);
    int cnt = cJSON_GetArraySize(v);
    if (cnt > cap)
        return tdm_errorf(TDM_ERR_FORMAT, "%s: key \"%s\" has %d entries (at most %d supported)",
                          j->path, key, cnt, cap);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsString(e) || strlen(e->valuestring) >= 64)
            return tdm_errorf(TDM_ERR_FORMAT, "%s: key \"%s\"[%d] must be a string under 64 bytes",
                              j->path, key, i);
        memcpy(out[i], e->valuestring, strlen(e->valuestring) + 1);
        i++;
    }
    *n = cnt;
    return TDM_OK;
}
