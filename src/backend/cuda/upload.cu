/* upload.cu — host→device uploads of whole buffers (model weights): copies
 * staged through the device's ring of pinned host buffers, so the host copy
 * of one piece overlaps the DMA of the previous one, and uploads that convert
 * F32/F16/BF16 on the GPU, bit for bit as the host conversion in core.c.
 * Not the device's other memory functions (device.cu) nor device-to-host
 * copies. */
#include <omp.h>
#include <string.h>

#include "backend/cuda/cuda_common.cuh"

/* Copies under this many bytes made before the ring exists go straight from
 * pageable memory: a few small uploads should not pin 64 MiB. */
#define UP_DIRECT_MAX (1LL << 20)
/* Pieces start at multiples of this in a ring buffer (DMA-friendly). */
#define UP_ALIGN 256
/* A copy is split at the end of a ring buffer only when at least this much
 * (or the whole copy) fits there; otherwise it starts in the next buffer. */
#define UP_SPLIT_MIN (256LL << 10)
/* Host copies of at least UP_PAR_MIN bytes are split over the OpenMP
 * threads, in parts of UP_PART_MIN to UP_PART_MAX bytes. */
#define UP_PAR_MIN (256LL << 10)
#define UP_PART_MIN (64LL << 10)
#define UP_PART_MAX (1LL << 20)

/* The kept failure as the last error; 1 when there is none. */
static int up_kept_ok(tdm_device_t *d) {
    tdm_cuda_impl_t *c = (tdm_cuda_impl_t *)d->impl;
    if (c->err_status == TDM_OK) return 1;
    tdm_errorf(c->err_status, "%s", c->err_msg);
    return 0;
}

/* memcpy, threaded unless small: the source is usually a file mapping,
 * whose page faults cap one thread at a fraction of the link speed (about
 * 6 of 55 GB/s on an H200 host). */
static void up_host_copy(void *dst, const void *src, int64_t bytes) {
    const int nt = omp_get_max_threads();
    if (bytes < UP_PAR_MIN || nt < 2) {
        memcpy(dst, src, (size_t)bytes);
        return;
    }
    int64_t part = ((bytes + nt - 1) / nt + 4095) & ~(int64_t)4095;
    part = part < UP_PART_MIN ? UP_PART_MIN : part > UP_PART_MAX ? UP_PART_MAX : part;
    const int64_t parts = (bytes + part - 1) / part;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < parts; p++) {
        const int64_t o = p * part, m = bytes - o < part ? bytes - o : part;
        memcpy((uint8_t *)dst + o, (const uint8_t *)src + o, (size_t)m);
    }
}

void tdm_cuda_upload_release(tdm_cuda_impl_t *c) {
    if (!c) return;
    if (c->stream) (void)cudaStreamSynchronize(c->stream);   /* copies may read the ring */
    for (int i = 0; i < TDM_CUDA_UPLOAD_NBUF; i++) {
        if (c->up_done[i]) (void)cudaEventDestroy(c->up_done[i]);
        if (c->up_pin[i]) (void)cudaFreeHost(c->up_pin[i]);
        c->up_done[i] = NULL;
        c->up_pin[i] = NULL;
    }
    c->up_bytes = 0;
    c->up_fill = 0;
    c->up_cur = 0;
    c->up_pageable = 0;
    (void)cudaGetLastError();
}

/* Allocates the ring on first use. 0 when pinned memory cannot be had (a
 * locked-memory limit, say): then, with a warning once, callers copy from
 * pageable memory; that is no failure of the device. */
static int up_ring_ready(tdm_device_t *d, tdm_cuda_impl_t *c) {
    if (c->up_bytes > 0) return 1;
    if (c->up_pageable) return 0;
    for (int i = 0; i < TDM_CUDA_UPLOAD_NBUF; i++) {
        cudaError_t e = cudaHostAlloc(&c->up_pin[i], (size_t)TDM_CUDA_UPLOAD_CHUNK,
                                      cudaHostAllocDefault);
        if (e != cudaSuccess) c->up_pin[i] = NULL;
        else e = cudaEventCreateWithFlags(&c->up_done[i], cudaEventDisableTiming);
        if (e != cudaSuccess) {
            tdm_log(TDM_LOG_WARN,
                    "cuda:%d: no pinned host memory for uploads (%s): copying from pageable "
                    "memory, which is slower",
                    d->index, cudaGetErrorString(e));
            tdm_cuda_upload_release(c);
            c->up_pageable = 1;
            return 0;
        }
    }
    c->up_bytes = TDM_CUDA_UPLOAD_CHUNK;
    c->up_fill = 0;
    c->up_cur = 0;
    return 1;
}

