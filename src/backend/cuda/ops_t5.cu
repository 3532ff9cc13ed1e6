/* ops_t5.cu — CUDA launchers and kernels of the T5 encoder ops: RMS norm,
 * ReLU, element-wise product and self-attention with an additive relative
 * position bias, each with exactly the semantics of its CPU reference in
 * backend/cpu/ops.c. Every launcher queues on the device's stream and
 * returns at once; a failure is kept on the device (see device.cu) and
 * reported by the next sync / download. All index arithmetic is 64-bit.
 * Kernels are static (file-local): other .cu files may reuse their names. */
#include <math.h>

#include "backend/cuda/cuda_common.cuh"

#define GRID_STRIDE(i, n)                                                          \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n);      \
         i += (int64_t)gridDim.x * blockDim.x)

/* ---- RMS norm ----------------------------------------------------------------
 * One block per row: the sum of squares in double (as the CPU reference),
 * the mean rounded to float, then y = w · (x · inv) in float. Every thread
 * has read its elements of x before the reduction's barriers and each
 * element is read and written by the same thread afterwards, so y may alias
 * x. */


/* x, y (rows, D): block r normalizes row r. */
template <typename Y>
static __global__ void rms_norm_kernel(Y *y, const float *x, const float *w, int64_t D,
                                       float eps) {
    __shared__ double sh[32];
    const float *xr = x + (int64_t)blockIdx.x * D;
    Y *yr = y + (int64_t)blockIdx.x * D;
    double ss = 0;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) ss += (double)xr[i] * (double)xr[i];
    float var = (float)(tdm_block_sum(ss, sh) / (double)D);
    float inv = 1.0f / sqrtf(var + eps);
    __syncthreads();
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
        tdm_st(yr + i, (w ? w[i] : 1.0f) * (xr[i] * inv));
}

extern "C" void tdm_cuda_rms_norm_t(tdm_device_t *d, tdm_dtype at, void *y, const float *x,
                                    const float *w, int64_t rows, int64_t D, float eps) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    if (rows <= 0 || D <= 0) return;
    for (int64_t r0 = 0; r0 < rows; r0 += 0x7fffffff) {   /* grid.x limit */
        int64_t nr = rows - r0 < 0x7fffffff ? rows - r0 : 0x7fffffff;
        int threads = D >= 1024 ? 256 : D >= 256 ? 128 : 64;
        TDM_ACT_DISPATCH(at, Y,
            rms_norm_kernel<Y><<<(unsigned)nr, threads, 0, c->stream>>>((Y *)y + r0 * D,
                                                                        x + r0 * D, w, D, eps));
        TDM_CUDA_LAUNCHED("rms_norm_kernel");
    }
fail:;
}

extern "C" void tdm_cuda_rms_norm(tdm_device_t *d, float *y, const float *x, const float *w,
                                  int64_t rows, int64_t D, float eps) {
    tdm_cuda_rms_norm_t(d, TDM_F32, y, x, w, rows, D, eps);
}

/* ---- element-wise ------------------------------------------------------------ */

static __global__ void relu_kernel(float *x, int64_t n) {
    GRID_STRIDE(i, n) x[i] = x[i] > 0.0f ? x[i] : 0.0f;   /* NaN becomes 0, as the CPU op */
}

template <typename T>
static __global__ void mul_kernel(T *y, const T *a, const T *b, int64_t n) {
    GRID_STRIDE(i, n) tdm_st(y + i, tdm_ld(a + i) * tdm_ld(b + i));
}

extern "C" void tdm_cuda_relu(tdm_device_t *d, float *x, int64_t n) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    if (n <= 0) return;
    relu_kernel<<<tdm_cuda_blocks(n, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0, c->stream>>>(x, n);
    TDM_CUDA_LAUNCHED("relu_kernel");
fail:;
}

extern "C" void tdm_cuda_mul_t(tdm_device_t *d, tdm_dtype at, void *y, const void *a,
                               const void *b, int64_t n) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    if (n <= 0) return;
    TDM_ACT_DISPATCH(at, T,
        mul_kernel<T><<<tdm_cuda_blocks(n, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0, c->stream>>>(
            (T *)y, (const T *)a, (const T *)b, n));
    TDM_CUDA_LAUNCHED("mul_kernel");
fail:;
}

extern "C" void tdm_cuda_mul(tdm_device_t *d, float *y, const float *a, const float *b,
                             int64_t n) {
    tdm_cuda_mul_t(d, TDM_F32, y, a, b, n);
}

/* ---- attention with a relative position bias ----------------------------------
 * With gemm_dtype F16 / BF16, tdm_cuda_attention_bias hands the call to the
 * tensor-core kernels of attention_tc.cu (tdm_cuda_attention_tc_bias); what
 * follows is the FP32 path.
 * The flash-style kernel of attention.cu (one pass over the keys, online
 * softmax, no T × T score matrix, no scratch) with scale 1, no mask, Tq = Tk
 * = T, and the bias tab[h·(2T-1) + j - i + T - 1] added to each score.
 *
 * Work split: a block of 8 warps takes 32 query rows of one (batch, head);
 * each warp owns 4 rows. Keys go through shared memory in tiles of 32: lane j
 * scores key j against the warp's 4 rows (K rows padded to D+1 floats), the
 * warp updates the running max / sum with shuffle reductions, then every lane
 * accumulates its own output dims (d = lane + 32·i) over the tile's keys.
 * Plain FP32 FMAs; no tensor cores. */
