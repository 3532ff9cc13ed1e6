/* device.cu — the CUDA device: init/free/count, the memory functions of
 * tdm_device_ops_t (zero-filled cudaMalloc, copies on the device's stream)
 * and the error bookkeeping every launcher uses. Not the kernels (ops.cu,
 * attention.cu). Nothing here touches CUDA unless a CUDA device is asked
 * for, so a binary linked with cudart runs on machines without a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_common.cuh"

static tdm_cuda_impl_t *impl_of(tdm_device_t *d) { return (tdm_cuda_impl_t *)d->impl; }

tdm_status tdm_cuda_fail(tdm_device_t *d, tdm_status st, const char *call, const char *file,
                         int line, const char *what) {
    /* clear the runtime's last-error slot so the next launch check does not
     * blame the next kernel for this failure (sticky errors stay anyway) */
    (void)cudaGetLastError();
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    int idx = d ? d->index : -1;
    tdm_cuda_impl_t *c = d ? impl_of(d) : NULL;
    if (c && c->err_status == TDM_OK) {
        snprintf(c->err_msg, sizeof c->err_msg, "cuda:%d: %s failed (%s:%d): %s", idx, call, base,
                 line, what);
        c->err_status = st;
    }
    return tdm_errorf(st, "cuda:%d: %s failed (%s:%d): %s", idx, call, base, line, what);
}

tdm_cuda_impl_t *tdm_cuda_ctx(tdm_device_t *d) {
    TDM_CUDA_CHECK(cudaSetDevice(d->index));
fail:
    return impl_of(d);
}

/* The kept failure as the last error; 1 when there is none. */
static int report_kept(tdm_device_t *d) {
    tdm_cuda_impl_t *c = impl_of(d);
    if (c->err_status == TDM_OK) return 1;
    tdm_errorf(c->err_status, "%s", c->err_msg);
    return 0;
}

int tdm_cuda_device_count(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {          /* no driver, no GPU, CUDA_VISIBLE_DEVICES="" */
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

/* ---- tdm_device_ops_t ----------------------------------------------------- */

/* Device memory comes from the GPU's stream-ordered memory pool
 * (cudaMallocAsync on the device's stream). The pool keeps what is freed
 * (release threshold: unlimited) and hands it out again, so after the first
 * denoising step no allocation reaches the driver and no free waits for the
 * GPU: the pool is the device's arena, grown to the working set once and
 * returned to the driver only by tdm_dev_trim (between stages). Frees are
 * ordered after every op queued before them on the same stream. */
static void *cuda_alloc(tdm_device_t *d, int64_t bytes) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    void *p = NULL;
    cudaError_t e = cudaMallocAsync(&p, (size_t)bytes, c->stream);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t fr = 0, tot = 0;
        if (e == cudaErrorMemoryAllocation && cudaMemGetInfo(&fr, &tot) == cudaSuccess) {
            tdm_errorf(TDM_ERR_NOMEM,
                       "cuda:%d: out of GPU memory: needs %lld bytes, %lld of %lld bytes free; "
                       "use a smaller size or batch, or offload (--device-map with --max-memory)",
                       d->index, (long long)bytes, (long long)fr, (long long)tot);
        } else {
            (void)cudaGetLastError();
            tdm_errorf(e == cudaErrorMemoryAllocation ? TDM_ERR_NOMEM : TDM_ERR_INTERNAL,
                       "cuda:%d: cudaMallocAsync of %lld bytes failed: %s", d->index,
                       (long long)bytes, cudaGetErrorString(e));
        }
        return NULL;
    }
    TDM_CUDA_CHECK(cudaMemsetAsync(p, 0, (size_t)bytes, c->stream));
    return p;
fail:
    cudaFreeAsync(p, c->stream);
    return NULL;
}

static void cuda_free(tdm_device_t *d, void *p) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    if (!p) return;
    /* stream-ordered: the block is reused only by work queued after this */
    TDM_CUDA_CHECK(cudaFreeAsync(p, c->stream));
fail:;
}

extern "C" int64_t tdm_cuda_mem_free(tdm_device_t *d) {
    size_t fr = 0, tot = 0, reserved = 0, used = 0;
    cudaMemPool_t pool;
    if (cudaSetDevice(d->index) != cudaSuccess || cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    /* memory the pool keeps after frees is free to this process */
    if (cudaDeviceGetDefaultMemPool(&pool, d->index) == cudaSuccess &&
        cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved) == cudaSuccess &&
        cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used) == cudaSuccess &&
        reserved > used)
        fr += reserved - used;
    (void)cudaGetLastError();
    return (int64_t)fr;
}

