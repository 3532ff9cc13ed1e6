/* attention_tc.cu — multi-head attention on the tensor cores (FP16 or BF16
 * operands, FP32 accumulation and softmax), used by tdm_cuda_attention when
 * the device's gemm_dtype is TDM_F16 / TDM_BF16. Same contract as the FP32
 * kernel in attention.cu: q (B, Tq, H·D), k, v (B, Tk, H·D) float32 →
 * o (B, Tq, H·D) float32, o = softmax(q k^T · scale [+ top-left causal]) v.
 *
 * Two launches:
 *  1. tc_convert: q, k and v (float32, tokens-major) → half/bf16 copies in
 *     the device's staging buffer, head-major (B·H, Tp, DP): DP = D rounded
 *     up to the kernel's padded head dim (a multiple of 16); Tp = T rounded
 *     up to the attention kernel's query block (BQ: 128 or 64) for q, to 64
 *     for k and v; the padding is zeros. One launch (grid z = q, k, v), one
 *     pass over the inputs; afterwards every tile of the attention kernel is
 *     a contiguous, aligned rows × DP block.
 *  2. the attention kernel, flash style (FlashAttention-2 layout): a block
 *     of 4 warps takes BQ query rows of one (batch, head). Key/value tiles
 *     of 64 rows stream through shared memory with cp.async, two stages deep
 *     (the next tile loads while this one is computed). S = Q K^T per warp
 *     with mma.sync m16n8k16 (fragments via ldmatrix), kept in registers;
 *     online softmax in float32 (scores in log2 units, exp2; causal / tail
 *     mask only on the tiles that need it); P is rounded to half/bf16 in
 *     registers — the S accumulator layout is the A-operand layout of the
 *     next mma — and O += P V with V fragments through ldmatrix.trans. O
 *     stays in float32 registers; the row sums are reduced across the quad
 *     once at the end. Grid: heavy (causal) query blocks first.
 *     Two kernels:
 *     - tc2_attention_kernel (the default for padded head dims DP ≤ 128):
 *       BQ = 128, 32 query rows per warp as two m16 row tiles, so every K
 *       and V fragment read from shared memory feeds two mma (half the
 *       shared-memory traffic per flop of the 16-row kernel). Q fragments
 *       are loaded into registers once for DP ≤ 80; at DP = 128 they would
 *       not fit next to the O and S accumulators (O 128 + S 64 + Q 64 = 256
 *       registers; at DP = 96 they spilled), so there Q stays in shared
 *       memory and is re-read per tile.
 *       One barrier per key tile; a warp skips the tiles that the causal
 *       mask hides from all of its 32 rows. The max is taken on the raw
 *       scores and scaled afterwards (needs scale > 0; exact, as rounding
 *       is monotonic), p = exp2(fma(s, scale·log2e, -m)).
 *     - tc_attention_kernel (DP 160 / 192 / 256, Tq ≤ 64, scale ≤ 0, and on
 *       request): BQ = 64, 16 query rows per warp, Q re-read from shared
 *       memory per tile, two barriers per tile.
 *     The device's opts.attn_tc_16row selects the
 *     16-row kernel for every head dim, to compare the two in one build.
 *  Both kernels also take T5's relative position bias (template flag BIAS,
 *  tdm_cuda_attention_tc_bias, called by tdm_cuda_attention_bias): Tq = Tk =
 *  T, tab[h·(2T-1) + j - i + T - 1] added to the raw score q·k (before the
 *  scale) by starting the S accumulators from it (__ldg, L1-resident table).
 *  Without BIAS the kernels are unchanged (same PTX, bar one unused param). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/mma.cuh"

#define TC_BQ 64        /* query rows per block of tc_attention_kernel (16 per warp) */
#define TC2_BQ 128      /* query rows per block of tc2_attention_kernel (32 per warp) */
#define TC_BK 64        /* keys per tile */
#define TC_WARPS 4
#define TC_THREADS (TC_WARPS * 32)
#define TC_PAD 8        /* halves of padding per smem row: conflict-free ldmatrix */

/* ---- conversion ------------------------------------------------------------------ */

/* o[idx] = v as float32, or (ohalf) rounded to the kernel's half type. */
template <bool BF>
__device__ __forceinline__ void tc_store(void *o, int64_t idx, float v, int ohalf) {
    if (!ohalf)
        ((float *)o)[idx] = v;
    else if (BF)
        ((__nv_bfloat16 *)o)[idx] = __float2bfloat16_rn(v);
    else
        ((__half *)o)[idx] = __float2half_rn(v);
}

/* One tensor of a conversion: dst (BH, Tp, DP) halves from src (B, T, H·D)
 * floats, or (TcConvArgs.ihalf) halves of the kernel's type. vec: src is
 * 16-byte aligned and D % 4 == 0 (floats: full 8-float chunks load as two
 * float4) or D % 8 == 0 (halves: one uint4). */
struct TcConvJob {
    uint4 *dst;
    const void *src;
    int64_t T, Tp;
    int vec;
};
struct TcConvArgs {
    TcConvJob job[3];
    int64_t H;
    int D, DP;
    int ihalf;
};

/* Grid (x: chunks of one head, y: b·H + h, z: tensor); one thread writes 8
 * halves (16 bytes) per step, zeros past T and D. Expects Tp · DP / 8 < 2^31
 * (tdm_cuda_attention_tc checks). */
