/* conv_igemm.cu — 3×3 convolutions as an implicit GEMM on the tensor cores
 * (FP16 / BF16 operands, FP32 accumulation), used by tdm_cuda_conv2d_pad4 on
 * a half device in place of im2col + cuBLAS where it pays (conv_igemm_use).
 *
 * The GEMM is y_n (Cout, P) = w (Cout, K = 9·Cin) · col_n (K, P) + b, with
 * the batch folded into the columns (N = B·P) and the column matrix never
 * written. Three launches:
 *  1. x (B, Cin, H, W) float32 → xt (B, H, W, Cin) half, channels last (a
 *     tiled transpose through shared memory): for one tap, 32 consecutive
 *     channels of one pixel are 64 contiguous bytes, four 16-byte copies.
 *  2. w (Cout, Cin, 3, 3) → wt (Cout, 9, Cin): K in (tap, channel) order, so
 *     a step of 32 channels of one tap is contiguous in both operands.
 *  3. the GEMM: block = 256 threads, 128 output channels × 128 columns, K in
 *     steps of 32 (one tap, 32 channels; Cin % 32 == 0), three cp.async
 *     stages in dynamic shared memory. Both tiles are (rows, 32) half with
 *     rows of 40 halves (conflict-free ldmatrix): the weight tile by output
 *     channel, the column tile by column. A column whose tap falls in the
 *     padding copies 0 bytes (cp.async zero fill). Each thread keeps, for
 *     the one column it loads, the offset of its top-left tap and a 9-bit
 *     mask of the taps inside the image. Warps: 2 × 4, each 64 × 32 outputs
 *     = 4 × 4 mma.sync m16n8k16 per 16 of K, fragments via ldmatrix (the
 *     column tile is the mma's column-major B as stored). Epilogue: + b[co]
 *     in float32, stores to y (B, Cout, P).
 * Needs Cin % 32 == 0; Cout and N may be anything (the last row tile reads
 * clamped weight rows and stores nothing for them). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdlib.h>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/mma.cuh"

#define CI_BM 128        /* output channels per block */
#define CI_BN 128        /* output columns (batch × pixels) per block */
#define CI_STAGES 3
#define CI_THREADS 256
/* shared memory of a block with steps of BK channels: rows of BK + 8 halves */
#define CI_SMEM(BK) (CI_STAGES * (CI_BM + CI_BN) * ((BK) + 8) * 2)

struct CiArgs {
    float *y;
    const unsigned short *xt;   /* (B, H, W, Cin) half */
    const unsigned short *wt;   /* (Cout, 9, Cin) half */
    const float *b;
    int Cin, H, W, Cout, Wo, stride, pt, pl, K, P, N;
};

/* 16-byte cp.async, or 16 zero bytes when !ok (src-size 0: nothing read) */
__device__ __forceinline__ void ci_cp16z(unsigned sa, const void *g, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(g),
                 "r"(ok ? 16 : 0)
                 : "memory");
}

