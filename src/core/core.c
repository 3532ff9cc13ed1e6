/* core.c — status text, last error, logging, dtypes and fp16/bf16
 * conversion, devices with memory accounting, tensors, thread count. */
#include "core/core.h"

#include <omp.h>
#include <stdarg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ---- errors ---------------------------------------------------------- */

static _Thread_local char tdm_errbuf[1024];

tdm_status tdm_errorf(tdm_status st, const char *fmt, ...) {
    /* format into a copy first: callers wrap the previous message, passing
     * tdm_last_error() (this very buffer) as an argument */
    char buf[sizeof tdm_errbuf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(tdm_errbuf, buf, sizeof buf);
    return st;
}

const char *tdm_last_error(void) { return tdm_errbuf; }

const char *tdm_status_name(tdm_status st) {
    switch (st) {
    case TDM_OK: return "ok";
    case TDM_ERR_INVALID_ARG: return "invalid argument";
    case TDM_ERR_IO: return "io";
    case TDM_ERR_FORMAT: return "format";
    case TDM_ERR_MODEL: return "model";
    case TDM_ERR_UNSUPPORTED: return "unsupported";
    case TDM_ERR_NOMEM: return "out of memory";
    case TDM_ERR_INTERNAL: return "internal";
    case TDM_ERR_CANCELLED: return "cancelled";
    }
    return "unknown";
}

/* ---- logging --------------------------------------------------------- */

/* The one process-wide setting of the library: where messages go is stderr
 * for every handle, so how many of them go is one value too. */
static _Atomic int tdm_log_threshold = TDM_LOG_WARN;

void tdm_log_set_level(tdm_log_level lv) {
    tdm_log_threshold = lv < TDM_LOG_ERROR ? TDM_LOG_ERROR : lv > TDM_LOG_DEBUG ? TDM_LOG_DEBUG : lv;
}

void tdm_log(tdm_log_level lv, const char *fmt, ...) {
    static const char *names[] = {"error", "warning", "info", "debug"};
    if ((int)lv > tdm_log_threshold) return;
    /* the whole line in one write, so lines of processes sharing stderr (the
     * ranks of a job) do not interleave */
    char small[512], *line = small;
    const int pre = snprintf(small, sizeof small, "tandem: %s: ", names[lv]);
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    const int n = vsnprintf(small + pre, sizeof small - (size_t)pre, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)pre + (size_t)n + 2 > sizeof small && (line = malloc((size_t)pre + (size_t)n + 2))) {
        memcpy(line, small, (size_t)pre);
        vsnprintf(line + pre, (size_t)n + 1, fmt, ap2);
    } else if (!line) {
        line = small;   /* out of memory: the cut line */
    }
    va_end(ap2);
    size_t len = strlen(line);
    if (line != small || len + 1 < sizeof small) line[len++] = '\n';
    else line[len - 1] = '\n';
    fwrite(line, 1, len, stderr);
    fflush(stderr);
    if (line != small) free(line);
}

/* ---- dtypes ---------------------------------------------------------- */

static const struct { const char *name; size_t size; } tdm_dtypes[TDM_DTYPE_COUNT] = {
    [TDM_F32] = {"F32", 4}, [TDM_F16] = {"F16", 2},   [TDM_BF16] = {"BF16", 2},
    [TDM_F64] = {"F64", 8}, [TDM_I8] = {"I8", 1},     [TDM_U8] = {"U8", 1},
    [TDM_I16] = {"I16", 2}, [TDM_U16] = {"U16", 2},   [TDM_I32] = {"I32", 4},
    [TDM_U32] = {"U32", 4}, [TDM_I64] = {"I64", 8},   [TDM_U64] = {"U64", 8},
    [TDM_BOOL] = {"BOOL", 1}, [TDM_F8E4M3] = {"F8_E4M3", 1},
};

size_t tdm_dtype_size(tdm_dtype t) {
    return (unsigned)t < TDM_DTYPE_COUNT ? tdm_dtypes[t].size : 0;
}

