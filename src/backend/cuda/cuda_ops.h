/* cuda_ops.h — launchers of the CUDA kernels, one per tdm_op_* (same
 * semantics as the CPU reference in backend/cpu/ops.h), queued on the
 * device's stream. C linkage; implemented in the .cu files of backend/cuda. */
#ifndef TDM_CUDA_OPS_H
#define TDM_CUDA_OPS_H

#include "core/core.h"

#ifdef __cplusplus
extern "C" {
#endif

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

/* linear / gemm / conv2d: with d->gemm_dtype F16 or BF16, W (linear), B
 * (gemm) and w (conv) are weights stored in that type (backend/ops.h has
 * the contract); the float32 activation is rounded into the device's staging
 * buffer (tdm_cuda_stage, not counted in cur_bytes) and cuBLAS runs on
 * tensor cores with float32 accumulation and output. */
void tdm_cuda_linear(tdm_device_t *dev, float *y, const float *x, const float *W, const float *b,
                     int64_t M, int64_t K, int64_t N);
void tdm_cuda_linear_gelu(tdm_device_t *dev, float *y, int64_t ldy, const float *x,
                          const float *W, const float *b, int64_t M, int64_t K, int64_t N);
/* The general linear: y (M, N; rows ldy apart, of type yt) = act(x (M, K),
 * of type xt · W^T [+ b]), act = tanh GELU when gelu. xt and yt are TDM_F32
 * or, on a device whose gemm_dtype is F16 / BF16, that type (a half x goes
 * to the GEMM as it is; a half y is rounded once from the float32 sum of
 * product and bias). b is float32; with a half y it is first rounded to
 * that type (lossless for checkpoints stored in it), which is what
 * cuBLASLt's fast half-output kernels take. */
void tdm_cuda_linear_ex(tdm_device_t *dev, void *y, tdm_dtype yt, int64_t ldy, const void *x,
                        tdm_dtype xt, const float *W, const float *b, int64_t M, int64_t K,
                        int64_t N, int gelu);
/* y (n, type yt) = x (n, type xt), each of TDM_F32 / TDM_F16 / TDM_BF16,
 * rounded to nearest even where it narrows. */
void tdm_cuda_cast(tdm_device_t *dev, void *y, tdm_dtype yt, const void *x, tdm_dtype xt,
                   int64_t n);
void tdm_cuda_gemm(tdm_device_t *dev, int transA, int transB, int64_t M, int64_t N, int64_t K,
                   float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                   float beta, float *C, int64_t ldc);
int64_t tdm_cuda_conv2d_scratch(tdm_device_t *dev, int64_t Cin, int64_t H, int64_t W, int64_t kh,
                                int64_t kw, int64_t stride, int64_t pad);
void tdm_cuda_conv2d(tdm_device_t *dev, float *y, const float *x, const float *w, const float *b,
                     int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t kh,
                     int64_t kw, int64_t stride, int64_t pad, float *scratch);
int64_t tdm_cuda_conv2d_pad4_scratch(tdm_device_t *dev, int64_t Cin, int64_t H, int64_t W,
                                     int64_t kh, int64_t kw, int64_t stride, int64_t pt, int64_t pb,
                                     int64_t pl, int64_t pr);
void tdm_cuda_conv2d_pad4(tdm_device_t *dev, float *y, const float *x, const float *w,
                          const float *b, int64_t B, int64_t Cin, int64_t H, int64_t W,
                          int64_t Cout, int64_t kh, int64_t kw, int64_t stride, int64_t pt,
                          int64_t pb, int64_t pl, int64_t pr, float *scratch);
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
/* CUDA graphs of dev's stream (graph.cu; backend/ops.h tdm_op_graph_*).
 * _ok: graphs are allowed (dev->opts.cuda_graph, not profiling). _begin
 * starts capturing (1; 0 after recording a failure); _end stops and
 * instantiates (the graph, or NULL after recording a failure); _launch
 * queues a replay; _free waits for the stream and destroys the graph. */
int   tdm_cuda_graph_ok(tdm_device_t *dev);
int   tdm_cuda_graph_begin(tdm_device_t *dev);
void *tdm_cuda_graph_end(tdm_device_t *dev);
int   tdm_cuda_graph_launch(tdm_device_t *dev, void *graph);
void  tdm_cuda_graph_free(tdm_device_t *dev, void *graph);
void tdm_cuda_group_norm(tdm_device_t *dev, float *y, const float *x, const float *gamma,
                         const float *beta, int64_t B, int64_t C, int64_t S, int64_t G, float eps,
                         int silu);
void tdm_cuda_layer_norm(tdm_device_t *dev, float *y, const float *x, const float *gamma,
                         const float *beta, int64_t rows, int64_t D, float eps);
void tdm_cuda_silu(tdm_device_t *dev, float *x, int64_t n);
void tdm_cuda_gelu(tdm_device_t *dev, float *x, int64_t n);
void tdm_cuda_gelu_tanh(tdm_device_t *dev, float *x, int64_t n);
void tdm_cuda_quick_gelu(tdm_device_t *dev, float *x, int64_t n);
void tdm_cuda_geglu(tdm_device_t *dev, float *y, const float *h, int64_t rows, int64_t F);
void tdm_cuda_add(tdm_device_t *dev, float *y, const float *a, const float *b, int64_t n);
void tdm_cuda_add_channel_bias(tdm_device_t *dev, float *x, const float *v, int64_t B, int64_t C,
                               int64_t S);
void tdm_cuda_scale(tdm_device_t *dev, float *y, const float *a, float s, int64_t n);
void tdm_cuda_attention(tdm_device_t *dev, float *o, const float *q, const float *k, const float *v,
                        int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D, float scale,
                        int causal);
/* The same with q, k, v and o of type at (TDM_F32, or the device's half
 * gemm_dtype). */
/* Upper bound of the bytes tdm_cuda_attention_t takes beyond its operands
 * for these sizes on d (staging buffer of the tensor-core path, score block,
 * probability and conversion copies). */
int64_t tdm_cuda_attention_scratch_bytes(tdm_device_t *d, tdm_dtype at, int64_t B, int64_t Tq,
                                         int64_t Tk, int64_t H, int64_t D);
void tdm_cuda_attention_t(tdm_device_t *dev, tdm_dtype at, void *o, const void *q, const void *k,
                          const void *v, int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D,
                          float scale, int causal);
void tdm_cuda_transpose_cs(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C,
                           int64_t S);
void tdm_cuda_transpose_sc(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t S,
                           int64_t C);
void tdm_cuda_upsample_nearest2x(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C,
                                 int64_t H, int64_t W);
void tdm_cuda_resize_nearest(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C,
                             int64_t H, int64_t W, int64_t Ho, int64_t Wo);
void tdm_cuda_concat_channels(tdm_device_t *dev, float *y, const float *a, int64_t Ca,
                              const float *b, int64_t Cb, int64_t B, int64_t S);
/* idx (n) is HOST memory: the launcher copies it to the device itself. */
void tdm_cuda_gather_rows(tdm_device_t *dev, float *y, const float *table, const int32_t *idx,
                          int64_t n, int64_t D);
void tdm_cuda_clamp(tdm_device_t *dev, float *y, const float *a, float lo, float hi, int64_t n);

/* T5 encoder ops (ops_t5.cu). attention_bias needs no scratch on CUDA
 * (flash style): the scratch size is 0 and s is ignored. */
void tdm_cuda_rms_norm(tdm_device_t *dev, float *y, const float *x, const float *w, int64_t rows,
                       int64_t D, float eps);
void tdm_cuda_relu(tdm_device_t *dev, float *x, int64_t n);
void tdm_cuda_mul(tdm_device_t *dev, float *y, const float *a, const float *b, int64_t n);
int64_t tdm_cuda_attention_bias_scratch(tdm_device_t *dev, int64_t T);
void tdm_cuda_attention_bias(tdm_device_t *dev, float *o, const float *q, const float *k,
                             const float *v, const float *tab, float *s, int64_t B, int64_t T,
                             int64_t H, int64_t D);
/* The same on the tensor cores (attention_tc.cu; F16 / BF16 operands, FP32
 * softmax), score = (q·k + bias) · scale: 1 when it took the call (launched,
 * or recorded a failure on dev), 0 when gemm_dtype is not F16 / BF16 or the
 * shape is unsupported (nothing queued; the caller runs the FP32 kernel). */
int tdm_cuda_attention_tc_bias(tdm_device_t *dev, void *o, const void *q, const void *k,
                               const void *v, int ihalf, const float *tab, int64_t B, int64_t T,
                               int64_t H, int64_t D, float scale);
/* Typed T5 ops: the operands named void * are of type at (TDM_F32 or the
 * device's half gemm_dtype); x and w of the norm are float32. */
void tdm_cuda_rms_norm_t(tdm_device_t *dev, tdm_dtype at, void *y, const float *x, const float *w,
                         int64_t rows, int64_t D, float eps);
void tdm_cuda_mul_t(tdm_device_t *dev, tdm_dtype at, void *y, const void *a, const void *b,
                    int64_t n);
void tdm_cuda_attention_bias_t(tdm_device_t *dev, tdm_dtype at, void *o, const void *q,
                               const void *k, const void *v, const float *tab, int64_t B,
                               int64_t T, int64_t H, int64_t D);
/* x (n, type at) = f(x), f: 0 ReLU, 1 GELU (erf), 2 GELU (tanh), 3 SiLU. */
void tdm_cuda_act_t(tdm_device_t *dev, tdm_dtype at, int fn, void *x, int64_t n);

/* Transformer row ops (FLUX), in ops_flux.cu. The activation operands
 * (void *) are of type `at`: TDM_F32, or on a device whose gemm_dtype is F16
 * / BF16, that type; see backend/ops.h. */
void tdm_cuda_rope_interleaved(tdm_device_t *dev, tdm_dtype at, void *x, const float *cosb,
                               const float *sinb, int64_t B, int64_t S, int64_t H, int64_t hd);
void tdm_cuda_rms_norm_heads(tdm_device_t *dev, tdm_dtype at, void *x, const float *w, int64_t B,
                             int64_t S, int64_t r0, int64_t L, int64_t H, int64_t hd, float eps);
void tdm_cuda_qk_norm_rope(tdm_device_t *dev, tdm_dtype at, void *x, const float *w0,
                           const float *w1, int64_t split, const float *cosb, const float *sinb,
                           int64_t B, int64_t S, int64_t H, int64_t hd, float eps);
void tdm_cuda_layer_norm_modulate(tdm_device_t *dev, tdm_dtype at, void *y, const float *x,
                                  const float *shift, const float *scale, int64_t mstride,
                                  int64_t B, int64_t S, int64_t r0, int64_t L, int64_t D,
                                  float eps);
void tdm_cuda_gated_add_rows(tdm_device_t *dev, tdm_dtype at, float *x, const void *y,
                             const float *gate, int64_t mstride, int64_t B, int64_t S, int64_t r0,
                             int64_t L, int64_t D);
void tdm_cuda_copy_2d(tdm_device_t *dev, tdm_dtype at, void *y, int64_t ldy, const void *x,
                      int64_t ldx, int64_t rows, int64_t cols);

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
