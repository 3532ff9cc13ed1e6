/* ops.cu — CUDA launchers and kernels of the float32 ops (GEMM, convolution,
 * normalization, activations, element-wise, layout), each with exactly the
 * semantics of its CPU reference in backend/cpu/ops.c. On a device whose
 * gemm_dtype is F16/BF16, linear / conv / gemm take their weight in that type
 * (see backend/ops_list.h) and run on tensor cores with float32 accumulation and
 * output. Attention lives in attention.cu. Every launcher queues on the
 * device's stream and returns at once; a failure is kept on the device (see
 * device.cu) and reported by the next sync / download. All index arithmetic
 * is 64-bit. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>

#include "backend/cuda/cuda_common.cuh"

/* ---- GEMM ------------------------------------------------------------------
 * Row-major C (M, N) with leading dimension ldc is column-major C^T (N, M)
 * with the same ldc, so C = op(A)·op(B) is computed as C^T = op(B)^T·op(A)^T:
 * cuBLAS gets B first, (m, n, k) = (N, M, K), and each matrix's own
 * transpose flag (a row-major matrix read column-major is its transpose). */
static void gemm_rm(tdm_device_t *d, tdm_cuda_impl_t *c, int transA, int transB, int64_t M,
                    int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                    const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    TDM_CUBLAS_CHECK(cublasSgemm_64(c->blas, transB ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    transA ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, ldb,
                                    A, lda, &beta, C, ldc));
fail:;
}

/* ---- half-precision GEMM ------------------------------------------------------
 * With d->gemm_dtype F16 or BF16 the weight operand is stored in that type;
 * the float32 activation operand is rounded (to nearest even) into the same
 * type in the device's staging buffer (see tdm_cuda_stage), and cuBLAS
 * multiplies on tensor cores with float32 accumulation (CUBLAS_COMPUTE_32F)
 * into the float32 output. */
static int gemm_is_half(const tdm_device_t *d) {
    return d->gemm_dtype == TDM_F16 || d->gemm_dtype == TDM_BF16;
}

static cudaDataType gemm_cuda_type(const tdm_device_t *d) {
    return d->gemm_dtype == TDM_BF16 ? CUDA_R_16BF : CUDA_R_16F;
}

__device__ static inline void to_half(__half *p, float v) { *p = __float2half_rn(v); }
__device__ static inline void to_half(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* y (rows, cols), compact = x (rows, cols) with leading dimension ldx, rounded. */
template <typename T>
__global__ void cast_rows_kernel(T *y, const float *x, int64_t rows, int64_t cols, int64_t ldx) {
    int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        to_half(&y[i], x[(i / cols) * ldx + i % cols]);
}

/* y (4·n4) = x (4·n4), rounded; x 16-byte and y 8-byte aligned. */
template <typename T>
__global__ void cast_vec4_kernel(T *y, const float *x, int64_t n4) {
    struct __align__(8) quad { T v[4]; };
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        float4 f = reinterpret_cast<const float4 *>(x)[i];
        quad q;
        to_half(&q.v[0], f.x);
        to_half(&q.v[1], f.y);
        to_half(&q.v[2], f.z);
        to_half(&q.v[3], f.w);
        reinterpret_cast<quad *>(y)[i] = q;
    }
}

/* The (rows, cols) float32 matrix x (leading dimension ldx) rounded to
 * d->gemm_dtype into the staging buffer, compact (leading dimension cols).
 * NULL after recording a failure. */