template <bool BF, int CI_BK>
__global__ void __launch_bounds__(CI_THREADS, 2) conv3x3_igemm_kernel(CiArgs a) {
    constexpr int CI_LD = CI_BK + 8, CH = CI_BK / 8;   /* 16-byte chunks per row */
    extern __shared__ __align__(16) unsigned short ci_smem[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int m0 = blockIdx.y * CI_BM, n0 = blockIdx.x * CI_BN;
    const int wm = (warp >> 2) * 64, wn = (warp & 3) * 32;
    const unsigned sbase = (unsigned)__cvta_generic_to_shared(ci_smem);
    /* stage s: weight tile at sbase + s·STAGE, column tile after it */
    constexpr unsigned STAGE = (CI_BM + CI_BN) * CI_LD * 2, BOFF = CI_BM * CI_LD * 2;

    /* the column this thread loads: row tid/2 of the column tile, 16-byte
     * chunks [(tid%2)·CH/2, (tid%2 + 1)·CH/2) of its BK channels */
    const int bc = tid >> 1, bq = (tid & 1) * (CH / 2);
    int64_t bpix = 0;   /* offset in xt of (img, iy0, ix0) */
    unsigned mask = 0;
    {
        int p = n0 + bc;
        if (p < a.N) {
            int img = p / a.P, pix = p - img * a.P, oy = pix / a.Wo, ox = pix - oy * a.Wo;
            int iy = oy * a.stride - a.pt, ix = ox * a.stride - a.pl;
            bpix = (((int64_t)img * a.H + iy) * a.W + ix) * a.Cin;
#pragma unroll
            for (int ky = 0; ky < 3; ky++)
#pragma unroll
                for (int kx = 0; kx < 3; kx++)
                    if ((unsigned)(iy + ky) < (unsigned)a.H && (unsigned)(ix + kx) < (unsigned)a.W)
                        mask |= 1u << (ky * 3 + kx);
        }
    }
    const int csteps = a.Cin / CI_BK;
    auto load = [&](int step, int slot) {
        const int t = step / csteps, ci0 = (step - t * csteps) * CI_BK, ky = t / 3;
        const unsigned sa = sbase + slot * STAGE;
#pragma unroll
        for (int i = 0; i < CI_BM * CH / CI_THREADS; i++) {   /* weights: 128 rows × CH chunks */
            int c = tid + i * CI_THREADS, r = c / CH, col = (c % CH) * 8;
            int row = m0 + r < a.Cout ? m0 + r : a.Cout - 1;
            tc_cp16s(sa + (r * CI_LD + col) * 2, a.wt + (int64_t)row * a.K + step * CI_BK + col);
        }
        const bool ok = mask >> t & 1;
        const unsigned short *src =
            ok ? a.xt + bpix + ((int64_t)ky * a.W + (t - ky * 3)) * a.Cin + ci0 : a.xt;
#pragma unroll
        for (int i = 0; i < CH / 2; i++)
            ci_cp16z(sa + BOFF + (bc * CI_LD + (bq + i) * 8) * 2, src + (ok ? (bq + i) * 8 : 0), ok);
    };

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    const int T = a.K / CI_BK;
#pragma unroll
    for (int s = 0; s < CI_STAGES - 1; s++) {
        if (s < T) load(s, s);
        tc_commit();
    }
    for (int t = 0; t < T; t++) {
        tc_wait<CI_STAGES - 2>();
        __syncthreads();   /* stage t landed; every warp is done with stage t - 1 */
        if (t + CI_STAGES - 1 < T) load(t + CI_STAGES - 1, (t + CI_STAGES - 1) % CI_STAGES);
        tc_commit();
        const unsigned sa = sbase + (t % CI_STAGES) * STAGE, sb = sa + BOFF;
#pragma unroll
        for (int ks = 0; ks < CI_BK; ks += 16) {
            unsigned af[4][4], bf[2][4];
#pragma unroll
            for (int mi = 0; mi < 4; mi++)
                tc_ldsm(af[mi], sa + ((wm + mi * 16 + (lane & 15)) * CI_LD + ks + (lane >> 4) * 8) * 2);
#pragma unroll
            for (int nj = 0; nj < 2; nj++)
                tc_ldsm(bf[nj], sb + ((wn + nj * 16 + (lane & 7) + ((lane >> 4) << 3)) * CI_LD + ks +
                                      ((lane >> 3) & 1) * 8) * 2);
#pragma unroll
            for (int mi = 0; mi < 4; mi++)
#pragma unroll
                for (int ni = 0; ni < 4; ni++)
                    tc_mma<BF>(acc[mi][ni], af[mi][0], af[mi][1], af[mi][2], af[mi][3],
                               bf[ni >> 1][(ni & 1) * 2], bf[ni >> 1][(ni & 1) * 2 + 1]);
        }
    }

#pragma unroll
    for (int mi = 0; mi < 4; mi++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int co = m0 + wm + mi * 16 + (lane >> 2) + h * 8;
            if (co >= a.Cout) continue;
            float bv = a.b ? __ldg(a.b + co) : 0.0f;
#pragma unroll
            for (int ni = 0; ni < 4; ni++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int p = n0 + wn + ni * 8 + 2 * (lane & 3) + e;
                    if (p >= a.N) continue;
                    int img = p / a.P, pix = p - img * a.P;
                    a.y[((int64_t)img * a.Cout + co) * a.P + pix] = acc[mi][ni][2 * h + e] + bv;
                }
        }
}

/* xt (B, S, C) = x (B, C, S) rounded to T: 32 × 32 tiles through shared
 * memory, block (32, 8), grid (S/32, C/32, B) rounded up. */
template <typename T>
__global__ void ci_to_nhwc_kernel(T *xt, const float *x, int C, int S) {
    __shared__ float tile[32][33];
    const int s0 = blockIdx.x * 32, c0 = blockIdx.y * 32;
    const float *xb = x + (int64_t)blockIdx.z * C * S;
    T *yb = xt + (int64_t)blockIdx.z * C * S;
    for (int i = threadIdx.y; i < 32; i += 8) {
        int c = c0 + i, s = s0 + threadIdx.x;
        if (c < C && s < S) tile[i][threadIdx.x] = xb[(int64_t)c * S + s];
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += 8) {
        int s = s0 + i, c = c0 + threadIdx.x;
        if (c < C && s < S) tdm_st(&yb[(int64_t)s * C + c], tile[threadIdx.x][i]);
    }
}

/* wt (Cout, 9, Cin) = w (Cout, Cin, 9), 16-bit elements */
__global__ void ci_weight_kernel(unsigned short *wt, const unsigned short *w, int64_t Cout,
                                 int Cin) {
    const int64_t n = Cout * 9 * Cin;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t co = i / (9 * Cin);
        int r = (int)(i - co * 9 * Cin), t = r / Cin, ci = r - t * Cin;
        wt[i] = w[co * 9 * Cin + ci * 9 + t];
    }
}