const char *tdm_dtype_name(tdm_dtype t) {
    return (unsigned)t < TDM_DTYPE_COUNT ? tdm_dtypes[t].name : "?";
}

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float tdm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return u2f(sign | 0x7f800000u | (man << 13));   /* inf/nan */
    if (exp == 0) {                                                    /* zero/subnormal */
        float v = (float)man * (1.0f / 16777216.0f);                   /* man * 2^-24 */
        return sign ? -v : v;
    }
    return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t tdm_f32_to_f16(float f) {
    uint32_t u = f2u(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t au = u & 0x7fffffffu;
    if (au >= 0x7f800000u) return sign | (au > 0x7f800000u ? 0x7e00 : 0x7c00);
    if (au >= 0x477ff000u) return sign | 0x7c00;                       /* overflow → inf */
    if (au < 0x38800000u) {                                            /* subnormal half */
        float a = u2f(au) * 16777216.0f;                               /* in units of 2^-24 */
        /* round to nearest even via float arithmetic */
        float r = a + 8388608.0f;                                      /* 2^23 forces rounding */
        uint32_t m = f2u(r) - f2u(8388608.0f);
        return sign | (uint16_t)m;
    }
    uint32_t mant_odd = (au >> 13) & 1;
    au += 0xfffu + mant_odd;
    au -= (112u << 23);
    return sign | (uint16_t)(au >> 13);
}

float tdm_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t tdm_f32_to_bf16(float f) {
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float tdm_e4m3_to_f32(uint8_t q) {
    const int e = (q >> 3) & 15, m = q & 7;
    float v;
    if (e == 15 && m == 7) v = NAN;
    else if (e == 0) v = (float)m * (1.0f / 512.0f);   /* subnormal: m · 2^-9 */
    else v = u2f((uint32_t)(e + 120) << 23 | (uint32_t)m << 20);
    return q & 0x80 ? -v : v;
}

uint8_t tdm_f32_to_e4m3(float f) {
    const uint32_t u = f2u(f);
    const uint8_t sign = (uint8_t)((u >> 24) & 0x80);
    uint32_t au = u & 0x7fffffffu;
    if (au > 0x7f800000u) return 0x7f;                  /* NaN */
    if (au >= 0x43e00000u) return sign | 0x7e;          /* ≥ 448 (and inf): saturate */
    if (au < 0x3c800000u) {                             /* below 2^-6: subnormal steps of 2^-9 */
        /* |f| · 2^9 rounded to nearest even by the float adder (2^23 forces it);
         * 8 steps is the smallest normal, whose code is 0x08 */
        float r = u2f(au) * 512.0f + 8388608.0f;
        return sign | (uint8_t)(f2u(r) - f2u(8388608.0f));
    }
    au += 0x7ffffu + ((au >> 20) & 1);                  /* round the mantissa to 3 bits */
    uint32_t c = (au >> 20) - (120u << 3);
    return sign | (uint8_t)(c > 0x7e ? 0x7e : c);
}

void tdm_f8_quantize_row(uint8_t *q, float *scale, const float *x, int64_t n) {
    float amax = 0;
    for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    if (!(amax > 0) || !isfinite(amax)) {   /* zero row (or inf/NaN: saturated codes) */
        *scale = 1.0f;
        for (int64_t i = 0; i < n; i++) q[i] = tdm_f32_to_e4m3(x[i]);
        return;
    }
    const float inv = TDM_F8_MAX / amax;
    *scale = amax / TDM_F8_MAX;
    for (int64_t i = 0; i < n; i++) q[i] = tdm_f32_to_e4m3(x[i] * inv);
}

tdm_status tdm_convert_to_f32(float *dst, const void *src, tdm_dtype t, int64_t n) {
    switch (t) {
    case TDM_F32: memcpy(dst, src, (size_t)n * 4); break;
#define CONV(T, EXPR)                                                          \
    {                                                                          \
        const unsigned char *s8 = (const unsigned char *)src;                  \
        _Pragma("omp parallel for if (n > 65536)")                             \
        for (int64_t i = 0; i < n; i++) {                                      \
            T v;                                                               \
            memcpy(&v, s8 + i * (int64_t)sizeof(T), sizeof(T));                \
            dst[i] = (EXPR);                                                   \
        }                                                                      \
    } break
    case TDM_F16: CONV(uint16_t, tdm_f16_to_f32(v));
    case TDM_BF16: CONV(uint16_t, tdm_bf16_to_f32(v));
    case TDM_F64: CONV(double, (float)v);
    case TDM_I8: CONV(int8_t, (float)v);
    case TDM_U8: CONV(uint8_t, (float)v);
    case TDM_BOOL: CONV(uint8_t, (float)(v != 0));
    case TDM_I16: CONV(int16_t, (float)v);
    case TDM_U16: CONV(uint16_t, (float)v);
    case TDM_I32: CONV(int32_t, (float)v);
    case TDM_U32: CONV(uint32_t, (float)v);
    case TDM_I64: CONV(int64_t, (float)v);
    case TDM_U64: CONV(uint64_t, (float)v);
    case TDM_F8E4M3: CONV(uint8_t, tdm_e4m3_to_f32(v));
#undef CONV
    default: return tdm_errorf(TDM_ERR_INTERNAL, "cannot convert dtype %d to F32", (int)t);
    }
    return TDM_OK;
}

tdm_status tdm_convert_to_half(uint16_t *dst, const void *src, tdm_dtype t, int64_t n, tdm_dtype to) {
    if (to != TDM_F16 && to != TDM_BF16)
        return tdm_errorf(TDM_ERR_INTERNAL, "cannot narrow to dtype %d", (int)to);
    const size_t es = tdm_dtype_size(t);
    const unsigned char *s8 = (const unsigned char *)src;
    enum { CHUNK = 4096 };
    tdm_status st = TDM_OK;
    /* float32 in chunks on the stack, then narrowed: threads never overlap */
#pragma omp parallel for if (n > 65536)
    for (int64_t c = 0; c < (n + CHUNK - 1) / CHUNK; c++) {
        float f[CHUNK];
        const int64_t i0 = c * CHUNK, m = n - i0 < CHUNK ? n - i0 : CHUNK;
        if (tdm_convert_to_f32(f, s8 + (size_t)i0 * es, t, m) != TDM_OK) {
#pragma omp critical
            st = TDM_ERR_INTERNAL;
            continue;
        }
        for (int64_t i = 0; i < m; i++)
            dst[i0 + i] = to == TDM_F16 ? tdm_f32_to_f16(f[i]) : tdm_f32_to_bf16(f[i]);
    }
    return st == TDM_OK ? TDM_OK : tdm_errorf(TDM_ERR_INTERNAL, "cannot convert dtype %d", (int)t);
}

/* ---- devices ---------------------------------------------------------- */

void tdm_backend_params_init(tdm_backend_params_t *p) {
    memset(p, 0, sizeof *p);
    p->conv_igemm = 1;
    p->conv_igemm_bk = 64;
    p->cuda_graph = 1;
    p->conv_tile_bytes = TDM_CONV_TILE_BYTES_DEFAULT;
    p->conv_winograd = 1;
    p->pin_min_bytes = TDM_OFFLOAD_PIN_MIN;
}

void tdm_device_init(tdm_device_t *d, tdm_device_kind kind, int index) {
    memset(d, 0, sizeof *d);
    d->kind = kind;
    d->index = index;
    tdm_backend_params_init(&d->opts);
}

int64_t tdm_host_memory_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || psz <= 0 || pages > INT64_MAX / psz) return 0;
    return (int64_t)pages * psz;
}