template <bool BF>
__global__ void tc_convert(TcConvArgs a) {
    const TcConvJob &jb = blockIdx.z == 0 ? a.job[0] : blockIdx.z == 1 ? a.job[1] : a.job[2];
    const unsigned c8n = (unsigned)a.DP / 8;
    const int D = a.D;
    const int64_t bh = blockIdx.y, b = bh / a.H, h = bh % a.H, HD = a.H * D;
    const int T = (int)jb.T;
    const unsigned n = (unsigned)(jb.Tp * c8n);
    uint4 *dst = jb.dst + bh * n;
    const int64_t off = b * jb.T * HD + h * D;
    if (a.ihalf) {   /* a copy into the padded layout, zeros past T and D */
        const unsigned short *src = (const unsigned short *)jb.src + off;
        for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
             i += gridDim.x * blockDim.x) {
            const int t = (int)(i / c8n), d0 = (int)(i - t * c8n) * 8;
            if (t < T && d0 + 8 <= D && jb.vec) {
                dst[i] = __ldg((const uint4 *)(src + (int64_t)t * HD + d0));
            } else {
                unsigned short u[8];
#pragma unroll
                for (int j = 0; j < 8; j++)
                    u[j] = t < T && d0 + j < D ? src[(int64_t)t * HD + d0 + j] : (unsigned short)0;
                uint4 w;
                w.x = u[0] | (unsigned)u[1] << 16;
                w.y = u[2] | (unsigned)u[3] << 16;
                w.z = u[4] | (unsigned)u[5] << 16;
                w.w = u[6] | (unsigned)u[7] << 16;
                dst[i] = w;
            }
        }
        return;
    }
    const float *src = (const float *)jb.src + off;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const int t = (int)(i / c8n), d0 = (int)(i - t * c8n) * 8;
        float f[8];
        if (t < T && d0 + 8 <= D && jb.vec) {
            const float4 *s4 = (const float4 *)(src + (int64_t)t * HD + d0);
            float4 x = __ldg(s4), y = __ldg(s4 + 1);
            f[0] = x.x; f[1] = x.y; f[2] = x.z; f[3] = x.w;
            f[4] = y.x; f[5] = y.y; f[6] = y.z; f[7] = y.w;
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++)
                f[j] = t < T && d0 + j < D ? __ldg(src + (int64_t)t * HD + d0 + j) : 0.0f;
        }
        uint4 w;
        w.x = tc_pack<BF>(f[0], f[1]);
        w.y = tc_pack<BF>(f[2], f[3]);
        w.z = tc_pack<BF>(f[4], f[5]);
        w.w = tc_pack<BF>(f[6], f[7]);
        dst[i] = w;
    }
}

