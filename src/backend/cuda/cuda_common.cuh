/* cuda_common.cuh — private to backend/cuda: the per-device state behind
 * tdm_device_t.impl, the CUDA/cuBLAS check macros and launch helpers shared
 * by the .cu files. Not a public header; include it only from *.cu. */
#ifndef TDM_CUDA_COMMON_CUH
#define TDM_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "core/core.h"
}
#include "backend/cuda/cuda_ops.h"

/* State of one CUDA device (tdm_device_t.impl). */
typedef struct tdm_cuda_impl {
    cudaStream_t   stream;     /* every op and copy of the device is queued here */
    cublasHandle_t blas;       /* bound to `stream`, CUBLAS_DEFAULT_MATH (no TF32) */
    /* The first failure of an op (ops return void): kept until the device is
     * freed and reported by every later sync / download. */
    tdm_status     err_status;
    char           err_msg[512];
    /* Device staging buffer for host-side index arrays (gather_rows); grown
     * on demand, not counted in tdm_device_t.cur_bytes. */
    void          *stage;
    int64_t        stage_bytes;
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