static const void *stage_half(tdm_device_t *d, tdm_cuda_impl_t *c, const float *x, int64_t rows,
                              int64_t cols, int64_t ldx) {
    int64_t n = rows * cols;
    void *h = tdm_cuda_stage(d, n * 2 > 0 ? n * 2 : 2);
    if (!h) return NULL;
    if (n <= 0) return h;
    tdm_cuda_prof_begin(d);
    if (ldx == cols && n % 4 == 0 && ((uintptr_t)x & 15) == 0) {
        if (d->gemm_dtype == TDM_BF16)
            cast_vec4_kernel<<<tdm_cuda_blocks(n / 4, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,
                               c->stream>>>((__nv_bfloat16 *)h, x, n / 4);
        else
            cast_vec4_kernel<<<tdm_cuda_blocks(n / 4, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,
                               c->stream>>>((__half *)h, x, n / 4);
        TDM_CUDA_LAUNCHED("cast_vec4_kernel");
    } else {
        if (d->gemm_dtype == TDM_BF16)
            cast_rows_kernel<<<tdm_cuda_blocks(n, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,
                               c->stream>>>((__nv_bfloat16 *)h, x, rows, cols, ldx);
        else
            cast_rows_kernel<<<tdm_cuda_blocks(n, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,
                               c->stream>>>((__half *)h, x, rows, cols, ldx);
        TDM_CUDA_LAUNCHED("cast_rows_kernel");
    }
    tdm_cuda_prof_end(d, "cast to half");
    return h;
fail:
    tdm_cuda_prof_end(d, "cast to half");
    return NULL;
}

/* gemm_rm with A and B both in d->gemm_dtype. */
static void gemm_rm_half(tdm_device_t *d, tdm_cuda_impl_t *c, int transA, int transB, int64_t M,
                         int64_t N, int64_t K, float alpha, const void *A, int64_t lda,
                         const void *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    cudaDataType t = gemm_cuda_type(d);
    if (M <= 0 || N <= 0) return;
    TDM_CUBLAS_CHECK(cublasGemmEx_64(c->blas, transB ? CUBLAS_OP_T : CUBLAS_OP_N,
                                     transA ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, t, ldb,
                                     A, t, lda, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
fail:;
}

extern "C" void tdm_cuda_gemm(tdm_device_t *d, int transA, int transB, int64_t M, int64_t N,
                              int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                              int64_t ldb, float beta, float *C, int64_t ldc) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    if (gemm_is_half(d)) {   /* B is the weight, in gemm_dtype; A is rounded to match */
        if (M <= 0 || N <= 0) return;
        int64_t ar = transA ? K : M, ac = transA ? M : K;   /* A as stored: (ar, ac), ld lda */
        const void *Ah = stage_half(d, c, A, ar, ac, lda);
        if (!Ah) return;
        gemm_rm_half(d, c, transA, transB, M, N, K, alpha, Ah, ac, B, ldb, beta, C, ldc);
        return;
    }
    gemm_rm(d, c, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* y (M, N; rows ldy apart): each row a copy of b (N). */
__global__ void fill_rows_kernel(float *y, int64_t ldy, const float *b, int64_t M, int64_t N) {
    int64_t n = M * N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[(i / N) * ldy + i % N] = b[i % N];
}

extern "C" void tdm_cuda_linear(tdm_device_t *d, float *y, const float *x, const float *W,
                                const float *b, int64_t M, int64_t K, int64_t N) {
    tdm_cuda_linear_ex(d, y, TDM_F32, N, x, TDM_F32, W, b, M, K, N, 0);
}

/* ---- convolution -----------------------------------------------------------
 * im2col into the scratch + one cuBLAS GEMM per tile, as the CPU reference:
 * a tile of whole output rows is the (K = Cin·kh·kw, rows·Wo) column matrix
 * and y[:, tile] = w (Cout, K) · tile. The tile cap is a constant of this
 * backend, so the _scratch functions and the convs always agree. */
#define TDM_CUDA_CONV_TILE_BYTES ((int64_t)128 << 20)

static int conv_is_direct(int64_t kh, int64_t kw, int64_t stride, int64_t pt, int64_t pb,
                          int64_t pl, int64_t pr) {
    return kh == 1 && kw == 1 && stride == 1 && pt == 0 && pb == 0 && pl == 0 && pr == 0;
}

static int64_t conv_tile_rows(int64_t K, int64_t Ho, int64_t Wo) {
    int64_t cap = TDM_CUDA_CONV_TILE_BYTES / (int64_t)sizeof(float);
    int64_t row = K * Wo;
    int64_t rows = row > 0 ? cap / row : Ho;
    if (rows < 1) rows = 1;
    if (rows > Ho) rows = Ho;
    return rows;
}

/* Rows of the column matrix: the K taps; on a half device also two rows of
 * ones, which multiply the bias (split into a high and a low half, so the sum
 * is float32-exact to ~2^-16) held in two extra weight columns
 * (conv_weight_aug_kernel), and zero rows up to a multiple of 8 (aligned
 * rows): the bias is added inside the GEMM, with no bias-fill pass over the
 * output (11 of the FLUX VAE decode's 92 ms) and no GEMM reading it back. */
static int64_t conv_krows(const tdm_device_t *d, int64_t K) {
    return gemm_is_half(d) ? (K + 2 + 7) / 8 * 8 : K;
}

extern "C" int64_t tdm_cuda_conv2d_pad4_scratch(tdm_device_t *d, int64_t Cin, int64_t Cout, int64_t H,
                                                int64_t W, int64_t kh, int64_t kw, int64_t stride,
                                                int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
    int64_t Ho = (H + pt + pb - kh) / stride + 1;
    int64_t Wo = (W + pl + pr - kw) / stride + 1;
    int64_t K = Cin * kh * kw, Kp = conv_krows(d, K);
    if (conv_is_direct(kh, kw, stride, pt, pb, pl, pr)) return 0;
    if (Ho <= 0 || Wo <= 0 || K <= 0) return 0;
    return Kp * conv_tile_rows(Kp, Ho, Wo) * Wo;
}

extern "C" int64_t tdm_cuda_conv2d_scratch(tdm_device_t *d, int64_t Cin, int64_t Cout, int64_t H,
                                           int64_t W, int64_t kh, int64_t kw, int64_t stride,
                                           int64_t pad) {
    return tdm_cuda_conv2d_pad4_scratch(d, Cin, Cout, H, W, kh, kw, stride, pad, pad, pad, pad);
}

__device__ static inline void to_half(float *p, float v) { *p = v; }

/* col (K, rows·Wo): the patches of x (Cin, H, W) under output rows
 * [oy0, oy0 + rows); taps in the padding are 0. Grid: blockIdx.y is the
 * column-matrix row r = (ch, i, j), so the tap is decoded once per block;
 * threads of a block take consecutive output positions of that row
 * (coalesced writes, mostly coalesced reads) with 32-bit index math (a tile
 * holds at most TDM_CUDA_CONV_TILE_BYTES / 4 elements). T = float, or the
 * half type of a half GEMM (rounded to nearest even). */
template <typename T>
__global__ void im2col_kernel(T *col, const float *x, int r0, int H, int W, int kh, int kw,
                              int stride, int pt, int pl, int Wo, int oy0, int N) {
    const int r = r0 + (int)blockIdx.y, ch = r / (kh * kw), i = (r / kw) % kh, j = r % kw;
    const float *xc = x + (int64_t)ch * H * W;
    T *cr = col + (int64_t)r * N;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < N; p += gridDim.x * blockDim.x) {
        int t = p / Wo, ox = p - t * Wo;
        int iy = (oy0 + t) * stride - pt + i, ix = ox * stride - pl + j;
        to_half(&cr[p], (iy >= 0 && iy < H && ix >= 0 && ix < W) ? xc[iy * W + ix] : 0.0f);
    }
}

/* im2col_kernel for a half column matrix with N % 8 == 0: each thread makes 8
 * consecutive positions of its row and stores them as one 16-byte word (the
 * scalar kernel's 2-byte stores and per-element division dominated the conv
 * time of the SD UNet). */
template <typename T>
__global__ void im2col8_kernel(T *col, const float *x, int r0, int H, int W, int kh, int kw,
                               int stride, int pt, int pl, int Wo, int oy0, int N) {
    struct __align__(16) oct { T v[8]; };
    const int r = r0 + (int)blockIdx.y, ch = r / (kh * kw), i = (r / kw) % kh, j = r % kw;
    const float *xc = x + (int64_t)ch * H * W;
    oct *cr = reinterpret_cast<oct *>(col + (int64_t)r * N);
    for (int q = blockIdx.x * blockDim.x + threadIdx.x; q < N / 8; q += gridDim.x * blockDim.x) {
        int p = q * 8, t = p / Wo, ox = p - t * Wo;
        oct o;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            int iy = (oy0 + t) * stride - pt + i, ix = ox * stride - pl + j;
            to_half(&o.v[k], (iy >= 0 && iy < H && ix >= 0 && ix < W) ? xc[iy * W + ix] : 0.0f);
            if (++ox == Wo) {
                ox = 0;
                t++;
            }
        }
        cr[q] = o;
    }
}

/* wa (Cout, Kp) = [w (Cout, K) | hi(b) | lo(b) | 0 ...]: hi = b rounded to T,
 * lo = (b - hi) rounded to T. */
template <typename T>
__global__ void conv_weight_aug_kernel(T *wa, const T *w, const float *b, int64_t Cout, int64_t K,
                                       int64_t Kp) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < Cout * Kp;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / Kp, j = i % Kp;
        T hi;
        tdm_st(&hi, b[r]);
        if (j < K) wa[i] = w[r * K + j];
        else if (j == K) wa[i] = hi;
        else tdm_st(&wa[i], j == K + 1 ? b[r] - tdm_ld(&hi) : 0.0f);
    }
}

/* Rows [K, Kp) of the column matrix col (Kp, N): two rows of ones, then zeros. */
template <typename T>
__global__ void conv_ones_rows_kernel(T *col, int64_t K, int64_t Kp, int64_t N) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (Kp - K) * N;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = K + i / N;
        tdm_st(&col[r * N + i % N], r < K + 2 ? 1.0f : 0.0f);
    }
}

/* y (B, C, S) filled with b[c]. */
__global__ void fill_channels_kernel(float *y, const float *b, int64_t B, int64_t C, int64_t S) {
    int64_t n = B * C * S;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = b[(i / S) % C];
}

extern "C" void tdm_cuda_conv2d_pad4(tdm_device_t *d, float *y, const float *x, const float *w,
                                     const float *b, int64_t B, int64_t Cin, int64_t H, int64_t W,
                                     int64_t Cout, int64_t kh, int64_t kw, int64_t stride,
                                     int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                                     float *scratch) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    int64_t Ho = (H + pt + pb - kh) / stride + 1;
    int64_t Wo = (W + pl + pr - kw) / stride + 1;
    int64_t K = Cin * kh * kw, P = Ho * Wo, Kp = conv_krows(d, K);
    const int direct = conv_is_direct(kh, kw, stride, pt, pb, pl, pr);
    /* half im2col convs take the bias inside the GEMM (conv_krows); the rest
     * add to an output pre-filled with it */
    /* ... when that is cheaper: the augmented weight is a copy of w per call, the
     * bias fill a pass over the output plus the GEMM reading it back; the SD
     * UNet's 8x8 and 16x16 levels have 30 MB weights and sub-MB outputs
     * (aug everywhere: UNet step 15.4 -> 17.9 ms), the VAE the opposite */
    /* per image (the rule for a guided batch of two), so a CFG rank's one image
     * takes the path the two-image batch of one device takes */
    const int aug = b && gemm_is_half(d) && !direct && P * 4 > Kp;
    const float alpha = 1.0f, beta = b && !aug ? 1.0f : 0.0f;
    int64_t rows = conv_tile_rows(Kp, Ho, Wo), wabytes = aug ? Cout * Kp * 2 : 0;
    void *wa = NULL;
    if (B <= 0 || Cout <= 0 || P <= 0) return;
    if (!direct && tdm_cuda_conv_igemm_use(d, w, B, Cin, H, W, Cout, kh, kw, Ho, Wo)) {
        tdm_cuda_conv_igemm(d, y, x, w, b, B, Cin, H, W, Cout, Ho, Wo, stride, pt, pl);
        return;
    }
    if (aug) {
        if (!(wa = tdm_dev_alloc(d, wabytes, "conv weight with bias"))) {
            tdm_cuda_fail(d, TDM_ERR_NOMEM, "tdm_dev_alloc", __FILE__, __LINE__, tdm_last_error());
            return;
        }
        if (d->gemm_dtype == TDM_BF16)
            conv_weight_aug_kernel<<<tdm_cuda_blocks(Cout * Kp, TDM_CUDA_THREADS), TDM_CUDA_THREADS,
                                     0, c->stream>>>((__nv_bfloat16 *)wa,
                                                     (const __nv_bfloat16 *)w, b, Cout, K, Kp);
        else
            conv_weight_aug_kernel<<<tdm_cuda_blocks(Cout * Kp, TDM_CUDA_THREADS), TDM_CUDA_THREADS,
                                     0, c->stream>>>((__half *)wa, (const __half *)w, b, Cout, K,
                                                     Kp);
        TDM_CUDA_LAUNCHED("conv_weight_aug_kernel");
    }
    if (b && !aug) {
        tdm_cuda_prof_begin(d);
        fill_channels_kernel<<<tdm_cuda_blocks(B * Cout * P, TDM_CUDA_THREADS), TDM_CUDA_THREADS,
                               0, c->stream>>>(y, b, B, Cout, P);
        tdm_cuda_prof_end(d, "bias fill");
        TDM_CUDA_LAUNCHED("fill_channels_kernel");
    }
    if (direct) {
        /* per image: y_n (Cout, P) = w (Cout, Cin) · x_n (Cin, P) [+ y_n];
         * column-major: y_n^T (P, Cout) = x_n^T (P, Cin) · w^T (Cin, Cout) */
        /* one GEMM per image, not a strided batch: cuBLAS picks a batched
         * kernel by the batch count, and an image's bits must not depend on it */
        if (gemm_is_half(d)) {
            cudaDataType t = gemm_cuda_type(d);
            const void *xh = stage_half(d, c, x, B, Cin * P, Cin * P);
            if (!xh) return;
            for (int64_t n = 0; n < B; n++)
                TDM_CUBLAS_CHECK(cublasGemmEx_64(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, P, Cout, Cin,
                                                 &alpha, (const char *)xh + n * Cin * P * 2, t, P,
                                                 w, t, Cin, &beta, y + n * Cout * P, CUDA_R_32F, P,
                                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
            return;
        }
        for (int64_t n = 0; n < B; n++)
            TDM_CUBLAS_CHECK(cublasSgemm_64(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, P, Cout, Cin, &alpha,
                                            x + n * Cin * P, P, w, Cin, &beta, y + n * Cout * P,
                                            P));
        return;
    }
    for (int64_t n = 0; n < B; n++) {
        const float *xn = x + n * Cin * H * W;
        float *yn = y + n * Cout * P;
        for (int64_t oy0 = 0; oy0 < Ho; oy0 += rows) {
            int64_t nr = Ho - oy0 < rows ? Ho - oy0 : rows, N = nr * Wo;
            unsigned nbx = (unsigned)((N + TDM_CUDA_THREADS - 1) / TDM_CUDA_THREADS);
            tdm_cuda_prof_begin(d);
            for (int64_t r0 = 0; r0 < K; r0 += 65535) {   /* gridDim.y <= 65535 */
                dim3 nb(nbx > 64 ? 64 : nbx, (unsigned)(K - r0 < 65535 ? K - r0 : 65535));
                const int vec = N % 8 == 0 && ((uintptr_t)scratch & 15) == 0;
                dim3 nb8((unsigned)((N / 8 + TDM_CUDA_THREADS - 1) / TDM_CUDA_THREADS), nb.y);
                if (vec && d->gemm_dtype == TDM_BF16)
                    im2col8_kernel<<<nb8, TDM_CUDA_THREADS, 0, c->stream>>>(
                        (__nv_bfloat16 *)scratch, xn, (int)r0, (int)H, (int)W, (int)kh, (int)kw,
                        (int)stride, (int)pt, (int)pl, (int)Wo, (int)oy0, (int)N);
                else if (vec && d->gemm_dtype == TDM_F16)
                    im2col8_kernel<<<nb8, TDM_CUDA_THREADS, 0, c->stream>>>(
                        (__half *)scratch, xn, (int)r0, (int)H, (int)W, (int)kh, (int)kw,
                        (int)stride, (int)pt, (int)pl, (int)Wo, (int)oy0, (int)N);
                else if (d->gemm_dtype == TDM_BF16)
                    im2col_kernel<<<nb, TDM_CUDA_THREADS, 0, c->stream>>>(
                        (__nv_bfloat16 *)scratch, xn, (int)r0, (int)H, (int)W, (int)kh, (int)kw,
                        (int)stride, (int)pt, (int)pl, (int)Wo, (int)oy0, (int)N);
                else if (d->gemm_dtype == TDM_F16)
                    im2col_kernel<<<nb, TDM_CUDA_THREADS, 0, c->stream>>>(
                        (__half *)scratch, xn, (int)r0, (int)H, (int)W, (int)kh, (int)kw,
                        (int)stride, (int)pt, (int)pl, (int)Wo, (int)oy0, (int)N);
                else
                    im2col_kernel<<<nb, TDM_CUDA_THREADS, 0, c->stream>>>(
                        scratch, xn, (int)r0, (int)H, (int)W, (int)kh, (int)kw, (int)stride,
                        (int)pt, (int)pl, (int)Wo, (int)oy0, (int)N);
            }
            if (aug && d->gemm_dtype == TDM_BF16)
                conv_ones_rows_kernel<<<tdm_cuda_blocks((Kp - K) * N, TDM_CUDA_THREADS),
                                        TDM_CUDA_THREADS, 0, c->stream>>>(
                    (__nv_bfloat16 *)scratch, K, Kp, N);
            else if (aug)
                conv_ones_rows_kernel<<<tdm_cuda_blocks((Kp - K) * N, TDM_CUDA_THREADS),
                                        TDM_CUDA_THREADS, 0, c->stream>>>((__half *)scratch, K,
                                                                          Kp, N);
            tdm_cuda_prof_end(d, "im2col");
            TDM_CUDA_LAUNCHED("im2col_kernel");
            if (aug)
                gemm_rm_half(d, c, 0, 0, Cout, N, Kp, 1.0f, wa, Kp, scratch, N, 0.0f,
                             yn + oy0 * Wo, P);
            else if (gemm_is_half(d))
                gemm_rm_half(d, c, 0, 0, Cout, N, K, 1.0f, w, K, scratch, N, beta, yn + oy0 * Wo,
                             P);
            else
                gemm_rm(d, c, 0, 0, Cout, N, K, 1.0f, w, K, scratch, N, beta, yn + oy0 * Wo, P);
        }
    }
fail:
    if (wa) tdm_dev_free(d, wa, wabytes);   /* stream-ordered: after the GEMMs */
}

extern "C" void tdm_cuda_conv2d(tdm_device_t *d, float *y, const float *x, const float *w,
                                const float *b, int64_t B, int64_t Cin, int64_t H, int64_t W,
                                int64_t Cout, int64_t kh, int64_t kw, int64_t stride, int64_t pad,
                                float *scratch) {
    tdm_cuda_conv2d_pad4(d, y, x, w, b, B, Cin, H, W, Cout, kh, kw, stride, pad, pad, pad, pad,
                         scratch);
}

/* ---- normalization ----------------------------------------------------------
 * One block per group (group norm) or row (layer norm): two passes over the
 * elements in double (sum, then squared deviations from the mean), as the
 * CPU reference, then the affine pass in float. The block reads all of its
 * elements before it writes any, so y may alias x. */
#define TDM_NORM_THREADS 512


/* x, y (B, C, S); block bg = b·G + g normalizes channels [g·cg, (g+1)·cg). */
__global__ void group_norm_kernel(float *y, const float *x, const float *gamma,
                                  const float *beta, int64_t G, int64_t cg, int64_t S, float eps,
                                  int silu) {
    __shared__ double sh[32];
    int64_t bg = blockIdx.x, g = bg % G, n = cg * S;
    const float *xs = x + bg * n;
    float *ys = y + bg * n;
    double s = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += xs[i];
    double mean = tdm_block_sum(s, sh) / (double)n;
    double q = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        double dv = xs[i] - mean;
        q += dv * dv;
    }
    double var = tdm_block_sum(q, sh) / (double)n;
    float rstd = (float)(1.0 / sqrt(var + (double)eps));
    float meanf = (float)mean;
    __syncthreads();   /* every thread has read x before any writes y */
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        int64_t ch = g * cg + i / S;
        float ga = gamma ? gamma[ch] : 1.0f, be = beta ? beta[ch] : 0.0f;
        float v = (xs[i] - meanf) * (rstd * ga) + be;
        if (silu) v = v / (1.0f + expf(-v));
        ys[i] = v;
    }
}