/* Gives the pool's unused memory back to the driver (tdm_dev_trim). */
static void cuda_trim(tdm_device_t *d) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    cudaMemPool_t pool;
    TDM_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    TDM_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, d->index));
    TDM_CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
fail:;
}

static int cuda_zero(tdm_device_t *d, void *p, int64_t bytes) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    TDM_CUDA_CHECK(cudaMemsetAsync(p, 0, (size_t)bytes, c->stream));
    return 1;
fail:
    return 0;
}

/* Through the pinned staging ring (upload.cu): src may be reused as soon as
 * this returns; later work on the stream sees the finished copy. */
static int cuda_upload(tdm_device_t *d, void *dst, const void *src, int64_t bytes) {
    return tdm_cuda_upload_staged(d, dst, src, bytes);
}

static int cuda_download(tdm_device_t *d, void *dst, const void *src, int64_t bytes) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    TDM_CUDA_CHECK(cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyDeviceToHost, c->stream));
    TDM_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return report_kept(d);
fail:
    report_kept(d);   /* the first failure names the op that caused this one */
    return 0;
}

static int cuda_copy(tdm_device_t *d, void *dst, const void *src, int64_t bytes) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    TDM_CUDA_CHECK(cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyDeviceToDevice, c->stream));
    return 1;
fail:
    return 0;
}

static int cuda_sync(tdm_device_t *d) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    TDM_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return report_kept(d);
fail:
    report_kept(d);
    return 0;
}

/* Page-locks host memory already allocated (cudaHostRegister); 0 when the
 * driver refuses (the caller then uploads through the staging ring). */
static int cuda_pin(tdm_device_t *d, void *host, int64_t bytes) {
    (void)tdm_cuda_ctx(d);
    if (cudaHostRegister(host, (size_t)bytes, cudaHostRegisterPortable) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return 1;
}

static void cuda_unpin(tdm_device_t *d, void *host) {
    (void)tdm_cuda_ctx(d);
    if (cudaHostUnregister(host) != cudaSuccess) (void)cudaGetLastError();
}

static int cuda_copy_begin(tdm_device_t *d) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    TDM_CUDA_CHECK(cudaEventRecord(c->cs_ready, c->stream));
    TDM_CUDA_CHECK(cudaStreamWaitEvent(c->cstream, c->cs_ready, 0));
    return 1;
fail:
    return 0;
}

static int cuda_upload_async(tdm_device_t *d, void *dst, const void *src, int64_t bytes) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    /* pinned host memory or another GPU's (unified addressing tells which) */
    TDM_CUDA_CHECK(cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyDefault, c->cstream));
    return 1;
fail:
    return 0;
}

static int cuda_copy_end(tdm_device_t *d) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    TDM_CUDA_CHECK(cudaEventRecord(c->cs_done, c->cstream));
    return 1;
fail:
    return 0;
}

static int cuda_copy_wait(tdm_device_t *d) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    TDM_CUDA_CHECK(cudaStreamWaitEvent(c->stream, c->cs_done, 0));
    return 1;
fail:
    return 0;
}

/* Lets d's copies read other's memory directly (peer access over NVLink or
 * PCIe); without it, cudaMemcpy between GPUs goes through host memory. */
static int cuda_peer(tdm_device_t *d, tdm_device_t *other) {
    int can = 0;
    if (!other || other->kind != TDM_DEV_CUDA || !other->impl) return 0;
    if (other->index == d->index) return 1;
    (void)tdm_cuda_ctx(d);
    if (cudaDeviceCanAccessPeer(&can, d->index, other->index) != cudaSuccess || !can) {
        (void)cudaGetLastError();
        return 0;
    }
    cudaError_t e = cudaDeviceEnablePeerAccess(other->index, 0);
    if (e != cudaSuccess && e != cudaErrorPeerAccessAlreadyEnabled) {
        (void)cudaGetLastError();
        return 0;
    }
    (void)cudaGetLastError();
    {   /* other's memory comes from its stream-ordered pool, which peers may
         * read only when the pool grants them access */
        cudaMemPool_t pool;
        cudaMemAccessDesc desc;
        memset(&desc, 0, sizeof desc);
        desc.location.type = cudaMemLocationTypeDevice;
        desc.location.id = d->index;
        desc.flags = cudaMemAccessFlagsProtReadWrite;
        if (cudaDeviceGetDefaultMemPool(&pool, other->index) != cudaSuccess ||
            cudaMemPoolSetAccess(pool, &desc, 1) != cudaSuccess) {
            (void)cudaGetLastError();
            return 0;
        }
    }
    return 1;
}

static void *cuda_stream(tdm_device_t *d) { return (void *)tdm_cuda_ctx(d)->stream; }

