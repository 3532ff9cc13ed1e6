/* ops_flux.cu — CUDA launchers and kernels of the transformer row ops the
 * FLUX transformer needs (interleaved RoPE, per-head RMSNorm, AdaLN
 * modulation, gated residual, strided 2-D copy), each with exactly the
 * semantics of its CPU reference in backend/cpu/ops.c. Products that the CPU
 * rounds separately are written with __fmul_rn / __fadd_rn so the compiler
 * does not contract them into FMAs. Every launcher queues on the device's
 * stream and returns at once; a failure is kept on the device and reported by
 * the next sync / download. All index arithmetic is 64-bit. */
#include <math.h>

#include "backend/cuda/cuda_common.cuh"

#define GRID_STRIDE(i, n)                                                          \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n);      \
         i += (int64_t)gridDim.x * blockDim.x)

/* Largest grid.x of the one-block-per-row kernels. */
#define TDM_FLUX_MAX_GRID 0x7fffffffLL

/* ---- RoPE ------------------------------------------------------------------ */

/* x (B, S, H*hd) in place; one thread per pair (x[i], x[i+1]), i even. */
__global__ void rope_interleaved_kernel(float *x, const float *cosb, const float *sinb,
                                        int64_t S, int64_t H, int64_t hd, int64_t npairs) {
    int64_t hp = hd / 2;
    GRID_STRIDE(p, npairs) {
        int64_t vec = p / hp, i = 2 * (p % hp);   /* vec = (b·S + s)·H + h */
        int64_t s = (vec / H) % S;
        const float *c = cosb + s * hd, *sn = sinb + s * hd;
        float *v = x + vec * hd;
        float x0 = v[i], x1 = v[i + 1];
        v[i] = __fsub_rn(__fmul_rn(x0, c[i]), __fmul_rn(x1, sn[i]));
        v[i + 1] = __fadd_rn(__fmul_rn(x1, c[i + 1]), __fmul_rn(x0, sn[i + 1]));
    }
}

extern "C" void tdm_cuda_rope_interleaved(tdm_device_t *d, float *x, const float *cosb,
                                          const float *sinb, int64_t B, int64_t S, int64_t H,
                                          int64_t hd) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    int64_t npairs = B * S * H * (hd / 2);
    if (npairs <= 0) return;
    rope_interleaved_kernel<<<tdm_cuda_blocks(npairs, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,
                              c->stream>>>(x, cosb, sinb, S, H, hd, npairs);
    TDM_CUDA_LAUNCHED("rope_interleaved_kernel");
fail:;
}

/* ---- per-head RMSNorm -------------------------------------------------------- */

/* One warp per head vector of hd floats (nvec = B·L·H vectors, segment rows
 * [r0, r0+L) of each sequence of S rows); the sum of squares in double. */
__global__ void rms_norm_heads_kernel(float *x, const float *w, int64_t S, int64_t r0,
                                      int64_t L, int64_t H, int64_t hd, float eps,
                                      int64_t nvec) {
    int lane = threadIdx.x & 31;
    int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t e = warp; e < nvec; e += nwarps) {
        int64_t h = e % H, br = e / H, b = br / L, r = br % L;
        float *v = x + ((b * S + r0 + r) * H + h) * hd;
        double sq = 0;
        for (int64_t i = lane; i < hd; i += 32) sq += (double)v[i] * (double)v[i];
        for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
        float rs = (float)(1.0 / sqrt(sq / (double)hd + (double)eps));
        for (int64_t i = lane; i < hd; i += 32) v[i] = __fmul_rn(__fmul_rn(v[i], rs), w[i]);
    }
}

extern "C" void tdm_cuda_rms_norm_heads(tdm_device_t *d, float *x, const float *w, int64_t B,
                                        int64_t S, int64_t r0, int64_t L, int64_t H, int64_t hd,
                                        float eps) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    int64_t nvec = B * L * H;
    if (nvec <= 0 || hd <= 0) return;
    /* 8 warps (vectors) per block of 256 threads */
    rms_norm_heads_kernel<<<tdm_cuda_blocks(nvec * 32, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,
                            c->stream>>>(x, w, S, r0, L, H, hd, eps, nvec);
    TDM_CUDA_LAUNCHED("rms_norm_heads_kernel");
fail:;
}

