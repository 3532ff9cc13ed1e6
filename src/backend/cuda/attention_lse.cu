/* attention_lse.cu — attention of q against one block of keys with each
 * row's log-sum-exp, merged into a held (o, lse) when asked: the op
 * attention_lse of backend/ops_list.h (contract there; ring attention's
 * per-block step). A plain, correct kernel, not a fast one: one block of
 * LSE_THREADS threads per query row and head, an online softmax over tiles
 * of LSE_THREADS keys (a thread scores one key of the tile, the block
 * reduces the tile's max and sum), each thread accumulating the output dims
 * d = tid + LSE_THREADS·i in float32. q, k, v of type at (float, __half or
 * __nv_bfloat16, read as float32); o and lse float32; head dim up to
 * LSE_THREADS · LSE_ND. No scratch. */
#include <math.h>

#include "backend/cuda/cuda_common.cuh"

#define LSE_THREADS 128
#define LSE_ND 8                               /* output dims per thread */
#define LSE_DMAX (LSE_THREADS * LSE_ND)

/* Max of v over the block; every thread gets it. `sh` holds 32 floats. */
static __device__ __forceinline__ float block_max(float v, float *sh) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Block (row i, batch·head bh) of o (B, Tq, H·D), lse (B, H, Tq). The query
 * row lives in shared memory (D floats), the tile's weights in p. */
template <typename T>
__global__ void __launch_bounds__(LSE_THREADS)
attention_lse_kernel(float *o, float *lse, const T *q, const T *k, const T *v, int64_t Tq,
                     int64_t Tk, int64_t H, int D, float scale, int acc) {
    extern __shared__ float qs[];                 /* (D) */
    __shared__ float p[LSE_THREADS];
    __shared__ float shf[32];
    __shared__ double shd[32];
    const int tid = threadIdx.x;
    const int64_t i = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, HD = H * (int64_t)D;
    const T *qi = q + (b * Tq + i) * HD + h * D;
    const T *kb = k + b * Tk * HD + h * D;
    const T *vb = v + b * Tk * HD + h * D;
    float *oi = o + (b * Tq + i) * HD + h * D;
    float *li = lse + bh * Tq + i;
    for (int d = tid; d < D; d += LSE_THREADS) qs[d] = tdm_ld(qi + d);
    __syncthreads();

    float m = -INFINITY, l = 0.0f, a[LSE_ND];
#pragma unroll
    for (int r = 0; r < LSE_ND; r++) a[r] = 0.0f;
    for (int64_t j0 = 0; j0 < Tk; j0 += LSE_THREADS) {
        const int64_t j = j0 + tid;
        float s = -INFINITY;
        if (j < Tk) {
            float acc_s = 0.0f;
            for (int d = 0; d < D; d++) acc_s = fmaf(qs[d], tdm_ld(kb + j * HD + d), acc_s);
            s = acc_s * scale;
        }
        const float mn = fmaxf(m, block_max(s, shf));
        const float e = (s == -INFINITY || mn == -INFINITY) ? 0.0f : expf(s - mn);
        const float alpha = mn == -INFINITY ? 1.0f : expf(m - mn);   /* 0 when m was -inf */
        const float se = (float)tdm_block_sum((double)e, shd);
        __syncthreads();   /* the previous tile's p is read by every thread */
        p[tid] = e;
        __syncthreads();
        l = l * alpha + se;
        m = mn;
        const int nk = Tk - j0 < LSE_THREADS ? (int)(Tk - j0) : LSE_THREADS;
#pragma unroll
        for (int r = 0; r < LSE_ND; r++) {
            const int d = tid + LSE_THREADS * r;
            if (d >= D) continue;
            float x = a[r] * alpha;
            for (int jj = 0; jj < nk; jj++) x = fmaf(p[jj], tdm_ld(vb + (j0 + jj) * HD + d), x);
            a[r] = x;
        }
    }

    /* the block's (o_b, l_b), merged into the held (o, lse) in float32 */
    const float lb = l > 0.0f ? m + logf(l) : -INFINITY;
    const float L = acc ? *li : -INFINITY;
    const float mx = fmaxf(L, lb);
    float n = -INFINITY, wo = 0.0f, wb = 0.0f;
    if (mx != -INFINITY) {
        n = mx + logf(expf(L - mx) + expf(lb - mx));
        wo = expf(L - n);
        wb = l > 0.0f ? expf(lb - n) / l : 0.0f;
    }
#pragma unroll
    for (int r = 0; r < LSE_ND; r++) {
        const int d = tid + LSE_THREADS * r;
        if (d < D) oi[d] = (acc ? oi[d] * wo : 0.0f) + a[r] * wb;
    }
    __syncthreads();   /* every thread has read *li */
    if (tid == 0) *li = n;
}

extern "C" void tdm_cuda_attention_lse(tdm_device_t *d, tdm_dtype at, float *o, float *lse,
                                       const void *q, const void *k, const void *v, int64_t B,
                                       int64_t Tq, int64_t Tk, int64_t H, int64_t D, float scale,
                                       int acc) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    if (!tdm_cuda_act_ok(d, at, "tdm_cuda_attention_lse")) return;
    if (B <= 0 || Tq <= 0 || H <= 0 || D <= 0) return;
    if (Tk <= 0 && acc) return;   /* no keys: nothing to merge */
    if (D > LSE_DMAX || Tq > 0x7fffffff || B * H > 65535) {
        tdm_cuda_fail(d, TDM_ERR_UNSUPPORTED, "attention_lse_kernel", __FILE__, __LINE__,
                      "head dim above 1024, more than 2^31 query rows or 65535 batch·heads");
        return;
    }
    {
        const dim3 grid((unsigned)Tq, (unsigned)(B * H));
        const size_t smem = (size_t)D * sizeof(float);
        TDM_ACT_DISPATCH(at, T,
            attention_lse_kernel<T><<<grid, LSE_THREADS, smem, c->stream>>>(
                o, lse, (const T *)q, (const T *)k, (const T *)v, Tq, Tk, H, (int)D, scale,
                acc));
        TDM_CUDA_LAUNCHED("attention_lse_kernel");
    }
fail:;
}