__device__ __forceinline__ float tc_exp2(float x) {   /* 2^x; -inf → 0 */
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* ---- tc_attention_kernel: 16 query rows per warp ------------------------------------------------------------ */

static size_t tc_smem_bytes(int DP) {
    /* Q (BQ rows) + 2 stages × (K, V) (BK rows each), rows of DP + PAD halves */
    return (size_t)(TC_BQ + 4 * TC_BK) * (DP + TC_PAD) * 2;
}

/* Copies rows [0, 64) of a (·, DP) half matrix starting at g into smem rows
 * of LD halves with cp.async (64 · DP / 8 chunks of 16 bytes). */
template <int DP>
__device__ __forceinline__ void tc_load_tile(unsigned short *s, const unsigned short *g) {
    constexpr int LD = DP + TC_PAD, C8 = DP / 8;
#pragma unroll
    for (int e = threadIdx.x; e < 64 * C8; e += TC_THREADS) {
        int r = e / C8, c = e % C8;
        tc_cp16(s + r * LD + c * 8, g + (int64_t)r * DP + c * 8);
    }
}

/* BIAS: bias_tab (H, 2T - 1) float32, T = Tq = Tk, adds tab[h·(2T-1) + j - i
 * + T - 1] to the raw score (q·k units, before the scale) of query i, key j:
 * the S accumulators start from the bias instead of 0. Without BIAS the
 * argument is unused (and the kernel the same as before it existed). */
template <int DP, bool BF, bool BIAS>
__global__ void __launch_bounds__(TC_THREADS)
tc_attention_kernel(void *o, int ohalf, const unsigned short *qh, const unsigned short *kh,
                    const unsigned short *vh, int64_t H, int64_t Tq, int64_t Tk, int64_t Tqp,
                    int64_t Tkp, int D, float scale_log2, int causal, const float *bias_tab) {
    constexpr int LD = DP + TC_PAD;
    constexpr int NDT = DP / 8;      /* 8-wide output column tiles */
    constexpr int NKT = TC_BK / 8;   /* 8-wide key tiles of S */
    extern __shared__ __align__(16) unsigned short tc_smem[];
    unsigned short *Qs = tc_smem;
    unsigned short *Ks0 = Qs + TC_BQ * LD;              /* stage s: Ks0 + s·2·BK·LD */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t4 = lane & 3;

    const int64_t bh = blockIdx.y;
    const int64_t b = bh / H, h = bh % H;
    /* heavy (causal) blocks first */
    const int64_t i0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * TC_BQ;
    const unsigned short *qg = qh + (bh * Tqp + i0) * DP;
    const unsigned short *kg = kh + bh * Tkp * DP;
    const unsigned short *vg = vh + bh * Tkp * DP;

    const int64_t kend = causal ? (i0 + TC_BQ < Tk ? i0 + TC_BQ : Tk) : Tk;
    const int ntiles = (int)((kend + TC_BK - 1) / TC_BK);

    tc_load_tile<DP>(Qs, qg);
    tc_load_tile<DP>(Ks0, kg);
    tc_load_tile<DP>(Ks0 + TC_BK * LD, vg);
    tc_commit();

    float acc[NDT][4];
#pragma unroll
    for (int i = 0; i < NDT; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};

    const int qr0 = warp * 16;   /* this warp's first row in the block */
    /* ldmatrix lane addressing: matrix mi = lane / 8, row r = lane % 8 */
    const int mi = lane >> 3, mr = lane & 7;

    for (int t = 0; t < ntiles; t++) {
        const int st = t & 1;
        if (t + 1 < ntiles) {
            unsigned short *kn = Ks0 + (st ^ 1) * 2 * TC_BK * LD;
            tc_load_tile<DP>(kn, kg + (int64_t)(t + 1) * TC_BK * DP);
            tc_load_tile<DP>(kn + TC_BK * LD, vg + (int64_t)(t + 1) * TC_BK * DP);
            tc_commit();
            tc_wait<1>();
        } else {
            tc_wait<0>();
        }
        __syncthreads();
        const unsigned short *Ks = Ks0 + st * 2 * TC_BK * LD;
        const unsigned short *Vs = Ks + TC_BK * LD;
        const int64_t j0 = (int64_t)t * TC_BK;

        /* S = Q K^T (+ bias) for the warp's 16 rows × 64 keys */
        float s[NKT][4];
        if (BIAS) {
            /* element (nt, e): row i0 + qr0 + g + (e >> 1)·8, key j0 + nt·8 + 2t4 + (e & 1);
             * tab index rel0 + nt·8 + (e & 1) - (e >> 1)·8. Rows / keys past T
             * (padding) read nothing: 0 (the keys are masked below, the rows
             * never stored). */
            const int64_t nrel = 2 * Tk - 1;
            const float *th = bias_tab + h * nrel;
            const int64_t rel0 = j0 - (i0 + qr0) + 2 * t4 - g + Tk - 1;
            if (j0 + TC_BK <= Tk && i0 + qr0 + 16 <= Tq) {
                const float *tp = th + rel0;
#pragma unroll
                for (int nt = 0; nt < NKT; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++) s[nt][e] = __ldg(tp + nt * 8 + (e & 1) - (e >> 1) * 8);
            } else {
#pragma unroll
                for (int nt = 0; nt < NKT; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int64_t j = j0 + nt * 8 + 2 * t4 + (e & 1);
                        const int64_t qi = i0 + qr0 + g + (e >> 1) * 8;
                        s[nt][e] = j < Tk && qi < Tq
                                       ? __ldg(th + rel0 + nt * 8 + (e & 1) - (e >> 1) * 8)
                                       : 0.0f;
                    }
            }
        } else {
#pragma unroll
            for (int i = 0; i < NKT; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
        }
#pragma unroll
        for (int kc = 0; kc < DP / 16; kc++) {
            unsigned a0, a1, a2, a3;
            tc_ldm_x4(a0, a1, a2, a3, Qs + (qr0 + (mi & 1) * 8 + mr) * LD + kc * 16 + (mi >> 1) * 8);
#pragma unroll
            for (int np = 0; np < NKT / 2; np++) {
                unsigned b0, b1, b2, b3;
                tc_ldm_x4(b0, b1, b2, b3, Ks + (np * 16 + (mi >> 1) * 8 + mr) * LD + kc * 16 + (mi & 1) * 8);
                tc_mma<BF>(s[2 * np], a0, a1, a2, a3, b0, b1);
                tc_mma<BF>(s[2 * np + 1], a0, a1, a2, a3, b2, b3);
            }
        }

        /* scores (+ bias) in log2 units; mask: keys past Tk, and (causal) keys after the query */
#pragma unroll
        for (int nt = 0; nt < NKT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[nt][e] *= scale_log2;
        const bool need_mask = j0 + TC_BK > Tk || (causal && j0 + TC_BK - 1 > i0 + qr0);
        if (need_mask) {
#pragma unroll
            for (int nt = 0; nt < NKT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int64_t j = j0 + nt * 8 + 2 * t4 + (e & 1);
                    int64_t qi = i0 + qr0 + g + (e >> 1) * 8;
                    if (j >= Tk || (causal && j > qi)) s[nt][e] = -INFINITY;
                }
        }

        /* online softmax, rows g (r = 0) and g + 8 (r = 1) */
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float mx = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < NKT; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float mnew = fmaxf(mrow[r], mx);
            float muse = mnew == -INFINITY ? 0.0f : mnew;
            float alpha = tc_exp2(mrow[r] - muse);
            mrow[r] = mnew;
            float ps = 0.0f;
#pragma unroll
            for (int nt = 0; nt < NKT; nt++) {
                float p0 = tc_exp2(s[nt][2 * r] - muse);
                float p1 = tc_exp2(s[nt][2 * r + 1] - muse);
                s[nt][2 * r] = p0;
                s[nt][2 * r + 1] = p1;
                ps += p0 + p1;
            }
            lrow[r] = lrow[r] * alpha + ps;
#pragma unroll
            for (int i = 0; i < NDT; i++) {
                acc[i][2 * r] *= alpha;
                acc[i][2 * r + 1] *= alpha;
            }
        }

        /* O += P V: P from the S registers, V^T fragments via ldmatrix.trans */
#pragma unroll
        for (int kk = 0; kk < TC_BK / 16; kk++) {
            unsigned a0 = tc_pack<BF>(s[2 * kk][0], s[2 * kk][1]);
            unsigned a1 = tc_pack<BF>(s[2 * kk][2], s[2 * kk][3]);
            unsigned a2 = tc_pack<BF>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            unsigned a3 = tc_pack<BF>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < DP / 16; dp++) {
                unsigned b0, b1, b2, b3;
                tc_ldm_x4_t(b0, b1, b2, b3, Vs + (kk * 16 + (mi & 1) * 8 + mr) * LD + dp * 16 + (mi >> 1) * 8);
                tc_mma<BF>(acc[2 * dp], a0, a1, a2, a3, b0, b1);
                tc_mma<BF>(acc[2 * dp + 1], a0, a1, a2, a3, b2, b3);
            }
        }
        __syncthreads();   /* everyone is done with this stage before it is refilled */
    }

    /* row sums across the quad, normalize, store float32 */
    const int64_t HD = H * D;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float l = lrow[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        float inv = l > 0.0f ? 1.0f / l : 0.0f;
        int64_t qi = i0 + qr0 + g + r * 8;
        if (qi >= Tq) continue;
        const int64_t orow = (b * Tq + qi) * HD + h * D;
#pragma unroll
        for (int i = 0; i < NDT; i++) {
            int d = i * 8 + 2 * t4;
            if (d < D) tc_store<BF>(o, orow + d, acc[i][2 * r] * inv, ohalf);
            if (d + 1 < D) tc_store<BF>(o, orow + d + 1, acc[i][2 * r + 1] * inv, ohalf);
        }
    }
}

template <int DP, bool BF, bool BIAS>
static cudaError_t tc_launch(cudaStream_t st, void *o, int ohalf, const unsigned short *qh,
                             const unsigned short *kh, const unsigned short *vh, int64_t B,
                             int64_t H, int64_t Tq, int64_t Tk, int64_t Tqp, int64_t Tkp, int D,
                             float scale_log2, int causal, const float *bias_tab) {
    size_t smem = tc_smem_bytes(DP);
    cudaError_t e = cudaFuncSetAttribute(tc_attention_kernel<DP, BF, BIAS>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)(Tqp / TC_BQ), (unsigned)(B * H));
    tc_attention_kernel<DP, BF, BIAS><<<grid, TC_THREADS, smem, st>>>(
        o, ohalf, qh, kh, vh, H, Tq, Tk, Tqp, Tkp, D, scale_log2, causal, bias_tab);
    return cudaGetLastError();
}

