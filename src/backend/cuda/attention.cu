/* attention.cu — multi-head attention in float32, flash style: one pass over
 * the keys with an online softmax (running max and sum per query row), so the
 * Tq × Tk score matrix never exists; memory is O(tile). Same contract as
 * tdm_cpu_attention: q (B, Tq, H·D), k, v (B, Tk, H·D) → o (B, Tq, H·D),
 * o = softmax(q k^T · scale [+ top-left causal mask]) v, any D up to 256.
 *
 * Work split: a block of 8 warps takes 32 query rows of one (batch, head);
 * each warp owns 4 rows. Keys go through shared memory in tiles of 32: lane j
 * scores key j against the warp's 4 rows (K rows padded to D+1 floats, so the
 * 32 lanes hit 32 banks), the warp updates the running max / sum with shuffle
 * reductions, then every lane accumulates its own output dims (d = lane +
 * 32·i) over the tile's 32 keys. Plain FP32 FMAs; no tensor cores. When the
 * device's gemm_dtype is F16/BF16, tdm_cuda_attention hands the call to the
 * tensor-core kernel of attention_tc.cu instead. */
#include <math.h>

#include "backend/cuda/cuda_common.cuh"

/* attention_tc.cu: 1 when it took the call (F16/BF16 tensor cores). */
extern "C" int tdm_cuda_attention_tc(tdm_device_t *d, void *o, const void *q, const void *k,
                                     const void *v, int ihalf, int64_t B, int64_t Tq, int64_t Tk,
                                     int64_t H, int64_t D, float scale, int causal);

#define ATT_WARPS 8
#define ATT_ROWS 4                          /* query rows per warp */
#define ATT_BQ (ATT_WARPS * ATT_ROWS)       /* query rows per block */
#define ATT_BK 32                           /* keys per tile: one per lane */
#define ATT_DMAX 256

static size_t att_smem_bytes(int64_t D) {
    /* Qs (BQ, D), Ks (BK, D+1), Vs (BK, D) */
    return (size_t)(ATT_BQ * D + ATT_BK * (D + 1) + ATT_BK * D) * sizeof(float);
}