int tdm_utf8_valid(const char *s, size_t *bad) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (p[i]) {
        unsigned c = p[i];
        int n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
        if (n < 0 || (n == 1 && c < 0xc2) || (n == 3 && c > 0xf4)) { *bad = i; return 0; }
        for (int k = 1; k <= n; k++)
            if ((p[i + k] & 0xc0) != 0x80) { *bad = i; return 0; }
        if (n == 2) {
            unsigned cp = ((c & 0xf) << 12) | ((p[i + 1] & 0x3f) << 6);
            if (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff)) { *bad = i; return 0; }
        }
        if (n == 3) {
            unsigned cp = ((c & 7) << 18) | ((p[i + 1] & 0x3f) << 12);
            if (cp < 0x10000 || cp > 0x10ffff) { *bad = i; return 0; }
        }
        i += (size_t)n + 1;
    }
    return 1;
}

int64_t tdm_host_memory_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long long kb = -1;
    if (f) {
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) break;
        fclose(f);
    }
    if (kb >= 0 && kb <= INT64_MAX / 1024) return (int64_t)kb * 1024;
    long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);   /* free pages only */
    if (pages <= 0 || psz <= 0 || pages > INT64_MAX / psz) return -1;
    return (int64_t)pages * psz;
}

void *tdm_dev_alloc(tdm_device_t *d, int64_t bytes, const char *what) {
    if (bytes < 0 || (uint64_t)bytes > SIZE_MAX - 64) {
        tdm_errorf(TDM_ERR_NOMEM, "%s: invalid size %lld bytes", what, (long long)bytes);
        return NULL;
    }
    if (d && d->cap_bytes > 0 && d->cur_bytes + bytes > d->cap_bytes) {
        tdm_errorf(TDM_ERR_NOMEM, "%s: needs %lld bytes but cpu:%d has %lld of its %lld-byte cap free",
                   what, (long long)bytes, d->index, (long long)(d->cap_bytes - d->cur_bytes),
                   (long long)d->cap_bytes);
        return NULL;
    }
    size_t sz = ((size_t)bytes + 63) & ~(size_t)63;
    void *p = NULL;
    if (d && d->cache_enabled) {
        for (int i = d->ncache - 1; i >= 0; i--)
            if (d->cache_n[i] == (int64_t)sz) {
                p = d->cache_p[i];
                d->ncache--;
                d->cache_p[i] = d->cache_p[d->ncache];
                d->cache_n[i] = d->cache_n[d->ncache];
                break;
            }
    }
    if (p) {   /* reused from the cache: zero it where it lives */
        if (d->ops) {
            if (!d->ops->zero(d, p, (int64_t)sz)) {
                tdm_errorf(TDM_ERR_INTERNAL, "%s: clearing %lld bytes on device %d failed: %s", what,
                           (long long)bytes, d->index, tdm_last_error());
                d->ops->free(d, p);
                return NULL;
            }
        } else {
            memset(p, 0, sz);
        }
    } else if (d && d->ops) {
        p = d->ops->alloc(d, (int64_t)(sz ? sz : 64));
        if (!p) {
            tdm_errorf(TDM_ERR_NOMEM, "%s: cannot allocate %lld bytes on device %d: %s", what,
                       (long long)bytes, d->index, tdm_last_error());
            return NULL;
        }
    } else {
        const int64_t mem = tdm_host_memory_bytes();
        if (mem > 0 && bytes > mem) {
            tdm_errorf(TDM_ERR_NOMEM, "%s: needs %.1f GiB, more than this machine's %.1f GiB of memory", what,
                       (double)bytes / (1 << 30), (double)mem / (1 << 30));
            return NULL;
        }
        p = aligned_alloc(64, sz ? sz : 64);
        if (!p) {
            tdm_errorf(TDM_ERR_NOMEM, "%s: out of host memory allocating %lld bytes", what,
                       (long long)bytes);
            return NULL;
        }
        memset(p, 0, sz);
    }
    if (d) {
        d->cur_bytes += bytes;
        if (d->cur_bytes > d->peak_bytes) d->peak_bytes = d->cur_bytes;
    }
    return p;
}