#define ATB_WARPS 8
#define ATB_ROWS 4                          /* query rows per warp */
#define ATB_BQ (ATB_WARPS * ATB_ROWS)       /* query rows per block */
#define ATB_BK 32                           /* keys per tile: one per lane */
#define ATB_DMAX 256

static size_t atb_smem_bytes(int64_t D) {
    /* Qs (BQ, D), Ks (BK, D+1), Vs (BK, D) */
    return (size_t)(ATB_BQ * D + ATB_BK * (D + 1) + ATB_BK * D) * sizeof(float);
}

/* ND = ceil(D / 32) output dims per lane. */
template <int ND>
static __global__ void __launch_bounds__(ATB_WARPS * 32)
attention_bias_kernel(float *o, const float *q, const float *k, const float *v, const float *tab,
                      int64_t BH, int64_t H, int64_t T, int D) {
    extern __shared__ float smem[];
    float *Qs = smem;
    float *Ks = Qs + ATB_BQ * D;
    float *Vs = Ks + ATB_BK * (D + 1);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nthr = blockDim.x;
    const int rbase = warp * ATB_ROWS;
    const int64_t HD = H * D, TT = 2 * T - 1;
    const int64_t i0 = (int64_t)blockIdx.x * ATB_BQ;

    for (int64_t bh = blockIdx.y; bh < BH; bh += gridDim.y) {
        const int64_t b = bh / H, h = bh % H;
        const float *qb = q + b * T * HD + h * D;
        const float *kb = k + b * T * HD + h * D;
        const float *vb = v + b * T * HD + h * D;
        const float *th = tab + h * TT;
        float *ob = o + b * T * HD + h * D;

        __syncthreads();   /* the previous (batch, head) is done with Qs */
        for (int e = threadIdx.x; e < ATB_BQ * D; e += nthr) {
            int r = e / D, dd = e % D;
            int64_t qi = i0 + r;
            Qs[e] = qi < T ? qb[qi * HD + dd] : 0.0f;
        }

        float m[ATB_ROWS], l[ATB_ROWS], acc[ATB_ROWS][ND];
#pragma unroll
        for (int r = 0; r < ATB_ROWS; r++) {
            m[r] = -INFINITY;
            l[r] = 0.0f;
#pragma unroll
            for (int i = 0; i < ND; i++) acc[r][i] = 0.0f;
        }

        for (int64_t j0 = 0; j0 < T; j0 += ATB_BK) {
            __syncthreads();   /* everyone is done with the previous tile */
            for (int e = threadIdx.x; e < ATB_BK * D; e += nthr) {
                int jr = e / D, dd = e % D;
                int64_t j = j0 + jr;
                bool in = j < T;
                Ks[jr * (D + 1) + dd] = in ? kb[j * HD + dd] : 0.0f;
                Vs[jr * D + dd] = in ? vb[j * HD + dd] : 0.0f;
            }
            __syncthreads();

            /* scores of key j0 + lane against the warp's rows */
            float s[ATB_ROWS];
#pragma unroll
            for (int r = 0; r < ATB_ROWS; r++) s[r] = 0.0f;
            const float *kr = Ks + lane * (D + 1);
            const float *qr = Qs + rbase * D;
            for (int dd = 0; dd < D; dd++) {
                float kv = kr[dd];
#pragma unroll
                for (int r = 0; r < ATB_ROWS; r++) s[r] = fmaf(qr[r * D + dd], kv, s[r]);
            }

            /* bias, online softmax update; s[r] becomes the probability weight */
            const int64_t j = j0 + lane;
#pragma unroll
            for (int r = 0; r < ATB_ROWS; r++) {
                int64_t qi = i0 + rbase + r;
                bool vis = j < T && qi < T;
                float sc = vis ? s[r] + th[j - qi + T - 1] : -INFINITY;
                float mt = sc;
                for (int off = 16; off > 0; off >>= 1)
                    mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, off));
                float mn = fmaxf(m[r], mt);
                float p = 0.0f, alpha = 1.0f;
                if (mn != -INFINITY) {
                    p = vis ? expf(sc - mn) : 0.0f;
                    alpha = expf(m[r] - mn);   /* 0 when m[r] was -inf */
                }
                float ps = p;
                for (int off = 16; off > 0; off >>= 1)
                    ps += __shfl_xor_sync(0xffffffffu, ps, off);
                l[r] = l[r] * alpha + ps;
                m[r] = mn;
#pragma unroll
                for (int i = 0; i < ND; i++) acc[r][i] *= alpha;
                s[r] = p;
            }

            /* acc[r][d] += Σ_jj p[r][jj] · V[jj][d] over the tile */
            int nk = T - j0 < ATB_BK ? (int)(T - j0) : ATB_BK;
            for (int jj = 0; jj < nk; jj++) {
                float pj[ATB_ROWS];
#pragma unroll
                for (int r = 0; r < ATB_ROWS; r++) pj[r] = __shfl_sync(0xffffffffu, s[r], jj);
                const float *vr = Vs + jj * D;
#pragma unroll
                for (int i = 0; i < ND; i++) {
                    int dd = lane + 32 * i;
                    if (dd < D) {
                        float vv = vr[dd];
#pragma unroll
                        for (int r = 0; r < ATB_ROWS; r++) acc[r][i] = fmaf(pj[r], vv, acc[r][i]);
                    }
                }
            }
        }