/* Group norm over few, large groups (SD's 32 groups × batch 2 = 64 blocks
 * would leave half of an H100 idle): each group is cut into P slices of a
 * multiple of 4 elements, one block per (group, slice), in two launches —
 * slice sums and sums of squares (double, float4 loads), then the affine
 * pass (float4 loads and stores; a slice walks its channels, so the scale
 * and shift are set once per channel). var = E[x²] − mean² in double (the
 * CPU reference takes squared deviations from the mean in a second pass;
 * the two agree to ~1e-12 relative for activations). A group's statistics
 * add its P partials in slice order, so the result does not depend on
 * scheduling. Needs S % 4 == 0 and 16-byte aligned x and y (the caller
 * checks); part holds 2·BG·P doubles. */
__global__ void gn_stats_kernel(double *part, const float *x, int64_t n, int P) {
    __shared__ double sh[32];
    const int64_t bg = blockIdx.y, p = blockIdx.x;
    const int64_t len = ((n + P - 1) / P + 3) / 4 * 4, lo = p * len;
    const int64_t hi = lo + len < n ? lo + len : n;
    const float4 *xs = reinterpret_cast<const float4 *>(x + bg * n);
    double s = 0, q = 0;
    for (int64_t i = lo / 4 + threadIdx.x; i < hi / 4; i += blockDim.x) {
        float4 v = xs[i];
        s += (double)v.x + (double)v.y + (double)v.z + (double)v.w;
        q += (double)v.x * v.x + (double)v.y * v.y + (double)v.z * v.z + (double)v.w * v.w;
    }
    s = tdm_block_sum(s, sh);
    q = tdm_block_sum(q, sh);
    if (threadIdx.x == 0) {
        part[bg * P + p] = s;
        part[(int64_t)gridDim.y * P + bg * P + p] = q;
    }
}