/* Reserves the ring space of the next piece of a copy with `want` bytes
 * left, in whole `unit`s (the element size; the ring is a multiple of it):
 * moves on to the next buffer, once the copies that read it are done, when
 * the current one has less than min(want, UP_SPLIT_MIN) left. *got: the
 * bytes reserved (> 0). NULL after recording a failure. */
static uint8_t *up_ring_take(tdm_device_t *d, tdm_cuda_impl_t *c, int64_t want, int64_t unit,
                             int64_t *got) {
    int64_t need = want < UP_SPLIT_MIN ? want : UP_SPLIT_MIN;
    need = (need + unit - 1) / unit * unit;
    if (c->up_bytes - c->up_fill < need) {
        c->up_cur = (c->up_cur + 1) % TDM_CUDA_UPLOAD_NBUF;
        c->up_fill = 0;
        TDM_CUDA_CHECK(cudaEventSynchronize(c->up_done[c->up_cur]));
    }
    {
        const int64_t room = (c->up_bytes - c->up_fill) / unit * unit;
        *got = want < room ? want : room;
        return (uint8_t *)c->up_pin[c->up_cur] + c->up_fill;
    }
fail:
    return NULL;
}

/* After the copy reading the `got` reserved bytes was queued: marks them in
 * flight. 0 after recording a failure. */
static int up_ring_queued(tdm_device_t *d, tdm_cuda_impl_t *c, int64_t got) {
    TDM_CUDA_CHECK(cudaEventRecord(c->up_done[c->up_cur], c->stream));
    c->up_fill += (got + UP_ALIGN - 1) / UP_ALIGN * UP_ALIGN;
    if (c->up_fill > c->up_bytes) c->up_fill = c->up_bytes;
    return 1;
fail:
    return 0;
}

int tdm_cuda_upload_staged(tdm_device_t *d, void *dst, const void *src, int64_t bytes) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    const uint8_t *s = (const uint8_t *)src;
    uint8_t *o = (uint8_t *)dst;
    if (bytes <= 0) return up_kept_ok(d);
    if ((c->up_bytes == 0 && bytes < UP_DIRECT_MAX) || !up_ring_ready(d, c)) {
        TDM_CUDA_CHECK(cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyHostToDevice, c->stream));
        /* the caller may reuse src as soon as this returns */
        TDM_CUDA_CHECK(cudaStreamSynchronize(c->stream));
        return up_kept_ok(d);
    }
    for (int64_t off = 0; off < bytes;) {
        int64_t got = 0;
        uint8_t *pin = up_ring_take(d, c, bytes - off, 1, &got);
        if (!pin) goto fail;
        up_host_copy(pin, s + off, got);
        TDM_CUDA_CHECK(cudaMemcpyAsync(o + off, pin, (size_t)got, cudaMemcpyHostToDevice, c->stream));
        if (!up_ring_queued(d, c, got)) goto fail;
        off += got;
    }
    return up_kept_ok(d);
fail:
    return 0;
}

/* ---- conversion ------------------------------------------------------------
 * Device twins of tdm_f16_to_f32 / tdm_bf16_to_f32 / tdm_f32_to_f16 /
 * tdm_f32_to_bf16 (core.c), written as the same integer operations; the two
 * float operations are explicit round-to-nearest ones (never contracted
 * into an FMA) whose results are normal numbers, so they give the same bits
 * with or without flush-to-zero. */

static __device__ __forceinline__ float up_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (man << 13));   /* inf/nan */
    if (exp == 0) {                                          /* zero/subnormal: man * 2^-24 */
        const float v = __fmul_rn((float)man, 1.0f / 16777216.0f);
        return __uint_as_float(__float_as_uint(v) | sign);
    }
    return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}

static __device__ __forceinline__ float up_bf16_to_f32(uint16_t h) {
    return __uint_as_float((uint32_t)h << 16);
}

