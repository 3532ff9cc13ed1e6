/* linear_f8.cu — the FP8 linear (ops_list.h's linear_f8) on Hopper's FP8
 * tensor cores: one kernel quantizes each row of the activation to e4m3
 * with its own scale (the rule of tdm_f8_quantize_row, bit for bit: the
 * float32 amax, scale = amax / 448, codes = e4m3(x · (448 / amax)) rounded to
 * nearest even and saturated), then one cuBLASLt FP8 GEMM multiplies the
 * codes with float32 accumulation and applies both scale vectors (x's per
 * row, W's per output channel: OUTER_VEC_32F), the bias and the GELU in its
 * epilogue. Quantizing per token keeps a row's result independent of the
 * other rows of the call (row-count independence, gemm_lt.cu). */
#include <cuda_fp8.h>

#include "backend/cuda/cuda_common.cuh"

#define F8_THREADS 256

/* Row r of x (rows, K) → q[r·K ..] codes and s[r]. One block per row. */
template <typename X>
__global__ void quant_rows_kernel(uint8_t *q, float *s, const X *x, int64_t K) {
    __shared__ float sh[F8_THREADS / 32];
    const int64_t r = blockIdx.x;
    const X *xr = x + r * K;
    uint8_t *qr = q + r * K;
    float amax = 0.0f;
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) amax = fmaxf(amax, fabsf(tdm_ld(xr + k)));
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = amax;
    __syncthreads();
    amax = 0.0f;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) amax = fmaxf(amax, sh[w]);
    const bool plain = !(amax > 0.0f) || isinf(amax);   /* zero row, or inf: scale 1 */
    const float inv = plain ? 1.0f : __fdiv_rn(448.0f, amax);
    if (threadIdx.x == 0) s[r] = plain ? 1.0f : __fdiv_rn(amax, 448.0f);
    for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
        const float v = plain ? tdm_ld(xr + k) : __fmul_rn(tdm_ld(xr + k), inv);
        qr[k] = (uint8_t)__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
    }
}

extern "C" void tdm_cuda_linear_f8(tdm_device_t *d, void *y, tdm_dtype yt, int64_t ldy,
                                   const void *x, tdm_dtype xt, const void *W, const float *b,
                                   int64_t M, int64_t K, int64_t N, int gelu) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    const int yhalf = yt != TDM_F32;
    void *bh = NULL, *tmp = NULL;
    if (M <= 0 || N <= 0) return;
    if (!tdm_cuda_act_ok(d, xt, "tdm_cuda_linear_f8") || !tdm_cuda_act_ok(d, yt, "tdm_cuda_linear_f8"))
        return;
    if (M > 0x7fffffffLL || K <= 0) {
        tdm_cuda_fail(d, TDM_ERR_INVALID_ARG, "tdm_cuda_linear_f8", __FILE__, __LINE__,
                      "row count or K out of range");
        return;
    }
    {
        const int64_t qbytes = tdm_f8_scale_offset(M, K);
        uint8_t *q = (uint8_t *)tdm_cuda_stage(d, qbytes + M * 4);
        if (!q) return;
        float *sx = (float *)(q + qbytes);
        const float *sw = (const float *)((const uint8_t *)W + tdm_f8_scale_offset(N, K));
        tdm_cuda_prof_begin(d);
        TDM_ACT_DISPATCH(xt, X, quant_rows_kernel<X><<<(unsigned)M, F8_THREADS, 0, c->stream>>>(
                                    q, sx, (const X *)x, K));
        tdm_cuda_prof_end(d, "fp8 quantize");
        TDM_CUDA_LAUNCHED("quant_rows_kernel");
        /* the bias in bf16: cuBLASLt's FP8 GEMMs (sm_90, cuBLASLt 13.1) have no plan with
         * a float32 bias for either output type */
        const void *bias = b;
        if (b) {
            bh = tdm_dev_alloc(d, N * 2, "bf16 bias");
            if (!bh) {
                tdm_cuda_fail(d, TDM_ERR_NOMEM, "tdm_dev_alloc", __FILE__, __LINE__,
                              tdm_last_error());
                return;
            }
            tdm_cuda_cast(d, bh, TDM_BF16, b, TDM_F32, N);
            bias = bh;
        }
        int ok = tdm_cuda_linear_lt_f8(d, y, yhalf ? 2 : 0, ldy, q, sx, W, sw, bias, M, K, N, gelu);
        if (!ok && !yhalf && ldy == N && (d->gemm_dtype == TDM_BF16 || d->gemm_dtype == TDM_F16)) {
            /* no float32-output FP8 kernel: a half output, then widened (the AdaLN
             * modulation's few rows; the product still accumulates in float32) */
            tmp = tdm_dev_alloc(d, M * N * 2, "fp8 linear output");
            if (tmp) {
                ok = tdm_cuda_linear_lt_f8(d, tmp, 2, N, q, sx, W, sw, bias, M, K, N, gelu);
                if (ok) tdm_cuda_cast(d, y, TDM_F32, tmp, d->gemm_dtype, M * N);
            }
        }
        if (!ok)
            tdm_cuda_fail(d, TDM_ERR_UNSUPPORTED, "tdm_cuda_linear_f8", __FILE__, __LINE__,
                          "cuBLASLt has no FP8 GEMM for this shape on this GPU (FP8 needs "
                          "compute capability 8.9 or newer, K and N multiples of 16)");
    }
fail:
    if (bh) tdm_dev_free(d, bh, N * 2);   /* stream-ordered: after the GEMM */
    if (tmp) tdm_dev_free(d, tmp, M * N * 2);
}