#pragma unroll
        for (int r = 0; r < ATB_ROWS; r++) {
            int64_t qi = i0 + rbase + r;
            if (qi >= T) continue;
            float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
#pragma unroll
            for (int i = 0; i < ND; i++) {
                int dd = lane + 32 * i;
                if (dd < D) ob[qi * HD + dd] = acc[r][i] * inv;
            }
        }
    }
}

template <int ND>
static cudaError_t launch_attention_bias(cudaStream_t st, float *o, const float *q, const float *k,
                                         const float *v, const float *tab, int64_t B, int64_t T,
                                         int64_t H, int64_t D) {
    size_t smem = atb_smem_bytes(D);
    cudaError_t e = cudaFuncSetAttribute(attention_bias_kernel<ND>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    int64_t BH = B * H;
    dim3 grid((unsigned)((T + ATB_BQ - 1) / ATB_BQ), (unsigned)(BH < 65535 ? BH : 65535));
    attention_bias_kernel<ND><<<grid, ATB_WARPS * 32, smem, st>>>(o, q, k, v, tab, BH, H, T,
                                                                  (int)D);
    return cudaSuccess;
}

extern "C" int64_t tdm_cuda_attention_bias_scratch(tdm_device_t *d, int64_t T) {
    (void)d;
    (void)T;
    return 0;
}

extern "C" void tdm_cuda_attention_bias(tdm_device_t *d, float *o, const float *q, const float *k,
                                        const float *v, const float *tab, float *s, int64_t B,
                                        int64_t T, int64_t H, int64_t D) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    cudaError_t (*fn)(cudaStream_t, float *, const float *, const float *, const float *,
                      const float *, int64_t, int64_t, int64_t, int64_t) = NULL;
    (void)s;   /* no scratch: the scores never leave registers */
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0) return;
    /* F16 / BF16 gemm_dtype: the tensor-core flash kernel (attention_tc.cu) */
    if ((d->gemm_dtype == TDM_F16 || d->gemm_dtype == TDM_BF16) &&
        tdm_cuda_attention_tc_bias(d, o, q, k, v, 0, tab, B, T, H, D, 1.0f))
        return;
    if (D > ATB_DMAX || (T + ATB_BQ - 1) / ATB_BQ > 0x7fffffff) {
        tdm_cuda_fail(d, TDM_ERR_UNSUPPORTED, "attention_bias_kernel", __FILE__, __LINE__,
                      "head dim above 256 or too many tokens");
        return;
    }
    switch ((D + 31) / 32) {
    case 1: fn = launch_attention_bias<1>; break;
    case 2: fn = launch_attention_bias<2>; break;
    case 3: fn = launch_attention_bias<3>; break;
    case 4: fn = launch_attention_bias<4>; break;
    case 5: fn = launch_attention_bias<5>; break;
    case 6: fn = launch_attention_bias<6>; break;
    case 7: fn = launch_attention_bias<7>; break;
    default: fn = launch_attention_bias<8>; break;
    }
    TDM_CUDA_CHECK(fn(c->stream, o, q, k, v, tab, B, T, H, D));
    TDM_CUDA_LAUNCHED("attention_bias_kernel");
fail:;
}

extern "C" void tdm_cuda_attention_bias_t(tdm_device_t *d, tdm_dtype at, void *o, const void *q,
                                          const void *k, const void *v, const float *tab,
                                          float *s, int64_t B, int64_t T, int64_t H, int64_t D) {
    int64_t n = B * T * H * D, bytes = 0;
    float *f;
    if (at == TDM_F32) {
        tdm_cuda_attention_bias(d, (float *)o, (const float *)q, (const float *)k,
                                (const float *)v, tab, NULL, B, T, H, D);
        return;
    }
    if (!tdm_cuda_act_ok(d, at, "tdm_cuda_attention_bias_t")) return;
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0) return;
    if (tdm_cuda_attention_tc_bias(d, o, q, k, v, 1, tab, B, T, H, D, 1.0f)) return;
    /* a shape the tensor-core kernels do not take: through float32 copies */
    if (!(f = tdm_cuda_qkv_f32(d, at, q, k, v, n, n, &bytes))) return;
    tdm_cuda_attention_bias(d, f + 3 * n, f, f + n, f + 2 * n, tab, NULL, B, T, H, D);
    tdm_cuda_cast(d, o, at, f + 3 * n, TDM_F32, n);
    tdm_dev_free(d, f, bytes);
}
