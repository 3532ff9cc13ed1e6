/* ops.c — dispatch of tdm_op_* to the CPU reference kernels or, in CUDA
 * builds, to the CUDA launchers, by the kind of the device. */
#include "backend/ops.h"

#include <stdlib.h>
#include <string.h>

#include "backend/cpu/ops.h"
#ifdef TDM_HAVE_CUDA
#include "backend/cuda/cuda_ops.h"

/* Queues `call` on a CUDA device inside a profile bracket named `name`
 * (a no-op bracket unless the device's opts.profile; see backend/cuda/profile.cu). */
#define PROFILED(dev, name, call)         \
    do {                                  \
        tdm_cuda_prof_begin(dev);         \
        call;                             \
        tdm_cuda_prof_end(dev, name);     \
    } while (0)
#endif


void tdm_op_linear(tdm_device_t *dev, float *y, const float *x, const float *W, const float *b, int64_t M, int64_t K, int64_t N) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "linear", tdm_cuda_linear(dev, y, x, W, b, M, K, N));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_linear(y, x, W, b, M, K, N);
}

void tdm_op_linear_gelu(tdm_device_t *dev, float *y, int64_t ldy, const float *x, const float *W, const float *b, int64_t M, int64_t K, int64_t N) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "linear_gelu", tdm_cuda_linear_gelu(dev, y, ldy, x, W, b, M, K, N));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_linear_gelu(y, ldy, x, W, b, M, K, N);
}

void tdm_op_gemm(tdm_device_t *dev, int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "gemm", tdm_cuda_gemm(dev, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_gemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

int64_t tdm_op_conv2d_scratch(tdm_device_t *dev, int64_t Cin, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride, int64_t pad) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) return tdm_cuda_conv2d_scratch(dev, Cin, H, W, kh, kw, stride, pad);
#endif
    return tdm_cpu_conv2d_scratch(Cin, H, W, kh, kw, stride, pad, dev ? dev->opts.conv_tile_bytes : 0);
}

void tdm_op_conv2d(tdm_device_t *dev, float *y, const float *x, const float *w, const float *b, int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t kh, int64_t kw, int64_t stride, int64_t pad, float *scratch) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "conv2d", tdm_cuda_conv2d(dev, y, x, w, b, B, Cin, H, W, Cout, kh, kw, stride, pad, scratch));
        return;
    }
#endif
    tdm_cpu_conv2d(y, x, w, b, B, Cin, H, W, Cout, kh, kw, stride, pad, scratch,
                   dev ? dev->opts.conv_tile_bytes : 0);
}

int64_t tdm_op_conv2d_pad4_scratch(tdm_device_t *dev, int64_t Cin, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t stride, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) return tdm_cuda_conv2d_pad4_scratch(dev, Cin, H, W, kh, kw, stride, pt, pb, pl, pr);
#endif
    return tdm_cpu_conv2d_pad4_scratch(Cin, H, W, kh, kw, stride, pt, pb, pl, pr,
                                       dev ? dev->opts.conv_tile_bytes : 0);
}

void tdm_op_conv2d_pad4(tdm_device_t *dev, float *y, const float *x, const float *w, const float *b, int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t kh, int64_t kw, int64_t stride, int64_t pt, int64_t pb, int64_t pl, int64_t pr, float *scratch) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "conv2d_pad4", tdm_cuda_conv2d_pad4(dev, y, x, w, b, B, Cin, H, W, Cout, kh, kw, stride, pt, pb, pl, pr, scratch));
        return;
    }
#endif
    tdm_cpu_conv2d_pad4(y, x, w, b, B, Cin, H, W, Cout, kh, kw, stride, pt, pb, pl, pr, scratch,
                        dev ? dev->opts.conv_tile_bytes : 0);
}

void tdm_op_group_norm(tdm_device_t *dev, float *y, const float *x, const float *gamma, const float *beta, int64_t B, int64_t C, int64_t S, int64_t G, float eps, int silu) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "group_norm", tdm_cuda_group_norm(dev, y, x, gamma, beta, B, C, S, G, eps, silu));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_group_norm(y, x, gamma, beta, B, C, S, G, eps, silu);
}