void tdm_dev_free(tdm_device_t *d, void *p, int64_t bytes) {
    if (!p) return;
    if (d) d->cur_bytes -= bytes;
    if (d && d->cache_enabled && bytes >= (1 << 16)) {
        if (d->ncache == TDM_DEV_CACHE_SLOTS) {   /* evict the oldest */
            if (d->ops) d->ops->free(d, d->cache_p[0]);
            else free(d->cache_p[0]);
            memmove(d->cache_p, d->cache_p + 1, (TDM_DEV_CACHE_SLOTS - 1) * sizeof d->cache_p[0]);
            memmove(d->cache_n, d->cache_n + 1, (TDM_DEV_CACHE_SLOTS - 1) * sizeof d->cache_n[0]);
            d->ncache--;
        }
        d->cache_p[d->ncache] = p;
        d->cache_n[d->ncache] = (int64_t)(((size_t)bytes + 63) & ~(size_t)63);
        d->ncache++;
        return;
    }
    if (d && d->ops) d->ops->free(d, p);
    else free(p);
}

tdm_status tdm_dev_upload(tdm_device_t *d, void *dst, const void *src, int64_t bytes, const char *what) {
    if (bytes <= 0) return TDM_OK;
    if (!d || !d->ops) { memcpy(dst, src, (size_t)bytes); return TDM_OK; }
    if (!d->ops->upload(d, dst, src, bytes))
        return tdm_errorf(TDM_ERR_INTERNAL, "%s: copy to device %d failed: %s", what, d->index, tdm_last_error());
    return TDM_OK;
}

