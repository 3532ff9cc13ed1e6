/* cuda_ops.h — the CUDA backend's functions: devices, profiling, uploads and
 * the launchers of the ops (same semantics as the CPU kernels), queued on the
 * device's stream. C linkage; implemented in the .cu files of backend/cuda.
 * Code outside backend/ reaches them only through tdm_backend_cuda. */
#ifndef TDM_CUDA_OPS_H
#define TDM_CUDA_OPS_H

#ifdef __cplusplus
extern "C" {
#endif

#include "backend/ops.h"

/* The CUDA backend (backend.cu): the functions below behind tdm_backend_t. */
extern const tdm_backend_t tdm_backend_cuda;

/* Makes `d` CUDA device `index` (cudaSetDevice, a stream, a cuBLAS handle,
 * d->ops) with the backend switches `opts` (copied; NULL: the defaults of
 * tdm_backend_params_init). Errors when no such device exists. */
tdm_status tdm_cuda_device_init(tdm_device_t *d, int index, const tdm_backend_params_t *opts);
/* Releases what tdm_cuda_device_init made (after tdm_dev_trim). */
void tdm_cuda_device_free(tdm_device_t *d);
/* Number of CUDA devices (0 when there is no driver or GPU). */
int tdm_cuda_device_count(void);
/* Free bytes of d's GPU (cudaMemGetInfo) plus what its memory pool holds
 * unused (handed out again before the driver is asked); -1 on error. */
int64_t tdm_cuda_mem_free(tdm_device_t *d);

/* Op-level GPU profile (profile.cu), active when d->opts.profile was set at
 * device init; otherwise every call is a no-op. begin/end bracket the work
 * queued in between under `name` (a string literal; brackets may nest).
 * report prints the totals since the last report to stderr and resets
 * them; device free reports what is left. */
void tdm_cuda_prof_init(tdm_device_t *d);
void tdm_cuda_prof_begin(tdm_device_t *d);
void tdm_cuda_prof_end(tdm_device_t *d, const char *name);
void tdm_cuda_prof_report(tdm_device_t *d, const char *title);
void tdm_cuda_prof_free(tdm_device_t *d);

/* Launchers of the ops (backend/ops_list.h has every contract), one per op,
 * with the op's parameters: tdm_cuda_<name>(dev, ...). Half GEMM weights: with
 * d->gemm_dtype F16 or BF16 the float32 activation is rounded into the
 * device's staging buffer (tdm_cuda_stage, not counted in cur_bytes) and
 * cuBLAS(Lt) runs on tensor cores with float32 accumulation and output; a
 * half x of linear_ex goes to the GEMM as it is, a half y is rounded once from
 * the float32 sum of product and bias (the bias first rounded to that type,
 * what cuBLASLt's fast half-output kernels take). attention_bias needs no
 * scratch (flash style): its scratch size is 0 and s is ignored. */
#define TDM_OP(name, params, args) void tdm_cuda_##name params;
#define TDM_OPV(type, name, params, args) type tdm_cuda_##name params;
#include "backend/ops_list.h"
#undef TDM_OP
#undef TDM_OPV

/* 3×3 convolution as an implicit GEMM on the tensor cores (conv_igemm.cu),
 * same contract as tdm_cuda_conv2d_pad4 without the scratch: w (Cout, Cin·9)
 * in dev->gemm_dtype (F16/BF16), x and y float32. _use says whether it takes
 * this shape (1) or the im2col path should (0): half device, 3×3, Cin % 32
 * == 0, w 16-byte aligned, 32-bit index ranges, and (by default) a grid of
 * at least four blocks per SM — dev->opts.conv_igemm 0 / 2 turns it off / on
 * for every shape it can take. */
int tdm_cuda_conv_igemm_use(tdm_device_t *dev, const void *w, int64_t B, int64_t Cin, int64_t H,
                            int64_t W, int64_t Cout, int64_t kh, int64_t kw, int64_t Ho,
                            int64_t Wo);
void tdm_cuda_conv_igemm(tdm_device_t *dev, float *y, const float *x, const void *w,
                         const float *b, int64_t B, int64_t Cin, int64_t H, int64_t W,
                         int64_t Cout, int64_t Ho, int64_t Wo, int64_t stride, int64_t pt,
                         int64_t pl);
/* The same on the tensor cores (attention_tc.cu; F16 / BF16 operands, FP32
 * softmax), score = (q·k + bias) · scale: 1 when it took the call (launched,
 * or recorded a failure on dev), 0 when gemm_dtype is not F16 / BF16 or the
 * shape is unsupported (nothing queued; the caller runs the FP32 kernel). */
int tdm_cuda_attention_tc_bias(tdm_device_t *dev, void *o, const void *q, const void *k,
                               const void *v, int ihalf, const float *tab, int64_t B, int64_t T,
                               int64_t H, int64_t D, float scale);

/* Host→device uploads of whole buffers (weights), in upload.cu. Large copies
 * go through a ring of TDM_CUDA_UPLOAD_NBUF pinned host buffers of
 * TDM_CUDA_UPLOAD_CHUNK bytes each (the device's, allocated on first use,
 * 64 MiB of page-locked host memory): the host copies the next piece into one
 * buffer while the DMA of the previous piece runs from another. */
#define TDM_CUDA_UPLOAD_NBUF  4
#define TDM_CUDA_UPLOAD_CHUNK (16LL << 20)

/* Copies `bytes` from host `src` (any memory, e.g. a file mapping; any
 * alignment) to device `dst` on d's stream. src may be reused or unmapped as
 * soon as this returns; the last piece may still be in flight on the stream,
 * so later work on the stream (and every sync / download) sees dst complete.
 * Copies under 1 MiB made before the ring exists go straight from pageable
 * memory (cudaMemcpyAsync + stream sync); without pinned memory every copy
 * does. Returns 1, or 0 with the failure as the last error (a device failure
 * is also kept on the device; an earlier kept failure is reported too). */
int tdm_cuda_upload_staged(tdm_device_t *d, void *dst, const void *src, int64_t bytes);

/* Uploads n elements of host `src` stored as `from` into device `dst` as
 * `to` (each of TDM_F32, TDM_F16, TDM_BF16): the source bytes are staged as
 * by tdm_cuda_upload_staged into the device's staging buffer (tdm_cuda_stage)
 * and converted there, bit for bit as the host does (tdm_f16_to_f32,
 * tdm_bf16_to_f32, then tdm_f32_to_f16 / tdm_f32_to_bf16 with round to
 * nearest even; F16↔BF16 go through float32). from == to is a plain staged
 * copy. Same lifetime and return contract as tdm_cuda_upload_staged; another
 * dtype is TDM_ERR_INVALID_ARG (not kept on the device). */
int tdm_cuda_upload_convert(tdm_device_t *d, void *dst, tdm_dtype to, const void *src,
                            tdm_dtype from, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
