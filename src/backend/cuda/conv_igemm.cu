/* conv_igemm.cu — 3×3 convolutions as an implicit GEMM on the tensor cores
 * (FP16 / BF16 operands, FP32 accumulation), used by tdm_cuda_conv2d_pad4 on
 * a half device in place of im2col + cuBLAS where it pays (conv_igemm_use).
 *
 * The GEMM is the im2col one: y_n (Cout, P) = w (Cout, K = Cin·9) · col_n
 * (K, P) + b, with the batch folded into the columns (N = B·P), but the
 * column matrix is never written: each block gathers its (32 × 128) tile of
 * it straight from x (float32, NCHW), rounds it to half and stores it in
 * shared memory. Tap order is the weight's (k = ci·9 + ky·3 + kx), so the
 * weight is read as it is stored, no reordered copy.
 *
 * Block: 256 threads, a 128 (Cout) × 128 (columns) output tile, K in steps
 * of 32, two shared-memory stages. The weight tile comes in with cp.async;
 * the column tile is loaded into registers while the previous tile is being
 * multiplied and stored after it (one barrier per step). Each thread gathers
 * two adjacent columns (a packed 32-bit store: a warp writes 32 consecutive
 * words) for 8 of the 32 rows; per column it keeps the offset of its top-left
 * tap and a 9-bit mask of the taps inside the image (the padding reads 0).
 * Warps: 2 × 4, each 64 × 32 outputs = 4 × 4 mma.sync m16n8k16 per 16 of K,
 * A fragments via ldmatrix, B via ldmatrix.trans from the (k, column)
 * row-major tile. Rows of 40 / 136 halves keep both ldmatrix patterns free of
 * bank conflicts. Epilogue: + b[co] in float32, stores to y (B, Cout, P).
 *
 * Needs Cin % 32 == 0 (K a multiple of the step, weight rows 16-byte
 * aligned) and a 16-byte aligned weight; Cout and N may be anything (the
 * last row tile reads clamped weight rows and stores nothing for them). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdlib.h>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/mma.cuh"

#define CI_BM 128        /* output channels per block */
#define CI_BN 128        /* output columns (batch × pixels) per block */
#define CI_BK 32         /* K per step */
#define CI_THREADS 256
#define CI_LDA (CI_BK + 8)   /* halves per shared row of the weight tile */
#define CI_LDB (CI_BN + 8)   /* halves per shared row of the column tile */

struct CiArgs {
    float *y;
    const float *x;
    const void *w;
    const float *b;
    int Cin, H, W, Cout, Wo, stride, pt, pl, K, P, N;
};

