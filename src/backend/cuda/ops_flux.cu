/* ops_flux.cu — CUDA launchers and kernels of the transformer row ops the
 * FLUX transformer needs (interleaved RoPE, per-head RMSNorm, AdaLN
 * modulation, gated residual, strided 2-D copy), each with exactly the
 * semantics of its CPU reference in backend/cpu/ops.c. Products that the CPU
 * rounds separately are written with __fmul_rn / __fadd_rn so the compiler
 * does not contract them into FMAs. Every launcher queues on the device's
 * stream and returns at once; a failure is kept on the device and reported by
 * the next sync / download. All index arithmetic is 64-bit.
 *
 * Operands named as activations (x of RoPE and the head norms, y of the
 * modulation, y of the gated residual, both of the copy) are of the type the
 * launcher's `at` names: float32, or F16 / BF16 on a half-precision device;
 * each element is read into float32 and rounded once when stored. Parameters,
 * modulation vectors and the residual stream stay float32. */
#include <math.h>

#include "backend/cuda/cuda_common.cuh"

#define GRID_STRIDE(i, n)                                                          \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n);      \
         i += (int64_t)gridDim.x * blockDim.x)

/* Largest grid.x of the one-block-per-row kernels. */
#define TDM_FLUX_MAX_GRID 0x7fffffffLL

/* ---- RoPE ------------------------------------------------------------------ */

/* out = rope(v) of one pair (v[i], v[i+1]) with the tables' row c, sn. */
__device__ __forceinline__ void rope_pair(float &x0, float &x1, const float *c, const float *sn,
                                          int64_t i) {
    float a = __fsub_rn(__fmul_rn(x0, c[i]), __fmul_rn(x1, sn[i]));
    float b = __fadd_rn(__fmul_rn(x1, c[i + 1]), __fmul_rn(x0, sn[i + 1]));
    x0 = a;
    x1 = b;
}

/* x (B, S, H*hd) in place; one thread per pair (x[i], x[i+1]), i even. */
template <typename T>
__global__ void rope_interleaved_kernel(T *x, const float *cosb, const float *sinb, int64_t S,
                                        int64_t H, int64_t hd, int64_t npairs) {
    int64_t hp = hd / 2;
    GRID_STRIDE(p, npairs) {
        int64_t vec = p / hp, i = 2 * (p % hp);   /* vec = (b·S + s)·H + h */
        int64_t s = (vec / H) % S;
        T *v = x + vec * hd;
        float x0 = tdm_ld(v + i), x1 = tdm_ld(v + i + 1);
        rope_pair(x0, x1, cosb + s * hd, sinb + s * hd, i);
        tdm_st(v + i, x0);
        tdm_st(v + i + 1, x1);
    }
}

extern "C" void tdm_cuda_rope_interleaved(tdm_device_t *d, tdm_dtype at, void *x,
                                          const float *cosb, const float *sinb, int64_t B,
                                          int64_t S, int64_t H, int64_t hd) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    int64_t npairs = B * S * H * (hd / 2);
    if (npairs <= 0) return;
    TDM_ACT_DISPATCH(at, T,
        rope_interleaved_kernel<T><<<tdm_cuda_blocks(npairs, TDM_CUDA_THREADS), TDM_CUDA_THREADS,
                                     0, c->stream>>>((T *)x, cosb, sinb, S, H, hd, npairs));
    TDM_CUDA_LAUNCHED("rope_interleaved_kernel");
fail:;
}

/* ---- per-head RMSNorm (and RoPE) ------------------------------------------------ */

/* One warp per head vector of hd elements (nvec = B·L·H vectors, segment rows
 * [r0, r0+L) of each sequence of S rows); the sum of squares in double. Rows
 * s < split take weight w0, the others w1. With cosb, the normalized vector
 * (kept in float32) is then rotated as tdm_cpu_rope_interleaved does. */
template <typename T>
__global__ void rms_norm_rope_kernel(T *x, const float *w0, const float *w1, int64_t split,
                                     const float *cosb, const float *sinb, int64_t S, int64_t r0,
                                     int64_t L, int64_t H, int64_t hd, float eps, int64_t nvec) {
    int lane = threadIdx.x & 31;
    int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t e = warp; e < nvec; e += nwarps) {
        int64_t h = e % H, br = e / H, b = br / L, s = r0 + br % L;
        T *v = x + ((b * S + s) * H + h) * hd;
        const float *w = s < split ? w0 : w1;
        double sq = 0;
        for (int64_t i = 2 * lane; i < hd; i += 64) {
            double a = tdm_ld(v + i), c = tdm_ld(v + i + 1);
            sq += a * a;
            sq += c * c;
        }
        for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
        float rs = (float)(1.0 / sqrt(sq / (double)hd + (double)eps));
        for (int64_t i = 2 * lane; i < hd; i += 64) {
            float x0 = __fmul_rn(__fmul_rn(tdm_ld(v + i), rs), w[i]);
            float x1 = __fmul_rn(__fmul_rn(tdm_ld(v + i + 1), rs), w[i + 1]);
            if (cosb) rope_pair(x0, x1, cosb + s * hd, sinb + s * hd, i);
            tdm_st(v + i, x0);
            tdm_st(v + i + 1, x1);
        }
    }
}