/* ---- tc2_attention_kernel: 32 query rows per warp -------------------------------- */

static size_t tc2_smem_bytes(int DP) {
    /* Q (128 rows) + 2 stages × (K, V) (64 rows each), rows of DP + PAD halves:
     * 384 · (DP + 8) · 2 bytes, 104448 at DP = 128 (two blocks per SM fit) */
    return (size_t)(TC2_BQ + 4 * TC_BK) * (DP + TC_PAD) * 2;
}

/* Copies rows [0, ROWS) of a (·, DP) half matrix starting at g into smem rows
 * of DP + PAD halves at shared-window address s, with cp.async: ROWS · DP / 8
 * chunks of 16 bytes, the same number per thread. */
template <int DP, int ROWS>
__device__ __forceinline__ void tc2_load(unsigned s, const unsigned short *g) {
    constexpr int C8 = DP / 8, N = ROWS * C8 / TC_THREADS;
    static_assert(ROWS * C8 % TC_THREADS == 0, "whole chunks per thread");
    static_assert(TC_PAD == 8, "smem row = C8 + 1 chunks");
    /* chunk e = row r · C8 + column c: global g + 8e halves (rows are dense),
     * smem s + 16 (e + r) bytes (rows of C8 + 1 chunks) */
    unsigned tid = threadIdx.x;
    /* C8 not a divisor of THREADS (DP 48, 80, 96): e / C8 is no affine
     * function of i, so there are N separate smem offsets; the thread index
     * read again here (volatile) makes the compiler rebuild them per tile
     * instead of keeping them live across the key loop (they spilled) */
    if (TC_THREADS % C8 != 0) asm volatile("mov.u32 %0, %%tid.x;\n" : "=r"(tid));
    const unsigned short *gt = g + tid * 8;
#pragma unroll
    for (int i = 0; i < N; i++) {
        const unsigned e = tid + i * TC_THREADS;
        tc_cp16s(s + (e + e / C8) * 16, gt + i * TC_THREADS * 8);
    }
}

/* Register cap per padded head dim (__maxnreg__; 255 = none). The kernels
 * sit at the 255-register limit (O: DP registers, S: 64, Q fragments in
 * registers: DP / 2), and what
 * ptxas does there is brittle: at DP = 128, uncapped, it hoists enough K
 * fragment loads to spill the row sums (4 LDL + 4 STL per key tile); capped at
 * 232 it spills nothing (CUDA 13.0). Two blocks of 128 threads per SM need
 * ≤ 256 registers each. Recheck with -Xptxas -v (spill stores / loads 0)
 * after any change to the kernel. */
template <int DP>
struct Tc2Regs {
    static constexpr int max = DP == 128 ? 232 : 255;
};

