/* ops.h — the device-dispatching ops every model calls. tdm_op_X(dev, ...)
 * has exactly the semantics, shapes and aliasing rules of tdm_cpu_X in
 * backend/cpu/ops.h (the reference), with every pointer living on `dev`:
 * host memory for CPU devices, device memory for CUDA devices (where the
 * op is queued on the device's stream; a failure is kept on the device and
 * reported by the next tdm_dev_download / sync). */
#ifndef TDM_OPS_H
#define TDM_OPS_H

#include "core/core.h"

/* GEMM weights and dev->gemm_dtype. On a host device every operand is
 * float32, whatever gemm_dtype says. On a CUDA device whose gemm_dtype is
 * TDM_F16 or TDM_BF16, the WEIGHT operand of the three GEMM ops below —
 * `W` of tdm_op_linear, `w` of tdm_op_conv2d / tdm_op_conv2d_pad4 and `B` of
 * tdm_op_gemm — points to gemm_dtype elements on that device (a tensor made
 * by tdm_st_set_load_gemm_weight, passed as tdm_f32(t)), with the same
 * shape and leading dimension as the float32 weight it replaces; every
 * other operand (x, A, biases, outputs, scratch) stays float32. The
 * activation is rounded to gemm_dtype and the product accumulates in
 * float32. So these operands must be model weights: a product of two
 * activations (attention scores and the like) never goes through these ops
 * on such a device (tdm_op_attention* does those). */
void tdm_op_linear(tdm_device_t *dev, float *y, const float *x, const float *W, const float *b,
                   int64_t M, int64_t K, int64_t N);
/* y (M, N; rows ldy >= N apart) = gelu_tanh(x · W^T [+ b]): Linear + tanh
 * GELU in one op (on CUDA one cuBLASLt kernel with the epilogue). W is a GEMM
 * weight as for tdm_op_linear. */
void tdm_op_linear_gelu(tdm_device_t *dev, float *y, int64_t ldy, const float *x, const float *W,
                        const float *b, int64_t M, int64_t K, int64_t N);
void tdm_op_gemm(tdm_device_t *dev, int transA, int transB, int64_t M, int64_t N, int64_t K,
                 float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                 float *C, int64_t ldc);
int64_t tdm_op_conv2d_scratch(tdm_device_t *dev, int64_t Cin, int64_t H, int64_t W, int64_t kh,
                              int64_t kw, int64_t stride, int64_t pad);
void tdm_op_conv2d(tdm_device_t *dev, float *y, const float *x, const float *w, const float *b,
                   int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t kh,
                   int64_t kw, int64_t stride, int64_t pad, float *scratch);
int64_t tdm_op_conv2d_pad4_scratch(tdm_device_t *dev, int64_t Cin, int64_t H, int64_t W, int64_t kh,
                                   int64_t kw, int64_t stride, int64_t pt, int64_t pb, int64_t pl,
                                   int64_t pr);
void tdm_op_conv2d_pad4(tdm_device_t *dev, float *y, const float *x, const float *w, const float *b,
                        int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t kh,
                        int64_t kw, int64_t stride, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                        float *scratch);
void tdm_op_group_norm(tdm_device_t *dev, float *y, const float *x, const float *gamma,
                       const float *beta, int64_t B, int64_t C, int64_t S, int64_t G, float eps,
                       int silu);
void tdm_op_layer_norm(tdm_device_t *dev, float *y, const float *x, const float *gamma,
                       const float *beta, int64_t rows, int64_t D, float eps);
void tdm_op_silu(tdm_device_t *dev, float *x, int64_t n);
void tdm_op_gelu(tdm_device_t *dev, float *x, int64_t n);
void tdm_op_gelu_tanh(tdm_device_t *dev, float *x, int64_t n);
void tdm_op_quick_gelu(tdm_device_t *dev, float *x, int64_t n);
void tdm_op_geglu(tdm_device_t *dev, float *y, const float *h, int64_t rows, int64_t F);
void tdm_op_add(tdm_device_t *dev, float *y, const float *a, const float *b, int64_t n);
void tdm_op_add_channel_bias(tdm_device_t *dev, float *x, const float *v, int64_t B, int64_t C,
                             int64_t S);
void tdm_op_scale(tdm_device_t *dev, float *y, const float *a, float s, int64_t n);
void tdm_op_attention(tdm_device_t *dev, float *o, const float *q, const float *k, const float *v,
                      int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D, float scale,
                      int causal);
