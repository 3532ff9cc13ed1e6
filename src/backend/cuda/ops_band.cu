/* ops_band.cu — CUDA launchers and kernels of group norm in parts (the
 * parallel VAE decode's row bands; backend/ops_list.h): per-group sums and
 * sums of squared deviations in double, the in-order sum of the ranks'
 * parts, and the normalisation with given statistics — each with the
 * semantics of its CPU reference in backend/cpu/ops.c (the sums in another
 * order: a block reduction). Every launcher queues on the device's stream and
 * returns at once; a failure is kept on the device and reported by the next
 * sync / download. Not here: the exchange of the parts (nn/band.c). */
#include <math.h>

#include "backend/cuda/cuda_common.cuh"

#define BAND_THREADS 256

#define GRID_STRIDE(i, n)                                                          \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n);      \
         i += (int64_t)blockDim.x * gridDim.x)

/* Block bg: part[bg] = Σ x (mean NULL) or Σ (x - mean[bg])² over group bg's
 * n contiguous elements. */
__global__ void gn_sums_kernel(double *part, const float *x, const double *mean, int64_t n) {
    __shared__ double sh[32];
    const int64_t bg = blockIdx.x;
    const float *xs = x + bg * n;
    double s = 0;
    if (!mean) {
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += xs[i];
    } else {
        const double m = mean[bg];
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            double d = xs[i] - m;
            s += d * d;
        }
    }
    s = tdm_block_sum(s, sh);
    if (threadIdx.x == 0) part[bg] = s;
}

extern "C" void tdm_cuda_group_norm_sums(tdm_device_t *d, double *part, const float *x,
                                         const double *mean, int64_t B, int64_t C, int64_t S,
                                         int64_t G) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    if (B <= 0 || C <= 0 || G <= 0 || S < 0) return;
    if (B * G > 0x7fffffff) {
        tdm_cuda_fail(d, TDM_ERR_UNSUPPORTED, "gn_sums_kernel", __FILE__, __LINE__,
                      "more than 2^31-1 groups");
        return;
    }
    gn_sums_kernel<<<(unsigned)(B * G), BAND_THREADS, 0, c->stream>>>(part, x, mean, C / G * S);
    TDM_CUDA_LAUNCHED("gn_sums_kernel");
fail:;
}

__global__ void sum_parts_kernel(double *y, const double *x, int64_t parts, int64_t n,
                                 double div) {
    GRID_STRIDE(i, n) {
        double s = 0;
        for (int64_t r = 0; r < parts; r++) s += x[r * n + i];
        y[i] = s / div;
    }
}

extern "C" void tdm_cuda_sum_parts_f64(tdm_device_t *d, double *y, const double *x, int64_t parts,
                                       int64_t n, double div) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    if (n <= 0) return;
    sum_parts_kernel<<<tdm_cuda_blocks(n, BAND_THREADS), BAND_THREADS, 0, c->stream>>>(
        y, x, parts, n, div);
    TDM_CUDA_LAUNCHED("sum_parts_kernel");
fail:;
}

/* Element e of x (B, C, S): group bg = e / (cg·S), its channel ch. The
 * products are rounded as the CPU rounds them (no FMA contraction). */
__global__ void gn_apply_stats_kernel(float *y, const float *x, const double *mean,
                                      const double *var, const float *gamma, const float *beta,
                                      int64_t C, int64_t S, int64_t G, float eps, int silu,
                                      int64_t total) {
    const int64_t cg = C / G;
    GRID_STRIDE(e, total) {
        const int64_t bg = e / (cg * S), ch = (bg % G) * cg + (e / S) % cg;
        const float rstd = (float)(1.0 / sqrt(var[bg] + (double)eps)), meanf = (float)mean[bg];
        const float ga = gamma ? gamma[ch] : 1.0f, be = beta ? beta[ch] : 0.0f;
        float v = __fadd_rn(__fmul_rn(__fsub_rn(x[e], meanf), __fmul_rn(rstd, ga)), be);
        if (silu) v = v / (1.0f + expf(-v));
        y[e] = v;
    }
}

extern "C" void tdm_cuda_group_norm_apply(tdm_device_t *d, float *y, const float *x,
                                          const double *mean, const double *var,
                                          const float *gamma, const float *beta, int64_t B,
                                          int64_t C, int64_t S, int64_t G, float eps, int silu) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    const int64_t total = B * C * S;
    if (total <= 0 || G <= 0) return;
    gn_apply_stats_kernel<<<tdm_cuda_blocks(total, BAND_THREADS), BAND_THREADS, 0, c->stream>>>(
        y, x, mean, var, gamma, beta, C, S, G, eps, silu, total);
    TDM_CUDA_LAUNCHED("gn_apply_stats_kernel");
fail:;
}