template <bool BF>
__global__ void __launch_bounds__(CI_THREADS, 2) conv3x3_igemm_kernel(CiArgs a) {
    __shared__ __align__(16) unsigned short As[2][CI_BM * CI_LDA];
    __shared__ __align__(16) unsigned short Bs[2][CI_BK * CI_LDB];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int m0 = blockIdx.y * CI_BM, n0 = blockIdx.x * CI_BN;
    const int wm = (warp >> 2) * 64, wn = (warp & 3) * 32;
    const int pp = tid & 63, kr = tid >> 6;   /* gather: columns 2pp, 2pp+1; rows kr + 4j */
    const int HW = a.H * a.W;
    const unsigned short *w = (const unsigned short *)a.w;

    int64_t base[2];
    unsigned mask[2];
#pragma unroll
    for (int c = 0; c < 2; c++) {
        int p = n0 + 2 * pp + c;
        base[c] = 0;
        mask[c] = 0;
        if (p < a.N) {
            int img = p / a.P, pix = p - img * a.P, oy = pix / a.Wo, ox = pix - oy * a.Wo;
            int iy = oy * a.stride - a.pt, ix = ox * a.stride - a.pl;
            base[c] = (int64_t)img * a.Cin * HW + (int64_t)iy * a.W + ix;
#pragma unroll
            for (int ky = 0; ky < 3; ky++)
#pragma unroll
                for (int kx = 0; kx < 3; kx++)
                    if ((unsigned)(iy + ky) < (unsigned)a.H && (unsigned)(ix + kx) < (unsigned)a.W)
                        mask[c] |= 1u << (ky * 3 + kx);
        }
    }

    float g[16];
    auto gather = [&](int k0) {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            int k = k0 + kr + 4 * j, ci = k / 9, t = k - ci * 9, ky = t / 3;
            int64_t off = (int64_t)ci * HW + ky * a.W + (t - ky * 3);
            g[2 * j] = (mask[0] >> t & 1) ? __ldg(a.x + base[0] + off) : 0.0f;
            g[2 * j + 1] = (mask[1] >> t & 1) ? __ldg(a.x + base[1] + off) : 0.0f;
        }
    };
    auto put = [&](int buf) {
#pragma unroll
        for (int j = 0; j < 8; j++)
            *(unsigned *)&Bs[buf][(kr + 4 * j) * CI_LDB + 2 * pp] = tc_pack<BF>(g[2 * j], g[2 * j + 1]);
    };
    auto load_w = [&](int k0, int buf) {
#pragma unroll
        for (int i = 0; i < 2; i++) {
            int c = tid + i * CI_THREADS, r = c >> 2, col = (c & 3) * 8;
            int row = m0 + r < a.Cout ? m0 + r : a.Cout - 1;
            tc_cp16(&As[buf][r * CI_LDA + col], w + (int64_t)row * a.K + k0 + col);
        }
        tc_commit();
    };

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    const int T = a.K / CI_BK;
    load_w(0, 0);
    gather(0);
    put(0);
    for (int t = 0; t < T; t++) {
        const int buf = t & 1;
        tc_wait<0>();
        __syncthreads();
        if (t + 1 < T) {
            load_w((t + 1) * CI_BK, buf ^ 1);
            gather((t + 1) * CI_BK);
        }
        const unsigned sa = (unsigned)__cvta_generic_to_shared(As[buf]);
        const unsigned sb = (unsigned)__cvta_generic_to_shared(Bs[buf]);
#pragma unroll
        for (int ks = 0; ks < CI_BK; ks += 16) {
            unsigned af[4][4], bf[2][4];
#pragma unroll
            for (int mi = 0; mi < 4; mi++)
                tc_ldsm(af[mi], sa + ((wm + mi * 16 + (lane & 15)) * CI_LDA + ks + (lane >> 4) * 8) * 2);
#pragma unroll
            for (int nj = 0; nj < 2; nj++)
                tc_ldsm_t(bf[nj], sb + ((ks + (lane & 15)) * CI_LDB + wn + nj * 16 + (lane >> 4) * 8) * 2);
#pragma unroll
            for (int mi = 0; mi < 4; mi++)
#pragma unroll
                for (int ni = 0; ni < 4; ni++)
                    tc_mma<BF>(acc[mi][ni], af[mi][0], af[mi][1], af[mi][2], af[mi][3],
                               bf[ni >> 1][(ni & 1) * 2], bf[ni >> 1][(ni & 1) * 2 + 1]);
        }
        if (t + 1 < T) put(buf ^ 1);
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

/* TDM_CONV_IGEMM (read once): 0 never, 2 whenever the shape allows, else
 * (1, the default) when the grid fills the GPU; tdm_cuda_conv_igemm_set
 * overrides it (tests). */
static int g_ci_mode = -1;

extern "C" int tdm_cuda_conv_igemm_set(int mode) {
    int old = g_ci_mode;
    g_ci_mode = mode;
    return old;
}

static int ci_mode(void) {
    if (g_ci_mode < 0) {
        const char *e = getenv("TDM_CONV_IGEMM");
        g_ci_mode = e && *e ? atoi(e) : 1;
    }
    return g_ci_mode;
}

extern "C" int tdm_cuda_conv_igemm_use(tdm_device_t *d, const void *w, int64_t B, int64_t Cin,
                                       int64_t H, int64_t W, int64_t Cout, int64_t kh, int64_t kw,
                                       int64_t Ho, int64_t Wo) {
    int mode = ci_mode();
    if (mode == 0 || (d->gemm_dtype != TDM_F16 && d->gemm_dtype != TDM_BF16)) return 0;
    if (kh != 3 || kw != 3 || Cin % 32 != 0 || ((uintptr_t)w & 15) != 0) return 0;
    if (B * Ho * Wo >= INT32_MAX || Cin * H * W >= INT32_MAX || Cin * 9 >= INT32_MAX) return 0;
    if (mode == 2) return 1;
    int sms = 0, dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        return 0;
    int64_t blocks = (B * Ho * Wo + CI_BN - 1) / CI_BN * ((Cout + CI_BM - 1) / CI_BM);
    return blocks >= sms;
}

extern "C" void tdm_cuda_conv_igemm(tdm_device_t *d, float *y, const float *x, const void *w,
                                    const float *b, int64_t B, int64_t Cin, int64_t H, int64_t W,
                                    int64_t Cout, int64_t Ho, int64_t Wo, int64_t stride,
                                    int64_t pt, int64_t pl) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    CiArgs a;
    a.y = y;
    a.x = x;
    a.w = w;
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
    dim3 grid((unsigned)((a.N + CI_BN - 1) / CI_BN), (unsigned)((Cout + CI_BM - 1) / CI_BM));
    tdm_cuda_prof_begin(d);
    if (d->gemm_dtype == TDM_BF16)
        conv3x3_igemm_kernel<true><<<grid, CI_THREADS, 0, c->stream>>>(a);
    else
        conv3x3_igemm_kernel<false><<<grid, CI_THREADS, 0, c->stream>>>(a);
    tdm_cuda_prof_end(d, "conv igemm");
    TDM_CUDA_LAUNCHED("conv3x3_igemm_kernel");
fail:
    return;
}