__device__ __forceinline__ float gn_act(float v, float a, float b, int silu) {
    v = v * a + b;
    return silu ? v / (1.0f + __expf(-v)) : v;
}

__global__ void gn_apply_kernel(float *y, const float *x, const double *part, const float *gamma,
                                const float *beta, int64_t G, int64_t cg, int64_t S, int P,
                                float eps, int silu) {
    const int64_t bg = blockIdx.y, g = bg % G, n = cg * S;
    const int64_t len = ((n + P - 1) / P + 3) / 4 * 4, lo = (int64_t)blockIdx.x * len;
    const int64_t hi = lo + len < n ? lo + len : n;
    double sum = 0, sq = 0;
    for (int i = 0; i < P; i++) {
        sum += part[bg * P + i];
        sq += part[(int64_t)gridDim.y * P + bg * P + i];
    }
    const double mean = sum / (double)n, var = fmax(sq / (double)n - mean * mean, 0.0);
    const float rstd = (float)(1.0 / sqrt(var + (double)eps)), meanf = (float)mean;
    const float4 *xs = reinterpret_cast<const float4 *>(x + bg * n);
    float4 *ys = reinterpret_cast<float4 *>(y + bg * n);
    for (int64_t c = lo / S; c * S < hi; c++) {   /* the channels of this slice */
        const int64_t ch = g * cg + c, c0 = c * S > lo ? c * S : lo;
        const int64_t c1 = (c + 1) * S < hi ? (c + 1) * S : hi;
        const float ga = gamma ? gamma[ch] : 1.0f, be = beta ? beta[ch] : 0.0f;
        const float a = rstd * ga, b = be - meanf * a;
        for (int64_t i = c0 / 4 + threadIdx.x; i < c1 / 4; i += blockDim.x) {
            float4 v = xs[i];
            v.x = gn_act(v.x, a, b, silu);
            v.y = gn_act(v.y, a, b, silu);
            v.z = gn_act(v.z, a, b, silu);
            v.w = gn_act(v.w, a, b, silu);
            ys[i] = v;
        }
    }
}