/* d->opts.conv_igemm: 0 never, 2 whenever the shape allows, else (1, the
 * default) when the grid is at least four blocks per SM. */
extern "C" int tdm_cuda_conv_igemm_use(tdm_device_t *d, const void *w, int64_t B, int64_t Cin,
                                       int64_t H, int64_t W, int64_t Cout, int64_t kh, int64_t kw,
                                       int64_t Ho, int64_t Wo) {
    int mode = d->opts.conv_igemm;
    if (mode == 0 || (d->gemm_dtype != TDM_F16 && d->gemm_dtype != TDM_BF16)) return 0;
    if (kh != 3 || kw != 3 || Cin % 32 != 0 || ((uintptr_t)w & 15) != 0) return 0;
    if (B * Ho * Wo >= INT32_MAX || Cin * H * W >= INT32_MAX || Cin * 9 >= INT32_MAX) return 0;
    if (mode == 2) return 1;
    int sms = 0, dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        return 0;
    int64_t blocks = (Ho * Wo + CI_BN - 1) / CI_BN * ((Cout + CI_BM - 1) / CI_BM);
    /* below ~4 waves the im2col path (cuBLAS, split-K) wins: SD1.5's 64² level
     * (192 blocks for its guided batch of two) measured 2× slower here; the FLUX VAE's
     * levels (≥ 512 blocks) faster (bench/KERNEL_NOTES.md). Counted for a batch of
     * two whatever B is, so the batch does not change an image's path (a CFG rank
     * holds one image of the pair) */
    (void)B;
    return 2 * blocks >= 4 * (int64_t)sms;
}

/* K step: 64 channels where Cin allows (fewer barriers and fragment loads
 * per mma), else 32; opts.conv_igemm_bk other than 64 keeps 32. */
static int ci_bk(const tdm_device_t *d, int64_t Cin) {
    return d->opts.conv_igemm_bk == 64 && Cin % 64 == 0 ? 64 : 32;
}

