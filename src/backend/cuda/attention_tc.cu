/* attention_tc.cu — multi-head attention on the tensor cores (FP16 or BF16
 * operands, FP32 accumulation and softmax), used by tdm_cuda_attention when
 * the device's gemm_dtype is TDM_F16 / TDM_BF16. Same contract as the FP32
 * kernel in attention.cu: q (B, Tq, H·D), k, v (B, Tk, H·D) float32 →
 * o (B, Tq, H·D) float32, o = softmax(q k^T · scale [+ top-left causal]) v.
 *
 * Two launches:
 *  1. tc_convert: q, k and v (float32, tokens-major) → half/bf16 copies in
 *     the device's staging buffer, head-major (B·H, Tp, DP): DP = D rounded
 *     up to the kernel's padded head dim (a multiple of 16), Tp = T rounded up
 *     to 64; the padding is zeros. One pass over the inputs; afterwards every
 *     tile of the attention kernel is a contiguous, aligned 64 × DP block.
 *  2. tc_attention_kernel (flash style, FlashAttention-2 layout): a block of
 *     4 warps takes 64 query rows of one (batch, head), 16 rows per warp.
 *     Key/value tiles of 64 rows stream through shared memory with cp.async,
 *     two stages deep (the next tile loads while this one is computed).
 *     S = Q K^T per warp with mma.sync m16n8k16 (fragments via ldmatrix),
 *     kept in registers; online softmax in float32 (scores scaled to log2
 *     units, exp2; causal / tail mask only on the tiles that need it); P is
 *     rounded to half/bf16 in registers — the S accumulator layout is the A-operand
 *     layout of the next mma — and O += P V with V fragments through
 *     ldmatrix.trans. O stays in float32 registers; the row sums are reduced
 *     across the quad once at the end. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>

#include "backend/cuda/cuda_common.cuh"

#define TC_BQ 64        /* query rows per block (16 per warp) */
#define TC_BK 64        /* keys per tile */
#define TC_WARPS 4
#define TC_THREADS (TC_WARPS * 32)
#define TC_PAD 8        /* halves of padding per smem row: conflict-free ldmatrix */

/* ---- conversion ------------------------------------------------------------------ */

template <bool BF>
__device__ __forceinline__ unsigned short tc_bits(float x) {
    if (BF) return __bfloat16_as_ushort(__float2bfloat16_rn(x));
    return __half_as_ushort(__float2half_rn(x));
}

/* dst (BH, Tp, DP) halves from src (B, T, H·D) floats; zero padding. One
 * thread writes 8 halves (16 bytes). */
template <bool BF>
__global__ void tc_convert(uint4 *dst, const float *src, int64_t BH, int64_t H, int64_t T,
                           int64_t Tp, int D, int DP) {
    const int c8n = DP / 8;
    const int64_t n = BH * Tp * c8n;
    const int64_t HD = H * D;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int c8 = (int)(i % c8n);
        int64_t r = i / c8n;
        int64_t t = r % Tp, bh = r / Tp;
        int64_t b = bh / H, h = bh % H;
        unsigned short e[8];
        const float *s = src + (b * T + t) * HD + h * D;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            int d = c8 * 8 + j;
            e[j] = tc_bits<BF>(t < T && d < D ? s[d] : 0.0f);
        }
        uint4 w;
        w.x = (unsigned)e[0] | ((unsigned)e[1] << 16);
        w.y = (unsigned)e[2] | ((unsigned)e[3] << 16);
        w.z = (unsigned)e[4] | ((unsigned)e[5] << 16);
        w.w = (unsigned)e[6] | ((unsigned)e[7] << 16);
        dst[i] = w;
    }
}

/* ---- PTX helpers ----------------------------------------------------------------- */

__device__ __forceinline__ void tc_cp16(void *smem, const void *gmem) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sa), "l"(gmem) : "memory");
}
__device__ __forceinline__ void tc_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void tc_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void tc_ldm_x4(unsigned &r0, unsigned &r1, unsigned &r2, unsigned &r3,
                                          const void *smem) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(sa));
}
__device__ __forceinline__ void tc_ldm_x4_t(unsigned &r0, unsigned &r1, unsigned &r2,
                                            unsigned &r3, const void *smem) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(sa));
}

