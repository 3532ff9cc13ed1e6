/* core.h — internal core of tandem: status codes, last-error text, logging,
 * dtypes, fp16/bf16 conversion, devices with memory accounting, tensors.
 * Not public API (see include/tandem.h); every layer above includes this. */
#ifndef TDM_CORE_H
#define TDM_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "tandem.h"

/* ---- errors ----------------------------------------------------------
 * tdm_errorf() records a message for tdm_last_error() (thread-local) and
 * returns the status, so call sites read `return tdm_errorf(TDM_ERR_IO, ...)`.
 * Messages name the file, tensor or flag at fault and have no trailing '\n'. */
tdm_status tdm_errorf(tdm_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Jump to `fail` when a tdm_status-returning call fails; keeps its message. */
#define TDM_TRY(call)                                                          \
    do {                                                                       \
        st = (call);                                                           \
        if (st != TDM_OK) goto fail;                                           \
    } while (0)

/* ---- hashing ----------------------------------------------------------- */
/* 64-bit FNV-1a: TDM_FNV_INIT, then tdm_fnv_step per byte (tdm_fnv over a span). */
#define TDM_FNV_INIT 1469598103934665603ull
static inline uint64_t tdm_fnv_step(uint64_t h, unsigned char c) { return (h ^ c) * 1099511628211ull; }
static inline uint64_t tdm_fnv(const void *p, size_t n) {
    const unsigned char *s = (const unsigned char *)p;   /* (also compiled as C++ by nvcc) */
    uint64_t h = TDM_FNV_INIT;
    for (size_t i = 0; i < n; i++) h = tdm_fnv_step(h, s[i]);
    return h;
}

/* ---- overflow-checked sizes ---------------------------------------- */
/* *out = a * b; returns 0 on overflow (a, b >= 0). */
static inline int tdm_mul_ok(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0) return 0;
    if (a != 0 && b > INT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

/* ---- dtypes --------------------------------------------------------- */
typedef enum {
    TDM_F32 = 0, TDM_F16, TDM_BF16, TDM_F64,
    TDM_I8, TDM_U8, TDM_I16, TDM_U16, TDM_I32, TDM_U32, TDM_I64, TDM_U64,
    TDM_BOOL,
    TDM_F8E4M3,   /* e4m3fn (OCP FP8): a weight of this type is stored row-scaled (tdm_f8_*) */
    TDM_DTYPE_COUNT
} tdm_dtype;

size_t      tdm_dtype_size(tdm_dtype t);
const char *tdm_dtype_name(tdm_dtype t);      /* safetensors spelling, e.g. "F16" */

float    tdm_f16_to_f32(uint16_t h);
uint16_t tdm_f32_to_f16(float f);             /* round to nearest even */
float    tdm_bf16_to_f32(uint16_t h);
uint16_t tdm_f32_to_bf16(float f);            /* round to nearest even */

/* FP8 e4m3fn (1 sign, 4 exponent bits of bias 7, 3 mantissa bits, no
 * infinities, 0x7f/0xff NaN, largest finite 448), as the Hopper tensor cores
 * read it. tdm_f32_to_e4m3 rounds to nearest even and saturates finite values
 * to ±448 (NaN → 0x7f), bit for bit as CUDA's cvt.rn.satfinite.e4m3x2.f32. */
float   tdm_e4m3_to_f32(uint8_t q);
uint8_t tdm_f32_to_e4m3(float f);
#define TDM_F8_MAX 448.0f
/* A row-scaled FP8 matrix (rows, cols): the rows·cols e4m3 codes, then, at
 * byte tdm_f8_scale_offset(rows, cols) (256-aligned), `rows` float32 scales;
 * row r's value j is e4m3(q[r·cols + j]) · scale[r]. tdm_f8_bytes is the
 * whole size. A row is quantized as scale = amax / 448 (amax the row's largest
 * |x|; a zero row: scale 1), q = e4m3(x · (448 / amax)): the same rule and
 * the same bits on every backend (tdm_f8_quantize_row). */
static inline int64_t tdm_f8_scale_offset(int64_t rows, int64_t cols) {
    return (rows * cols + 255) & ~(int64_t)255;
}
static inline int64_t tdm_f8_bytes(int64_t rows, int64_t cols) {
    return tdm_f8_scale_offset(rows, cols) + rows * 4;
}
/* One row: q[0..n) and *scale from x[0..n) as above. */
void tdm_f8_quantize_row(uint8_t *q, float *scale, const float *x, int64_t n);

/* Convert n elements of `src` (any float or integer dtype) to float32. */
tdm_status tdm_convert_to_f32(float *dst, const void *src, tdm_dtype t, int64_t n);
/* Convert n elements of `src` (any dtype tdm_convert_to_f32 takes) to `to`
 * (TDM_F16 or TDM_BF16, round to nearest even, via float32), threaded. */
tdm_status tdm_convert_to_half(uint16_t *dst, const void *src, tdm_dtype t, int64_t n, tdm_dtype to);

/* ---- devices ----------------------------------------------------------
 * A device is where tensors live and what their bytes are counted
 * against: host memory (TDM_DEV_CPU, ops == NULL), or a GPU (TDM_DEV_CUDA)
 * whose memory functions its backend provides through ops. Several logical
 * CPU devices (cpu:0, cpu:1, ...) may exist, each with its own counters
 * (they stand in for GPUs in device maps). */
typedef enum { TDM_DEV_CPU = 0, TDM_DEV_CUDA = 1 } tdm_device_kind;

#define TDM_DEV_CACHE_SLOTS 64

struct tdm_device;
struct tdm_backend;

/* Memory functions of a non-host device (implemented by its backend, e.g.
 * CUDA). A device with ops == NULL is host memory. Each returns nonzero on
 * success; failures leave a message for tdm_last_error(). */
typedef struct tdm_device_ops {
    void *(*alloc)(struct tdm_device *d, int64_t bytes);       /* zero-filled */
    void  (*free)(struct tdm_device *d, void *p);
    int   (*zero)(struct tdm_device *d, void *p, int64_t bytes);
    int   (*upload)(struct tdm_device *d, void *dst, const void *src, int64_t bytes);
    int   (*download)(struct tdm_device *d, void *dst, const void *src, int64_t bytes);
    int   (*copy)(struct tdm_device *d, void *dst, const void *src, int64_t bytes);
    int   (*sync)(struct tdm_device *d);
    void  (*trim)(struct tdm_device *d);   /* returns pooled memory; may be NULL */
    /* Side copy queue (weight streaming overlapped with compute; each may be
     * NULL). pin: page-lock host memory for direct DMA (1 done, 0 not: the
     * caller keeps using upload); unpin undoes it. copy_begin: copies queued
     * after it start once the work queued so far (allocations included) is
     * done. upload_async: queue a copy from pinned host memory (or a peer's
     * device memory, see peer), which must stay unchanged until copy_wait. copy_end: mark the copies queued so
     * far; copy_wait: work queued after it starts once they are done. */
    int   (*pin)(struct tdm_device *d, void *host, int64_t bytes);
    void  (*unpin)(struct tdm_device *d, void *host);
    int   (*copy_begin)(struct tdm_device *d);
    int   (*upload_async)(struct tdm_device *d, void *dst, const void *src, int64_t bytes);
    int   (*copy_end)(struct tdm_device *d);
    int   (*copy_wait)(struct tdm_device *d);
    /* peer: upload_async may also copy from `other`'s memory (another GPU),
     * directly where the link allows; 1 done, 0 not possible */
    int   (*peer)(struct tdm_device *d, struct tdm_device *other);
    /* upload_convert: n elements of host `src` stored as `from` into device
     * `dst` as `to` (each TDM_F32, TDM_F16 or TDM_BF16), converted on the
     * device bit for bit as the host conversion; `src` may be reused once it
     * returns. May be NULL (the caller converts on the host and uploads). */
    int   (*upload_convert)(struct tdm_device *d, void *dst, tdm_dtype to, const void *src,
                            tdm_dtype from, int64_t n);
    /* The queue every op of d runs on (a cudaStream_t), for a communicator
     * that enqueues on it (NCCL); may be NULL. */
    void *(*stream)(struct tdm_device *d);
} tdm_device_ops_t;

typedef struct tdm_device {
    tdm_device_kind kind;
    int      index;
    int64_t  cur_bytes;    /* bytes allocated now (live, excluding the cache) */
    int64_t  peak_bytes;   /* high-water mark of cur_bytes */
    int64_t  cap_bytes;    /* 0 = no cap */
    /* Reuse cache of freed large blocks (off unless cache_enabled): the
     * same activation sizes recur every denoising step, so a freed block
     * is handed out again instead of being returned to the OS and faulted
     * back in. Emptied by tdm_dev_trim. */
    int      cache_enabled;
    int      ncache;
    void    *cache_p[TDM_DEV_CACHE_SLOTS];
    int64_t  cache_n[TDM_DEV_CACHE_SLOTS];
    /* Storage/compute precision of the heavy ops on this device: TDM_F32
     * (default, the reference), or TDM_F16 / TDM_BF16 on CUDA devices, where
     * GEMM weights are stored in that type and GEMMs and attention run on
     * tensor cores with float32 accumulation. Set before loading models. */
    tdm_dtype gemm_dtype;
    /* --dtype fp8: a model that supports it (FLUX's transformer blocks) loads
     * its Linear weights as row-scaled FP8 and runs them through linear_f8;
     * its other weights, and every other model, keep gemm_dtype. Set before
     * loading models. */
    int fp8_linears;
    tdm_backend_params_t opts;     /* backend switches; tdm_device_init: defaults */
    const tdm_device_ops_t *ops;   /* NULL: host memory */
    const struct tdm_backend *backend;   /* its ops and lifecycle (backend/ops.h); NULL: CPU */
    void    *impl;                 /* backend state (stream, BLAS handle, ...) */
} tdm_device_t;

/* Defaults of tdm_backend_params_t: the CPU convolution's im2col tile and
 * the smallest host copy of an offloaded block that is page-locked. */
#define TDM_CONV_TILE_BYTES_DEFAULT ((size_t)32 << 20)
#define TDM_OFFLOAD_PIN_MIN ((int64_t)1 << 20)

/* Resets *d to a host device of that kind and index: nothing counted, no
 * cache, float32 GEMMs and the default backend switches
 * (tdm_backend_params_init); a backend's init fills in the rest. */
void        tdm_device_init(tdm_device_t *d, tdm_device_kind kind, int index);
/* Allocates `bytes` (64-byte aligned, zero-filled) counted against `d`.
 * Returns NULL and sets the last error (naming `what`) on failure. */
void       *tdm_dev_alloc(tdm_device_t *d, int64_t bytes, const char *what);
void        tdm_dev_free(tdm_device_t *d, void *p, int64_t bytes);
/* Bytes of physical memory of this machine (0 when unknown). A host
 * allocation larger than this fails with a message saying both sizes,
 * before the allocator is asked. */
int64_t     tdm_host_memory_bytes(void);
/* Bytes of host memory available to a new allocation now: MemAvailable of
 * /proc/meminfo (free plus reclaimable cache), else the free pages of
 * sysconf(_SC_AVPHYS_PAGES); -1 when unknown. */
int64_t     tdm_host_memory_available(void);
/* Returns every cached block to the OS (no-op without a cache). */
void        tdm_dev_trim(tdm_device_t *d);
/* Host ↔ device transfers; plain memcpy for host devices. Errors name `what`. */
tdm_status  tdm_dev_upload(tdm_device_t *d, void *dst, const void *src, int64_t bytes, const char *what);
tdm_status  tdm_dev_download(tdm_device_t *d, void *dst, const void *src, int64_t bytes, const char *what);
static inline int tdm_dev_is_host(const tdm_device_t *d) { return !d || !d->ops; }

/* ---- tensors ----------------------------------------------------------
 * Contiguous row-major unless a view says otherwise. Element counts and
 * offsets are 64-bit. A tensor created with tdm_tensor_create owns its
 * data; tdm_tensor_free(NULL) is a no-op. */
#define TDM_MAX_DIMS 5
typedef struct tdm_tensor {
    tdm_dtype     dtype;
    int           ndim;
    int64_t       shape[TDM_MAX_DIMS];
    int64_t       stride[TDM_MAX_DIMS];   /* in elements */
    tdm_device_t *dev;
    void         *data;
    int64_t       nbytes;                 /* bytes of data */
    int           owns;                   /* 1 if tdm_tensor_free releases data */
} tdm_tensor_t;

tdm_status tdm_tensor_create(tdm_tensor_t **out, tdm_device_t *dev, tdm_dtype dt,
                             int ndim, const int64_t *shape, const char *what);
void       tdm_tensor_free(tdm_tensor_t *t);
int64_t    tdm_tensor_numel(const tdm_tensor_t *t);
static inline float *tdm_f32(const tdm_tensor_t *t) { return (float *)t->data; }

/* ---- logging --------------------------------------------------------- */
/* Writes "tandem: <level>: msg" to stderr when level <= the level set by
 * tdm_log_set_level (default warn). */
void tdm_log(tdm_log_level lv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- threads --------------------------------------------------------- */
/* Number of worker threads for CPU kernels (OpenMP + OpenBLAS). */
void tdm_set_num_threads(int n);
int  tdm_get_num_threads(void);

#endif