static __device__ __forceinline__ uint16_t up_f32_to_f16(float f) {
    uint32_t u = __float_as_uint(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t au = u & 0x7fffffffu;
    if (au >= 0x7f800000u) return sign | (au > 0x7f800000u ? 0x7e00 : 0x7c00);
    if (au >= 0x477ff000u) return sign | 0x7c00;                  /* overflow → inf */
    if (au < 0x38800000u) {                                       /* subnormal half */
        /* in units of 2^-24, rounded to nearest even by adding 2^23; a
         * float32 subnormal gives 0 either way */
        const float a = __fmul_rn(__uint_as_float(au), 16777216.0f);
        const float r = __fadd_rn(a, 8388608.0f);
        return sign | (uint16_t)(__float_as_uint(r) - 0x4b000000u);
    }
    au += 0xfffu + ((au >> 13) & 1u);
    au -= 112u << 23;
    return sign | (uint16_t)(au >> 13);
}

static __device__ __forceinline__ uint16_t up_f32_to_bf16(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* dst[i] = src[i] converted, i < n; FROM and TO are tdm_dtype values
 * (F32, F16 or BF16, FROM != TO). */
template <int FROM, int TO>
__global__ void upload_convert_kernel(void *__restrict__ dst, const void *__restrict__ src,
                                      int64_t n) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        float f;
        if (FROM == TDM_F32) f = ((const float *)src)[i];
        else if (FROM == TDM_F16) f = up_f16_to_f32(((const uint16_t *)src)[i]);
        else f = up_bf16_to_f32(((const uint16_t *)src)[i]);
        if (TO == TDM_F32) ((float *)dst)[i] = f;
        else if (TO == TDM_F16) ((uint16_t *)dst)[i] = up_f32_to_f16(f);
        else ((uint16_t *)dst)[i] = up_f32_to_bf16(f);
    }
}

static int up_is_float(tdm_dtype t) { return t == TDM_F32 || t == TDM_F16 || t == TDM_BF16; }

/* Queues the conversion of n elements at device `src` into `dst`. 0 after
 * recording a failure. */
static int up_convert_launch(tdm_device_t *d, void *dst, tdm_dtype to, const void *src,
                             tdm_dtype from, int64_t n) {
    tdm_cuda_impl_t *c = (tdm_cuda_impl_t *)d->impl;
    const unsigned nb = tdm_cuda_blocks(n, TDM_CUDA_THREADS);
#define UP_CASE(F, T)                                                                         \
    if (from == F && to == T)                                                                 \
        upload_convert_kernel<F, T><<<nb, TDM_CUDA_THREADS, 0, c->stream>>>(dst, src, n)
    UP_CASE(TDM_F32, TDM_F16);
    else UP_CASE(TDM_F32, TDM_BF16);
    else UP_CASE(TDM_F16, TDM_F32);
    else UP_CASE(TDM_BF16, TDM_F32);
    else UP_CASE(TDM_F16, TDM_BF16);
    else UP_CASE(TDM_BF16, TDM_F16);
#undef UP_CASE
    TDM_CUDA_LAUNCHED("upload_convert_kernel");
    return 1;
fail:
    return 0;
}

int tdm_cuda_upload_convert(tdm_device_t *d, void *dst, tdm_dtype to, const void *src,
                            tdm_dtype from, int64_t n) {
    if (!up_is_float(from) || !up_is_float(to)) {
        tdm_errorf(TDM_ERR_INVALID_ARG, "cuda:%d: upload cannot convert %s to %s (F32, F16, BF16 only)",
                   d->index, tdm_dtype_name(from), tdm_dtype_name(to));
        return 0;
    }
    const int64_t es = (int64_t)tdm_dtype_size(from), ed = (int64_t)tdm_dtype_size(to);
    if (n < 0 || n > INT64_MAX / 4) {
        tdm_errorf(TDM_ERR_INVALID_ARG, "cuda:%d: upload of %lld elements", d->index, (long long)n);
        return 0;
    }
    if (from == to) return tdm_cuda_upload_staged(d, dst, src, n * es);
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    if (n == 0) return up_kept_ok(d);
    const uint8_t *s = (const uint8_t *)src;
    uint8_t *o = (uint8_t *)dst;
    /* source pieces land here, converted into dst in stream order */
    uint8_t *scratch = (uint8_t *)tdm_cuda_stage(d, TDM_CUDA_UPLOAD_CHUNK);
    if (!scratch) goto fail;
    {
        const int ring = up_ring_ready(d, c);
        for (int64_t i = 0; i < n;) {
            int64_t got = 0;
            if (ring) {
                uint8_t *pin = up_ring_take(d, c, (n - i) * es, es, &got);
                if (!pin) goto fail;
                up_host_copy(pin, s + i * es, got);
                TDM_CUDA_CHECK(cudaMemcpyAsync(scratch, pin, (size_t)got, cudaMemcpyHostToDevice,
                                               c->stream));
                if (!up_ring_queued(d, c, got)) goto fail;
            } else {   /* pageable: returns once src is staged by the driver */
                const int64_t room = TDM_CUDA_UPLOAD_CHUNK / es * es;
                got = (n - i) * es < room ? (n - i) * es : room;
                TDM_CUDA_CHECK(cudaMemcpyAsync(scratch, s + i * es, (size_t)got,
                                               cudaMemcpyHostToDevice, c->stream));
            }
            const int64_t m = got / es;
            if (!up_convert_launch(d, o + i * ed, to, scratch, from, m)) goto fail;
            i += m;
        }
    }
    return up_kept_ok(d);
fail:
    return 0;
}