/* Fragment layouts (m16n8k16, g = lane / 4, t4 = lane % 4):
 *   A (16×16, row-major): a0 (row g, k 2t4..+1), a1 (row g+8, k 2t4..),
 *     a2 (row g, k 8+2t4..), a3 (row g+8, k 8+2t4..);
 *   B (16×8, k × n): b0 (k 2t4..+1, n g), b1 (k 8+2t4.., n g);
 *   C (16×8): c0, c1 (row g, n 2t4, 2t4+1), c2, c3 (row g+8, same n).
 * ldmatrix.x4: lanes 8i..8i+7 give the row addresses of 8×8 matrix i
 * (mi = lane / 8, row mr = lane % 8); register i receives matrix i, lane
 * holding (row g, cols 2t4, 2t4+1) — or with .trans (rows 2t4, 2t4+1, col g).
 *   Q (A of S = Q K^T): matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7),
 *     (rows 0-7, k 8-15), (rows 8-15, k 8-15) → row (mi & 1)·8 + mr, col
 *     (mi >> 1)·8: registers a0..a3.
 *   K (B of S; K is stored key-major, which is the B "col" layout): for the
 *     16 keys of a key pair np, matrices (keys 0-7, d 0-7), (keys 0-7, d 8-15),
 *     (keys 8-15, d 0-7), (keys 8-15, d 8-15) → row (mi >> 1)·8 + mr, col
 *     (mi & 1)·8: b0, b1 of key tile 2np, b0, b1 of key tile 2np + 1.
 *   P (A of O += P V) from the S accumulators: keys 16kk..16kk+15 are S key
 *     tiles 2kk (c0..c3 → a0, a1) and 2kk + 1 (→ a2, a3).
 *   V (B of P V, k = key, n = d; stored key-major, so .trans): matrices
 *     (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15), (keys 8-15,
 *     d 8-15) → row (mi & 1)·8 + mr, col (mi >> 1)·8: b0, b1 of d tile 2dp,
 *     b0, b1 of d tile 2dp + 1.
 * Warp w owns block rows 32w..32w+31, row tile mt = rows 32w + 16mt + 0..15;
 * a thread holds rows g and g + 8 (r = 0, 1) of each row tile.
 * QREG: Q fragments in registers for the whole kernel (DP ≤ 80).
 * BIAS: as in tc_attention_kernel (bias_tab (H, 2T - 1), T = Tq = Tk, added to
 * the raw scores: the S accumulators start from it, so the max below is
 * taken over q·k + bias). */

template <int DP, bool BF, bool QREG, bool BIAS>
__global__ void __maxnreg__(Tc2Regs<DP>::max)
tc2_attention_kernel(void *o, int ohalf, const unsigned short *qh, const unsigned short *kh,
                     const unsigned short *vh, int H, int Tq, int Tk, int64_t Tqp,
                     int64_t Tkp, int D, float scale_log2, int causal, int ovec,
                     const float *bias_tab) {
    constexpr int LD = DP + TC_PAD, LDB = LD * 2;   /* smem row: halves, bytes */
    constexpr int NDT = DP / 8;      /* 8-wide output column tiles */
    constexpr int NKC = DP / 16;     /* 16-deep chunks of the head dim */
    constexpr int NKT = TC_BK / 8;   /* 8-wide key tiles of S */
    constexpr unsigned STAGE = 2 * TC_BK * LDB;   /* bytes of one K + V stage */
    extern __shared__ __align__(16) unsigned short tc_smem[];
    const unsigned sQ = (unsigned)__cvta_generic_to_shared(tc_smem);
    const unsigned sK0 = sQ + TC2_BQ * LDB;       /* stage s: K at sK0 + s·STAGE, V + BK rows */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t4 = lane & 3;
    const int mi = lane >> 3, mr = lane & 7;      /* ldmatrix: matrix, row */

    const int64_t bh = blockIdx.y;
    /* heavy (causal) blocks first */
    const int i0 = (int)(gridDim.x - 1 - blockIdx.x) * TC2_BQ;
    const unsigned short *qg = qh + (bh * Tqp + i0) * DP;
    const unsigned short *kg = kh + bh * Tkp * DP;
    const unsigned short *vg = vh + bh * Tkp * DP;

    const int kend = causal ? (i0 + TC2_BQ < Tk ? i0 + TC2_BQ : Tk) : Tk;
    const int ntiles = (kend + TC_BK - 1) / TC_BK;

    tc2_load<DP, TC2_BQ>(sQ, qg);
    if (ntiles > 0) {
        tc2_load<DP, TC_BK>(sK0, kg);
        tc2_load<DP, TC_BK>(sK0 + TC_BK * LDB, vg);
    }
    tc_commit();

    const int qr0 = warp * 32;   /* this warp's first row in the block */
    /* per-lane ldmatrix addresses; tile offsets are added as constants */
    const unsigned qaddr = sQ + ((qr0 + (mi & 1) * 8 + mr) * LD + (mi >> 1) * 8) * 2;
    const unsigned koff = (((mi >> 1) * 8 + mr) * LD + (mi & 1) * 8) * 2;
    const unsigned voff = TC_BK * LDB + (((mi & 1) * 8 + mr) * LD + (mi >> 1) * 8) * 2;

    unsigned qf[2][QREG ? NKC : 1][4];
    if (QREG) {
        tc_wait<0>();
        __syncthreads();
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int kc = 0; kc < (QREG ? NKC : 1); kc++)
                tc_ldsm(qf[mt][kc], qaddr + mt * 16 * LDB + kc * 32);
    }

    float acc[2][NDT][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int i = 0; i < NDT; i++) acc[mt][i][0] = acc[mt][i][1] = acc[mt][i][2] = acc[mt][i][3] = 0.0f;
    /* running max (log2 units) and sum of rows (mt, r) */
    float mrow[2][2] = {{-INFINITY, -INFINITY}, {-INFINITY, -INFINITY}};
    float lrow[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};

    for (int t = 0; t < ntiles; t++) {
        /* tile t has landed (this thread's copies; the barrier: everyone's),
         * and every warp is done with tile t - 1, whose stage is refilled next */
        tc_wait<0>();
        __syncthreads();
        if (t + 1 < ntiles) {
            const unsigned sn = sK0 + ((t + 1) & 1) * STAGE;
            /* (b, h) from a volatile read: the tile pointers are rebuilt here
             * rather than kept live across the loop */
            unsigned by;
            asm volatile("mov.u32 %0, %%ctaid.y;\n" : "=r"(by));
            const int64_t off = ((int64_t)by * Tkp + (int64_t)(t + 1) * TC_BK) * DP;
            tc2_load<DP, TC_BK>(sn, kh + off);
            tc2_load<DP, TC_BK>(sn + TC_BK * LDB, vh + off);
            tc_commit();
        }
        const int j0 = t * TC_BK;
        /* causal: the tile's keys all come after this warp's last row */
        if (causal && j0 > i0 + qr0 + 31) continue;
        const unsigned sKV = sK0 + (t & 1) * STAGE;

        /* S = Q K^T (+ bias) for the warp's 32 rows × 64 keys (raw scores) */
        float s[2][NKT][4];
        if (BIAS) {
            /* element (mt, nt, e): row i0 + qr0 + mt·16 + g + (e >> 1)·8, key
             * j0 + nt·8 + 2t4 + (e & 1); tab index rel0 + nt·8 + (e & 1) - mt·16
             * - (e >> 1)·8. Rows / keys past T (padding) read nothing: 0 (the
             * keys are masked below, the rows never stored). (b, h) again from
             * a volatile read, as above. */
            unsigned by;
            asm volatile("mov.u32 %0, %%ctaid.y;\n" : "=r"(by));
            const int h = (int)by % H;
            const float *th = bias_tab + (int64_t)h * (2 * Tk - 1);
            const int rel0 = j0 - (i0 + qr0) + 2 * t4 - g + Tk - 1;
            if (j0 + TC_BK <= Tk && i0 + qr0 + 32 <= Tq) {
                const float *tp = th + rel0;
#pragma unroll
                for (int mt = 0; mt < 2; mt++)
#pragma unroll
                    for (int nt = 0; nt < NKT; nt++)
#pragma unroll
                        for (int e = 0; e < 4; e++)
                            s[mt][nt][e] = __ldg(tp + nt * 8 + (e & 1) - mt * 16 - (e >> 1) * 8);
            } else {
#pragma unroll
                for (int mt = 0; mt < 2; mt++)
#pragma unroll
                    for (int nt = 0; nt < NKT; nt++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const int j = j0 + nt * 8 + 2 * t4 + (e & 1);
                            const int qi = i0 + qr0 + mt * 16 + g + (e >> 1) * 8;
                            s[mt][nt][e] = j < Tk && qi < Tq
                                               ? __ldg(th + rel0 + nt * 8 + (e & 1) - mt * 16 - (e >> 1) * 8)
                                               : 0.0f;
                        }
            }
        } else {
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int i = 0; i < NKT; i++) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.0f;
        }