/* ---- AdaLN modulation ---------------------------------------------------------- */


/* One block per segment row row0 + blockIdx.x of the B·L rows: the two-pass
 * LayerNorm statistics in double (as tdm_cpu_layer_norm), then
 * y = ((x - mean)·rstd)·(1 + scale[b]) + shift[b]. Each element is read and
 * written by the same thread, so y may alias x. */
__global__ void layer_norm_modulate_kernel(float *y, const float *x, const float *shift,
                                           const float *scale, int64_t mstride, int64_t S,
                                           int64_t r0, int64_t L, int64_t D, float eps,
                                           int64_t row0) {
    __shared__ double sh[32];
    int64_t row = row0 + blockIdx.x, b = row / L, r = row % L;
    const float *xr = x + (b * S + r0 + r) * D;
    float *yr = y + (b * S + r0 + r) * D;
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
        yr[i] = __fadd_rn(__fmul_rn(v, __fadd_rn(1.0f, scl[i])), sft[i]);
    }
}

extern "C" void tdm_cuda_layer_norm_modulate(tdm_device_t *d, float *y, const float *x,
                                             const float *shift, const float *scale,
                                             int64_t mstride, int64_t B, int64_t S, int64_t r0,
                                             int64_t L, int64_t D, float eps) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    int64_t rows = B * L;
    if (rows <= 0 || D <= 0) return;
    for (int64_t row0 = 0; row0 < rows; row0 += TDM_FLUX_MAX_GRID) {
        int64_t nr = rows - row0 < TDM_FLUX_MAX_GRID ? rows - row0 : TDM_FLUX_MAX_GRID;
        int threads = D >= 1024 ? 256 : D >= 256 ? 128 : 64;
        layer_norm_modulate_kernel<<<(unsigned)nr, threads, 0, c->stream>>>(
            y, x, shift, scale, mstride, S, r0, L, D, eps, row0);
        TDM_CUDA_LAUNCHED("layer_norm_modulate_kernel");
    }
fail:;
}

/* ---- gated residual and strided copy --------------------------------------------- */

/* x += gate[b] · y on segment rows; one thread per element of the B·L·D. */
__global__ void gated_add_rows_kernel(float *x, const float *y, const float *gate,
                                      int64_t mstride, int64_t S, int64_t r0, int64_t L,
                                      int64_t D, int64_t n) {
    int64_t LD = L * D;
    GRID_STRIDE(e, n) {
        int64_t b = e / LD, rem = e % LD;
        int64_t idx = (b * S + r0) * D + rem;
        x[idx] = __fadd_rn(x[idx], __fmul_rn(gate[b * mstride + rem % D], y[idx]));
    }
}

extern "C" void tdm_cuda_gated_add_rows(tdm_device_t *d, float *x, const float *y,
                                        const float *gate, int64_t mstride, int64_t B, int64_t S,
                                        int64_t r0, int64_t L, int64_t D) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    int64_t n = B * L * D;
    if (n <= 0) return;
    gated_add_rows_kernel<<<tdm_cuda_blocks(n, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,
                            c->stream>>>(x, y, gate, mstride, S, r0, L, D, n);
    TDM_CUDA_LAUNCHED("gated_add_rows_kernel");
fail:;
}

/* y[r·ldy + j] = x[r·ldx + j]; ldx = 0 broadcasts one row. */
__global__ void copy_2d_kernel(float *y, int64_t ldy, const float *x, int64_t ldx, int64_t cols,
                               int64_t n) {
    GRID_STRIDE(e, n) {
        int64_t r = e / cols, j = e % cols;
        y[r * ldy + j] = x[r * ldx + j];
    }
}

extern "C" void tdm_cuda_copy_2d(tdm_device_t *d, float *y, int64_t ldy, const float *x,
                                 int64_t ldx, int64_t rows, int64_t cols) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    int64_t n = rows * cols;
    if (rows <= 0 || cols <= 0) return;
    copy_2d_kernel<<<tdm_cuda_blocks(n, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0, c->stream>>>(
        y, ldy, x, ldx, cols, n);
    TDM_CUDA_LAUNCHED("copy_2d_kernel");
fail:;
}