/* Same as above for odd hd (no RoPE: it needs pairs). */
template <typename T>
__global__ void rms_norm_heads_kernel(T *x, const float *w, int64_t S, int64_t r0, int64_t L,
                                      int64_t H, int64_t hd, float eps, int64_t nvec) {
    int lane = threadIdx.x & 31;
    int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t e = warp; e < nvec; e += nwarps) {
        int64_t h = e % H, br = e / H, b = br / L, r = br % L;
        T *v = x + ((b * S + r0 + r) * H + h) * hd;
        double sq = 0;
        for (int64_t i = lane; i < hd; i += 32) sq += (double)tdm_ld(v + i) * (double)tdm_ld(v + i);
        for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
        float rs = (float)(1.0 / sqrt(sq / (double)hd + (double)eps));
        for (int64_t i = lane; i < hd; i += 32)
            tdm_st(v + i, __fmul_rn(__fmul_rn(tdm_ld(v + i), rs), w[i]));
    }
}

static void rms_norm_launch(tdm_device_t *d, tdm_dtype at, void *x, const float *w0,
                            const float *w1, int64_t split, const float *cosb, const float *sinb,
                            int64_t B, int64_t S, int64_t r0, int64_t L, int64_t H, int64_t hd,
                            float eps) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    int64_t nvec = B * L * H;
    if (nvec <= 0 || hd <= 0) return;
    /* 8 warps (vectors) per block of 256 threads */
    unsigned nb = tdm_cuda_blocks(nvec * 32, TDM_CUDA_THREADS);
    if (hd % 2 == 0) {
        TDM_ACT_DISPATCH(at, T,
            rms_norm_rope_kernel<T><<<nb, TDM_CUDA_THREADS, 0, c->stream>>>(
                (T *)x, w0, w1, split, cosb, sinb, S, r0, L, H, hd, eps, nvec));
        TDM_CUDA_LAUNCHED("rms_norm_rope_kernel");
    } else {
        TDM_ACT_DISPATCH(at, T,
            rms_norm_heads_kernel<T><<<nb, TDM_CUDA_THREADS, 0, c->stream>>>(
                (T *)x, w0, S, r0, L, H, hd, eps, nvec));
        TDM_CUDA_LAUNCHED("rms_norm_heads_kernel");
    }
fail:;
}

extern "C" void tdm_cuda_rms_norm_heads(tdm_device_t *d, tdm_dtype at, void *x, const float *w,
                                        int64_t B, int64_t S, int64_t r0, int64_t L, int64_t H,
                                        int64_t hd, float eps) {
    rms_norm_launch(d, at, x, w, w, 0, NULL, NULL, B, S, r0, L, H, hd, eps);
}

extern "C" void tdm_cuda_qk_norm_rope(tdm_device_t *d, tdm_dtype at, void *x, const float *w0,
                                      const float *w1, int64_t split, const float *cosb,
                                      const float *sinb, int64_t B, int64_t S, int64_t H,
                                      int64_t hd, float eps) {
    if (hd % 2) {   /* no pairs to rotate: the CPU reference's RoPE rejects odd hd too */
        tdm_cuda_fail(d, TDM_ERR_INVALID_ARG, "tdm_cuda_qk_norm_rope", __FILE__, __LINE__,
                      "odd head dim");
        return;
    }
    rms_norm_launch(d, at, x, w0, w1, split, cosb, sinb, B, S, 0, S, H, hd, eps);
}

/* ---- AdaLN modulation ---------------------------------------------------------- */

/* One block per segment row row0 + blockIdx.x of the B·L rows: the two-pass
 * LayerNorm statistics in double (as tdm_cpu_layer_norm), then
 * y = ((x - mean)·rstd)·(1 + scale[b]) + shift[b]. Each element is read and
 * written by the same thread, so y may alias x (when both are float32). */