void tdm_op_transpose_cs(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C,
                         int64_t S);
void tdm_op_transpose_sc(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t S,
                         int64_t C);
void tdm_op_upsample_nearest2x(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C,
                               int64_t H, int64_t W);
void tdm_op_resize_nearest(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C,
                           int64_t H, int64_t W, int64_t Ho, int64_t Wo);
void tdm_op_concat_channels(tdm_device_t *dev, float *y, const float *a, int64_t Ca, const float *b,
                            int64_t Cb, int64_t B, int64_t S);
/* idx is HOST memory on every device (the CUDA op uploads it itself). */
void tdm_op_gather_rows(tdm_device_t *dev, float *y, const float *table, const int32_t *idx,
                        int64_t n, int64_t D);
void tdm_op_clamp(tdm_device_t *dev, float *y, const float *a, float lo, float hi, int64_t n);

/* T5 encoder ops (see backend/cpu/ops.h). The scratch size is per device:
 * T·T floats on the CPU, 0 on CUDA (s may then be NULL). */
void tdm_op_rms_norm(tdm_device_t *dev, float *y, const float *x, const float *w, int64_t rows,
                     int64_t D, float eps);
void tdm_op_relu(tdm_device_t *dev, float *x, int64_t n);
void tdm_op_mul(tdm_device_t *dev, float *y, const float *a, const float *b, int64_t n);
int64_t tdm_op_attention_bias_scratch(tdm_device_t *dev, int64_t T);
void tdm_op_attention_bias(tdm_device_t *dev, float *o, const float *q, const float *k,
                           const float *v, const float *tab, float *s, int64_t B, int64_t T,
                           int64_t H, int64_t D);

/* ---- activation dtype ------------------------------------------------------
 * Ops whose activation operands are `void *` take a tdm_dtype `at` naming
 * their element type: TDM_F32 always works; on a CUDA device whose
 * gemm_dtype is F16 / BF16, `at` may be that type, and those operands then
 * hold half elements (read into float32, rounded once on store). On a host
 * device `at` must be TDM_F32. Operands typed `float *` (parameters,
 * modulation vectors, residual streams) are float32 everywhere. A model
 * picks its activation type with tdm_op_act_dtype and sizes its buffers with
 * tdm_dtype_size of it. */

/* The activation type models should use on dev: its gemm_dtype on a CUDA
 * device whose gemm_dtype is F16 / BF16 (unless its opts.act_f32 is set, an
 * A/B switch), TDM_F32 otherwise. */
tdm_dtype tdm_op_act_dtype(const tdm_device_t *dev);
/* p advanced by n elements of type at. */
static inline void *tdm_act_at(const void *p, tdm_dtype at, int64_t n) {
    return (char *)p + n * (int64_t)tdm_dtype_size(at);
}

/* y (M, N; rows ldy apart, type yt) = act(x (M, K), type xt · W^T [+ b]),
 * act = tanh GELU when gelu; W a GEMM weight as for tdm_op_linear, b
 * float32 (rounded to yt first when yt is a half type). On a host device
 * xt = yt = TDM_F32 and, without gelu, ldy = N. */
void tdm_op_linear_ex(tdm_device_t *dev, void *y, tdm_dtype yt, int64_t ldy, const void *x,
                      tdm_dtype xt, const float *W, const float *b, int64_t M, int64_t K,
                      int64_t N, int gelu);
/* y (n, type yt) = x (n, type xt), rounded to nearest even where it narrows. */
void tdm_op_cast(tdm_device_t *dev, void *y, tdm_dtype yt, const void *x, tdm_dtype xt,
                 int64_t n);
/* Bytes tdm_op_attention_t (and tdm_op_attention, at = TDM_F32) takes for
 * itself beyond its operands for these sizes on dev: on a host device the
 * per-thread score tiles of the CPU kernel, on CUDA an upper bound of its
 * staging and copies. Saturates at INT64_MAX. */
int64_t tdm_op_attention_scratch_bytes(tdm_device_t *dev, tdm_dtype at, int64_t B, int64_t Tq,
                                       int64_t Tk, int64_t H, int64_t D);
/* Bytes a new allocation on dev can take now: on a host device the host's
 * available memory (tdm_host_memory_available), on CUDA the GPU's free
 * memory (plus what its pool holds unused); with a cap (cap_bytes > 0) at
 * most what is left under it. -1 when unknown. */