static const tdm_device_ops_t g_cuda_ops = {
    cuda_alloc,  cuda_free,       cuda_zero,         cuda_upload,   cuda_download,
    cuda_copy,   cuda_sync,       cuda_trim,         cuda_pin,      cuda_unpin,
    cuda_copy_begin, cuda_upload_async, cuda_copy_end, cuda_copy_wait, cuda_peer,
    tdm_cuda_upload_convert, cuda_stream,
};

void *tdm_cuda_stage(tdm_device_t *d, int64_t bytes) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    if (bytes <= c->stage_bytes) return c->stage;
    if (c->stage) {
        TDM_CUDA_CHECK(cudaStreamSynchronize(c->stream));   /* earlier users are done */
        TDM_CUDA_CHECK(cudaFree(c->stage));
        c->stage = NULL;
        c->stage_bytes = 0;
    }
    TDM_CUDA_CHECK(cudaMalloc(&c->stage, (size_t)bytes));
    c->stage_bytes = bytes;
    return c->stage;
fail:
    return NULL;
}

/* ---- init / free ------------------------------------------------------------ */

tdm_status tdm_cuda_device_init(tdm_device_t *d, int index, const tdm_backend_params_t *opts) {
    tdm_status st = TDM_OK;
    int n = tdm_cuda_device_count();
    if (index < 0 || index >= n)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "cuda:%d: no such CUDA device (%d visible%s)", index,
                          n, n == 0 ? ": no driver or GPU" : "");
    tdm_cuda_impl_t *c = (tdm_cuda_impl_t *)calloc(1, sizeof *c);
    if (!c) return tdm_errorf(TDM_ERR_NOMEM, "cuda:%d: out of host memory", index);
    tdm_device_init(d, TDM_DEV_CUDA, index);
    if (opts) d->opts = *opts;
    d->impl = c;
    TDM_CUDA_CHECK(cudaSetDevice(index));
    TDM_CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    TDM_CUDA_CHECK(cudaStreamCreateWithFlags(&c->cstream, cudaStreamNonBlocking));
    TDM_CUDA_CHECK(cudaEventCreateWithFlags(&c->cs_ready, cudaEventDisableTiming));
    TDM_CUDA_CHECK(cudaEventCreateWithFlags(&c->cs_done, cudaEventDisableTiming));
    {   /* the pool keeps freed memory for reuse (see cuda_alloc) */
        cudaMemPool_t pool;
        uint64_t keep = UINT64_MAX;
        TDM_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, index));
        TDM_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    }
    TDM_CUBLAS_CHECK(cublasCreate(&c->blas));
    TDM_CUBLAS_CHECK(cublasSetStream(c->blas, c->stream));
    /* float32 correctness path: plain FP32 FMA GEMMs, no TF32 tensor cores */
    TDM_CUBLAS_CHECK(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));
    d->ops = &g_cuda_ops;
    d->backend = &tdm_backend_cuda;
    tdm_cuda_prof_init(d);
    return TDM_OK;
fail:
    st = c->err_status != TDM_OK ? c->err_status : TDM_ERR_INTERNAL;
    {
        char msg[sizeof c->err_msg];
        memcpy(msg, c->err_msg, sizeof msg);
        if (c->blas) cublasDestroy(c->blas);
        if (c->cs_done) cudaEventDestroy(c->cs_done);
        if (c->cs_ready) cudaEventDestroy(c->cs_ready);
        if (c->cstream) cudaStreamDestroy(c->cstream);
        if (c->stream) cudaStreamDestroy(c->stream);
        free(c);
        d->impl = NULL;
        return tdm_errorf(st, "%s", msg);
    }
}

void tdm_cuda_device_free(tdm_device_t *d) {
    if (!d || !d->impl) return;
    tdm_cuda_impl_t *c = impl_of(d);
    cudaSetDevice(d->index);
    if (c->stream) cudaStreamSynchronize(c->stream);
    tdm_cuda_upload_release(c);
    tdm_cuda_prof_free(d);
    tdm_cuda_lt_free(c);
    if (c->stage) cudaFree(c->stage);
    if (c->blas) cublasDestroy(c->blas);
    if (c->cstream) cudaStreamSynchronize(c->cstream);
    if (c->cs_done) cudaEventDestroy(c->cs_done);
    if (c->cs_ready) cudaEventDestroy(c->cs_ready);
    if (c->cstream) cudaStreamDestroy(c->cstream);
    if (c->stream) cudaStreamDestroy(c->stream);
    {
        cudaMemPool_t pool;
        if (cudaDeviceGetDefaultMemPool(&pool, d->index) == cudaSuccess) cudaMemPoolTrimTo(pool, 0);
    }
    (void)cudaGetLastError();
    free(c);
    d->impl = NULL;
    d->ops = NULL;
    d->backend = NULL;
}
