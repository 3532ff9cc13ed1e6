/* cuda_common.cuh — private to backend/cuda: the per-device state behind
 * tdm_device_t.impl, the CUDA/cuBLAS check macros and launch helpers shared
 * by the .cu files. Not a public header; include it only from *.cu. */
#ifndef TDM_CUDA_COMMON_CUH
#define TDM_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "core/core.h"
}
#include "backend/cuda/cuda_ops.h"

/* State of one CUDA device (tdm_device_t.impl). */
typedef struct tdm_cuda_impl {
    cudaStream_t   stream;     /* every op and copy of the device is queued here */
    /* the side copy queue (tdm_device_ops_t copy_*): weight uploads that
     * overlap the compute on `stream`; cs_ready is recorded on `stream` by
     * copy_begin, cs_done on `cstream` by copy_end */
    cudaStream_t   cstream;
    cudaEvent_t    cs_ready, cs_done;
    cublasHandle_t blas;       /* bound to `stream`, CUBLAS_DEFAULT_MATH (no TF32) */
    /* The first failure of an op (ops return void): kept until the device is
     * freed and reported by every later sync / download. */
    tdm_status     err_status;
    char           err_msg[512];
    /* Device staging buffer for host-side index arrays (gather_rows) and the
     * source chunks of converting uploads (upload.cu); grown on demand, not
     * counted in tdm_device_t.cur_bytes. */
    void          *stage;
    int64_t        stage_bytes;
    void          *prof;       /* op profile (profile.cu), NULL unless d->opts.profile */
    void          *lt;         /* cuBLASLt handle, workspace and plans (gemm_lt.cu) */
    /* Pinned host ring of the staged uploads (upload.cu): up_pin[i] holds
     * up_bytes (TDM_CUDA_UPLOAD_CHUNK once allocated, 0 before); the next
     * staged bytes go at offset up_fill of buffer up_cur; up_done[i] is
     * recorded on `stream` after each copy that reads up_pin[i], so a buffer
     * is written again only once those copies are done. up_pageable: pinned
     * memory could not be had, so uploads copy from pageable memory. The ring
     * is allocated by the first large upload and freed by
     * tdm_cuda_upload_release; not counted in tdm_device_t.cur_bytes. */
    void          *up_pin[TDM_CUDA_UPLOAD_NBUF];
    cudaEvent_t    up_done[TDM_CUDA_UPLOAD_NBUF];
    int64_t        up_bytes;
    int64_t        up_fill;
    int            up_cur;
    int            up_pageable;
} tdm_cuda_impl_t;

/* Formats the failure of `call` at file:line as the last error; keeps it on
 * the device as its first failure when none is kept yet. Returns `st`. */
tdm_status tdm_cuda_fail(tdm_device_t *d, tdm_status st, const char *call, const char *file,
                         int line, const char *what);

/* Makes d's GPU current for this thread and returns its state. */
tdm_cuda_impl_t *tdm_cuda_ctx(tdm_device_t *d);

/* At least `bytes` of device staging memory on d (stream-ordered reuse), or
 * NULL after recording the failure. */
void *tdm_cuda_stage(tdm_device_t *d, int64_t bytes);

/* cuBLASLt linear with the bias (and GELU-tanh when `gelu`) in the
 * epilogue (gemm_lt.cu): y (M, N; rows ldy apart) = act(xh (M, K) · W^T
 * [+ b]), xh and W in d->gemm_dtype, y float32 (yhalf 0) or d->gemm_dtype
 * (yhalf 1: b float32; yhalf 2: b in d->gemm_dtype too). Returns 0 without queueing anything when cuBLASLt has no
 * plan for the shape. */
extern "C" int tdm_cuda_linear_lt(tdm_device_t *d, void *y, int yhalf, int64_t ldy,
                                  const void *xh, const void *W, const float *b, int64_t M,
                                  int64_t K, int64_t N, int gelu);
/* The same with FP8 operands (linear_f8.cu): x8 (M, K) and W8 (N, K) e4m3
 * codes, sx (M) and sw (N) their float32 row scales, D = (x8 · W8^T) ·
 * sx[m] · sw[n] [+ b] (b as for yhalf above). 0 without queueing anything
 * when cuBLASLt has no FP8 plan (a GPU before compute capability 8.9). */
extern "C" int tdm_cuda_linear_lt_f8(tdm_device_t *d, void *y, int yhalf, int64_t ldy,
                                     const void *x8, const float *sx, const void *W8,
                                     const float *sw, const void *b, int64_t M, int64_t K,
                                     int64_t N, int gelu);
/* Releases the cuBLASLt state of c (device free). */
extern "C" void tdm_cuda_lt_free(tdm_cuda_impl_t *c);