int64_t tdm_op_mem_available(tdm_device_t *dev);

/* tdm_op_attention with q, k, v, o of type at. */
void tdm_op_attention_t(tdm_device_t *dev, tdm_dtype at, void *o, const void *q, const void *k,
                        const void *v, int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D,
                        float scale, int causal);

/* Typed T5 ops: y of the RMS norm (x, w float32), the three operands of the
 * product, q, k, v and o of the biased attention, x of the activation are of
 * type at. */
typedef enum { TDM_FN_RELU = 0, TDM_FN_GELU, TDM_FN_GELU_TANH, TDM_FN_SILU } tdm_act_fn;
void tdm_op_rms_norm_t(tdm_device_t *dev, tdm_dtype at, void *y, const float *x, const float *w,
                       int64_t rows, int64_t D, float eps);
void tdm_op_mul_t(tdm_device_t *dev, tdm_dtype at, void *y, const void *a, const void *b,
                  int64_t n);
/* s: tdm_op_attention_bias_scratch floats (host devices), NULL on CUDA. */
void tdm_op_attention_bias_t(tdm_device_t *dev, tdm_dtype at, void *o, const void *q,
                             const void *k, const void *v, const float *tab, float *s, int64_t B,
                             int64_t T, int64_t H, int64_t D);
void tdm_op_act_t(tdm_device_t *dev, tdm_dtype at, tdm_act_fn fn, void *x, int64_t n);

/* Transformer row ops (FLUX): see tdm_cpu_rope_interleaved and the others in
 * backend/cpu/ops.h; x of RoPE and the head norms, y of the modulation and
 * of the gated residual, and both operands of the copy are of type at. */
void tdm_op_rope_interleaved(tdm_device_t *dev, tdm_dtype at, void *x, const float *cosb,
                             const float *sinb, int64_t B, int64_t S, int64_t H, int64_t hd);
void tdm_op_rms_norm_heads(tdm_device_t *dev, tdm_dtype at, void *x, const float *w, int64_t B,
                           int64_t S, int64_t r0, int64_t L, int64_t H, int64_t hd, float eps);
/* Per-head RMSNorm of all S rows of x (B, S, H·hd), rows [0, split) with
 * weight w0 and [split, S) with w1, then the interleaved RoPE with cosb / sinb
 * (S, hd): the same as two tdm_op_rms_norm_heads and tdm_op_rope_interleaved
 * (on CUDA one pass, the normalized value kept in float32). hd even. */
void tdm_op_qk_norm_rope(tdm_device_t *dev, tdm_dtype at, void *x, const float *w0,
                         const float *w1, int64_t split, const float *cosb, const float *sinb,
                         int64_t B, int64_t S, int64_t H, int64_t hd, float eps);
void tdm_op_layer_norm_modulate(tdm_device_t *dev, tdm_dtype at, void *y, const float *x,
                                const float *shift, const float *scale, int64_t mstride,
                                int64_t B, int64_t S, int64_t r0, int64_t L, int64_t D, float eps);
void tdm_op_gated_add_rows(tdm_device_t *dev, tdm_dtype at, float *x, const void *y,
                           const float *gate, int64_t mstride, int64_t B, int64_t S, int64_t r0,
                           int64_t L, int64_t D);
void tdm_op_copy_2d(tdm_device_t *dev, tdm_dtype at, void *y, int64_t ldy, const void *x,
                    int64_t ldx, int64_t rows, int64_t cols);

/* Graphs: a model replays a captured forward pass with one launch. _ok: the
 * device can (CUDA, opts.cuda_graph, not profiling; 0 on host devices).
 * _begin starts capturing dev's queue: the ops that follow are recorded, not
 * run, and must not read host memory or wait for the device (no uploads,
 * downloads or syncs; allocations are fine). _end stops and returns the
 * graph through *graph. _launch runs it again: the same ops on the same
 * pointers, reading whatever those buffers hold then. _free releases it
 * (waits for dev). Failures return TDM_ERR_INTERNAL with the last error set. */
int        tdm_op_graph_ok(tdm_device_t *dev);
tdm_status tdm_op_graph_begin(tdm_device_t *dev);
tdm_status tdm_op_graph_end(tdm_device_t *dev, void **graph);
tdm_status tdm_op_graph_launch(tdm_device_t *dev, void *graph);
void       tdm_op_graph_free(tdm_device_t *dev, void *graph);

#endif