extern "C" void tdm_cuda_group_norm(tdm_device_t *d, float *y, const float *x, const float *gamma,
                                    const float *beta, int64_t B, int64_t C, int64_t S, int64_t G,
                                    float eps, int silu) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    if (B <= 0 || G <= 0 || C <= 0 || S <= 0) return;
    if (B * G > 0x7fffffff) {
        tdm_cuda_fail(d, TDM_ERR_UNSUPPORTED, "group_norm_kernel", __FILE__, __LINE__,
                      "more than 2^31-1 groups");
        return;
    }
    {
        const int64_t n = C / G * S;
        /* slices of >= 8K elements, enough blocks for ~4 per SM */
        int64_t P = (528 + B * G - 1) / (B * G);
        if (P > n / 8192) P = n / 8192;
        if (P > 1 && B * G <= 65535 && S % 4 == 0 && ((uintptr_t)x & 15) == 0 &&
            ((uintptr_t)y & 15) == 0) {
            double *part = (double *)tdm_cuda_stage(d, 2 * B * G * P * (int64_t)sizeof(double));
            if (!part) return;
            dim3 grid((unsigned)P, (unsigned)(B * G));
            gn_stats_kernel<<<grid, 256, 0, c->stream>>>(part, x, n, (int)P);
            TDM_CUDA_LAUNCHED("gn_stats_kernel");
            gn_apply_kernel<<<grid, 256, 0, c->stream>>>(y, x, part, gamma, beta, G, C / G, S,
                                                          (int)P, eps, silu);
            TDM_CUDA_LAUNCHED("gn_apply_kernel");
            return;
        }
    }
    group_norm_kernel<<<(unsigned)(B * G), TDM_NORM_THREADS, 0, c->stream>>>(
        y, x, gamma, beta, G, C / G, S, eps, silu);
    TDM_CUDA_LAUNCHED("group_norm_kernel");
fail:;
}

/* x, y (rows, D): block r normalizes row r. */
__global__ void layer_norm_kernel(float *y, const float *x, const float *gamma,
                                  const float *beta, int64_t D, float eps) {
    __shared__ double sh[32];
    const float *xr = x + (int64_t)blockIdx.x * D;
    float *yr = y + (int64_t)blockIdx.x * D;
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
        float v = (xr[i] - meanf) * rstd;
        if (gamma) v *= gamma[i];
        if (beta) v += beta[i];
        yr[i] = v;
    }
}

extern "C" void tdm_cuda_layer_norm(tdm_device_t *d, float *y, const float *x, const float *gamma,
                                    const float *beta, int64_t rows, int64_t D, float eps) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    if (rows <= 0 || D <= 0) return;
    for (int64_t r0 = 0; r0 < rows; r0 += 0x7fffffff) {   /* grid.x limit */
        int64_t nr = rows - r0 < 0x7fffffff ? rows - r0 : 0x7fffffff;
        int threads = D >= 1024 ? 256 : D >= 256 ? 128 : 64;
        layer_norm_kernel<<<(unsigned)nr, threads, 0, c->stream>>>(y + r0 * D, x + r0 * D, gamma,
                                                                   beta, D, eps);
        TDM_CUDA_LAUNCHED("layer_norm_kernel");
    }
fail:;
}

/* ---- activations and element-wise ------------------------------------------ */

__device__ static inline float gelu_erf(float v) {
    return 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f));
}

__device__ static inline float gelu_tanh(float v) {
    const float k = 0.7978845608028654f;   /* sqrt(2/pi) */
    return 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
}

#define GRID_STRIDE(i, n)                                                          \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n);      \
         i += (int64_t)gridDim.x * blockDim.x)

__global__ void silu_kernel(float *x, int64_t n) {
    GRID_STRIDE(i, n) x[i] = x[i] / (1.0f + expf(-x[i]));
}
__global__ void gelu_kernel(float *x, int64_t n) { GRID_STRIDE(i, n) x[i] = gelu_erf(x[i]); }
__global__ void gelu_tanh_kernel(float *x, int64_t n) { GRID_STRIDE(i, n) x[i] = gelu_tanh(x[i]); }
/* y (M, N; rows ldy apart) = gelu_tanh(y [+ b]) */
__global__ void bias_gelu_kernel(float *y, int64_t ldy, const float *b, int64_t M, int64_t N) {
    GRID_STRIDE(i, M * N) {
        int64_t r = i / N, j = i % N;
        float v = y[r * ldy + j] + (b ? b[j] : 0.0f);
        y[r * ldy + j] = gelu_tanh(v);
    }
}