template <bool BF, int BK>
static cudaError_t ci_launch(dim3 grid, cudaStream_t st, const CiArgs &a) {
    cudaError_t e = cudaFuncSetAttribute(conv3x3_igemm_kernel<BF, BK>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, CI_SMEM(BK));
    if (e != cudaSuccess) return e;
    conv3x3_igemm_kernel<BF, BK><<<grid, CI_THREADS, CI_SMEM(BK), st>>>(a);
    return cudaGetLastError();
}

extern "C" void tdm_cuda_conv_igemm(tdm_device_t *d, float *y, const float *x, const void *w,
                                    const float *b, int64_t B, int64_t Cin, int64_t H, int64_t W,
                                    int64_t Cout, int64_t Ho, int64_t Wo, int64_t stride,
                                    int64_t pt, int64_t pl) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    const int bf = d->gemm_dtype == TDM_BF16;
    const int64_t xbytes = B * Cin * H * W * 2, wbytes = Cout * Cin * 9 * 2;
    unsigned short *xt = (unsigned short *)tdm_dev_alloc(d, xbytes, "channels-last conv input");
    unsigned short *wt = xt ? (unsigned short *)tdm_dev_alloc(d, wbytes, "tap-major conv weight")
                            : NULL;
    CiArgs a;
    if (!xt || !wt) {
        tdm_cuda_fail(d, TDM_ERR_NOMEM, "tdm_dev_alloc", __FILE__, __LINE__, tdm_last_error());
        goto fail;
    }
    tdm_cuda_prof_begin(d);
    {
        dim3 tg((unsigned)((H * W + 31) / 32), (unsigned)((Cin + 31) / 32), (unsigned)B);
        if (bf)
            ci_to_nhwc_kernel<<<tg, dim3(32, 8), 0, c->stream>>>((__nv_bfloat16 *)xt, x, (int)Cin,
                                                                 (int)(H * W));
        else
            ci_to_nhwc_kernel<<<tg, dim3(32, 8), 0, c->stream>>>((__half *)xt, x, (int)Cin,
                                                                 (int)(H * W));
        TDM_CUDA_LAUNCHED("ci_to_nhwc_kernel");
        ci_weight_kernel<<<tdm_cuda_blocks(Cout * Cin * 9, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,
                           c->stream>>>(wt, (const unsigned short *)w, Cout, (int)Cin);
        TDM_CUDA_LAUNCHED("ci_weight_kernel");
    }
    tdm_cuda_prof_end(d, "conv igemm layout");
    a.y = y;
    a.xt = xt;
    a.wt = wt;
    a.b = b;
    a.Cin = (int)Cin;
    a.H = (int)H;
    a.W = (int)W;
    a.Cout = (int)Cout;
    a.Wo = (int)Wo;
    a.stride = (int)stride;
    a.pt = (int)pt;
    a.pl = (int)pl;
    a.K = (int)(Cin * 9);
    a.P = (int)(Ho * Wo);
    a.N = (int)(B * Ho * Wo);
    {
        dim3 grid((unsigned)((a.N + CI_BN - 1) / CI_BN), (unsigned)((Cout + CI_BM - 1) / CI_BM));
        const int bk = ci_bk(d, Cin);
        tdm_cuda_prof_begin(d);
        if (bf && bk == 64)
            TDM_CUDA_CHECK((ci_launch<true, 64>(grid, c->stream, a)));
        else if (bf)
            TDM_CUDA_CHECK((ci_launch<true, 32>(grid, c->stream, a)));
        else if (bk == 64)
            TDM_CUDA_CHECK((ci_launch<false, 64>(grid, c->stream, a)));
        else
            TDM_CUDA_CHECK((ci_launch<false, 32>(grid, c->stream, a)));
        tdm_cuda_prof_end(d, "conv igemm");
        TDM_CUDA_LAUNCHED("conv3x3_igemm_kernel");
    }
fail:   /* stream-ordered frees: after the kernels */
    if (wt) tdm_dev_free(d, wt, wbytes);
    if (xt) tdm_dev_free(d, xt, xbytes);
}