template <typename T>
__global__ void layer_norm_modulate_kernel(T *y, const float *x, const float *shift,
                                           const float *scale, int64_t mstride, int64_t S,
                                           int64_t r0, int64_t L, int64_t D, float eps,
                                           int64_t row0) {
    __shared__ double sh[32];
    int64_t row = row0 + blockIdx.x, b = row / L, r = row % L;
    const float *xr = x + (b * S + r0 + r) * D;
    T *yr = y + (b * S + r0 + r) * D;
    const float *sft = shift + b * mstride, *scl = scale + b * mstride;
    double s = 0;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) s += xr[i];
    double mean = tdm_block_sum(s, sh) / (double)D;
    double q = 0;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
        double dv = xr[i] - mean;
        q += dv * dv;
    }
    float rstd = (float)(1.0 / sqrt(tdm_block_sum(q, sh) / (double)D + (double)eps));
    float meanf = (float)mean;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
        float v = __fmul_rn(__fsub_rn(xr[i], meanf), rstd);
        tdm_st(yr + i, __fadd_rn(__fmul_rn(v, __fadd_rn(1.0f, scl[i])), sft[i]));
    }
}

extern "C" void tdm_cuda_layer_norm_modulate(tdm_device_t *d, tdm_dtype at, void *y,
                                             const float *x, const float *shift,
                                             const float *scale, int64_t mstride, int64_t B,
                                             int64_t S, int64_t r0, int64_t L, int64_t D,
                                             float eps) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    int64_t rows = B * L;
    if (rows <= 0 || D <= 0) return;
    for (int64_t row0 = 0; row0 < rows; row0 += TDM_FLUX_MAX_GRID) {
        int64_t nr = rows - row0 < TDM_FLUX_MAX_GRID ? rows - row0 : TDM_FLUX_MAX_GRID;
        int threads = D >= 1024 ? 256 : D >= 256 ? 128 : 64;
        TDM_ACT_DISPATCH(at, T,
            layer_norm_modulate_kernel<T><<<(unsigned)nr, threads, 0, c->stream>>>(
                (T *)y, x, shift, scale, mstride, S, r0, L, D, eps, row0));
        TDM_CUDA_LAUNCHED("layer_norm_modulate_kernel");
    }
fail:;
}

/* ---- gated residual and strided copy --------------------------------------------- */

/* x += gate[b] · y on segment rows; one thread per element of the B·L·D. */
template <typename T>
__global__ void gated_add_rows_kernel(float *x, const T *y, const float *gate, int64_t mstride,
                                      int64_t S, int64_t r0, int64_t L, int64_t D, int64_t n) {
    int64_t LD = L * D;
    GRID_STRIDE(e, n) {
        int64_t b = e / LD, rem = e % LD;
        int64_t idx = (b * S + r0) * D + rem;
        x[idx] = __fadd_rn(x[idx], __fmul_rn(gate[b * mstride + rem % D], tdm_ld(y + idx)));
    }
}

extern "C" void tdm_cuda_gated_add_rows(tdm_device_t *d, tdm_dtype at, float *x, const void *y,
                                        const float *gate, int64_t mstride, int64_t B, int64_t S,
                                        int64_t r0, int64_t L, int64_t D) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    int64_t n = B * L * D;
    if (n <= 0) return;
    TDM_ACT_DISPATCH(at, T,
        gated_add_rows_kernel<T><<<tdm_cuda_blocks(n, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,
                                   c->stream>>>(x, (const T *)y, gate, mstride, S, r0, L, D, n));
    TDM_CUDA_LAUNCHED("gated_add_rows_kernel");
fail:;
}

/* y[r·ldy + j] = x[r·ldx + j]; ldx = 0 broadcasts one row. */
template <typename T>
__global__ void copy_2d_kernel(T *y, int64_t ldy, const T *x, int64_t ldx, int64_t cols,
                               int64_t n) {
    GRID_STRIDE(e, n) {
        int64_t r = e / cols, j = e % cols;
        y[r * ldy + j] = x[r * ldx + j];
    }
}

extern "C" void tdm_cuda_copy_2d(tdm_device_t *d, tdm_dtype at, void *y, int64_t ldy,
                                 const void *x, int64_t ldx, int64_t rows, int64_t cols) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    int64_t n = rows * cols;
    if (rows <= 0 || cols <= 0) return;
    TDM_ACT_DISPATCH(at, T,
        copy_2d_kernel<T><<<tdm_cuda_blocks(n, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,
                            c->stream>>>((T *)y, ldy, (const T *)x, ldx, cols, n));
    TDM_CUDA_LAUNCHED("copy_2d_kernel");
fail:;
}