void tdm_op_layer_norm(tdm_device_t *dev, float *y, const float *x, const float *gamma, const float *beta, int64_t rows, int64_t D, float eps) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "layer_norm", tdm_cuda_layer_norm(dev, y, x, gamma, beta, rows, D, eps));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_layer_norm(y, x, gamma, beta, rows, D, eps);
}

void tdm_op_silu(tdm_device_t *dev, float *x, int64_t n) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "silu", tdm_cuda_silu(dev, x, n));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_silu(x, n);
}

void tdm_op_gelu(tdm_device_t *dev, float *x, int64_t n) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "gelu", tdm_cuda_gelu(dev, x, n));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_gelu(x, n);
}

void tdm_op_gelu_tanh(tdm_device_t *dev, float *x, int64_t n) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "gelu_tanh", tdm_cuda_gelu_tanh(dev, x, n));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_gelu_tanh(x, n);
}

void tdm_op_quick_gelu(tdm_device_t *dev, float *x, int64_t n) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "quick_gelu", tdm_cuda_quick_gelu(dev, x, n));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_quick_gelu(x, n);
}

void tdm_op_geglu(tdm_device_t *dev, float *y, const float *h, int64_t rows, int64_t F) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "geglu", tdm_cuda_geglu(dev, y, h, rows, F));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_geglu(y, h, rows, F);
}

void tdm_op_add(tdm_device_t *dev, float *y, const float *a, const float *b, int64_t n) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "add", tdm_cuda_add(dev, y, a, b, n));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_add(y, a, b, n);
}

void tdm_op_add_channel_bias(tdm_device_t *dev, float *x, const float *v, int64_t B, int64_t C, int64_t S) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "add_channel_bias", tdm_cuda_add_channel_bias(dev, x, v, B, C, S));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_add_channel_bias(x, v, B, C, S);
}

void tdm_op_scale(tdm_device_t *dev, float *y, const float *a, float s, int64_t n) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "scale", tdm_cuda_scale(dev, y, a, s, n));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_scale(y, a, s, n);
}

void tdm_op_attention(tdm_device_t *dev, float *o, const float *q, const float *k, const float *v, int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D, float scale, int causal) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "attention", tdm_cuda_attention(dev, o, q, k, v, B, Tq, Tk, H, D, scale, causal));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_attention(o, q, k, v, B, Tq, Tk, H, D, scale, causal);
}

void tdm_op_transpose_cs(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C, int64_t S) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "transpose_cs", tdm_cuda_transpose_cs(dev, y, x, B, C, S));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_transpose_cs(y, x, B, C, S);
}

void tdm_op_transpose_sc(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t S, int64_t C) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "transpose_sc", tdm_cuda_transpose_sc(dev, y, x, B, S, C));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_transpose_sc(y, x, B, S, C);
}

void tdm_op_upsample_nearest2x(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C, int64_t H, int64_t W) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "upsample_nearest2x", tdm_cuda_upsample_nearest2x(dev, y, x, B, C, H, W));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_upsample_nearest2x(y, x, B, C, H, W);
}

void tdm_op_concat_channels(tdm_device_t *dev, float *y, const float *a, int64_t Ca, const float *b, int64_t Cb, int64_t B, int64_t S) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "concat_channels", tdm_cuda_concat_channels(dev, y, a, Ca, b, Cb, B, S));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_concat_channels(y, a, Ca, b, Cb, B, S);
}

void tdm_op_resize_nearest(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "resize_nearest", tdm_cuda_resize_nearest(dev, y, x, B, C, H, W, Ho, Wo));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_resize_nearest(y, x, B, C, H, W, Ho, Wo);
}

void tdm_op_gather_rows(tdm_device_t *dev, float *y, const float *table, const int32_t *idx, int64_t n, int64_t D) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "gather_rows", tdm_cuda_gather_rows(dev, y, table, idx, n, D));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_gather_rows(y, table, idx, n, D);
}