/* ND = ceil(D / 32) output dims per lane. */
template <int ND>
__global__ void __launch_bounds__(ATT_WARPS * 32)
attention_kernel(float *o, const float *q, const float *k, const float *v, int64_t BH, int64_t H,
                 int64_t Tq, int64_t Tk, int D, float scale, int causal) {
    extern __shared__ float smem[];
    float *Qs = smem;
    float *Ks = Qs + ATT_BQ * D;
    float *Vs = Ks + ATT_BK * (D + 1);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nthr = blockDim.x;
    const int rbase = warp * ATT_ROWS;
    const int64_t HD = H * D;
    const int64_t i0 = (int64_t)blockIdx.x * ATT_BQ;

    for (int64_t bh = blockIdx.y; bh < BH; bh += gridDim.y) {
        const int64_t b = bh / H, h = bh % H;
        const float *qb = q + b * Tq * HD + h * D;
        const float *kb = k + b * Tk * HD + h * D;
        const float *vb = v + b * Tk * HD + h * D;
        float *ob = o + b * Tq * HD + h * D;

        __syncthreads();   /* the previous (batch, head) is done with Qs */
        for (int e = threadIdx.x; e < ATT_BQ * D; e += nthr) {
            int r = e / D, dd = e % D;
            int64_t qi = i0 + r;
            Qs[e] = qi < Tq ? qb[qi * HD + dd] : 0.0f;
        }

        float m[ATT_ROWS], l[ATT_ROWS], acc[ATT_ROWS][ND];
#pragma unroll
        for (int r = 0; r < ATT_ROWS; r++) {
            m[r] = -INFINITY;
            l[r] = 0.0f;
#pragma unroll
            for (int i = 0; i < ND; i++) acc[r][i] = 0.0f;
        }

        /* keys visible to any row of this block */
        int64_t kend = causal ? (i0 + ATT_BQ < Tk ? i0 + ATT_BQ : Tk) : Tk;
        for (int64_t j0 = 0; j0 < kend; j0 += ATT_BK) {
            __syncthreads();   /* everyone is done with the previous tile */
            for (int e = threadIdx.x; e < ATT_BK * D; e += nthr) {
                int jr = e / D, dd = e % D;
                int64_t j = j0 + jr;
                bool in = j < Tk;
                Ks[jr * (D + 1) + dd] = in ? kb[j * HD + dd] : 0.0f;
                Vs[jr * D + dd] = in ? vb[j * HD + dd] : 0.0f;
            }
            __syncthreads();

            /* scores of key j0 + lane against the warp's rows */
            float s[ATT_ROWS];
#pragma unroll
            for (int r = 0; r < ATT_ROWS; r++) s[r] = 0.0f;
            const float *kr = Ks + lane * (D + 1);
            const float *qr = Qs + rbase * D;
            for (int dd = 0; dd < D; dd++) {
                float kv = kr[dd];
#pragma unroll
                for (int r = 0; r < ATT_ROWS; r++) s[r] = fmaf(qr[r * D + dd], kv, s[r]);
            }

            /* online softmax update; s[r] becomes the probability weight */
            const int64_t j = j0 + lane;
#pragma unroll
            for (int r = 0; r < ATT_ROWS; r++) {
                int64_t qi = i0 + rbase + r;
                bool vis = j < Tk && (!causal || j <= qi);
                float sc = vis ? s[r] * scale : -INFINITY;
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
            int nk = kend - j0 < ATT_BK ? (int)(kend - j0) : ATT_BK;
            for (int jj = 0; jj < nk; jj++) {
                float pj[ATT_ROWS];
#pragma unroll
                for (int r = 0; r < ATT_ROWS; r++) pj[r] = __shfl_sync(0xffffffffu, s[r], jj);
                const float *vr = Vs + jj * D;
#pragma unroll
                for (int i = 0; i < ND; i++) {
                    int dd = lane + 32 * i;
                    if (dd < D) {
                        float vv = vr[dd];
#pragma unroll
                        for (int r = 0; r < ATT_ROWS; r++) acc[r][i] = fmaf(pj[r], vv, acc[r][i]);
                    }
                }
            }
        }

#pragma unroll
        for (int r = 0; r < ATT_ROWS; r++) {
            int64_t qi = i0 + rbase + r;
            if (qi >= Tq) continue;
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
static cudaError_t launch_attention(cudaStream_t st, float *o, const float *q, const float *k,
                                    const float *v, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                                    int64_t D, float scale, int causal) {
    size_t smem = att_smem_bytes(D);
    cudaError_t e = cudaFuncSetAttribute(attention_kernel<ND>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    int64_t BH = B * H;
    dim3 grid((unsigned)((Tq + ATT_BQ - 1) / ATT_BQ), (unsigned)(BH < 65535 ? BH : 65535));
    attention_kernel<ND><<<grid, ATT_WARPS * 32, smem, st>>>(o, q, k, v, BH, H, Tq, Tk, (int)D,
                                                             scale, causal);
    return cudaSuccess;
}

/* Row softmax of S (m, Tk) in place; with causal, row i (query q0 + i) sees
 * keys j <= q0 + i, the rest become 0, as the CPU reference. With P, the
 * probabilities are also stored there (m, Tk; type T), rounded. */
template <typename T>
__global__ void softmax_rows_kernel(float *S, T *P, int64_t m, int64_t Tk, int64_t q0,
                                    int causal) {
    __shared__ float red[32];
    const int64_t row = blockIdx.x;
    if (row >= m) return;
    float *x = S + row * Tk;
    const int64_t lim = causal ? (q0 + row + 1 < Tk ? q0 + row + 1 : Tk) : Tk;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < lim; j += blockDim.x) mx = fmaxf(mx, x[j]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = mx;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : -INFINITY;
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
        if (threadIdx.x == 0) red[0] = v;
    }
    __syncthreads();
    mx = red[0];
    __syncthreads();
    double sum = 0;
    for (int64_t j = threadIdx.x; j < Tk; j += blockDim.x) {
        const float e = (j < lim && mx != -INFINITY) ? expf(x[j] - mx) : 0.0f;
        x[j] = e;
        sum += e;
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    __shared__ double dred[32];
    if ((threadIdx.x & 31) == 0) dred[threadIdx.x >> 5] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) t += dred[w];
        dred[0] = t;
    }
    __syncthreads();
    const float inv = dred[0] > 0 ? (float)(1.0 / dred[0]) : 0.0f;
    if (P) {
        T *p = P + row * Tk;
        for (int64_t j = threadIdx.x; j < Tk; j += blockDim.x) tdm_st(p + j, x[j] * inv);
    } else {
        for (int64_t j = threadIdx.x; j < Tk; j += blockDim.x) x[j] *= inv;
    }
}

/* Head dims above the flash kernels' 256 (the VAE's single 512-wide head):
 * per (batch, head) and block of query rows, S = scale Q K^T with cuBLAS,
 * a row softmax, then O = P V, with the score block in staging memory (at
 * most ~64 MiB). q, k, v, o are of type at. On a device whose gemm_dtype is
 * F16 / BF16 both products run on the tensor cores (operands in that type —
 * float32 inputs are rounded into a copy first — the scores and softmax in
 * float32, P rounded to the type, float32 accumulation; the VAE's 16 384-token
 * attention: 13 ms of float32 SGEMM before); otherwise in float32. */
static void attention_wide_head(tdm_device_t *d, tdm_dtype at, void *o, const void *q,
                                const void *k, const void *v, int64_t B, int64_t Tq, int64_t Tk,
                                int64_t H, int64_t D, float scale, int causal) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    const int64_t HD = H * D, nq = B * Tq * HD, nk = B * Tk * HD;
    const int half = d->gemm_dtype == TDM_F16 || d->gemm_dtype == TDM_BF16;
    const cudaDataType ht = d->gemm_dtype == TDM_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    const cudaDataType ot = at == TDM_F32 ? CUDA_R_32F : ht;
    const int64_t es = (int64_t)tdm_dtype_size(at), hs = 2;
    int64_t TQ = ((int64_t)16 << 20) / Tk, cbytes = 0, pbytes = 0;
    void *cp = NULL, *P = NULL;   /* half copies of float32 q, k, v; the probabilities */
    const char *qh = (const char *)q, *kh = (const char *)k, *vh = (const char *)v;
    if (TQ < 1) TQ = 1;
    if (TQ > Tq) TQ = Tq;
    float *S = (float *)tdm_cuda_stage(d, TQ * Tk * (int64_t)sizeof(float));
    const float one = 1.0f, zero = 0.0f;
    if (!S) return;
    if (half) {
        pbytes = TQ * Tk * hs;
        if (!(P = tdm_dev_alloc(d, pbytes, "attention probabilities"))) goto nomem;
        if (at == TDM_F32) {
            cbytes = (nq + 2 * nk) * hs;
            if (!(cp = tdm_dev_alloc(d, cbytes, "attention half copies"))) goto nomem;
            tdm_cuda_cast(d, cp, d->gemm_dtype, q, TDM_F32, nq);
            tdm_cuda_cast(d, (char *)cp + nq * hs, d->gemm_dtype, k, TDM_F32, nk);
            tdm_cuda_cast(d, (char *)cp + (nq + nk) * hs, d->gemm_dtype, v, TDM_F32, nk);
            qh = (const char *)cp;
            kh = qh + nq * hs;
            vh = kh + nk * hs;
        }
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t q0 = 0; q0 < Tq; q0 += TQ) {
                const int64_t m = Tq - q0 < TQ ? Tq - q0 : TQ;
                const int64_t qo = (b * Tq + q0) * HD + h * D, ko = b * Tk * HD + h * D;
                char *ob = (char *)o + qo * es;
                if (!half) {
                    const float *qb = (const float *)q + qo, *kb = (const float *)k + ko;
                    const float *vb = (const float *)v + ko;
                    /* column-major view: S^T (Tk x m) = K (Tk x D) Q^T (D x m) */
                    TDM_CUBLAS_CHECK(cublasSgemm_64(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, Tk, m, D,
                                                    &scale, kb, HD, qb, HD, &zero, S, Tk));
                    softmax_rows_kernel<float><<<(unsigned)m, 256, 0, c->stream>>>(
                        S, NULL, m, Tk, q0, causal);
                    TDM_CUDA_LAUNCHED("softmax_rows_kernel");
                    /* O^T (D x m) = V^T (D x Tk) P^T (Tk x m) */
                    TDM_CUBLAS_CHECK(cublasSgemm_64(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, D, m, Tk,
                                                    &one, vb, HD, S, Tk, &zero, (float *)ob, HD));
                    continue;
                }
                TDM_CUBLAS_CHECK(cublasGemmEx_64(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, Tk, m, D,
                                                 &scale, kh + ko * hs, ht, HD, qh + qo * hs, ht,
                                                 HD, &zero, S, CUDA_R_32F, Tk, CUBLAS_COMPUTE_32F,
                                                 CUBLAS_GEMM_DEFAULT));
                if (d->gemm_dtype == TDM_BF16)
                    softmax_rows_kernel<__nv_bfloat16><<<(unsigned)m, 256, 0, c->stream>>>(
                        S, (__nv_bfloat16 *)P, m, Tk, q0, causal);
                else
                    softmax_rows_kernel<__half><<<(unsigned)m, 256, 0, c->stream>>>(
                        S, (__half *)P, m, Tk, q0, causal);
                TDM_CUDA_LAUNCHED("softmax_rows_kernel");
                TDM_CUBLAS_CHECK(cublasGemmEx_64(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, D, m, Tk, &one,
                                                 vh + ko * hs, ht, HD, P, ht, Tk, &zero, ob, ot,
                                                 HD, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
            }
    goto fail;
nomem:
    tdm_cuda_fail(d, TDM_ERR_NOMEM, "tdm_dev_alloc", __FILE__, __LINE__, tdm_last_error());
fail:
    if (P) tdm_dev_free(d, P, pbytes);     /* stream-ordered: after the last GEMM */
    if (cp) tdm_dev_free(d, cp, cbytes);
}

extern "C" void tdm_cuda_attention(tdm_device_t *d, float *o, const float *q, const float *k,
                                   const float *v, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                                   int64_t D, float scale, int causal) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    cudaError_t (*fn)(cudaStream_t, float *, const float *, const float *, const float *, int64_t,
                      int64_t, int64_t, int64_t, int64_t, float, int) = NULL;
    if (B <= 0 || Tq <= 0 || H <= 0 || D <= 0) return;
    if (Tk <= 0) {   /* nothing to attend to: o = 0 */
        TDM_CUDA_CHECK(cudaMemsetAsync(o, 0, (size_t)(B * Tq * H * D) * sizeof(float), c->stream));
        return;
    }
    if ((d->gemm_dtype == TDM_F16 || d->gemm_dtype == TDM_BF16) &&
        tdm_cuda_attention_tc(d, o, q, k, v, 0, B, Tq, Tk, H, D, scale, causal))
        return;   /* tensor cores (attention_tc.cu) */
    if (D > ATT_DMAX) {
        attention_wide_head(d, TDM_F32, o, q, k, v, B, Tq, Tk, H, D, scale, causal);
        return;
    }
    if ((Tq + ATT_BQ - 1) / ATT_BQ > 0x7fffffff) {
        tdm_cuda_fail(d, TDM_ERR_UNSUPPORTED, "attention_kernel", __FILE__, __LINE__,
                      "too many query rows");
        return;
    }
    switch ((D + 31) / 32) {
    case 1: fn = launch_attention<1>; break;
    case 2: fn = launch_attention<2>; break;
    case 3: fn = launch_attention<3>; break;
    case 4: fn = launch_attention<4>; break;
    case 5: fn = launch_attention<5>; break;
    case 6: fn = launch_attention<6>; break;
    case 7: fn = launch_attention<7>; break;
    default: fn = launch_attention<8>; break;
    }
    TDM_CUDA_CHECK(fn(c->stream, o, q, k, v, B, Tq, Tk, H, D, scale, causal));
    TDM_CUDA_LAUNCHED("attention_kernel");
fail:;
}

extern "C" int64_t tdm_cuda_attention_scratch_bytes(tdm_device_t *d, tdm_dtype at, int64_t B,
                                                    int64_t Tq, int64_t Tk, int64_t H,
                                                    int64_t D) {
    const int half = d->gemm_dtype == TDM_F16 || d->gemm_dtype == TDM_BF16;
    if (B <= 0 || Tq <= 0 || Tk <= 0 || H <= 0 || D <= 0) return 0;
    if (Tq > INT64_MAX / 64 / B / H / (D + 32) || Tk > INT64_MAX / 64 / B / H / (D + 32))
        return INT64_MAX;
    const int64_t nq = B * Tq * H * D, nk = B * Tk * H * D;
    int64_t n = 0;
    if (half && D <= ATT_DMAX) {
        /* tensor-core path: half copies of q, k, v in the staging buffer, head
         * dim padded (to at most D + 32) and tokens to the 128 / 64-row tiles */
        const int64_t DP = (D + 31) / 32 * 32;
        n = (B * H * (Tq + 128) * DP + 2 * B * H * (Tk + 64) * DP) * 2;
        if (at != TDM_F32) n += (2 * nq + 2 * nk) * 4;   /* float32 copies when it declines */
    } else if (D > ATT_DMAX) {
        /* wide head: a score block of at most max(16 MiB of rows, one row) */
        int64_t TQ = ((int64_t)16 << 20) / Tk;
        if (TQ < 1) TQ = 1;
        if (TQ > Tq) TQ = Tq;
        n = TQ * Tk * 4;
        if (half) n += TQ * Tk * 2 + (at == TDM_F32 ? (nq + 2 * nk) * 2 : 0);
    } else if (at != TDM_F32) {
        n = (2 * nq + 2 * nk) * 4;
    }
    return n;
}

extern "C" void tdm_cuda_attention_t(tdm_device_t *d, tdm_dtype at, void *o, const void *q,
                                     const void *k, const void *v, int64_t B, int64_t Tq,
                                     int64_t Tk, int64_t H, int64_t D, float scale, int causal) {
    int64_t nq = B * Tq * H * D, nk = B * Tk * H * D, bytes = 0;
    float *f;
    if (at == TDM_F32) {
        tdm_cuda_attention(d, (float *)o, (const float *)q, (const float *)k, (const float *)v, B,
                           Tq, Tk, H, D, scale, causal);
        return;
    }
    if (!tdm_cuda_act_ok(d, at, "tdm_cuda_attention_t")) return;
    if (B <= 0 || Tq <= 0 || H <= 0 || D <= 0) return;
    if (Tk > 0 && tdm_cuda_attention_tc(d, o, q, k, v, 1, B, Tq, Tk, H, D, scale, causal)) return;
    if (Tk > 0 && D > ATT_DMAX) {   /* the wide-head path takes half operands as they are */
        attention_wide_head(d, at, o, q, k, v, B, Tq, Tk, H, D, scale, causal);
        return;
    }
    /* another shape the tensor-core kernels do not take: through float32 copies */
    if (!(f = tdm_cuda_qkv_f32(d, at, q, k, v, nq, nk, &bytes))) return;
    tdm_cuda_attention(d, f + nq + 2 * nk, f, f + nq, f + nq + nk, B, Tq, Tk, H, D, scale, causal);
    tdm_cuda_cast(d, o, at, f + nq + 2 * nk, TDM_F32, nq);
    tdm_dev_free(d, f, bytes);
}