/* c += a · b, m16n8k16, row-major A, column-major B, float32 accumulators */
template <bool BF>
__device__ __forceinline__ void tc_mma(float *c, unsigned a0, unsigned a1, unsigned a2,
                                       unsigned a3, unsigned b0, unsigned b1) {
    if (BF)
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
            "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    else
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, "
            "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* two floats → packed half2/bf162, lo in the low 16 bits */
template <bool BF>
__device__ __forceinline__ unsigned tc_pack(float lo, float hi) {
    return (unsigned)tc_bits<BF>(lo) | ((unsigned)tc_bits<BF>(hi) << 16);
}

__device__ __forceinline__ float tc_exp2(float x) {   /* 2^x; -inf → 0 */
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* ---- attention kernel ------------------------------------------------------------ */

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

template <int DP, bool BF>
__global__ void __launch_bounds__(TC_THREADS)
tc_attention_kernel(float *o, const unsigned short *qh, const unsigned short *kh,
                    const unsigned short *vh, int64_t H, int64_t Tq, int64_t Tk, int64_t Tqp,
                    int64_t Tkp, int D, float scale_log2, int causal) {
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

        /* S = Q K^T for the warp's 16 rows × 64 keys */
        float s[NKT][4];
#pragma unroll
        for (int i = 0; i < NKT; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
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

        /* scores in log2 units; mask: keys past Tk, and (causal) keys after the query */
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
        float *orow = o + (b * Tq + qi) * HD + h * D;
#pragma unroll
        for (int i = 0; i < NDT; i++) {
            int d = i * 8 + 2 * t4;
            if (d < D) orow[d] = acc[i][2 * r] * inv;
            if (d + 1 < D) orow[d + 1] = acc[i][2 * r + 1] * inv;
        }
    }
}

template <int DP, bool BF>
static cudaError_t tc_launch(cudaStream_t st, float *o, const unsigned short *qh,
                             const unsigned short *kh, const unsigned short *vh, int64_t B,
                             int64_t H, int64_t Tq, int64_t Tk, int64_t Tqp, int64_t Tkp, int D,
                             float scale_log2, int causal) {
    size_t smem = tc_smem_bytes(DP);
    cudaError_t e = cudaFuncSetAttribute(tc_attention_kernel<DP, BF>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)(Tqp / TC_BQ), (unsigned)(B * H));
    tc_attention_kernel<DP, BF><<<grid, TC_THREADS, smem, st>>>(o, qh, kh, vh, H, Tq, Tk, Tqp,
                                                                Tkp, D, scale_log2, causal);
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

typedef cudaError_t (*tc_launch_fn)(cudaStream_t, float *, const unsigned short *,
                                    const unsigned short *, const unsigned short *, int64_t,
                                    int64_t, int64_t, int64_t, int64_t, int64_t, int, float, int);

template <bool BF>
static tc_launch_fn tc_pick(int DP) {
    switch (DP) {
    case 16: return tc_launch<16, BF>;
    case 32: return tc_launch<32, BF>;
    case 48: return tc_launch<48, BF>;
    case 64: return tc_launch<64, BF>;
    case 80: return tc_launch<80, BF>;
    case 96: return tc_launch<96, BF>;
    case 128: return tc_launch<128, BF>;
    case 160: return tc_launch<160, BF>;
    case 192: return tc_launch<192, BF>;
    case 256: return tc_launch<256, BF>;
    default: return NULL;
    }
}

/* Returns 1 when it handled the call (launched, or recorded a failure on d),
 * 0 when the shape is outside what it supports (the caller runs FP32).
 * Expects B, Tq, Tk, H, D > 0. */
extern "C" int tdm_cuda_attention_tc(tdm_device_t *d, float *o, const float *q, const float *k,
                                     const float *v, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                                     int64_t D, float scale, int causal) {
    const bool bf = d->gemm_dtype == TDM_BF16;
    const int DP = tc_padded_dim(D);
    const int64_t BH = B * H;
    const int64_t Tqp = (Tq + TC_BQ - 1) / TC_BQ * TC_BQ, Tkp = (Tk + TC_BK - 1) / TC_BK * TC_BK;
    if (DP == 0 || BH > 65535 || Tqp / TC_BQ > 0x7fffffff) return 0;
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    const int64_t nq = BH * Tqp * DP, nk = BH * Tkp * DP;   /* halves */
    unsigned short *qh = (unsigned short *)tdm_cuda_stage(d, (nq + 2 * nk) * 2);
    if (!qh) return 1;   /* the failure is recorded */
    unsigned short *kh = qh + nq, *vh = kh + nk;
    {
        const float *src[3] = {q, k, v};
        unsigned short *dst[3] = {qh, kh, vh};
        const int64_t T[3] = {Tq, Tk, Tk}, Tp[3] = {Tqp, Tkp, Tkp};
        for (int i = 0; i < 3; i++) {
            int64_t n8 = BH * Tp[i] * (DP / 8);
            unsigned nb = tdm_cuda_blocks(n8, TDM_CUDA_THREADS);
            if (bf)
                tc_convert<true><<<nb, TDM_CUDA_THREADS, 0, c->stream>>>(
                    (uint4 *)dst[i], src[i], BH, H, T[i], Tp[i], (int)D, DP);
            else
                tc_convert<false><<<nb, TDM_CUDA_THREADS, 0, c->stream>>>(
                    (uint4 *)dst[i], src[i], BH, H, T[i], Tp[i], (int)D, DP);
            TDM_CUDA_LAUNCHED("tc_convert");
        }
    }
    {
        tc_launch_fn fn = bf ? tc_pick<true>(DP) : tc_pick<false>(DP);
        const float scale_log2 = scale * 1.4426950408889634f;
        TDM_CUDA_CHECK(fn(c->stream, o, qh, kh, vh, B, H, Tq, Tk, Tqp, Tkp, (int)D, scale_log2,
                          causal));
        TDM_CUDA_LAUNCHED("tc_attention_kernel");
    }
fail:
    return 1;
}