extern "C" void tdm_cuda_linear_gelu(tdm_device_t *d, float *y, int64_t ldy, const float *x,
                                     const float *W, const float *b, int64_t M, int64_t K,
                                     int64_t N) {
    tdm_cuda_linear_ex(d, y, TDM_F32, ldy, x, TDM_F32, W, b, M, K, N, 1);
}

/* y (M, N; rows ldy apart, type T) = act(t (M, N; rows ldt apart) [+ b]),
 * act = tanh GELU when gelu; the fallback epilogue of a half-output linear. */
template <typename T>
__global__ void bias_act_kernel(T *y, int64_t ldy, const float *t, int64_t ldt, const float *b,
                                int64_t M, int64_t N, int gelu) {
    GRID_STRIDE(i, M * N) {
        int64_t r = i / N, j = i % N;
        T bh;   /* the bias rounded to T first, as the cuBLASLt path takes it */
        tdm_st(&bh, b ? b[j] : 0.0f);
        float v = t[r * ldt + j] + tdm_ld(&bh);
        to_half(&y[r * ldy + j], gelu ? gelu_tanh(v) : v);
    }
}

extern "C" void tdm_cuda_linear_ex(tdm_device_t *d, void *y, tdm_dtype yt, int64_t ldy,
                                   const void *x, tdm_dtype xt, const float *W, const float *b,
                                   int64_t M, int64_t K, int64_t N, int gelu) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    const void *xh = NULL;
    float *tmp = NULL;
    int yhalf = yt != TDM_F32;
    if (M <= 0 || N <= 0) return;
    if ((xt != TDM_F32 || yhalf) && (!gemm_is_half(d) || (xt != TDM_F32 && xt != d->gemm_dtype) ||
                                     (yhalf && yt != d->gemm_dtype))) {
        tdm_cuda_fail(d, TDM_ERR_INVALID_ARG, "tdm_cuda_linear_ex", __FILE__, __LINE__,
                      "activation dtype differs from the device's GEMM dtype");
        return;
    }
    if (gemm_is_half(d)) {
        xh = xt == TDM_F32 ? stage_half(d, c, (const float *)x, M, K, K) : x;
        if (!xh) return;
        /* one cuBLASLt kernel with bias [+ GELU] in its epilogue, when it has a plan */
        if (yhalf && b && K > 0) {
            /* the bias rounded to the output type, as a checkpoint stored in that type
             * holds it: cuBLASLt's half-output kernels with a float32 bias are slower
             * (FLUX 4+8 on H200: 41.4 vs 34.5 ms a step) */
            void *bh = tdm_dev_alloc(d, N * 2, "half bias");
            int ok = 0;
            if (bh) {
                tdm_cuda_cast(d, bh, d->gemm_dtype, b, TDM_F32, N);
                ok = tdm_cuda_linear_lt(d, y, 2, ldy, xh, W, (const float *)bh, M, K, N, gelu);
                tdm_dev_free(d, bh, N * 2);   /* stream-ordered: after the GEMM */
            }
            if (ok) return;
        }
        if (K > 0 && tdm_cuda_linear_lt(d, y, yhalf, ldy, xh, W, b, M, K, N, gelu)) return;
    } else if (K > 0 && tdm_cuda_linear_lt(d, y, 0, ldy, x, W, b, M, K, N, gelu)) {
        return;   /* float32 through cuBLASLt too: its plans are row-count independent */
    }
    if (yhalf) {   /* float32 product into a temporary, then bias/act and the rounding */
        tmp = (float *)tdm_dev_alloc(d, M * N * (int64_t)sizeof(float), "linear output");
        if (!tmp) {
            tdm_cuda_fail(d, TDM_ERR_NOMEM, "tdm_dev_alloc", __FILE__, __LINE__, tdm_last_error());
            return;
        }
        gemm_rm_half(d, c, 0, 1, M, N, K, 1.0f, xh, K, W, K, 0.0f, tmp, N);
        if (d->gemm_dtype == TDM_BF16)
            bias_act_kernel<<<tdm_cuda_blocks(M * N, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,
                              c->stream>>>((__nv_bfloat16 *)y, ldy, tmp, N, b, M, N, gelu);
        else
            bias_act_kernel<<<tdm_cuda_blocks(M * N, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,
                              c->stream>>>((__half *)y, ldy, tmp, N, b, M, N, gelu);
        TDM_CUDA_LAUNCHED("bias_act_kernel");
        goto fail;
    }
    if (gelu) {
        if (xh) gemm_rm_half(d, c, 0, 1, M, N, K, 1.0f, xh, K, W, K, 0.0f, (float *)y, ldy);
        else gemm_rm(d, c, 0, 1, M, N, K, 1.0f, (const float *)x, K, W, K, 0.0f, (float *)y, ldy);
        bias_gelu_kernel<<<tdm_cuda_blocks(M * N, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,
                           c->stream>>>((float *)y, ldy, b, M, N);
        TDM_CUDA_LAUNCHED("bias_gelu_kernel");
        goto fail;
    }
    if (b) {
        tdm_cuda_prof_begin(d);
        fill_rows_kernel<<<tdm_cuda_blocks(M * N, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,
                           c->stream>>>((float *)y, ldy, b, M, N);
        tdm_cuda_prof_end(d, "bias fill");
        TDM_CUDA_LAUNCHED("fill_rows_kernel");
    }
    /* y (M,N) = x (M,K) · W^T (K,N) [+ y] */
    if (xh) gemm_rm_half(d, c, 0, 1, M, N, K, 1.0f, xh, K, W, K, b ? 1.0f : 0.0f, (float *)y, ldy);
    else gemm_rm(d, c, 0, 1, M, N, K, 1.0f, (const float *)x, K, W, K, b ? 1.0f : 0.0f, (float *)y,
                 ldy);
fail:
    if (tmp) tdm_dev_free(d, tmp, M * N * (int64_t)sizeof(float));
}

template <typename Y, typename X>
__global__ void cast_kernel(Y *y, const X *x, int64_t n) {
    GRID_STRIDE(i, n) tdm_st(y + i, tdm_ld(x + i));
}

extern "C" void tdm_cuda_cast(tdm_device_t *d, void *y, tdm_dtype yt, const void *x,
                              tdm_dtype xt, int64_t n) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    if (n <= 0) return;
    TDM_ACT_DISPATCH(yt, Y, TDM_ACT_DISPATCH(xt, X,
        cast_kernel<Y, X><<<tdm_cuda_blocks(n, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,
                            c->stream>>>((Y *)y, (const X *)x, n)));
    TDM_CUDA_LAUNCHED("cast_kernel");
fail:;
}

int tdm_cuda_act_ok(tdm_device_t *d, tdm_dtype at, const char *op) {
    if (at == TDM_F32 || at == d->gemm_dtype) return 1;
    tdm_cuda_fail(d, TDM_ERR_INVALID_ARG, op, __FILE__, __LINE__,
                  "activation dtype differs from the device's GEMM dtype");
    return 0;
}

float *tdm_cuda_qkv_f32(tdm_device_t *d, tdm_dtype at, const void *q, const void *k,
                        const void *v, int64_t nq, int64_t nk, int64_t *bytes) {
    *bytes = (2 * nq + 2 * nk) * (int64_t)sizeof(float);
    float *f = (float *)tdm_dev_alloc(d, *bytes, "attention float32 copies");
    if (!f) {
        tdm_cuda_fail(d, TDM_ERR_NOMEM, "tdm_dev_alloc", __FILE__, __LINE__, tdm_last_error());
        return NULL;
    }
    tdm_cuda_cast(d, f, TDM_F32, q, at, nq);
    tdm_cuda_cast(d, f + nq, TDM_F32, k, at, nk);
    tdm_cuda_cast(d, f + nq + nk, TDM_F32, v, at, nk);
    return f;
}

template <typename T>
__global__ void act_kernel(T *x, int fn, int64_t n) {
    GRID_STRIDE(i, n) {
        float v = tdm_ld(x + i);
        switch (fn) {
        case 0: v = v > 0.0f ? v : 0.0f; break;   /* NaN becomes 0, as the CPU op */
        case 1: v = gelu_erf(v); break;
        case 2: v = gelu_tanh(v); break;
        default: v = v / (1.0f + expf(-v)); break;
        }
        tdm_st(x + i, v);
    }
}

extern "C" void tdm_cuda_act_t(tdm_device_t *d, tdm_dtype at, tdm_act_fn fn, void *x, int64_t n) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    if (n <= 0) return;
    TDM_ACT_DISPATCH(at, T,
        act_kernel<T><<<tdm_cuda_blocks(n, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0, c->stream>>>(
            (T *)x, fn, n));
    TDM_CUDA_LAUNCHED("act_kernel");
fail:;
}

__global__ void quick_gelu_kernel(float *x, int64_t n) {
    GRID_STRIDE(i, n) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

/* h (rows, 2F) → y (rows, F) = h[:, :F] · gelu(h[:, F:]) */
__global__ void geglu_kernel(float *y, const float *h, int64_t rows, int64_t F) {
    GRID_STRIDE(i, rows * F) {
        int64_t r = i / F, j = i % F;
        const float *a = h + r * 2 * F;
        y[i] = a[j] * gelu_erf(a[F + j]);
    }
}

__global__ void add_kernel(float *y, const float *a, const float *b, int64_t n) {
    GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

/* x (B, C, S) += v (B, C) */
__global__ void add_channel_bias_kernel(float *x, const float *v, int64_t BC, int64_t S) {
    GRID_STRIDE(i, BC * S) x[i] += v[i / S];
}

__global__ void scale_kernel(float *y, const float *a, float s, int64_t n) {
    GRID_STRIDE(i, n) y[i] = a[i] * s;
}

__global__ void clamp_kernel(float *y, const float *a, float lo, float hi, int64_t n) {
    GRID_STRIDE(i, n) {
        float x = a[i];   /* NaN fails both tests: kept */
        y[i] = x < lo ? lo : (x > hi ? hi : x);
    }
}

#define LAUNCH_1D(kernel, n, ...)                                                  \
    do {                                                                           \
        tdm_cuda_impl_t *c_ = tdm_cuda_ctx(d);                                     \
        if ((n) <= 0) return;                                                      \
        kernel<<<tdm_cuda_blocks((n), TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,      \
                 c_->stream>>>(__VA_ARGS__);                                       \
        TDM_CUDA_LAUNCHED(#kernel);                                                \
    } while (0)

extern "C" void tdm_cuda_silu(tdm_device_t *d, float *x, int64_t n) {
    LAUNCH_1D(silu_kernel, n, x, n);
fail:;
}
extern "C" void tdm_cuda_gelu(tdm_device_t *d, float *x, int64_t n) {
    LAUNCH_1D(gelu_kernel, n, x, n);
fail:;
}
extern "C" void tdm_cuda_gelu_tanh(tdm_device_t *d, float *x, int64_t n) {
    LAUNCH_1D(gelu_tanh_kernel, n, x, n);
fail:;
}
extern "C" void tdm_cuda_quick_gelu(tdm_device_t *d, float *x, int64_t n) {
    LAUNCH_1D(quick_gelu_kernel, n, x, n);
fail:;
}
extern "C" void tdm_cuda_geglu(tdm_device_t *d, float *y, const float *h, int64_t rows, int64_t F) {
    LAUNCH_1D(geglu_kernel, rows * F, y, h, rows, F);
fail:;
}
extern "C" void tdm_cuda_add(tdm_device_t *d, float *y, const float *a, const float *b, int64_t n) {
    LAUNCH_1D(add_kernel, n, y, a, b, n);
fail:;
}
extern "C" void tdm_cuda_add_channel_bias(tdm_device_t *d, float *x, const float *v, int64_t B,
                                          int64_t C, int64_t S) {
    LAUNCH_1D(add_channel_bias_kernel, B * C * S, x, v, B * C, S);
fail:;
}
extern "C" void tdm_cuda_scale(tdm_device_t *d, float *y, const float *a, float s, int64_t n) {
    LAUNCH_1D(scale_kernel, n, y, a, s, n);
fail:;
}
extern "C" void tdm_cuda_clamp(tdm_device_t *d, float *y, const float *a, float lo, float hi,
                               int64_t n) {
    LAUNCH_1D(clamp_kernel, n, y, a, lo, hi, n);
fail:;
}

/* ---- layout ------------------------------------------------------------------ */

#define TDM_TBLK 32

/* x (B, C, S) → y (B, S, C) through a 32×33 shared tile: reads along S and
 * writes along C are both coalesced. grid (S tiles, C tiles, B), 32×8 threads;
 * y and z grid dimensions stride over tiles past their limits. */
__global__ void transpose_kernel(float *y, const float *x, int64_t B, int64_t C, int64_t S) {
    __shared__ float t[TDM_TBLK][TDM_TBLK + 1];
    int64_t nc = (C + TDM_TBLK - 1) / TDM_TBLK;
    int64_t s0 = (int64_t)blockIdx.x * TDM_TBLK;
    for (int64_t b = blockIdx.z; b < B; b += gridDim.z) {
        const float *xb = x + b * C * S;
        float *yb = y + b * C * S;
        for (int64_t cb = blockIdx.y; cb < nc; cb += gridDim.y) {
            int64_t c0 = cb * TDM_TBLK;
            __syncthreads();
            for (int r = threadIdx.y; r < TDM_TBLK; r += blockDim.y) {
                int64_t ch = c0 + r, s = s0 + threadIdx.x;
                if (ch < C && s < S) t[r][threadIdx.x] = xb[ch * S + s];
            }
            __syncthreads();
            for (int r = threadIdx.y; r < TDM_TBLK; r += blockDim.y) {
                int64_t s = s0 + r, ch = c0 + threadIdx.x;
                if (ch < C && s < S) yb[s * C + ch] = t[threadIdx.x][r];
            }
        }
    }
}

static void transpose(tdm_device_t *d, float *y, const float *x, int64_t B, int64_t C,
                      int64_t S) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    if (B <= 0 || C <= 0 || S <= 0) return;
    int64_t ns = (S + TDM_TBLK - 1) / TDM_TBLK, nc = (C + TDM_TBLK - 1) / TDM_TBLK;
    if (ns > 0x7fffffff) {
        tdm_cuda_fail(d, TDM_ERR_UNSUPPORTED, "transpose_kernel", __FILE__, __LINE__,
                      "too many columns");
        return;
    }
    {
        dim3 grid((unsigned)ns, (unsigned)(nc < 65535 ? nc : 65535),
                  (unsigned)(B < 65535 ? B : 65535));
        transpose_kernel<<<grid, dim3(TDM_TBLK, 8), 0, c->stream>>>(y, x, B, C, S);
        TDM_CUDA_LAUNCHED("transpose_kernel");
    }
fail:;
}

extern "C" void tdm_cuda_transpose_cs(tdm_device_t *d, float *y, const float *x, int64_t B,
                                      int64_t C, int64_t S) {
    transpose(d, y, x, B, C, S);
}

extern "C" void tdm_cuda_transpose_sc(tdm_device_t *d, float *y, const float *x, int64_t B,
                                      int64_t S, int64_t C) {
    transpose(d, y, x, B, S, C);   /* the same transpose with the roles swapped */
}

/* x (BC, H, W) → y (BC, 2H, 2W), one thread per output element */
/* one thread per input element: its 2 × 2 copies as two float2 stores (rows
 * 2r and 2r + 1 of y, r = b·C·H + c·H + iy); one division per 4 outputs */
__global__ void upsample_nearest2x_kernel(float *y, const float *x, int64_t rows, int64_t W) {
    GRID_STRIDE(i, rows * W) {
        const int64_t r = i / W, ix = i - r * W;
        const float v = x[i];
        float2 *o = reinterpret_cast<float2 *>(y + 4 * r * W + 2 * ix);
        o[0] = make_float2(v, v);
        o[W] = make_float2(v, v);
    }
}

extern "C" void tdm_cuda_upsample_nearest2x(tdm_device_t *d, float *y, const float *x, int64_t B,
                                            int64_t C, int64_t H, int64_t W) {
    if (((uintptr_t)y & 7) != 0) {   /* float2 stores need 8-byte alignment */
        tdm_cuda_resize_nearest(d, y, x, B, C, H, W, 2 * H, 2 * W);
        return;
    }
    LAUNCH_1D(upsample_nearest2x_kernel, B * C * H * W, y, x, B * C * H, W);
fail:;
}

/* torch's nearest source index (see tdm_cpu_resize_nearest), float32 math */
__device__ static inline int64_t nearest_src(int64_t i, int64_t in, int64_t out, float scale) {
    int64_t s = out == in ? i : out == 2 * in ? i >> 1 : (int64_t)floorf(__fmul_rn((float)i, scale));
    return s > in - 1 ? in - 1 : s;
}

__global__ void resize_nearest_kernel(float *y, const float *x, int64_t BC, int64_t H, int64_t W,
                                      int64_t Ho, int64_t Wo, float sh, float sw) {
    int64_t P = Ho * Wo;
    GRID_STRIDE(e, BC * P) {
        int64_t bc = e / P, r = e % P, i = r / Wo, j = r % Wo;
        y[e] = x[(bc * H + nearest_src(i, H, Ho, sh)) * W + nearest_src(j, W, Wo, sw)];
    }
}

extern "C" void tdm_cuda_resize_nearest(tdm_device_t *d, float *y, const float *x, int64_t B,
                                        int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    float sh = (float)H / (float)Ho, sw = (float)W / (float)Wo;
    LAUNCH_1D(resize_nearest_kernel, B * C * Ho * Wo, y, x, B * C, H, W, Ho, Wo, sh, sw);
fail:;
}

/* a (B, Ca, S), b (B, Cb, S) → y (B, Ca+Cb, S) */
__global__ void concat_channels_kernel(float *y, const float *a, int64_t na, const float *b,
                                       int64_t nb, int64_t B) {
    int64_t n = na + nb;   /* floats per image of y */
    GRID_STRIDE(i, B * n) {
        int64_t bi = i / n, r = i % n;
        y[i] = r < na ? a[bi * na + r] : b[bi * nb + (r - na)];
    }
}

extern "C" void tdm_cuda_concat_channels(tdm_device_t *d, float *y, const float *a, int64_t Ca,
                                         const float *b, int64_t Cb, int64_t B, int64_t S) {
    LAUNCH_1D(concat_channels_kernel, B * (Ca + Cb) * S, y, a, Ca * S, b, Cb * S, B);
fail:;
}

/* y (n, D)[i, :] = table[idx[i], :] */
__global__ void gather_rows_kernel(float *y, const float *table, const int32_t *idx, int64_t n,
                                   int64_t D) {
    GRID_STRIDE(e, n * D) {
        int64_t i = e / D, j = e % D;
        y[e] = table[(int64_t)idx[i] * D + j];
    }
}

extern "C" void tdm_cuda_gather_rows(tdm_device_t *d, float *y, const float *table,
                                     const int32_t *idx, int64_t n, int64_t D) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    int32_t *didx = NULL;
    if (n <= 0 || D <= 0) return;
    didx = (int32_t *)tdm_cuda_stage(d, n * (int64_t)sizeof(int32_t));
    if (!didx) return;
    /* idx is host memory the caller may reuse at once: copy it before returning */
    TDM_CUDA_CHECK(cudaMemcpyAsync(didx, idx, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice,
                                   c->stream));
    TDM_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    gather_rows_kernel<<<tdm_cuda_blocks(n * D, TDM_CUDA_THREADS), TDM_CUDA_THREADS, 0,
                         c->stream>>>(y, table, didx, n, D);
    TDM_CUDA_LAUNCHED("gather_rows_kernel");
fail:;
}