#pragma unroll
        for (int kc = 0; kc < NKC; kc++) {
            unsigned a[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                if (QREG) {
#pragma unroll
                    for (int e = 0; e < 4; e++) a[mt][e] = qf[mt][QREG ? kc : 0][e];
                } else {
                    tc_ldsm(a[mt], qaddr + mt * 16 * LDB + kc * 32);
                }
            }
#pragma unroll
            for (int np = 0; np < NKT / 2; np++) {
                unsigned bk[4];
                tc_ldsm(bk, sKV + koff + np * 16 * LDB + kc * 32);
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    tc_mma<BF>(s[mt][2 * np], a[mt][0], a[mt][1], a[mt][2], a[mt][3], bk[0], bk[1]);
                    tc_mma<BF>(s[mt][2 * np + 1], a[mt][0], a[mt][1], a[mt][2], a[mt][3], bk[2], bk[3]);
                }
            }
        }

        /* mask: keys past Tk, and (causal) keys after the query row */
        const bool need_mask = j0 + TC_BK > Tk || (causal && j0 + TC_BK - 1 > i0 + qr0);
        if (need_mask) {
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int nt = 0; nt < NKT; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int j = j0 + nt * 8 + 2 * t4 + (e & 1);
                        const int qi = i0 + qr0 + mt * 16 + g + (e >> 1) * 8;
                        if (j >= Tk || (causal && j > qi)) s[mt][nt][e] = -INFINITY;
                    }
        }

        /* online softmax of rows (mt, r) (s: q·k [+ bias]); scale > 0, so
         * max(s · c) = max(s) · c */
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int r = 0; r < 2; r++) {
                float mx = -INFINITY;
#pragma unroll
                for (int nt = 0; nt < NKT; nt++)
                    mx = fmaxf(mx, fmaxf(s[mt][nt][2 * r], s[mt][nt][2 * r + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float mnew = fmaxf(mrow[mt][r], mx * scale_log2);
                const float muse = mnew == -INFINITY ? 0.0f : mnew;
                const float alpha = tc_exp2(mrow[mt][r] - muse);
                mrow[mt][r] = mnew;
                float ps = 0.0f;
#pragma unroll
                for (int nt = 0; nt < NKT; nt++) {
                    const float p0 = tc_exp2(fmaf(s[mt][nt][2 * r], scale_log2, -muse));
                    const float p1 = tc_exp2(fmaf(s[mt][nt][2 * r + 1], scale_log2, -muse));
                    s[mt][nt][2 * r] = p0;
                    s[mt][nt][2 * r + 1] = p1;
                    ps += p0 + p1;
                }
                lrow[mt][r] = lrow[mt][r] * alpha + ps;
#pragma unroll
                for (int i = 0; i < NDT; i++) {
                    acc[mt][i][2 * r] *= alpha;
                    acc[mt][i][2 * r + 1] *= alpha;
                }
            }

        /* O += P V: P from the S registers, V^T fragments via ldmatrix.trans */
#pragma unroll
        for (int kk = 0; kk < TC_BK / 16; kk++) {
            unsigned pa[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                pa[mt][0] = tc_pack<BF>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                pa[mt][1] = tc_pack<BF>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                pa[mt][2] = tc_pack<BF>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                pa[mt][3] = tc_pack<BF>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < NKC; dp++) {
                unsigned bv[4];
                tc_ldsm_t(bv, sKV + voff + kk * 16 * LDB + dp * 32);
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    tc_mma<BF>(acc[mt][2 * dp], pa[mt][0], pa[mt][1], pa[mt][2], pa[mt][3], bv[0], bv[1]);
                    tc_mma<BF>(acc[mt][2 * dp + 1], pa[mt][0], pa[mt][1], pa[mt][2], pa[mt][3], bv[2], bv[3]);
                }
            }
        }
    }

    /* row sums across the quad, normalize, store float32 (b, h computed only
     * here: nothing but the accumulators lives across the loop) */
    const int b = (int)blockIdx.y / H, h = (int)blockIdx.y % H;
    const int64_t HD = (int64_t)H * D;
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float l = lrow[mt][r];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const float inv = l > 0.0f ? 1.0f / l : 0.0f;
            const int qi = i0 + qr0 + mt * 16 + g + r * 8;
            if (qi >= Tq) continue;
            const int64_t orow = ((int64_t)b * Tq + qi) * HD + (int64_t)h * D;
#pragma unroll
            for (int i = 0; i < NDT; i++) {
                const int d = i * 8 + 2 * t4;
                const float v0 = acc[mt][i][2 * r] * inv, v1 = acc[mt][i][2 * r + 1] * inv;
                if (ovec) {   /* D even, o 8-byte (halves: 4-byte) aligned: d < D ⇔ d + 1 < D */
                    if (d < D) {
                        if (ohalf)
                            *(unsigned *)((unsigned short *)o + orow + d) = tc_pack<BF>(v0, v1);
                        else
                            *(float2 *)((float *)o + orow + d) = make_float2(v0, v1);
                    }
                } else {
                    if (d < D) tc_store<BF>(o, orow + d, v0, ohalf);
                    if (d + 1 < D) tc_store<BF>(o, orow + d + 1, v1, ohalf);
                }
            }
        }
}