tdm_status tdm_dev_download(tdm_device_t *d, void *dst, const void *src, int64_t bytes, const char *what) {
    if (bytes <= 0) return TDM_OK;
    if (!d || !d->ops) { memcpy(dst, src, (size_t)bytes); return TDM_OK; }
    if (!d->ops->download(d, dst, src, bytes))
        return tdm_errorf(TDM_ERR_INTERNAL, "%s: copy from device %d failed: %s", what, d->index, tdm_last_error());
    return TDM_OK;
}

void tdm_dev_trim(tdm_device_t *d) {
    if (!d) return;
    for (int i = 0; i < d->ncache; i++) {
        if (d->ops) d->ops->free(d, d->cache_p[i]);
        else free(d->cache_p[i]);
    }
    d->ncache = 0;
    if (d->ops && d->ops->trim) d->ops->trim(d);
}

/* ---- tensors ------------------------------------------------------------ */

tdm_status tdm_tensor_create(tdm_tensor_t **out, tdm_device_t *dev, tdm_dtype dt, int ndim,
                             const int64_t *shape, const char *what) {
    *out = NULL;
    if (ndim < 0 || ndim > TDM_MAX_DIMS)
        return tdm_errorf(TDM_ERR_INTERNAL, "%s: %d dims (max %d)", what, ndim, TDM_MAX_DIMS);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        if (!tdm_mul_ok(n, shape[i], &n))
            return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: element count overflows", what);
    int64_t bytes;
    if (!tdm_mul_ok(n, (int64_t)tdm_dtype_size(dt), &bytes) || n > INT64_MAX / 8)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: byte size overflows", what);
    if (dt == TDM_F8E4M3) {   /* row-scaled: the codes, then one scale per row (shape[0]) */
        if (ndim < 1 || shape[0] < 1)
            return tdm_errorf(TDM_ERR_INTERNAL, "%s: an FP8 tensor needs rows", what);
        bytes = tdm_f8_bytes(shape[0], n / shape[0]);
    }
    tdm_tensor_t *t = calloc(1, sizeof *t);
    if (!t) return tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", what);
    t->data = tdm_dev_alloc(dev, bytes, what);
    if (!t->data) { free(t); return TDM_ERR_NOMEM; }
    t->dtype = dt;
    t->ndim = ndim;
    t->dev = dev;
    t->nbytes = bytes;
    t->owns = 1;
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t->shape[i] = shape[i];
        t->stride[i] = s;
        s *= shape[i];
    }
    *out = t;
    return TDM_OK;
}

void tdm_tensor_free(tdm_tensor_t *t) {
    if (!t) return;
    if (t->owns) tdm_dev_free(t->dev, t->data, t->nbytes);
    free(t);
}

int64_t tdm_tensor_numel(const tdm_tensor_t *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* ---- threads ---------------------------------------------------------------- */

extern void openblas_set_num_threads(int);

void tdm_set_num_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
    /* GEMMs are split into fixed blocks over the OpenMP threads (cpu/ops.c),
     * each block one single-threaded OpenBLAS call */
    openblas_set_num_threads(1);
}

int tdm_get_num_threads(void) { return omp_get_max_threads(); }
