/* ops.c — CPU reference kernels (float32, contiguous row-major), the spec
 * every other backend is checked against. Not a tensor library: callers pass
 * raw buffers and sizes (see ops.h for every contract).
 *
 * Threading: GEMMs (linear, gemm, the convolutions) are a fixed grid of
 * single-threaded OpenBLAS calls over OpenMP threads (see tdm_cpu_gemm). Element-wise, norm
 * and softmax loops use `omp parallel for`. Attention (parallel over batch ×
 * head × query tile) and the im2col convolution (parallel over the columns of
 * each im2col tile) call BLAS from inside an OpenMP region; for that call
 * OpenBLAS is switched to one thread and restored afterwards, so the two pools
 * never oversubscribe the cores. That switch is process-wide: two application
 * threads must not run tdm_cpu_attention or tdm_cpu_conv2d* at the same time
 * as other BLAS-heavy ops if they rely on BLAS threading.
 *
 * Math follows torch: biased variance, erf GELU, tanh GELU, quick_gelu =
 * x·sigmoid(1.702x), softmax with max subtraction. Reductions accumulate in
 * double where it is cheap. */
#include "backend/cpu/ops.h"
#include "core/core.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>

/* Below this many elements a loop runs on one thread. */
#define TDM_OMP_MIN 32768

/* Query rows per attention tile: the score tile is TILE × Tk floats per thread. */
#define TDM_ATTN_TILE 64

/* Vectors of TDM_VL floats, one register. */
#if defined(__AVX512F__)
#define TDM_VL 16
#else
#define TDM_VL 8
#endif
typedef float vf_t __attribute__((vector_size(TDM_VL * 4)));
typedef float vfu_t __attribute__((vector_size(TDM_VL * 4), aligned(4)));   /* unaligned */
typedef int32_t vi_t __attribute__((vector_size(TDM_VL * 4)));

/* p, as float32: the CPU computes in float32 only; another activation type
 * `at` here is a bug in the calling model, not bad input. */
static float *host_f32(tdm_dtype at, const char *op, const void *p) {
    if (at != TDM_F32) {
        tdm_log(TDM_LOG_ERROR, "%s: activation dtype %s on a host device (float32 only)", op,
                tdm_dtype_name(at));
        abort();
    }
    return (float *)p;
}

/* ---- GEMM ------------------------------------------------------------------ */

/* GEMMs run as a fixed grid of GEMM_MC x GEMM_NC blocks of C, each one
 * single-threaded OpenBLAS call, spread over the OpenMP threads. The grid
 * does not depend on the thread count, so every element of C is computed by
 * the same kernel code whatever the number of threads: results are
 * bit-identical for 1, 2 or 16 threads (and so for any number of ranks
 * sharing a machine's cores), which OpenBLAS's own threading does not give.
 *
 * A row of C also does not depend on how many rows come with it (a rank of
 * a context-parallel group holds a share of the rows and must compute them
 * as one device does). OpenBLAS picks its kernel by the size of the call:
 * below about 10^6 multiply-adds some CPUs get a "small matrix" kernel (and
 * row-major NN calls below 28·512² a "direct" one), and newer releases send
 * a one-row call to GEMV, each summing in another order. So:
 *  - a block whose column strip is small (n·K < GEMM_OWN_NK) is computed
 *    here, every element summed over k in order (gemm_own);
 *  - a block of fewer than GEMM_MIN_MNK multiply-adds runs with zero rows
 *    appended up to that size (gemm_padded; the extra rows are dropped).
 * Every OpenBLAS call then takes its regular blocked kernel, whose sum for
 * an element runs over k in one order whatever the row count. The
 * convolutions, whose GEMM rows are output channels, skip this. */
#define GEMM_MC 256
#define GEMM_NC 256
#define GEMM_MIN_MNK (INT64_C(1) << 23)
#define GEMM_OWN_NK (INT64_C(1) << 14)

static pthread_once_t g_blas_once = PTHREAD_ONCE_INIT;
/* 1: row-stable blocks run gemm_rs (set once with g_blas_once) */
static int g_gemm_rs;

/* OpenBLAS's kernels for these cores sum an element the same way wherever
 * its row sits in the kernel's row group (measured with every x86 core
 * OPENBLAS_CORETYPE selects on an AVX-512 machine: the Haswell / Zen AVX2
 * kernels and the SSE ones do not), so the blocks above keep their bits
 * there; elsewhere the row-stable blocks run gemm_rs (10-15 % slower than
 * OpenBLAS on the AVX-512 dev machine, bench/RESULTS.md). */
static int blas_rows_symmetric(void) {
    static const char *ok[] = {"skylakex", "cooperlake", "sapphirerapids"};
    const char *core = openblas_get_corename();
    for (size_t i = 0; core && i < sizeof ok / sizeof *ok; i++)
        if (!strcasecmp(core, ok[i])) return 1;
    return 0;
}

static void blas_single_thread(void) {
    openblas_set_num_threads(1);
    g_gemm_rs = !blas_rows_symmetric();
}

/* C (m, n) = alpha·op(A)·op(B) + beta·C, each element summed over k in
 * order; beta 0 does not read C. op(B) rows are contiguous when !transB, so
 * that case runs k-outer over a row of accumulators (vectorised over j). */
static void gemm_own(int transA, int transB, int64_t m, int64_t n, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                     int64_t ldc) {
    float accv[GEMM_NC], btv[GEMM_OWN_NK];
    /* through pointers: UBSan bounds-checks every index of a sized array,
     * which kept the sanitized suite's loops scalar and 10x slower */
    float *acc = accv, *bt = btv;   /* bt: op(B) (K, n) packed when transB */
    if (transB && n * K <= GEMM_OWN_NK) {
        for (int64_t k = 0; k < K; k++)
            for (int64_t j = 0; j < n; j++) bt[k * n + j] = B[j * ldb + k];
        B = bt, ldb = n, transB = 0;   /* the same sums (over k in order), vectorized over j */
    }
    for (int64_t i = 0; i < m; i++) {
        if (!transB) {
            memset(acc, 0, (size_t)n * sizeof(float));
            for (int64_t k = 0; k < K; k++) {
                const float a = transA ? A[k * lda + i] : A[i * lda + k];
                const float *b = B + k * ldb;
                for (int64_t j = 0; j < n; j++) acc[j] += a * b[j];
            }
        } else {
            for (int64_t j = 0; j < n; j++) {
                float sum = 0.0f;
                for (int64_t k = 0; k < K; k++)
                    sum += (transA ? A[k * lda + i] : A[i * lda + k]) * B[j * ldb + k];
                acc[j] = sum;
            }
        }
        float *c = C + i * ldc;
        for (int64_t j = 0; j < n; j++) c[j] = alpha * acc[j] + (beta != 0.0f ? beta * c[j] : 0.0f);
    }
}