template <int DP, bool BF, bool BIAS>
static cudaError_t tc2_launch(cudaStream_t st, void *o, int ohalf, const unsigned short *qh,
                              const unsigned short *kh, const unsigned short *vh, int64_t B,
                              int64_t H, int64_t Tq, int64_t Tk, int64_t Tqp, int64_t Tkp, int D,
                              float scale_log2, int causal, const float *bias_tab) {
    /* DP 96 with Q in registers spilled, and DP 80 with the bias */
    constexpr bool QREG = DP <= (BIAS ? 64 : 80);
    const size_t smem = tc2_smem_bytes(DP);
    cudaError_t e = cudaFuncSetAttribute(tc2_attention_kernel<DP, BF, QREG, BIAS>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    /* two blocks per SM at DP = 128 need 2 · 102 KB of the shared/L1 carveout */
    e = cudaFuncSetAttribute(tc2_attention_kernel<DP, BF, QREG, BIAS>,
                             cudaFuncAttributePreferredSharedMemoryCarveout,
                             cudaSharedmemCarveoutMaxShared);
    if (e != cudaSuccess) return e;
    const int ovec = D % 2 == 0 && ((uintptr_t)o & (ohalf ? 3 : 7)) == 0;
    dim3 grid((unsigned)(Tqp / TC2_BQ), (unsigned)(B * H));
    tc2_attention_kernel<DP, BF, QREG, BIAS><<<grid, TC_THREADS, smem, st>>>(
        o, ohalf, qh, kh, vh, (int)H, (int)Tq, (int)Tk, Tqp, Tkp, D, scale_log2, causal, ovec, bias_tab);
    return cudaGetLastError();
}

/* The padded head dim the kernel is instantiated for: D rounded up to 16, then
 * to the next of 16, 32, 48, 64, 80, 96, 128, 160, 192, 256. */
static int tc_padded_dim(int64_t D) {
    static const int dims[] = {16, 32, 48, 64, 80, 96, 128, 160, 192, 256};
    for (int i = 0; i < (int)(sizeof dims / sizeof dims[0]); i++)
        if (D <= dims[i]) return dims[i];
    return 0;
}

typedef cudaError_t (*tc_launch_fn)(cudaStream_t, void *, int, const unsigned short *,
                                    const unsigned short *, const unsigned short *, int64_t,
                                    int64_t, int64_t, int64_t, int64_t, int64_t, int, float, int,
                                    const float *);

template <bool BF, bool BIAS>
static tc_launch_fn tc_pick(int DP) {
    switch (DP) {
    case 16: return tc_launch<16, BF, BIAS>;
    case 32: return tc_launch<32, BF, BIAS>;
    case 48: return tc_launch<48, BF, BIAS>;
    case 64: return tc_launch<64, BF, BIAS>;
    case 80: return tc_launch<80, BF, BIAS>;
    case 96: return tc_launch<96, BF, BIAS>;
    case 128: return tc_launch<128, BF, BIAS>;
    case 160: return tc_launch<160, BF, BIAS>;
    case 192: return tc_launch<192, BF, BIAS>;
    case 256: return tc_launch<256, BF, BIAS>;
    default: return NULL;
    }
}

template <bool BF, bool BIAS>
static tc_launch_fn tc2_pick(int DP) {
    switch (DP) {
    case 16: return tc2_launch<16, BF, BIAS>;
    case 32: return tc2_launch<32, BF, BIAS>;
    case 48: return tc2_launch<48, BF, BIAS>;
    case 64: return tc2_launch<64, BF, BIAS>;
    case 80: return tc2_launch<80, BF, BIAS>;
    case 96: return tc2_launch<96, BF, BIAS>;
    case 128: return tc2_launch<128, BF, BIAS>;
    default: return NULL;
    }
}

/* Returns 1 when it handled the call (launched, or recorded a failure on d),
 * 0 when the shape is outside what it supports (the caller runs FP32).
 * Expects B, Tq, Tk, H, D > 0; with bias_tab, Tq = Tk. */
static int tc_attention_run(tdm_device_t *d, void *o, const void *q, const void *k,
                            const void *v, int ihalf, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                            int64_t D, float scale, int causal, const float *bias_tab) {
    const bool bf = d->gemm_dtype == TDM_BF16;
    const int DP = tc_padded_dim(D);
    const int64_t BH = B * H;
    const float scale_log2 = scale * 1.4426950408889634f;
    /* the 32-row kernel: DP ≤ 128, scale > 0 (its max is taken before scaling),
     * more query rows than one 64-row block (else half its rows would be
     * padding), token counts within int */
    const bool two = DP != 0 && DP <= 128 && scale_log2 > 0.0f && !d->opts.attn_tc_16row &&
                     Tq > TC_BQ && Tq <= 0x7fffffffLL - TC2_BQ && Tk <= 0x7fffffffLL - TC_BK;
    const int64_t BQ = two ? TC2_BQ : TC_BQ;
    const int64_t Tqp = (Tq + BQ - 1) / BQ * BQ, Tkp = (Tk + TC_BK - 1) / TC_BK * TC_BK;
    if (DP == 0 || BH > 65535 || Tqp / BQ > 0x7fffffff) return 0;
    if (Tqp * (DP / 8) > 0x7fffffffLL || Tkp * (DP / 8) > 0x7fffffffLL) return 0;   /* tc_convert */
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    const int64_t nq = BH * Tqp * DP, nk = BH * Tkp * DP;   /* halves */
    unsigned short *qh = (unsigned short *)tdm_cuda_stage(d, (nq + 2 * nk) * 2);
    if (!qh) return 1;   /* the failure is recorded */
    unsigned short *kh = qh + nq, *vh = kh + nk;
    {
        TcConvArgs a;
        const void *src[3] = {q, k, v};
        unsigned short *dst[3] = {qh, kh, vh};
        const int64_t T[3] = {Tq, Tk, Tk}, Tp[3] = {Tqp, Tkp, Tkp};
        for (int i = 0; i < 3; i++) {
            a.job[i].dst = (uint4 *)dst[i];
            a.job[i].src = src[i];
            a.job[i].T = T[i];
            a.job[i].Tp = Tp[i];
            a.job[i].vec = D % (ihalf ? 8 : 4) == 0 && ((uintptr_t)src[i] & 15) == 0;
        }
        a.H = H;
        a.D = (int)D;
        a.DP = DP;
        a.ihalf = ihalf;
        const int64_t n8 = (Tqp > Tkp ? Tqp : Tkp) * (DP / 8);   /* chunks of one head */
        int64_t nbx = (n8 + TDM_CUDA_THREADS - 1) / TDM_CUDA_THREADS;
        if (nbx > 65535) nbx = 65535;   /* the loop strides over the rest */
        dim3 grid((unsigned)nbx, (unsigned)BH, 3);
        if (bf)
            tc_convert<true><<<grid, TDM_CUDA_THREADS, 0, c->stream>>>(a);
        else
            tc_convert<false><<<grid, TDM_CUDA_THREADS, 0, c->stream>>>(a);
        TDM_CUDA_LAUNCHED("tc_convert");
    }
    {
        tc_launch_fn fn;
        if (bias_tab)
            fn = two ? (bf ? tc2_pick<true, true>(DP) : tc2_pick<false, true>(DP))
                     : (bf ? tc_pick<true, true>(DP) : tc_pick<false, true>(DP));
        else
            fn = two ? (bf ? tc2_pick<true, false>(DP) : tc2_pick<false, false>(DP))
                     : (bf ? tc_pick<true, false>(DP) : tc_pick<false, false>(DP));
        TDM_CUDA_CHECK(fn(c->stream, o, ihalf, qh, kh, vh, B, H, Tq, Tk, Tqp, Tkp, (int)D, scale_log2,
                          causal, bias_tab));
        TDM_CUDA_LAUNCHED("tc_attention_kernel / tc2_attention_kernel");
    }
fail:
    return 1;
}

extern "C" int tdm_cuda_attention_tc(tdm_device_t *d, void *o, const void *q, const void *k,
                                     const void *v, int ihalf, int64_t B, int64_t Tq, int64_t Tk,
                                     int64_t H, int64_t D, float scale, int causal) {
    return tc_attention_run(d, o, q, k, v, ihalf, B, Tq, Tk, H, D, scale, causal, NULL);
}

/* Attention with the relative position bias of tdm_cuda_attention_bias (tab
 * (H, 2T - 1) float32 on the device, tab[h·(2T-1) + j - i + T - 1] added to
 * the score q_i·k_j before the scale), no mask, Tq = Tk = T. Returns 0 (nothing
 * queued) when gemm_dtype is not F16 / BF16 or the shape is unsupported. */
extern "C" int tdm_cuda_attention_tc_bias(tdm_device_t *d, void *o, const void *q,
                                          const void *k, const void *v, int ihalf,
                                          const float *tab, int64_t B, int64_t T, int64_t H,
                                          int64_t D, float scale) {
    if (d->gemm_dtype != TDM_F16 && d->gemm_dtype != TDM_BF16) return 0;
    if (!tab || B <= 0 || T <= 0 || H <= 0 || D <= 0) return 0;
    if (T > (1LL << 29) || H * (2 * T - 1) > 0x7fffffffLL) return 0;   /* int tab indices */
    return tc_attention_run(d, o, q, k, v, ihalf, B, T, T, H, D, scale, 0, tab);
}