void tdm_op_clamp(tdm_device_t *dev, float *y, const float *a, float lo, float hi, int64_t n) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "clamp", tdm_cuda_clamp(dev, y, a, lo, hi, n));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_clamp(y, a, lo, hi, n);
}

void tdm_op_rms_norm(tdm_device_t *dev, float *y, const float *x, const float *w, int64_t rows, int64_t D, float eps) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "rms_norm", tdm_cuda_rms_norm(dev, y, x, w, rows, D, eps));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_rms_norm(y, x, w, rows, D, eps);
}

void tdm_op_relu(tdm_device_t *dev, float *x, int64_t n) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "relu", tdm_cuda_relu(dev, x, n));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_relu(x, n);
}

void tdm_op_mul(tdm_device_t *dev, float *y, const float *a, const float *b, int64_t n) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "mul", tdm_cuda_mul(dev, y, a, b, n));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_mul(y, a, b, n);
}

int64_t tdm_op_attention_bias_scratch(tdm_device_t *dev, int64_t T) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) return tdm_cuda_attention_bias_scratch(dev, T);
#endif
    (void)dev;
    return tdm_cpu_attention_bias_scratch(T);
}

void tdm_op_attention_bias(tdm_device_t *dev, float *o, const float *q, const float *k, const float *v, const float *tab, float *s, int64_t B, int64_t T, int64_t H, int64_t D) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "attention_bias", tdm_cuda_attention_bias(dev, o, q, k, v, tab, s, B, T, H, D));
        return;
    }
#endif
    (void)dev;
    tdm_cpu_attention_bias(o, q, k, v, tab, s, B, T, H, D);
}

/* A host device computes in float32 only; another `at` there is a bug in the
 * calling model, not bad input. */
static void host_f32(tdm_dtype at, const char *op) {
    if (at == TDM_F32) return;
    tdm_log(TDM_LOG_ERROR, "%s: activation dtype %s on a host device (float32 only)", op,
            tdm_dtype_name(at));
    abort();
}

tdm_dtype tdm_op_act_dtype(const tdm_device_t *dev) {
    if (tdm_dev_is_host(dev) || (dev->gemm_dtype != TDM_F16 && dev->gemm_dtype != TDM_BF16))
        return TDM_F32;
    return dev->opts.act_f32 ? TDM_F32 : dev->gemm_dtype;
}

void tdm_op_linear_ex(tdm_device_t *dev, void *y, tdm_dtype yt, int64_t ldy, const void *x,
                      tdm_dtype xt, const float *W, const float *b, int64_t M, int64_t K,
                      int64_t N, int gelu) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, gelu ? "linear_gelu" : "linear",
                 tdm_cuda_linear_ex(dev, y, yt, ldy, x, xt, W, b, M, K, N, gelu));
        return;
    }
#endif
    host_f32(xt, "linear");
    host_f32(yt, "linear");
    if (gelu) {
        tdm_cpu_linear_gelu(y, ldy, x, W, b, M, K, N);
        return;
    }
    if (ldy != N) {
        tdm_log(TDM_LOG_ERROR, "linear: ldy %lld != N %lld on a host device", (long long)ldy,
                (long long)N);
        abort();
    }
    tdm_cpu_linear(y, x, W, b, M, K, N);
}

void tdm_op_cast(tdm_device_t *dev, void *y, tdm_dtype yt, const void *x, tdm_dtype xt,
                 int64_t n) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "cast", tdm_cuda_cast(dev, y, yt, x, xt, n));
        return;
    }
#endif
    host_f32(xt, "cast");
    host_f32(yt, "cast");
    if (y != x && n > 0) memmove(y, x, (size_t)n * sizeof(float));
}

int64_t tdm_op_attention_scratch_bytes(tdm_device_t *dev, tdm_dtype at, int64_t B, int64_t Tq,
                                       int64_t Tk, int64_t H, int64_t D) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) return tdm_cuda_attention_scratch_bytes(dev, at, B, Tq, Tk, H, D);
#endif
    (void)dev; (void)at; (void)B; (void)Tq; (void)H; (void)D;
    return tdm_cpu_attention_scratch_bytes(Tk);
}