static void sgemm(int transA, int transB, int64_t m, int64_t n, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

/* The block as rows 0..m-1 of an OpenBLAS call of `mp` rows (the others
 * zero): op(A) and C copied into scratch. Without memory for the scratch
 * the block is computed by gemm_own: right, but not in the bits other row
 * counts give. */
static void gemm_padded(int transA, int transB, int64_t m, int64_t mp, int64_t n, int64_t K,
                        float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                        float beta, float *C, int64_t ldc) {
    float *a = calloc((size_t)(mp * K + mp * n), sizeof(float));
    if (!a) {
        gemm_own(transA, transB, m, n, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    float *c = a + mp * K;
    for (int64_t i = 0; i < m; i++) {
        if (transA)   /* op(A) = A^T: A is (K, rows), the copy (K, mp) */
            for (int64_t k = 0; k < K; k++) a[k * mp + i] = A[k * lda + i];
        else
            memcpy(a + i * K, A + i * lda, (size_t)K * sizeof(float));
        if (beta != 0.0f) memcpy(c + i * n, C + i * ldc, (size_t)n * sizeof(float));
    }
    sgemm(transA, transB, mp, n, K, alpha, a, transA ? mp : K, B, ldb, beta, c, n);
    for (int64_t i = 0; i < m; i++) memcpy(C + i * ldc, c + i * n, (size_t)n * sizeof(float));
    free(a);
}

/* The row-stable kernel: C (m, n) = alpha·op(A)·op(B) + beta·C with every
 * element summed over k in order by the same instructions wherever its row
 * sits and however many rows come with it (OpenBLAS's kernels do not give
 * that on every CPU: README). op(A) is packed in groups of RS_R rows (zero
 * rows after m), op(B) in panels of RS_W columns (zero columns after n); a
 * group × panel tile accumulates in vector registers, k outer — each lane one
 * element — so the row count, the group and the position in it change no
 * bit. Without memory for the packing the block is computed by gemm_own:
 * right, but not in these bits. */
/* A tile is RS_R rows × RS_V vectors: 16 accumulators of the 32 AVX-512
 * registers, 12 of the 16 AVX2 ones (with 16 the loop spilled them to the
 * stack and ran 6× slower). */
#if TDM_VL == 16
#define RS_R 8
#else
#define RS_R 6
#endif
#define RS_V 2
#define RS_W (RS_V * TDM_VL)

static void *rs_alloc(int64_t floats) {
    size_t bytes = ((size_t)floats * sizeof(float) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes ? bytes : 64);
}

static void gemm_rs(int transA, int transB, int64_t m, int64_t n, int64_t K, float alpha,
                    const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                    int64_t ldc) {
    const int64_t groups = (m + RS_R - 1) / RS_R;
    float *ap = rs_alloc(groups * RS_R * K), *bp = rs_alloc(K * RS_W);
    if (!ap || !bp) {
        free(ap);
        free(bp);
        gemm_own(transA, transB, m, n, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* loops in the order that reads the source contiguously */
    for (int64_t g = 0; g < groups; g++)
        for (int r = 0; r < RS_R; r++) {
            const int64_t i = g * RS_R + r;
            float *d = ap + g * K * RS_R + r;
            if (i >= m)
                for (int64_t k = 0; k < K; k++) d[k * RS_R] = 0.0f;
            else if (transA)
                for (int64_t k = 0; k < K; k++) d[k * RS_R] = A[k * lda + i];
            else
                for (int64_t k = 0; k < K; k++) d[k * RS_R] = A[i * lda + k];
        }
    for (int64_t j0 = 0; j0 < n; j0 += RS_W) {
        const int64_t w = n - j0 < RS_W ? n - j0 : RS_W;
        for (int64_t j = 0; j < RS_W; j++) {
            float *d = bp + j;
            if (j >= w)
                for (int64_t k = 0; k < K; k++) d[k * RS_W] = 0.0f;
            else if (transB)
                for (int64_t k = 0; k < K; k++) d[k * RS_W] = B[(j0 + j) * ldb + k];
            else
                for (int64_t k = 0; k < K; k++) d[k * RS_W] = B[k * ldb + j0 + j];
        }
        for (int64_t g = 0; g < groups; g++) {
            vf_t acc[RS_R][RS_V] = {{{0}}};
            const float *a = ap + g * K * RS_R;
            for (int64_t k = 0; k < K; k++) {
                vf_t b[RS_V];
                for (int v = 0; v < RS_V; v++) b[v] = *(const vf_t *)(bp + k * RS_W + v * TDM_VL);
                for (int r = 0; r < RS_R; r++)
                    for (int v = 0; v < RS_V; v++) acc[r][v] += a[k * RS_R + r] * b[v];
            }
            for (int r = 0; r < RS_R && g * RS_R + r < m; r++) {
                float *c = C + (g * RS_R + r) * ldc + j0;
                const float *s = (const float *)acc[r];
                for (int64_t j = 0; j < w; j++) c[j] = alpha * s[j] + (beta != 0.0f ? beta * c[j] : 0.0f);
            }
        }
    }
    free(ap);
    free(bp);
}

/* The GEMM over the block grid; `row_stable`: a row's bits independent of
 * M (the small blocks as above), else every block a plain OpenBLAS call
 * (the convolutions, whose rows are output channels, not tokens). */
static void gemm_grid(int row_stable, int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                      const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                      int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    pthread_once(&g_blas_once, blas_single_thread);
    const int64_t mb = (M + GEMM_MC - 1) / GEMM_MC, nb = (N + GEMM_NC - 1) / GEMM_NC;
#pragma omp parallel for schedule(dynamic) if (mb * nb > 1 && M * N * K > TDM_OMP_MIN)
    for (int64_t blk = 0; blk < mb * nb; blk++) {
        const int64_t m0 = (blk / nb) * GEMM_MC, n0 = (blk % nb) * GEMM_NC;
        const int64_t m = M - m0 < GEMM_MC ? M - m0 : GEMM_MC, n = N - n0 < GEMM_NC ? N - n0 : GEMM_NC;
        /* row m0 of op(A): A + m0*lda (no trans) or A + m0 (trans); column n0
         * of op(B): B + n0 (no trans) or B + n0*ldb (trans) */
        const float *Am = transA ? A + m0 : A + m0 * lda;
        const float *Bn = transB ? B + n0 * ldb : B + n0;
        float *Cb = C + m0 * ldc + n0;
        if (row_stable && n * K < GEMM_OWN_NK)
            gemm_own(transA, transB, m, n, K, alpha, Am, lda, Bn, ldb, beta, Cb, ldc);
        else if (row_stable && g_gemm_rs)
            gemm_rs(transA, transB, m, n, K, alpha, Am, lda, Bn, ldb, beta, Cb, ldc);
        else if (row_stable && m * n * K < GEMM_MIN_MNK)
            gemm_padded(transA, transB, m, (GEMM_MIN_MNK + n * K - 1) / (n * K), n, K, alpha, Am, lda, Bn,
                        ldb, beta, Cb, ldc);
        else
            sgemm(transA, transB, m, n, K, alpha, Am, lda, Bn, ldb, beta, Cb, ldc);
    }
}

void tdm_cpu_gemm(tdm_device_t *dev, int transA, int transB, int64_t M, int64_t N, int64_t K,
                  float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                  float beta, float *C, int64_t ldc) {
    gemm_grid(1, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* y (C, S) filled with b[c] along each row c. */
static void fill_channels(float *y, const float *b, int64_t C, int64_t S) {
#pragma omp parallel for if (C * S > TDM_OMP_MIN)
    for (int64_t c = 0; c < C; c++)
        for (int64_t s = 0; s < S; s++) y[c * S + s] = b[c];
}

/* y (M, N) filled with b (N) per row, or zeros. */
static void fill_rows(float *y, const float *b, int64_t M, int64_t N) {
#pragma omp parallel for if (M * N > TDM_OMP_MIN)
    for (int64_t i = 0; i < M; i++) {
        if (b) memcpy(y + i * N, b, (size_t)N * sizeof(float));
        else memset(y + i * N, 0, (size_t)N * sizeof(float));
    }
}

void tdm_cpu_linear(tdm_device_t *dev, float *y, const float *x, const float *W, const float *b,
                    int64_t M, int64_t K, int64_t N) {
    if (M <= 0 || N <= 0) return;
    if (b) fill_rows(y, b, M, N);
    /* y (M,N) = x (M,K) · W^T (K,N) [+ y] */
    tdm_cpu_gemm(dev, 0, 1, M, N, K, 1.0f, x, K, W, K, b ? 1.0f : 0.0f, y, N);
}

/* ---- convolution ------------------------------------------------------------
 * im2col + GEMM, tiled over output rows so the column buffer stays bounded:
 * a tile of `rows` output rows is the (K = Cin*kh*kw, rows*Wo) matrix of the
 * input patches under those rows, and y[:, tile] = w (Cout, K) · tile. The
 * tile holds as many whole output rows as fit the device's opts.conv_tile_bytes (at least
 * one), so the scratch is min(full im2col, about the cap). The same rule sizes
 * the scratch (tdm_cpu_conv2d*_scratch) and cuts the tiles, so a caller that
 * allocates what the _scratch function returns always has enough. */

/* The default cap, TDM_CONV_TILE_BYTES_DEFAULT (32 MiB): a 512-channel 3×3
 * conv at 64² gets 28-row tiles (1792 GEMM columns, ~900 per thread at 2
 * threads). At 2 threads, caps of 8-64 MiB measured within noise of each
 * other on the SD VAE decoder convs; much smaller tiles make each thread's
 * GEMM too narrow. */

static int conv_is_direct(int64_t kh, int64_t kw, int64_t stride, int64_t pt, int64_t pb,
                          int64_t pl, int64_t pr) {
    return kh == 1 && kw == 1 && stride == 1 && pt == 0 && pb == 0 && pl == 0 && pr == 0;
}

/* Output rows per column tile: as many as fit the cap, at least 1, at most Ho. */
static int64_t conv_tile_rows(const tdm_device_t *dev, int64_t K, int64_t Ho, int64_t Wo) {
    const size_t tile_bytes = dev ? dev->opts.conv_tile_bytes : 0;
    int64_t cap = (int64_t)((tile_bytes ? tile_bytes : TDM_CONV_TILE_BYTES_DEFAULT) / sizeof(float));
    int64_t row = K * Wo;                           /* floats per output row */
    int64_t rows = row > 0 ? cap / row : Ho;
    if (rows < 1) rows = 1;
    if (rows > Ho) rows = Ho;
    return rows;
}


/* col (Cin*kh*kw, rows*Wo): the patches under output rows [oy0, oy0+rows) of
 * one image x (Cin, H, W); taps that fall in the padding are 0. An orphaned
 * `omp for`: called inside a parallel region, the team shares the rows and
 * meets at its closing barrier; outside one, it runs on the calling thread. */
static void im2col_rows(float *col, const float *x, int64_t Cin, int64_t H, int64_t W,
                        int64_t kh, int64_t kw, int64_t stride, int64_t pt, int64_t pl,
                        int64_t Wo, int64_t oy0, int64_t rows) {
    int64_t K = Cin * kh * kw, N = rows * Wo;
#pragma omp for
    for (int64_t r = 0; r < K; r++) {
        int64_t c = r / (kh * kw), i = (r / kw) % kh, j = r % kw;
        const float *xc = x + c * H * W;
        float *dst = col + r * N;
        /* ox in [lo, hi) reads inside the row: 0 <= ox*stride - pl + j < W */
        int64_t lo = pl - j > 0 ? (pl - j + stride - 1) / stride : 0;
        int64_t hi = W + pl - j > 0 ? (W + pl - j + stride - 1) / stride : 0;
        if (lo > Wo) lo = Wo;
        if (hi > Wo) hi = Wo;
        if (hi < lo) hi = lo;
        for (int64_t t = 0; t < rows; t++) {
            int64_t iy = (oy0 + t) * stride - pt + i;
            float *d = dst + t * Wo;
            if (iy < 0 || iy >= H) {
                memset(d, 0, (size_t)Wo * sizeof(float));
                continue;
            }
            const float *xr = xc + iy * W;          /* d[ox] = xr[ox*stride - pl + j] */
            if (lo > 0) memset(d, 0, (size_t)lo * sizeof(float));
            if (stride == 1) {
                if (hi > lo) memcpy(d + lo, xr + lo - pl + j, (size_t)(hi - lo) * sizeof(float));
            } else {
                for (int64_t ox = lo; ox < hi; ox++) d[ox] = xr[ox * stride - pl + j];
            }
            if (hi < Wo) memset(d + hi, 0, (size_t)(Wo - hi) * sizeof(float));
        }
    }
}

/* ---- Winograd F(2×2, 3×3) ----------------------------------------------------
 * A 3×3, stride-1 convolution as 16 GEMMs of 2.25× fewer multiply-adds than
 * im2col's one (Lavin & Gray, 2015): every 2×2 block of outputs ("tile")
 * comes from a 4×4 input patch d and the 3×3 kernel g as
 *     Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A,
 * with Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; ½ ½ ½; ½ -½ ½;
 * 0 0 1], Aᵀ = [1 1 1 0; 0 1 -1 -1]. The sum over input channels of the ⊙ is,
 * for each of the 16 elements e of the 4×4 product, one GEMM
 *     M_e (Cout, tiles) = U_e (Cout, Cin) · V_e (Cin, tiles).
 * U (the kernels, transformed once per call), V (the patches) and M (the
 * products) live in the caller's scratch (conv2d_pad4_scratch counts them,
 * so the memory estimates hold); the tiles of one image run in equal chunks
 * so V and M stay within about opts.conv_tile_bytes. Every step is a fixed
 * function of the image, its tile chunk and a fixed list of GEMM calls, so
 * the bits do not depend on the thread count or on the batch. The transforms add
 * and halve in float32: the result is within float rounding of the direct
 * sum (tests/test_ops.c compares it with the double-precision reference). */

/* Tiles per image from which the Winograd path is taken (per image, so the
 * path, and the bits, do not depend on the batch): the kernel transform
 * (16·Cout·Cin floats written) must be small next to the GEMM work it saves
 * (20·Cout·Cin multiply-adds per tile). Measured on 2 Zen 3 cores, SD's
 * 1280-channel convs: 16×16 outputs (64 tiles) 1.26× faster than im2col,
 * 8×8 (16 tiles) 0.57×. The transformed kernels must also fit 2 ×
 * opts.conv_tile_bytes (wino_chunk), which leaves 1280 × 1280 to im2col at
 * the default cap. */
#define WINO_MIN_TILES 64
/* Tiles (GEMM columns) per task of the 16 GEMMs. */
#define WINO_NC 512

/* Tiles per chunk of the Winograd path for this conv, 0 when it takes
 * im2col: a 3×3 stride-1 conv of at least WINO_MIN_TILES tiles per image
 * whose transformed kernels (16·Cout·Cin floats) fit 2 × opts.conv_tile_bytes.
 * The chunks are equal (none smaller), V and M within about the cap. */
static int64_t wino_chunk(const tdm_device_t *dev, int64_t kh, int64_t kw, int64_t stride,
                          int64_t Cin, int64_t Cout, int64_t Ho, int64_t Wo) {
    const size_t cap = dev && dev->opts.conv_tile_bytes ? dev->opts.conv_tile_bytes
                                                        : TDM_CONV_TILE_BYTES_DEFAULT;
    const int64_t T = ((Ho + 1) / 2) * ((Wo + 1) / 2);
    if ((dev && !dev->opts.conv_winograd) || kh != 3 || kw != 3 || stride != 1 ||
        T < WINO_MIN_TILES || (size_t)(16 * Cout * Cin) * sizeof(float) > 2 * cap)
        return 0;
    int64_t nt = (int64_t)(cap / (16 * sizeof(float) * (size_t)(Cin + Cout)));
    if (nt < 1) nt = 1;
    if (nt > T) nt = T;
    return (T + (T + nt - 1) / nt - 1) / ((T + nt - 1) / nt);
}

/* The tiles [*a, *b) of tile row ty that lie in the chunk t0 .. t0+nt-1. */
static void wino_row_span(int64_t ty, int64_t tw, int64_t t0, int64_t nt, int64_t *a, int64_t *b) {
    *a = ty == t0 / tw ? t0 % tw : 0;
    *b = ty == (t0 + nt - 1) / tw ? (t0 + nt - 1) % tw + 1 : tw;
}

/* U[e][co][ci] = (G g Gᵀ)[e] for g = w[co][ci] (3×3). */
static void wino_kernels(float *U, const float *w, int64_t Cout, int64_t Cin) {
    const int64_t n = Cout * Cin;
#pragma omp parallel for if (n * 16 > TDM_OMP_MIN)
    for (int64_t k = 0; k < n; k++) {
        const float *g = w + k * 9;
        float t[4][3], u[16];
        for (int j = 0; j < 3; j++) {   /* t = G g: along the kernel's rows */
            t[0][j] = g[j];
            t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
            t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
            t[3][j] = g[6 + j];
        }
        for (int i = 0; i < 4; i++) {   /* u = t Gᵀ: along its columns */
            u[i * 4 + 0] = t[i][0];
            u[i * 4 + 1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
            u[i * 4 + 2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
            u[i * 4 + 3] = t[i][2];
        }
        for (int e = 0; e < 16; e++) U[e * n + k] = u[e];
    }
}

/* V[e][ci][t - t0] = (Bᵀ d B)[e] for tiles t0 .. t0+nt-1 (row-major over the
 * tw tiles of a row) of image x (Cin, H, W); the patch of tile (ty, tx) starts
 * at input row 2ty - pt, column 2tx - pl, zeros outside. WINO_SEG tiles of a
 * row at a time: their four input rows are copied zero-padded into p, Bᵀ is
 * applied down the columns into r, then B along each tile's four columns
 * (the loops over positions and tiles vectorize). */
#define WINO_SEG 64
static void wino_patches(float *V, const float *x, int64_t Cin, int64_t H, int64_t W, int64_t pt,
                         int64_t pl, int64_t tw, int64_t t0, int64_t nt) {
    const int64_t plane = Cin * nt, ty0 = t0 / tw, ty1 = (t0 + nt - 1) / tw;
#pragma omp parallel for if (Cin * nt * 16 > TDM_OMP_MIN)
    for (int64_t ci = 0; ci < Cin; ci++) {
        const float *xc = x + ci * H * W;
        float p[4][2 * WINO_SEG + 2], r[4][2 * WINO_SEG + 2];
        for (int64_t ty = ty0; ty <= ty1; ty++) {
            int64_t a, b;
            wino_row_span(ty, tw, t0, nt, &a, &b);
            float *v = V + ci * nt + ty * tw - t0;   /* v[tx]: tile (ty, tx) */
            for (int64_t s0 = a; s0 < b; s0 += WINO_SEG) {
                const int64_t len = b - s0 < WINO_SEG ? b - s0 : WINO_SEG, wp = 2 * len + 2;
                for (int i = 0; i < 4; i++) {   /* p[i][q] = x[2ty - pt + i][2s0 + q - pl] or 0 */
                    const int64_t iy = ty * 2 - pt + i;
                    for (int64_t q = 0; q < wp; q++) {
                        const int64_t ix = 2 * s0 + q - pl;
                        p[i][q] = iy >= 0 && iy < H && ix >= 0 && ix < W ? xc[iy * W + ix] : 0.0f;
                    }
                }
                for (int64_t q = 0; q < wp; q++) {   /* r = Bᵀ p, column by column */
                    r[0][q] = p[0][q] - p[2][q];
                    r[1][q] = p[1][q] + p[2][q];
                    r[2][q] = p[2][q] - p[1][q];
                    r[3][q] = p[1][q] - p[3][q];
                }
                for (int i = 0; i < 4; i++) {   /* (r B) per tile: columns 2t .. 2t+3 */
                    float *v0 = v + (i * 4) * plane + s0, *v1 = v0 + plane, *v2 = v1 + plane,
                          *v3 = v2 + plane;
                    for (int64_t t = 0; t < len; t++) {
                        const float c0 = r[i][2 * t], c1 = r[i][2 * t + 1], c2 = r[i][2 * t + 2],
                                    c3 = r[i][2 * t + 3];
                        v0[t] = c0 - c2;
                        v1[t] = c1 + c2;
                        v2[t] = c2 - c1;
                        v3[t] = c1 - c3;
                    }
                }
            }
        }
    }
}

/* y (Cout, Ho, Wo) of tiles t0 .. t0+nt-1 = Aᵀ m A (+ b[co]) from M[e][co][t - t0];
 * the last tile row / column keeps only what lies inside Ho × Wo. A tile row
 * at a time, each of the 16 planes read along the row. */
static void wino_outputs(float *y, const float *M, const float *b, int64_t Cout, int64_t Ho,
                         int64_t Wo, int64_t tw, int64_t t0, int64_t nt) {
    const int64_t plane = Cout * nt, ty0 = t0 / tw, ty1 = (t0 + nt - 1) / tw;
#pragma omp parallel for if (Cout * nt * 16 > TDM_OMP_MIN)
    for (int64_t co = 0; co < Cout; co++) {
        float *yc = y + co * Ho * Wo;
        const float bias = b ? b[co] : 0.0f;
        for (int64_t ty = ty0; ty <= ty1; ty++) {
            int64_t a, e;
            wino_row_span(ty, tw, t0, nt, &a, &e);
            const float *m = M + co * nt + ty * tw - t0;   /* m[k * plane + tx]: element k */
            float *y0 = yc + ty * 2 * Wo, *y1 = ty * 2 + 1 < Ho ? y0 + Wo : NULL;
            for (int64_t tx = a; tx < e; tx++) {
                float s[2][4];
                for (int j = 0; j < 4; j++) {   /* s = Aᵀ m */
                    const float m0 = m[j * plane + tx], m1 = m[(4 + j) * plane + tx],
                                m2 = m[(8 + j) * plane + tx], m3 = m[(12 + j) * plane + tx];
                    s[0][j] = m0 + m1 + m2;
                    s[1][j] = m1 - m2 - m3;
                }
                const int64_t ox = tx * 2;   /* (s A) + b */
                y0[ox] = s[0][0] + s[0][1] + s[0][2] + bias;
                if (ox + 1 < Wo) y0[ox + 1] = s[0][1] - s[0][2] - s[0][3] + bias;
                if (y1) {
                    y1[ox] = s[1][0] + s[1][1] + s[1][2] + bias;
                    if (ox + 1 < Wo) y1[ox + 1] = s[1][1] - s[1][2] - s[1][3] + bias;
                }
            }
        }
    }
}

/* The Winograd convolution of all B images in chunks of nt tiles (wino_chunk);
 * scratch: U, V and M, conv2d_pad4_scratch's floats. */
static void conv2d_winograd(float *y, const float *x, const float *w, const float *b, int64_t B,
                            int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t pt,
                            int64_t pl, int64_t Ho, int64_t Wo, int64_t nt, float *scratch) {
    const int64_t tw = (Wo + 1) / 2, T = ((Ho + 1) / 2) * tw;
    float *U = scratch, *V = U + 16 * Cout * Cin, *M = V + 16 * Cin * nt;
    wino_kernels(U, w, Cout, Cin);
    for (int64_t n = 0; n < B; n++) {
        const float *xn = x + n * Cin * H * W;
        float *yn = y + n * Cout * Ho * Wo;
        for (int64_t t0 = 0; t0 < T; t0 += nt) {
            const int64_t c = T - t0 < nt ? T - t0 : nt;
            wino_patches(V, xn, Cin, H, W, pt, pl, tw, t0, c);
            /* M_e (Cout, c) = U_e (Cout, Cin) · V_e (Cin, c): 16 GEMMs in column
             * pieces of WINO_NC tiles, each task one single-threaded OpenBLAS call
             * (a fixed set of calls: the bits do not depend on the thread count) */
            const int64_t np = (c + WINO_NC - 1) / WINO_NC;
            pthread_once(&g_blas_once, blas_single_thread);
#pragma omp parallel for schedule(dynamic)
            for (int64_t task = 0; task < 16 * np; task++) {
                const int64_t e = task / np, j0 = (task % np) * WINO_NC;
                const int64_t nc = c - j0 < WINO_NC ? c - j0 : WINO_NC;
                sgemm(0, 0, Cout, nc, Cin, 1.0f, U + e * Cout * Cin, Cin, V + e * Cin * c + j0, c,
                      0.0f, M + e * Cout * c + j0, c);
            }
            wino_outputs(yn, M, b, Cout, Ho, Wo, tw, t0, c);
        }
    }
}

int64_t tdm_cpu_conv2d_scratch(tdm_device_t *dev, int64_t Cin, int64_t Cout, int64_t H, int64_t W,
                               int64_t kh, int64_t kw, int64_t stride, int64_t pad) {
    return tdm_cpu_conv2d_pad4_scratch(dev, Cin, Cout, H, W, kh, kw, stride, pad, pad, pad, pad);
}

int64_t tdm_cpu_conv2d_pad4_scratch(tdm_device_t *dev, int64_t Cin, int64_t Cout, int64_t H,
                                    int64_t W, int64_t kh, int64_t kw, int64_t stride, int64_t pt,
                                    int64_t pb, int64_t pl, int64_t pr) {
    int64_t Ho = (H + pt + pb - kh) / stride + 1;
    int64_t Wo = (W + pl + pr - kw) / stride + 1;
    int64_t K = Cin * kh * kw;
    if (conv_is_direct(kh, kw, stride, pt, pb, pl, pr))
        return 0;                                   /* 1×1: the input is the column matrix */
    if (Ho <= 0 || Wo <= 0 || K <= 0) return 0;
    const int64_t nt = wino_chunk(dev, kh, kw, stride, Cin, Cout, Ho, Wo);
    if (nt > 0) return 16 * (Cout * Cin + (Cin + Cout) * nt);
    return K * conv_tile_rows(dev, K, Ho, Wo) * Wo;
}

/* Direct (1×1) convs are one GEMM on OpenBLAS's threads. Otherwise, per
 * tile, one OpenMP team fills the column tile and then each thread multiplies
 * its own slice of the tile's columns with a single-threaded GEMM: OpenBLAS
 * is held at one thread for the whole conv, so the OpenMP and OpenBLAS pools
 * never alternate tile by tile (each pool's idle threads spin-wait and would
 * steal the other's cores). */
void tdm_cpu_conv2d_pad4(tdm_device_t *dev, float *y, const float *x, const float *w, const float *b,
                         int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout,
                         int64_t kh, int64_t kw, int64_t stride,
                         int64_t pt, int64_t pb, int64_t pl, int64_t pr, float *scratch) {
    int64_t Ho = (H + pt + pb - kh) / stride + 1;
    int64_t Wo = (W + pl + pr - kw) / stride + 1;
    int64_t K = Cin * kh * kw, P = Ho * Wo;
    if (B <= 0 || Cout <= 0 || P <= 0) return;
    if (conv_is_direct(kh, kw, stride, pt, pb, pl, pr)) {
        for (int64_t n = 0; n < B; n++) {
            const float *xn = x + n * Cin * P;      /* (Cin, P): already the column matrix */
            float *yn = y + n * Cout * P;
            if (b) fill_channels(yn, b, Cout, P);
            /* yn (Cout, P) = w (Cout, Cin) · xn (Cin, P) [+ yn] */
            gemm_grid(0, 0, 0, Cout, P, Cin, 1.0f, w, Cin, xn, P, b ? 1.0f : 0.0f, yn, P);
        }
        return;
    }
    const int64_t nt = wino_chunk(dev, kh, kw, stride, Cin, Cout, Ho, Wo);
    if (nt > 0) {
        conv2d_winograd(y, x, w, b, B, Cin, H, W, Cout, pt, pl, Ho, Wo, nt, scratch);
        return;
    }
    int64_t rows = conv_tile_rows(dev, K, Ho, Wo);
    for (int64_t n = 0; n < B; n++) {
        const float *xn = x + n * Cin * H * W;
        float *yn = y + n * Cout * P;
        for (int64_t oy0 = 0; oy0 < Ho; oy0 += rows) {
            int64_t nr = Ho - oy0 < rows ? Ho - oy0 : rows, N = nr * Wo;
            float *yt = yn + oy0 * Wo;              /* (Cout, N), row stride P */
#pragma omp parallel if (K * N > TDM_OMP_MIN)
            im2col_rows(scratch, xn, Cin, H, W, kh, kw, stride, pt, pl, Wo, oy0, nr);
            if (b)
#pragma omp parallel for if (Cout * N > TDM_OMP_MIN)
                for (int64_t co = 0; co < Cout; co++)
                    for (int64_t p = 0; p < N; p++) yt[co * P + p] = b[co];
            /* yt (Cout, N) = w (Cout, K) · tile (K, N) [+ yt] */
            gemm_grid(0, 0, 0, Cout, N, K, 1.0f, w, K, scratch, N, b ? 1.0f : 0.0f, yt, P);
        }
    }
}

void tdm_cpu_conv2d(tdm_device_t *dev, float *y, const float *x, const float *w, const float *b,
                    int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout,
                    int64_t kh, int64_t kw, int64_t stride, int64_t pad, float *scratch) {
    tdm_cpu_conv2d_pad4(dev, y, x, w, b, B, Cin, H, W, Cout, kh, kw, stride, pad, pad, pad, pad,
                        scratch);
}

/* ---- normalization ---------------------------------------------------------- */

void tdm_cpu_group_norm(tdm_device_t *dev, float *y, const float *x, const float *gamma, const float *beta,
                        int64_t B, int64_t C, int64_t S, int64_t G, float eps, int silu) {
    int64_t cg = C / G;            /* channels per group */
    int64_t n = cg * S;            /* elements per group, contiguous */
#pragma omp parallel for if (B * C * S > TDM_OMP_MIN)
    for (int64_t bg = 0; bg < B * G; bg++) {
        int64_t g = bg % G;
        const float *xs = x + bg * n;
        float *ys = y + bg * n;
        double sum = 0;
        for (int64_t i = 0; i < n; i++) sum += xs[i];
        double mean = sum / (double)n;
        double sq = 0;
        for (int64_t i = 0; i < n; i++) {
            double d = xs[i] - mean;
            sq += d * d;
        }
        double var = sq / (double)n;
        float rstd = (float)(1.0 / sqrt(var + (double)eps));
        float meanf = (float)mean;
        for (int64_t c = 0; c < cg; c++) {
            int64_t ch = g * cg + c;
            float ga = gamma ? gamma[ch] : 1.0f, be = beta ? beta[ch] : 0.0f;
            float a = rstd * ga;
            const float *xc = xs + c * S;
            float *yc = ys + c * S;
            for (int64_t s = 0; s < S; s++) {
                float v = (xc[s] - meanf) * a + be;
                if (silu) v = v / (1.0f + expf(-v));
                yc[s] = v;
            }
        }
    }
}

void tdm_cpu_group_norm_sums(tdm_device_t *dev, double *part, const float *x, const double *mean,
                             int64_t B, int64_t C, int64_t S, int64_t G) {
    const int64_t n = C / G * S;   /* elements per group, contiguous */
#pragma omp parallel for if (B * C * S > TDM_OMP_MIN)
    for (int64_t bg = 0; bg < B * G; bg++) {
        const float *xs = x + bg * n;
        double s = 0;
        if (!mean) {
            for (int64_t i = 0; i < n; i++) s += xs[i];
        } else {
            const double m = mean[bg];
            for (int64_t i = 0; i < n; i++) {
                double d = xs[i] - m;
                s += d * d;
            }
        }
        part[bg] = s;
    }
}

void tdm_cpu_sum_parts_f64(tdm_device_t *dev, double *y, const double *x, int64_t parts, int64_t n,
                           double div) {
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int64_t r = 0; r < parts; r++) s += x[r * n + i];
        y[i] = s / div;
    }
}

void tdm_cpu_group_norm_apply(tdm_device_t *dev, float *y, const float *x, const double *mean,
                              const double *var, const float *gamma, const float *beta, int64_t B,
                              int64_t C, int64_t S, int64_t G, float eps, int silu) {
    const int64_t cg = C / G, n = cg * S;
#pragma omp parallel for if (B * C * S > TDM_OMP_MIN)
    for (int64_t bg = 0; bg < B * G; bg++) {
        const int64_t g = bg % G;
        const float rstd = (float)(1.0 / sqrt(var[bg] + (double)eps)), meanf = (float)mean[bg];
        for (int64_t c = 0; c < cg; c++) {
            const int64_t ch = g * cg + c;
            const float ga = gamma ? gamma[ch] : 1.0f, be = beta ? beta[ch] : 0.0f, a = rstd * ga;
            const float *xc = x + bg * n + c * S;
            float *yc = y + bg * n + c * S;
            for (int64_t s = 0; s < S; s++) {
                float v = (xc[s] - meanf) * a + be;
                if (silu) v = v / (1.0f + expf(-v));
                yc[s] = v;
            }
        }
    }
}

void tdm_cpu_layer_norm(tdm_device_t *dev, float *y, const float *x, const float *gamma, const float *beta,
                        int64_t rows, int64_t D, float eps) {
#pragma omp parallel for if (rows * D > TDM_OMP_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * D;
        float *yr = y + r * D;
        double sum = 0;
        for (int64_t i = 0; i < D; i++) sum += xr[i];
        double mean = sum / (double)D;
        double sq = 0;
        for (int64_t i = 0; i < D; i++) {
            double d = xr[i] - mean;
            sq += d * d;
        }
        float rstd = (float)(1.0 / sqrt(sq / (double)D + (double)eps));
        float meanf = (float)mean;
        for (int64_t i = 0; i < D; i++) {
            float v = (xr[i] - meanf) * rstd;
            if (gamma) v *= gamma[i];
            if (beta) v += beta[i];
            yr[i] = v;
        }
    }
}

/* ---- activations ------------------------------------------------------------ */

static inline float gelu_erf(float v) { return 0.5f * v * (1.0f + erff(v * (float)M_SQRT1_2)); }

static inline float gelu_tanh(float v) {
    const float k = 0.7978845608028654f;   /* sqrt(2/pi) */
    return 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
}

void tdm_cpu_silu(tdm_device_t *dev, float *x, int64_t n) {
#pragma omp parallel for if (n > TDM_OMP_MIN)
    for (int64_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
}

void tdm_cpu_gelu(tdm_device_t *dev, float *x, int64_t n) {
#pragma omp parallel for if (n > TDM_OMP_MIN)
    for (int64_t i = 0; i < n; i++) x[i] = gelu_erf(x[i]);
}

void tdm_cpu_gelu_tanh(tdm_device_t *dev, float *x, int64_t n) {
#pragma omp parallel for if (n > TDM_OMP_MIN)
    for (int64_t i = 0; i < n; i++) x[i] = gelu_tanh(x[i]);
}

void tdm_cpu_linear_gelu(tdm_device_t *dev, float *y, int64_t ldy, const float *x, const float *W, const float *b,
                         int64_t M, int64_t K, int64_t N) {
    if (M <= 0 || N <= 0) return;
    if (b) tdm_cpu_copy_2d(dev, TDM_F32, y, ldy, b, 0, M, N);
    tdm_cpu_gemm(dev, 0, 1, M, N, K, 1.0f, x, K, W, K, b ? 1.0f : 0.0f, y, ldy);
    if (ldy == N) {
        tdm_cpu_gelu_tanh(dev, y, M * N);
        return;
    }
#pragma omp parallel for if (M * N > TDM_OMP_MIN)
    for (int64_t r = 0; r < M; r++)
        for (int64_t j = 0; j < N; j++) y[r * ldy + j] = gelu_tanh(y[r * ldy + j]);
}

void tdm_cpu_quick_gelu(tdm_device_t *dev, float *x, int64_t n) {
#pragma omp parallel for if (n > TDM_OMP_MIN)
    for (int64_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

void tdm_cpu_geglu(tdm_device_t *dev, float *y, const float *h, int64_t rows, int64_t F) {
#pragma omp parallel for if (rows * F > TDM_OMP_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *a = h + r * 2 * F, *g = a + F;
        float *yr = y + r * F;
        for (int64_t i = 0; i < F; i++) yr[i] = a[i] * gelu_erf(g[i]);
    }
}

/* ---- element-wise ----------------------------------------------------------- */

void tdm_cpu_add(tdm_device_t *dev, float *y, const float *a, const float *b, int64_t n) {
#pragma omp parallel for if (n > TDM_OMP_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void tdm_cpu_add_channel_bias(tdm_device_t *dev, float *x, const float *v, int64_t B, int64_t C, int64_t S) {
#pragma omp parallel for if (B * C * S > TDM_OMP_MIN)
    for (int64_t bc = 0; bc < B * C; bc++) {
        float a = v[bc];
        float *xs = x + bc * S;
        for (int64_t s = 0; s < S; s++) xs[s] += a;
    }
}

void tdm_cpu_scale(tdm_device_t *dev, float *y, const float *a, float s, int64_t n) {
#pragma omp parallel for if (n > TDM_OMP_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = a[i] * s;
}

/* ---- softmax ---------------------------------------------------------------- */

static inline vf_t vf_select(vi_t m, vf_t a, vf_t b) {   /* m ? a : b, m lanes all 0 or all 1 */
    return (vf_t)(((vi_t)a & m) | ((vi_t)b & ~m));
}

/* exp(x) lane by lane in float32 without libm calls: Cephes-style range
 * reduction x = n ln2 + r and a degree-6 polynomial, within 2 ulp of expf
 * over [-87.3, 88.7] (inputs are clamped to it). Written on vectors: a
 * scalar version in a loop was left unvectorized by GCC (its clamps became
 * branches), 5× slower on AVX2. */
static inline vf_t fast_expv(vf_t x) {
    const vf_t lo = (vf_t){0} - 87.3f, hi = (vf_t){0} + 88.7f, c = (vf_t){0} + 12582912.0f;
    x = vf_select(x < lo, lo, x);
    x = vf_select(x > hi, hi, x);
    const vf_t n = (x * 1.44269504088896341f + c) - c;
    vf_t r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vf_t p = (vf_t){0} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const vi_t bits = (__builtin_convertvector(n, vi_t) + 127) << 23;
    return p * (vf_t)bits;
}

/* exp(v - mx) per lane, 0 where v is -inf (masked). */
static inline vf_t exp_masked(vf_t v, vf_t vmx) {
    return vf_select(v == (vf_t){0} - INFINITY, (vf_t){0}, fast_expv(v - vmx));
}

/* x[i] = exp(x[i] - mx) in place (-inf, masked, becomes exactly 0); returns
 * the sum: TDM_VL lane sums over the whole vectors, added in lane order,
 * then the tail in order — the same bits for a row wherever it lies.
 * Softmax and attention_lse share it, so their weights agree bit for bit. */
static float exp_sum_row(float *x, int64_t n, float mx) {
    const vf_t vmx = (vf_t){0} + mx;
    vf_t acc = {0};
    int64_t i = 0;
    for (; i + TDM_VL <= n; i += TDM_VL) {
        const vf_t e = exp_masked(*(const vfu_t *)(x + i), vmx);
        *(vfu_t *)(x + i) = e;
        acc += e;
    }
    float sum = 0;
    for (int l = 0; l < TDM_VL; l++) sum += acc[l];
    if (i < n) {   /* the tail, in one vector padded with -inf */
        vf_t v = (vf_t){0} - INFINITY;
        for (int64_t l = 0; i + l < n; l++) v[l] = x[i + l];
        const vf_t e = exp_masked(v, vmx);
        for (int64_t l = 0; i + l < n; l++) {
            x[i + l] = e[l];
            sum += e[l];
        }
    }
    return sum;
}

/* One row in place: max subtraction, exp, sum, multiply by 1/sum.
 * -INFINITY entries become 0; an all -INFINITY row becomes all 0. */
static void softmax_row(float *x, int64_t n) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    if (mx == -INFINITY) {
        memset(x, 0, (size_t)n * sizeof(float));
        return;
    }
    const float inv = 1.0f / exp_sum_row(x, n, mx);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void tdm_cpu_softmax(float *x, int64_t rows, int64_t n) {
#pragma omp parallel for if (rows * n > TDM_OMP_MIN)
    for (int64_t r = 0; r < rows; r++) softmax_row(x + r * n, n);
}

/* ---- attention -------------------------------------------------------------- */

void tdm_cpu_attention_ref(float *o, const float *q, const float *k, const float *v,
                           int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D,
                           float scale, int causal) {
    int64_t HD = H * D;
#pragma omp parallel for collapse(2) if (B * H * Tq * Tk * D > TDM_OMP_MIN)
    for (int64_t bh = 0; bh < B * H; bh++) {
        for (int64_t i = 0; i < Tq; i++) {
            int64_t b = bh / H, h = bh % H;
            const float *qi = q + (b * Tq + i) * HD + h * D;
            const float *kb = k + b * Tk * HD + h * D;
            const float *vb = v + b * Tk * HD + h * D;
            float *oi = o + (b * Tq + i) * HD + h * D;
            int64_t n = causal ? (i + 1 < Tk ? i + 1 : Tk) : Tk;   /* keys j < n are visible */
            /* pass 1: max of scores */
            float mx = -INFINITY;
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t d = 0; d < D; d++) s += (double)qi[d] * kb[j * HD + d];
                float sf = (float)s * scale;
                if (sf > mx) mx = sf;
            }
            /* pass 2: o = Σ exp(s - max) v, normalized by Σ exp(s - max) */
            for (int64_t d = 0; d < D; d++) oi[d] = 0.0f;
            double sum = 0;
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t d = 0; d < D; d++) s += (double)qi[d] * kb[j * HD + d];
                float p = expf((float)s * scale - mx);
                sum += p;
                for (int64_t d = 0; d < D; d++) oi[d] += p * vb[j * HD + d];
            }
            float inv = sum > 0 ? (float)(1.0 / sum) : 0.0f;
            for (int64_t d = 0; d < D; d++) oi[d] *= inv;
        }
    }
}

int64_t tdm_cpu_attention_scratch_bytes(tdm_device_t *dev, tdm_dtype at, int64_t B, int64_t Tq,
                                        int64_t Tk, int64_t H, int64_t D) {
    const int64_t tile = (int64_t)TDM_ATTN_TILE * (int64_t)sizeof(float);
    int64_t nt = omp_get_max_threads();
    if (Tk <= 0) return 0;
    if (nt < 1) nt = 1;
    return Tk > INT64_MAX / tile / nt ? INT64_MAX : Tk * tile * nt;
}

/* Task t of the attention kernels (batch × head × query tile): its indices,
 * rows, and the offsets of its q / o rows and of its head's k / v rows in
 * the (B, T, H·D) buffers. */
typedef struct { int64_t b, h, i0, m, q, kv; } attn_tile_t;

static inline attn_tile_t attn_tile(int64_t t, int64_t ntile, int64_t Tq, int64_t Tk, int64_t H, int64_t D) {
    attn_tile_t a;
    a.b = t / (H * ntile), a.h = (t / ntile) % H, a.i0 = (t % ntile) * TDM_ATTN_TILE;
    a.m = Tq - a.i0 < TDM_ATTN_TILE ? Tq - a.i0 : TDM_ATTN_TILE;
    a.q = (a.b * Tq + a.i0) * H * D + a.h * D;
    a.kv = a.b * Tk * H * D + a.h * D;
    return a;
}

void tdm_cpu_attention(tdm_device_t *dev, float *o, const float *q, const float *k, const float *v,
                       int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D,
                       float scale, int causal) {
    int64_t HD = H * D;
    int64_t ntile = (Tq + TDM_ATTN_TILE - 1) / TDM_ATTN_TILE;
    int64_t ntask = B * H * ntile;
    int failed = 0;
    if (ntask <= 0) return;
    if (Tk <= 0) {                       /* nothing to attend to: o = 0 */
        memset(o, 0, (size_t)(B * Tq * HD) * sizeof(float));
        return;
    }
    int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel reduction(| : failed)
    {
        float *S = malloc((size_t)TDM_ATTN_TILE * (size_t)Tk * sizeof(float));   /* (tile, Tk) */
        if (!S) failed = 1;
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < ntask; t++) {
            if (!S) continue;
            attn_tile_t a = attn_tile(t, ntile, Tq, Tk, H, D);
            const int64_t i0 = a.i0, m = a.m;
            const float *qt = q + a.q, *kb = k + a.kv, *vb = v + a.kv;   /* (m, D), (Tk, D), ld HD */
            float *ot = o + a.q;                                        /* (m, D), ld HD */
            /* keys visible to any row of this tile */
            int64_t nk = causal ? (i0 + m < Tk ? i0 + m : Tk) : Tk;
            /* S (m, nk) = scale · qt · kb^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)nk, (int)D, scale,
                        qt, (int)HD, kb, (int)HD, 0.0f, S, (int)nk);
            if (causal)
                for (int64_t r = 0; r < m; r++)
                    for (int64_t j = i0 + r + 1; j < nk; j++) S[r * nk + j] = -INFINITY;
            for (int64_t r = 0; r < m; r++) softmax_row(S + r * nk, nk);
            /* ot (m, D) = S (m, nk) · vb (nk, D) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)D, (int)nk, 1.0f,
                        S, (int)nk, vb, (int)HD, 0.0f, ot, (int)HD);
        }
        free(S);
    }
    openblas_set_num_threads(blas_threads);
    /* A thread without scratch skipped its tasks: redo everything with the
     * scratch-free path (same results within float rounding). */
    if (failed) tdm_cpu_attention_ref(o, q, k, v, B, Tq, Tk, H, D, scale, causal);
}

/* ---- attention with log-sum-exp (ring attention's blocks) ------------------- */

/* The merge weights of attention_lse's contract: *lse (the held result, -inf
 * for none) becomes the log-sum-exp over both key sets, *wo is the held
 * output's factor and *wb the block output's; in double, rounded once. */
static void lse_merge(float *lse, float lb, int acc, float *wo, float *wb) {
    const double L = acc ? (double)*lse : -INFINITY, l = lb;
    const double m = L > l ? L : l;
    if (m == -INFINITY) {   /* no key seen on either side */
        *wo = 0.0f, *wb = 0.0f, *lse = -INFINITY;
        return;
    }
    const double n = m + log(exp(L - m) + exp(l - m));
    *wo = (float)exp(L - n);
    *wb = (float)exp(l - n);
    *lse = (float)n;
}

/* One query row of attention_lse without BLAS or allocation: dot products
 * in double, three passes over the keys (max, sum, weighted values). */
static void attention_lse_row(float *oi, float *lsei, const float *qi, const float *kb,
                              const float *vb, int64_t Tk, int64_t HD, int64_t D, float scale,
                              int acc) {
    float mx = -INFINITY, wo, wb;
    double sum = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int64_t j = 0; j < Tk; j++) {
            double s = 0;
            for (int64_t d = 0; d < D; d++) s += (double)qi[d] * kb[j * HD + d];
            const float sf = (float)s * scale;
            if (pass == 0) mx = sf > mx ? sf : mx;
            else if (mx != -INFINITY) sum += expf(sf - mx);
        }
    lse_merge(lsei, sum > 0 ? mx + logf((float)sum) : -INFINITY, acc, &wo, &wb);
    for (int64_t d = 0; d < D; d++) oi[d] = acc ? oi[d] * wo : 0.0f;
    if (wb == 0.0f) return;
    const float f = (float)(wb / sum);
    for (int64_t j = 0; j < Tk; j++) {
        double s = 0;
        for (int64_t d = 0; d < D; d++) s += (double)qi[d] * kb[j * HD + d];
        const float p = expf((float)s * scale - mx) * f;
        for (int64_t d = 0; d < D; d++) oi[d] += p * vb[j * HD + d];
    }
}

static void attention_lse_ref(float *o, float *lse, const float *q, const float *k,
                              const float *v, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                              int64_t D, float scale, int acc) {
    const int64_t HD = H * D;
#pragma omp parallel for collapse(2) if (B * H * Tq * Tk * D > TDM_OMP_MIN)
    for (int64_t bh = 0; bh < B * H; bh++)
        for (int64_t i = 0; i < Tq; i++) {
            const int64_t b = bh / H, h = bh % H;
            attention_lse_row(o + (b * Tq + i) * HD + h * D, lse + bh * Tq + i,
                              q + (b * Tq + i) * HD + h * D, k + b * Tk * HD + h * D,
                              v + b * Tk * HD + h * D, Tk, HD, D, scale, acc);
        }
}

/* Scores of one tile S (m, Tk) → exp(s - max) per row; each row's
 * log-sum-exp merged into lse (stride 1 over the tile's rows), the row of S
 * scaled to the block's merged weight and the held output row ot (ld HD)
 * scaled to its own. Without acc this is softmax_row's arithmetic: the
 * weights are e · (1 / sum), the output is the attention op's bit for bit. */
static void lse_tile_rows(float *S, int64_t m, int64_t Tk, float *lse, float *ot, int64_t HD,
                          int64_t D, int acc) {
    for (int64_t r = 0; r < m; r++) {
        float *x = S + r * Tk, mx = -INFINITY, sum = 0, wo, wb;
        for (int64_t i = 0; i < Tk; i++) mx = x[i] > mx ? x[i] : mx;
        if (mx != -INFINITY) sum = exp_sum_row(x, Tk, mx);
        lse_merge(lse + r, sum > 0 ? mx + logf(sum) : -INFINITY, acc, &wo, &wb);
        const float inv = sum > 0 ? 1.0f / sum : 0.0f;
        if (!acc) {
            for (int64_t i = 0; i < Tk; i++) x[i] = mx == -INFINITY ? 0.0f : x[i] * inv;
            continue;
        }
        for (int64_t i = 0; i < Tk; i++) x[i] = mx == -INFINITY ? 0.0f : x[i] * inv * wb;
        for (int64_t d = 0; d < D; d++) ot[r * HD + d] *= wo;
    }
}

void tdm_cpu_attention_lse(tdm_device_t *dev, tdm_dtype at, float *o, float *lse, const void *qv,
                           const void *kv, const void *vv, int64_t B, int64_t Tq, int64_t Tk,
                           int64_t H, int64_t D, float scale, int acc) {
    const float *q = host_f32(at, "attention_lse", qv), *k = kv, *v = vv;
    const int64_t HD = H * D, ntile = (Tq + TDM_ATTN_TILE - 1) / TDM_ATTN_TILE;
    const int64_t ntask = B * H * ntile;
    if (ntask <= 0 || D <= 0) return;
    if (Tk <= 0) {   /* no keys: nothing to merge, or o = 0 and lse = -inf */
        if (!acc) {
            memset(o, 0, (size_t)(B * Tq * HD) * sizeof(float));
            for (int64_t i = 0; i < B * H * Tq; i++) lse[i] = -INFINITY;
        }
        return;
    }
    /* every thread's score tile (tile, Tk) from one allocation made before
     * any row is touched: with acc a half-done pass could not be redone */
    const int nt = omp_get_max_threads() > 0 ? omp_get_max_threads() : 1;
    float *S0 = malloc((size_t)nt * TDM_ATTN_TILE * (size_t)Tk * sizeof(float));
    if (!S0) {
        attention_lse_ref(o, lse, q, k, v, B, Tq, Tk, H, D, scale, acc);
        return;
    }
    int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel num_threads(nt)
    {
        float *S = S0 + (size_t)omp_get_thread_num() * TDM_ATTN_TILE * (size_t)Tk;
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < ntask; t++) {
            attn_tile_t a = attn_tile(t, ntile, Tq, Tk, H, D);
            const int64_t i0 = a.i0, m = a.m;
            const float *qt = q + a.q, *kb = k + a.kv, *vb = v + a.kv;   /* (m, D), (Tk, D), ld HD */
            float *ot = o + a.q;                                        /* (m, D), ld HD */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)Tk, (int)D, scale,
                        qt, (int)HD, kb, (int)HD, 0.0f, S, (int)Tk);
            lse_tile_rows(S, m, Tk, lse + (a.b * H + a.h) * Tq + i0, ot, HD, D, acc);
            /* ot (m, D) = S (m, Tk) · vb (Tk, D) [+ the held ot, scaled] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)D, (int)Tk, 1.0f,
                        S, (int)Tk, vb, (int)HD, acc ? 1.0f : 0.0f, ot, (int)HD);
        }
    }
    openblas_set_num_threads(blas_threads);
    free(S0);
}

/* ---- layout ----------------------------------------------------------------- */

#define TDM_TBLK 32

void tdm_cpu_transpose_cs(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C, int64_t S) {
    /* x (B, C, S) → y (B, S, C) */
    int64_t nc = (C + TDM_TBLK - 1) / TDM_TBLK, ns = (S + TDM_TBLK - 1) / TDM_TBLK;
#pragma omp parallel for collapse(3) if (B * C * S > TDM_OMP_MIN)
    for (int64_t b = 0; b < B; b++)
        for (int64_t cb = 0; cb < nc; cb++)
            for (int64_t sb = 0; sb < ns; sb++) {
                int64_t c1 = (cb + 1) * TDM_TBLK < C ? (cb + 1) * TDM_TBLK : C;
                int64_t s1 = (sb + 1) * TDM_TBLK < S ? (sb + 1) * TDM_TBLK : S;
                const float *xb = x + b * C * S;
                float *yb = y + b * C * S;
                for (int64_t c = cb * TDM_TBLK; c < c1; c++)
                    for (int64_t s = sb * TDM_TBLK; s < s1; s++) yb[s * C + c] = xb[c * S + s];
            }
}

void tdm_cpu_transpose_sc(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t S, int64_t C) {
    /* x (B, S, C) → y (B, C, S): the same transpose with the roles swapped */
    tdm_cpu_transpose_cs(dev, y, x, B, S, C);
}

void tdm_cpu_upsample_nearest2x(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C,
                                int64_t H, int64_t W) {
#pragma omp parallel for if (B * C * H * W > TDM_OMP_MIN / 4)
    for (int64_t bc = 0; bc < B * C; bc++) {
        const float *xs = x + bc * H * W;
        float *ys = y + bc * 4 * H * W;
        for (int64_t i = 0; i < H; i++) {
            float *r0 = ys + (2 * i) * 2 * W;
            for (int64_t j = 0; j < W; j++) r0[2 * j] = r0[2 * j + 1] = xs[i * W + j];
            memcpy(r0 + 2 * W, r0, (size_t)(2 * W) * sizeof(float));
        }
    }
}

/* torch's nearest source index for output index i of an axis in → out. */
static int64_t nearest_src(int64_t i, int64_t in, int64_t out, float scale) {
    int64_t s = out == in ? i : out == 2 * in ? i >> 1 : (int64_t)floorf((float)i * scale);
    return s > in - 1 ? in - 1 : s;
}

void tdm_cpu_resize_nearest(tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C, int64_t H,
                            int64_t W, int64_t Ho, int64_t Wo) {
    float sh = (float)H / (float)Ho, sw = (float)W / (float)Wo;
#pragma omp parallel for if (B * C * Ho * Wo > TDM_OMP_MIN)
    for (int64_t bc = 0; bc < B * C; bc++) {
        const float *xp = x + bc * H * W;
        float *yp = y + bc * Ho * Wo;
        for (int64_t i = 0; i < Ho; i++) {
            const float *xr = xp + nearest_src(i, H, Ho, sh) * W;
            for (int64_t j = 0; j < Wo; j++) yp[i * Wo + j] = xr[nearest_src(j, W, Wo, sw)];
        }
    }
}

void tdm_cpu_concat_channels(tdm_device_t *dev, float *y, const float *a, int64_t Ca, const float *b, int64_t Cb,
                             int64_t B, int64_t S) {
#pragma omp parallel for if (B * (Ca + Cb) * S > TDM_OMP_MIN)
    for (int64_t n = 0; n < B; n++) {
        float *yn = y + n * (Ca + Cb) * S;
        memcpy(yn, a + n * Ca * S, (size_t)(Ca * S) * sizeof(float));
        memcpy(yn + Ca * S, b + n * Cb * S, (size_t)(Cb * S) * sizeof(float));
    }
}

void tdm_cpu_gather_rows(tdm_device_t *dev, float *y, const float *table, const int32_t *idx, int64_t n,
                         int64_t D) {
#pragma omp parallel for if (n * D > TDM_OMP_MIN)
    for (int64_t i = 0; i < n; i++)
        memcpy(y + i * D, table + (int64_t)idx[i] * D, (size_t)D * sizeof(float));
}

void tdm_cpu_clamp(tdm_device_t *dev, float *y, const float *a, float lo, float hi, int64_t n) {
#pragma omp parallel for if (n > TDM_OMP_MIN)
    for (int64_t i = 0; i < n; i++) {
        float x = a[i];                           /* NaN fails both tests: kept */
        y[i] = x < lo ? lo : (x > hi ? hi : x);
    }
}

/* ---- T5 encoder ops --------------------------------------------------------- */

void tdm_cpu_rms_norm(tdm_device_t *dev, float *y, const float *x, const float *w, int64_t rows, int64_t D,
                      float eps) {
#pragma omp parallel for if (rows * D > TDM_OMP_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * D;
        float *yr = y + r * D;
        double ss = 0;
        for (int64_t d = 0; d < D; d++) ss += (double)xr[d] * (double)xr[d];
        float var = (float)(ss / (double)D);
        float inv = 1.0f / sqrtf(var + eps);
        for (int64_t d = 0; d < D; d++) yr[d] = (w ? w[d] : 1.0f) * (xr[d] * inv);
    }
}

void tdm_cpu_relu(tdm_device_t *dev, float *x, int64_t n) {
#pragma omp parallel for if (n > TDM_OMP_MIN)
    for (int64_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void tdm_cpu_mul(tdm_device_t *dev, float *y, const float *a, const float *b, int64_t n) {
#pragma omp parallel for if (n > TDM_OMP_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[i];
}

int64_t tdm_cpu_attention_bias_scratch(tdm_device_t *dev, int64_t T) { return T > 0 ? T * T : 0; }

void tdm_cpu_attention_bias(tdm_device_t *dev, float *o, const float *q, const float *k, const float *v,
                            const float *tab, float *s, int64_t B, int64_t T, int64_t H,
                            int64_t D) {
    const int64_t HD = H * D;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            const float *qb = q + b * T * HD + h * D;
            const float *kb = k + b * T * HD + h * D;
            const float *vb = v + b * T * HD + h * D;
            float *ob = o + b * T * HD + h * D;
            const float *th = tab + h * (2 * T - 1);
            /* s (T, T) = q_bh (T, D) · k_bh (T, D)^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)D, 1.0f,
                        qb, (int)HD, kb, (int)HD, 0.0f, s, (int)T);
#pragma omp parallel for if (T * T > TDM_OMP_MIN)
            for (int64_t i = 0; i < T; i++) {
                float *row = s + i * T;
                const float *bi = th + (T - 1 - i);   /* bi[j] = bias at rel j - i */
                float mx = -INFINITY;
                for (int64_t j = 0; j < T; j++) {
                    row[j] += bi[j];
                    if (row[j] > mx) mx = row[j];
                }
                float sum = 0.0f;
                for (int64_t j = 0; j < T; j++) {
                    row[j] = expf(row[j] - mx);
                    sum += row[j];
                }
                float inv = 1.0f / sum;
                for (int64_t j = 0; j < T; j++) row[j] *= inv;
            }
            /* o_bh (T, D) = s (T, T) · v_bh (T, D) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)D, (int)T, 1.0f,
                        s, (int)T, vb, (int)HD, 0.0f, ob, (int)HD);
        }
}

/* ---- transformer row ops (FLUX) --------------------------------------------- */

void tdm_cpu_rope_interleaved(tdm_device_t *dev, tdm_dtype at, void *xv, const float *cosb,
                              const float *sinb, int64_t B, int64_t S, int64_t H, int64_t hd) {
    float *x = host_f32(at, "rope_interleaved", xv);
#pragma omp parallel for collapse(2) if (B * S * H * hd > TDM_OMP_MIN)
    for (int64_t b = 0; b < B; b++)
        for (int64_t s = 0; s < S; s++) {
            const float *c = cosb + s * hd, *sn = sinb + s * hd;
            float *row = x + (b * S + s) * H * hd;
            for (int64_t h = 0; h < H; h++) {
                float *v = row + h * hd;
                for (int64_t i = 0; i < hd; i += 2) {
                    float x0 = v[i], x1 = v[i + 1];
                    float r0 = x0 * c[i], r1 = x1 * c[i + 1];
                    float s0 = x1 * sn[i], s1 = x0 * sn[i + 1];
                    v[i] = r0 - s0;
                    v[i + 1] = r1 + s1;
                }
            }
        }
}

void tdm_cpu_rms_norm_heads(tdm_device_t *dev, tdm_dtype at, void *xv, const float *w, int64_t B,
                            int64_t S, int64_t r0, int64_t L, int64_t H, int64_t hd, float eps) {
    float *x = host_f32(at, "rms_norm_heads", xv);
#pragma omp parallel for collapse(2) if (B * L * H * hd > TDM_OMP_MIN)
    for (int64_t b = 0; b < B; b++)
        for (int64_t r = 0; r < L; r++) {
            float *row = x + (b * S + r0 + r) * H * hd;
            for (int64_t h = 0; h < H; h++) {
                float *v = row + h * hd;
                double sq = 0;
                for (int64_t i = 0; i < hd; i++) sq += (double)v[i] * (double)v[i];
                float rs = (float)(1.0 / sqrt(sq / (double)hd + (double)eps));
                for (int64_t i = 0; i < hd; i++) v[i] = (v[i] * rs) * w[i];
            }
        }
}

void tdm_cpu_layer_norm_modulate(tdm_device_t *dev, tdm_dtype at, void *yv, const float *x,
                                 const float *shift, const float *scale, int64_t mstride,
                                 int64_t B, int64_t S, int64_t r0, int64_t L, int64_t D,
                                 float eps) {
    float *y = host_f32(at, "layer_norm_modulate", yv);
    for (int64_t b = 0; b < B; b++) {
        float *yb = y + (b * S + r0) * D;
        const float *sh = shift + b * mstride, *sc = scale + b * mstride;
        tdm_cpu_layer_norm(dev, yb, x + (b * S + r0) * D, NULL, NULL, L, D, eps);
#pragma omp parallel for if (L * D > TDM_OMP_MIN)
        for (int64_t r = 0; r < L; r++) {
            float *v = yb + r * D;
            for (int64_t i = 0; i < D; i++) v[i] = v[i] * (1.0f + sc[i]) + sh[i];
        }
    }
}

void tdm_cpu_gated_add_rows(tdm_device_t *dev, tdm_dtype at, float *x, const void *yv,
                            const float *gate, int64_t mstride, int64_t B, int64_t S, int64_t r0,
                            int64_t L, int64_t D) {
    const float *y = host_f32(at, "gated_add_rows", yv);
    for (int64_t b = 0; b < B; b++) {
        const float *g = gate + b * mstride;
#pragma omp parallel for if (L * D > TDM_OMP_MIN)
        for (int64_t r = 0; r < L; r++) {
            float *xr = x + (b * S + r0 + r) * D;
            const float *yr = y + (b * S + r0 + r) * D;
            for (int64_t i = 0; i < D; i++) xr[i] = xr[i] + g[i] * yr[i];
        }
    }
}

void tdm_cpu_copy_2d(tdm_device_t *dev, tdm_dtype at, void *yv, int64_t ldy, const void *xv,
                     int64_t ldx, int64_t rows, int64_t cols) {
    float *y = host_f32(at, "copy_2d", yv);
    const float *x = xv;
    if (cols <= 0) return;
#pragma omp parallel for if (rows * cols > TDM_OMP_MIN)
    for (int64_t r = 0; r < rows; r++)
        memcpy(y + r * ldy, x + r * ldx, (size_t)cols * sizeof(float));
}

/* ---- typed ops: float32 only on the CPU ------------------------------------- */

void tdm_cpu_linear_ex(tdm_device_t *dev, void *y, tdm_dtype yt, int64_t ldy, const void *x,
                       tdm_dtype xt, const float *W, const float *b, int64_t M, int64_t K,
                       int64_t N, int gelu) {
    float *y32 = host_f32(yt, "linear", y);
    const float *x32 = host_f32(xt, "linear", x);
    if (gelu) {
        tdm_cpu_linear_gelu(dev, y32, ldy, x32, W, b, M, K, N);
        return;
    }
    if (ldy != N) {
        tdm_log(TDM_LOG_ERROR, "linear: ldy %lld != N %lld on a host device", (long long)ldy,
                (long long)N);
        abort();
    }
    tdm_cpu_linear(dev, y32, x32, W, b, M, K, N);
}

/* The spec of the FP8 linear: x's rows quantized (the rule every backend
 * shares), codes of both operands decoded to float32 (exact), one float32
 * GEMM, then the two scales, the bias and the activation per element. */
void tdm_cpu_linear_f8(tdm_device_t *dev, void *y, tdm_dtype yt, int64_t ldy, const void *x,
                       tdm_dtype xt, const void *W, const float *b, int64_t M, int64_t K,
                       int64_t N, int gelu) {
    float *y32 = host_f32(yt, "linear_f8", y);
    const float *x32 = host_f32(xt, "linear_f8", x);
    if (M <= 0 || N <= 0) return;
    const uint8_t *qw = W;
    const float *sw = (const float *)(qw + tdm_f8_scale_offset(N, K));
    float *xd = malloc((size_t)(M * K + N * K + M + 1) * sizeof(float));
    uint8_t *qx = malloc((size_t)(M * K + 1));
    if (!xd || !qx) {
        tdm_log(TDM_LOG_ERROR, "linear_f8: out of host memory for a (%lld, %lld) x (%lld, %lld) "
                "product", (long long)M, (long long)K, (long long)N, (long long)K);
        abort();
    }
    float *wd = xd + M * K, *sx = wd + N * K;
#pragma omp parallel for if (M * K > TDM_OMP_MIN)
    for (int64_t m = 0; m < M; m++) {
        tdm_f8_quantize_row(qx + m * K, &sx[m], x32 + m * K, K);
        for (int64_t k = 0; k < K; k++) xd[m * K + k] = tdm_e4m3_to_f32(qx[m * K + k]);
    }
#pragma omp parallel for if (N * K > TDM_OMP_MIN)
    for (int64_t i = 0; i < N * K; i++) wd[i] = tdm_e4m3_to_f32(qw[i]);
    tdm_cpu_gemm(dev, 0, 1, M, N, K, 1.0f, xd, K, wd, K, 0.0f, y32, ldy);
#pragma omp parallel for if (M * N > TDM_OMP_MIN)
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            float v = y32[m * ldy + n] * sx[m] * sw[n] + (b ? tdm_bf16_to_f32(tdm_f32_to_bf16(b[n])) : 0.0f);
            y32[m * ldy + n] = gelu ? gelu_tanh(v) : v;
        }
    free(qx);
    free(xd);
}

void tdm_cpu_cast(tdm_device_t *dev, void *y, tdm_dtype yt, const void *x, tdm_dtype xt,
                  int64_t n) {
    host_f32(xt, "cast", x);
    host_f32(yt, "cast", y);
    if (y != x && n > 0) memmove(y, x, (size_t)n * sizeof(float));
}

void tdm_cpu_rms_norm_t(tdm_device_t *dev, tdm_dtype at, void *y, const float *x, const float *w,
                        int64_t rows, int64_t D, float eps) {
    tdm_cpu_rms_norm(dev, host_f32(at, "rms_norm", y), x, w, rows, D, eps);
}

void tdm_cpu_act_t(tdm_device_t *dev, tdm_dtype at, tdm_act_fn fn, void *x, int64_t n) {
    float *x32 = host_f32(at, "activation", x);
    switch (fn) {
    case TDM_FN_RELU: tdm_cpu_relu(dev, x32, n); break;
    case TDM_FN_GELU: tdm_cpu_gelu(dev, x32, n); break;
    case TDM_FN_GELU_TANH: tdm_cpu_gelu_tanh(dev, x32, n); break;
    case TDM_FN_SILU: tdm_cpu_silu(dev, x32, n); break;
    }
}

void tdm_cpu_mul_t(tdm_device_t *dev, tdm_dtype at, void *y, const void *a, const void *b,
                   int64_t n) {
    tdm_cpu_mul(dev, host_f32(at, "mul", y), a, b, n);
}

void tdm_cpu_attention_t(tdm_device_t *dev, tdm_dtype at, void *o, const void *q, const void *k,
                         const void *v, int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D,
                         float scale, int causal) {
    tdm_cpu_attention(dev, host_f32(at, "attention", o), q, k, v, B, Tq, Tk, H, D, scale, causal);
}

void tdm_cpu_attention_bias_t(tdm_device_t *dev, tdm_dtype at, void *o, const void *q,
                              const void *k, const void *v, const float *tab, float *s, int64_t B,
                              int64_t T, int64_t H, int64_t D) {
    tdm_cpu_attention_bias(dev, host_f32(at, "attention_bias", o), q, k, v, tab, s, B, T, H, D);
}

void tdm_cpu_qk_norm_rope(tdm_device_t *dev, tdm_dtype at, void *x, const float *w0,
                          const float *w1, int64_t split, const float *cosb, const float *sinb,
                          int64_t B, int64_t S, int64_t H, int64_t hd, float eps) {
    host_f32(at, "qk_norm_rope", x);
    if (split > 0) tdm_cpu_rms_norm_heads(dev, at, x, w0, B, S, 0, split, H, hd, eps);
    if (split < S) tdm_cpu_rms_norm_heads(dev, at, x, w1, B, S, split, S - split, H, hd, eps);
    tdm_cpu_rope_interleaved(dev, at, x, cosb, sinb, B, S, H, hd);
}

/* ---- graphs: none on the CPU ------------------------------------------------ */

int tdm_cpu_graph_ok(tdm_device_t *dev) { return 0; }

tdm_status tdm_cpu_graph_begin(tdm_device_t *dev) {
    return tdm_errorf(TDM_ERR_UNSUPPORTED, "graphs need a CUDA device");
}

tdm_status tdm_cpu_graph_end(tdm_device_t *dev, void **graph) {
    *graph = NULL;
    return tdm_cpu_graph_begin(dev);
}

tdm_status tdm_cpu_graph_launch(tdm_device_t *dev, void *graph) {
    return tdm_cpu_graph_begin(dev);
}

void tdm_cpu_graph_free(tdm_device_t *dev, void *graph) {}

/* ---- the CPU backend -------------------------------------------------------- */

static int cpu_device_count(void) { return 1; }

static tdm_status cpu_device_init(tdm_device_t *d, int index, const tdm_backend_params_t *p) {
    tdm_device_init(d, TDM_DEV_CPU, index);
    if (p) d->opts = *p;
    return TDM_OK;
}

static int64_t cpu_mem_free(tdm_device_t *d) { return tdm_host_memory_available(); }

const tdm_backend_t tdm_backend_cpu = {
    .name = "cpu",
    .kind = TDM_DEV_CPU,
    .device_count = cpu_device_count,
    .device_init = cpu_device_init,
    .device_free = NULL,
    .mem_free = cpu_mem_free,
    .ops = {
#define TDM_OP(name, params, args) .name = tdm_cpu_##name,
#define TDM_OPV(type, name, params, args) .name = tdm_cpu_##name,
#include "backend/ops_list.h"
#undef TDM_OP
#undef TDM_OPV
    },
};