/* 1 when at is TDM_F32 or d's half gemm_dtype; else records a failure of
 * `op` and returns 0. */
int tdm_cuda_act_ok(tdm_device_t *d, tdm_dtype at, const char *op);

/* The float32 fallback of a half-typed attention: one device buffer of
 * 2·nq + 2·nk floats (*bytes bytes) holding q (nq elements), k and v (nk
 * each) converted from type at, then room for the float32 output (nq).
 * NULL after recording a failure. */
float *tdm_cuda_qkv_f32(tdm_device_t *d, tdm_dtype at, const void *q, const void *k,
                        const void *v, int64_t nq, int64_t nk, int64_t *bytes);

/* Frees the pinned upload ring of c after waiting for c->stream; the next
 * large upload allocates it again. The GPU of c must be current
 * (cudaSetDevice); tdm_cuda_device_free calls it before destroying the
 * stream. A no-op when no ring is allocated or c is NULL. */
void tdm_cuda_upload_release(tdm_cuda_impl_t *c);

/* Checks a CUDA runtime call; on failure records it (tdm_cuda_fail) and
 * jumps to `fail`. Needs `tdm_device_t *d` in scope. */
#define TDM_CUDA_CHECK(call)                                                       \
    do {                                                                           \
        cudaError_t e_ = (call);                                                   \
        if (e_ != cudaSuccess) {                                                   \
            tdm_cuda_fail(d, e_ == cudaErrorMemoryAllocation ? TDM_ERR_NOMEM       \
                                                             : TDM_ERR_INTERNAL,   \
                          #call, __FILE__, __LINE__, cudaGetErrorString(e_));      \
            goto fail;                                                             \
        }                                                                          \
    } while (0)

/* The same for cuBLAS calls. */
#define TDM_CUBLAS_CHECK(call)                                                     \
    do {                                                                           \
        cublasStatus_t s_ = (call);                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                         \
            tdm_cuda_fail(d, s_ == CUBLAS_STATUS_ALLOC_FAILED ? TDM_ERR_NOMEM      \
                                                              : TDM_ERR_INTERNAL,  \
                          #call, __FILE__, __LINE__, cublasGetStatusString(s_));   \
            goto fail;                                                             \
        }                                                                          \
    } while (0)

/* After a kernel launch: a launch error (bad configuration, no kernel image
 * for this GPU, a sticky fault of an earlier kernel) is recorded naming the
 * kernel, and the function jumps to `fail`. */
#define TDM_CUDA_LAUNCHED(kernel_name)                                             \
    do {                                                                           \
        cudaError_t e_ = cudaGetLastError();                                       \
        if (e_ != cudaSuccess) {                                                   \
            tdm_cuda_fail(d, TDM_ERR_INTERNAL, "launch of " kernel_name, __FILE__, \
                          __LINE__, cudaGetErrorString(e_));                       \
            goto fail;                                                             \
        }                                                                          \
    } while (0)

/* Sum of v over the block (blockDim.x a multiple of 32, <= 1024); every
 * thread gets the result. `sh` holds 32 doubles. */
static __device__ __forceinline__ double tdm_block_sum(double v, double *sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();   /* sh may still be read from a previous call */
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Activation elements of type float, __half or __nv_bfloat16: loaded as
 * float32, stored rounded to nearest even. */
static __device__ __forceinline__ float tdm_ld(const float *p) { return *p; }
static __device__ __forceinline__ float tdm_ld(const __half *p) { return __half2float(*p); }
static __device__ __forceinline__ float tdm_ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
static __device__ __forceinline__ void tdm_st(float *p, float v) { *p = v; }
static __device__ __forceinline__ void tdm_st(__half *p, float v) { *p = __float2half_rn(v); }
static __device__ __forceinline__ void tdm_st(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* Runs `...` (a kernel launch naming T) with T the element type of dtype
 * dt: __half for TDM_F16, __nv_bfloat16 for TDM_BF16, float otherwise. */
#define TDM_ACT_DISPATCH(dt, T, ...)                                               \
    do {                                                                           \
        if ((dt) == TDM_F16) {                                                     \
            typedef __half T;                                                      \
            __VA_ARGS__;                                                           \
        } else if ((dt) == TDM_BF16) {                                             \
            typedef __nv_bfloat16 T;                                               \
            __VA_ARGS__;                                                           \
        } else {                                                                   \
            typedef float T;                                                       \
            __VA_ARGS__;                                                           \
        }                                                                          \
    } while (0)

/* Threads per block of the element-wise kernels. */
#define TDM_CUDA_THREADS 256

/* Blocks for a grid-stride loop over n elements (at least 1). */
static inline unsigned tdm_cuda_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > (1 << 20)) b = 1 << 20;   /* the loop strides over the rest */
    return (unsigned)b;
}

#endif