int64_t tdm_op_mem_available(tdm_device_t *dev) {
    int64_t have;
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) have = tdm_cuda_mem_free(dev);
    else
#endif
    have = tdm_host_memory_available();
    if (dev && have >= 0)   /* freed blocks the device's reuse cache keeps are this process's */
        for (int i = 0; i < dev->ncache; i++) have += dev->cache_n[i];
    if (dev && dev->cap_bytes > 0) {
        const int64_t left = dev->cap_bytes > dev->cur_bytes ? dev->cap_bytes - dev->cur_bytes : 0;
        if (have < 0 || left < have) have = left;
    }
    return have;
}

void tdm_op_attention_t(tdm_device_t *dev, tdm_dtype at, void *o, const void *q, const void *k,
                        const void *v, int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D,
                        float scale, int causal) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "attention", tdm_cuda_attention_t(dev, at, o, q, k, v, B, Tq, Tk, H, D, scale, causal));
        return;
    }
#endif
    host_f32(at, "attention");
    tdm_cpu_attention(o, q, k, v, B, Tq, Tk, H, D, scale, causal);
}

void tdm_op_rms_norm_t(tdm_device_t *dev, tdm_dtype at, void *y, const float *x, const float *w,
                       int64_t rows, int64_t D, float eps) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "rms_norm", tdm_cuda_rms_norm_t(dev, at, y, x, w, rows, D, eps));
        return;
    }
#endif
    host_f32(at, "rms_norm");
    tdm_cpu_rms_norm(y, x, w, rows, D, eps);
}

void tdm_op_mul_t(tdm_device_t *dev, tdm_dtype at, void *y, const void *a, const void *b,
                  int64_t n) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "mul", tdm_cuda_mul_t(dev, at, y, a, b, n));
        return;
    }
#endif
    host_f32(at, "mul");
    tdm_cpu_mul(y, a, b, n);
}

void tdm_op_attention_bias_t(tdm_device_t *dev, tdm_dtype at, void *o, const void *q,
                             const void *k, const void *v, const float *tab, float *s, int64_t B,
                             int64_t T, int64_t H, int64_t D) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "attention_bias", tdm_cuda_attention_bias_t(dev, at, o, q, k, v, tab, B, T, H, D));
        return;
    }
#endif
    host_f32(at, "attention_bias");
    tdm_cpu_attention_bias(o, q, k, v, tab, s, B, T, H, D);
}

void tdm_op_act_t(tdm_device_t *dev, tdm_dtype at, tdm_act_fn fn, void *x, int64_t n) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "activation", tdm_cuda_act_t(dev, at, (int)fn, x, n));
        return;
    }
#endif
    host_f32(at, "activation");
    switch (fn) {
    case TDM_FN_RELU: tdm_cpu_relu(x, n); break;
    case TDM_FN_GELU: tdm_cpu_gelu(x, n); break;
    case TDM_FN_GELU_TANH: tdm_cpu_gelu_tanh(x, n); break;
    case TDM_FN_SILU: tdm_cpu_silu(x, n); break;
    }
}

void tdm_op_rope_interleaved(tdm_device_t *dev, tdm_dtype at, void *x, const float *cosb,
                             const float *sinb, int64_t B, int64_t S, int64_t H, int64_t hd) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "rope_interleaved", tdm_cuda_rope_interleaved(dev, at, x, cosb, sinb, B, S, H, hd));
        return;
    }
#endif
    host_f32(at, "rope_interleaved");
    tdm_cpu_rope_interleaved(x, cosb, sinb, B, S, H, hd);
}

void tdm_op_rms_norm_heads(tdm_device_t *dev, tdm_dtype at, void *x, const float *w, int64_t B,
                           int64_t S, int64_t r0, int64_t L, int64_t H, int64_t hd, float eps) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "rms_norm_heads", tdm_cuda_rms_norm_heads(dev, at, x, w, B, S, r0, L, H, hd, eps));
        return;
    }
#endif
    host_f32(at, "rms_norm_heads");
    tdm_cpu_rms_norm_heads(x, w, B, S, r0, L, H, hd, eps);
}

void tdm_op_qk_norm_rope(tdm_device_t *dev, tdm_dtype at, void *x, const float *w0,
                         const float *w1, int64_t split, const float *cosb, const float *sinb,
                         int64_t B, int64_t S, int64_t H, int64_t hd, float eps) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "qk_norm_rope", tdm_cuda_qk_norm_rope(dev, at, x, w0, w1, split, cosb, sinb, B, S, H, hd, eps));
        return;
    }
#endif
    host_f32(at, "qk_norm_rope");
    if (split > 0) tdm_cpu_rms_norm_heads(x, w0, B, S, 0, split, H, hd, eps);
    if (split < S) tdm_cpu_rms_norm_heads(x, w1, B, S, split, S - split, H, hd, eps);
    tdm_cpu_rope_interleaved(x, cosb, sinb, B, S, H, hd);
}

void tdm_op_layer_norm_modulate(tdm_device_t *dev, tdm_dtype at, void *y, const float *x,
                                const float *shift, const float *scale, int64_t mstride,
                                int64_t B, int64_t S, int64_t r0, int64_t L, int64_t D, float eps) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "layer_norm_modulate", tdm_cuda_layer_norm_modulate(dev, at, y, x, shift, scale, mstride, B, S, r0, L, D, eps));
        return;
    }
#endif
    host_f32(at, "layer_norm_modulate");
    tdm_cpu_layer_norm_modulate(y, x, shift, scale, mstride, B, S, r0, L, D, eps);
}

void tdm_op_gated_add_rows(tdm_device_t *dev, tdm_dtype at, float *x, const void *y,
                           const float *gate, int64_t mstride, int64_t B, int64_t S, int64_t r0,
                           int64_t L, int64_t D) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "gated_add_rows", tdm_cuda_gated_add_rows(dev, at, x, y, gate, mstride, B, S, r0, L, D));
        return;
    }
#endif
    host_f32(at, "gated_add_rows");
    tdm_cpu_gated_add_rows(x, y, gate, mstride, B, S, r0, L, D);
}

void tdm_op_copy_2d(tdm_device_t *dev, tdm_dtype at, void *y, int64_t ldy, const void *x,
                    int64_t ldx, int64_t rows, int64_t cols) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        PROFILED(dev, "copy_2d", tdm_cuda_copy_2d(dev, at, y, ldy, x, ldx, rows, cols));
        return;
    }
#endif
    host_f32(at, "copy_2d");
    tdm_cpu_copy_2d(y, ldy, x, ldx, rows, cols);
}

int tdm_op_graph_ok(tdm_device_t *dev) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) return tdm_cuda_graph_ok(dev);
#endif
    (void)dev;
    return 0;
}

tdm_status tdm_op_graph_begin(tdm_device_t *dev) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev))
        return tdm_cuda_graph_begin(dev) ? TDM_OK : TDM_ERR_INTERNAL;
#endif
    (void)dev;
    return tdm_errorf(TDM_ERR_UNSUPPORTED, "graphs need a CUDA device");
}

tdm_status tdm_op_graph_end(tdm_device_t *dev, void **graph) {
    *graph = NULL;
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) {
        *graph = tdm_cuda_graph_end(dev);
        return *graph ? TDM_OK : TDM_ERR_INTERNAL;
    }
#endif
    (void)dev;
    return tdm_errorf(TDM_ERR_UNSUPPORTED, "graphs need a CUDA device");
}

tdm_status tdm_op_graph_launch(tdm_device_t *dev, void *graph) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev))
        return tdm_cuda_graph_launch(dev, graph) ? TDM_OK : TDM_ERR_INTERNAL;
#endif
    (void)dev;
    (void)graph;
    return tdm_errorf(TDM_ERR_UNSUPPORTED, "graphs need a CUDA device");
}

void tdm_op_graph_free(tdm_device_t *dev, void *graph) {
#ifdef TDM_HAVE_CUDA
    if (!tdm_dev_is_host(dev)) tdm_cuda_graph_free(dev, graph);
#endif
    (void)dev;
    (void)graph;
}
