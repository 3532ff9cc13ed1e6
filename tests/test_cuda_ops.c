/* test_cuda_ops.c — every CUDA op (tdm_op_* on a CUDA device) against the CPU
 * reference (tdm_cpu_*) on random inputs of several shapes, odd sizes
 * included. Normalized error max|gpu - cpu| / max|cpu| <= 1e-5 (1e-4 for the
 * GEMM-based ops: linear, gemm, conv, attention); NaN/Inf fail. The half
 * GEMM path (device gemm_dtype F16/BF16, weights stored in that type) is
 * checked twice per case: against the float32 reference on the unrounded
 * data, normalized error <= 2e-3 (F16) / 1e-2 (BF16) — what rounding both
 * operands costs — and against the float32 reference on operands rounded to
 * the half type, <= 1e-4 — i.e. the rounding is to nearest even and the
 * accumulation is float32. Also checks
 * the device's error handling (a failed launch is reported by the next sync,
 * an impossible allocation says how much memory is free). Without a CUDA
 * build or device it prints "SKIP: no CUDA device" and exits 77 (skipped). */
// label: cuda
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/cpu/ops.h"
#include "backend/ops.h"
#include "core/core.h"
#ifdef TDM_HAVE_CUDA
#include "backend/cuda/cuda_ops.h"
#endif
#include "test.h"

#ifdef TDM_HAVE_CUDA

#define TOL 1e-5
#define TOL_GEMM 1e-4

static tdm_device_t g_dev;
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

/* uniform in [-a, a) */
static float urand(float a) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return a * (2.0f * (float)((g_rng >> 40) & 0xffffff) / 16777216.0f - 1.0f);
}

static float *hrand(int64_t n, float a) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = urand(a);
    return p;
}

static float *hzero(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }

/* A device copy of host h (n floats). */
static float *up(const float *h, int64_t n) {
    float *p = tdm_dev_alloc(&g_dev, n * (int64_t)sizeof(float), "test buffer");
    CHECK_MSG(p != NULL, "alloc: %s", tdm_last_error());
    if (p && tdm_dev_upload(&g_dev, p, h, n * (int64_t)sizeof(float), "test upload") != TDM_OK) {
        CHECK_MSG(0, "upload: %s", tdm_last_error());
    }
    return p;
}

static float *dzero(int64_t n) {
    float *p = tdm_dev_alloc(&g_dev, n * (int64_t)sizeof(float), "test buffer");
    CHECK_MSG(p != NULL, "alloc: %s", tdm_last_error());
    return p;
}

static void dfree(float *p, int64_t n) { tdm_dev_free(&g_dev, p, n * (int64_t)sizeof(float)); }

/* Downloads d (n floats) and compares with the host reference; frees d. */
static void check_dev(const char *what, float *d, const float *ref, int64_t n, double tol) {
    float *h = hzero(n);
    tdm_status st = tdm_dev_download(&g_dev, h, d, n * (int64_t)sizeof(float), what);
    CHECK_MSG(st == TDM_OK, "%s: download failed: %s", what, tdm_last_error());
    if (st == TDM_OK) {
        double e = test_rel_err(h, ref, (long)n);
        int bad = 0;
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(h[i])) bad++;
        CHECK_MSG(bad == 0, "%s: %d NaN/Inf values", what, bad);
        CHECK_MSG(e <= tol, "%s: rel err %.3g > %.1g", what, e, tol);
    }
    free(h);
    dfree(d, n);
}

/* ---- GEMM --------------------------------------------------------------------- */

static void linear_case(int64_t M, int64_t K, int64_t N, int bias) {
    char nm[64];
    snprintf(nm, sizeof nm, "linear %lldx%lldx%lld%s", (long long)M, (long long)K, (long long)N,
             bias ? " +b" : "");
    float *x = hrand(M * K, 1), *W = hrand(N * K, 1), *b = bias ? hrand(N, 1) : NULL;
    float *y = hzero(M * N);
    tdm_cpu_linear(NULL, y, x, W, b, M, K, N);
    float *dx = up(x, M * K), *dW = up(W, N * K), *db = bias ? up(b, N) : NULL, *dy = dzero(M * N);
    tdm_op_linear(&g_dev, dy, dx, dW, db, M, K, N);
    check_dev(nm, dy, y, M * N, TOL_GEMM);
    dfree(dx, M * K); dfree(dW, N * K); if (db) dfree(db, N);
    free(x); free(W); free(b); free(y);
}

TEST(test_linear) {
    linear_case(5, 7, 3, 1);
    linear_case(13, 33, 17, 0);
    linear_case(1, 64, 96, 1);
    linear_case(257, 320, 640, 1);
}

static void gemm_case(int tA, int tB, int64_t M, int64_t N, int64_t K, float alpha, float beta,
                      int pad) {
    char nm[80];
    snprintf(nm, sizeof nm, "gemm tA=%d tB=%d %lldx%lldx%lld pad %d", tA, tB, (long long)M,
             (long long)N, (long long)K, pad);
    /* stored shapes: A (M,K) or (K,M); B (K,N) or (N,K); leading dims padded */
    int64_t ar = tA ? K : M, ac = tA ? M : K, br = tB ? N : K, bc = tB ? K : N;
    int64_t lda = ac + pad, ldb = bc + pad, ldc = N + pad;
    float *A = hrand(ar * lda, 1), *B = hrand(br * ldb, 1), *C = hrand(M * ldc, 1);
    float *dA = up(A, ar * lda), *dB = up(B, br * ldb), *dC = up(C, M * ldc);
    tdm_cpu_gemm(NULL, tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    tdm_op_gemm(&g_dev, tA, tB, M, N, K, alpha, dA, lda, dB, ldb, beta, dC, ldc);
    check_dev(nm, dC, C, M * ldc, TOL_GEMM);
    dfree(dA, ar * lda); dfree(dB, br * ldb);
    free(A); free(B); free(C);
}

TEST(test_gemm) {
    for (int tA = 0; tA < 2; tA++)
        for (int tB = 0; tB < 2; tB++) {
            gemm_case(tA, tB, 6, 5, 9, 0.5f, 2.0f, 0);
            gemm_case(tA, tB, 37, 29, 41, 1.0f, 0.0f, 3);
            gemm_case(tA, tB, 130, 70, 300, -1.5f, 1.0f, 1);
        }
}

/* ---- convolution ---------------------------------------------------------------- */

static void conv_case(int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t kh,
                      int64_t kw, int64_t s, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                      int bias) {
    char nm[128];
    snprintf(nm, sizeof nm, "conv B%lld Cin%lld %lldx%lld Cout%lld k%lldx%lld s%lld p%lld%lld%lld%lld%s",
             (long long)B, (long long)Cin, (long long)H, (long long)W, (long long)Cout,
             (long long)kh, (long long)kw, (long long)s, (long long)pt, (long long)pb,
             (long long)pl, (long long)pr, bias ? " +b" : "");
    int64_t Ho = (H + pt + pb - kh) / s + 1, Wo = (W + pl + pr - kw) / s + 1;
    int64_t nx = B * Cin * H * W, nw = Cout * Cin * kh * kw, ny = B * Cout * Ho * Wo;
    float *x = hrand(nx, 1), *w = hrand(nw, 0.5f), *b = bias ? hrand(Cout, 1) : NULL;
    float *y = hzero(ny);
    int64_t ns = tdm_cpu_conv2d_pad4_scratch(NULL, Cin, H, W, kh, kw, s, pt, pb, pl, pr);
    float *scr = ns ? hzero(ns) : NULL;
    tdm_cpu_conv2d_pad4(NULL, y, x, w, b, B, Cin, H, W, Cout, kh, kw, s, pt, pb, pl, pr, scr);
    free(scr);
    int sym = pt == pb && pt == pl && pt == pr;
    int64_t dns = tdm_op_conv2d_pad4_scratch(&g_dev, Cin, H, W, kh, kw, s, pt, pb, pl, pr);
    if (sym) CHECK(tdm_op_conv2d_scratch(&g_dev, Cin, H, W, kh, kw, s, pt) == dns);
    float *dx = up(x, nx), *dw = up(w, nw), *db = bias ? up(b, Cout) : NULL, *dy = dzero(ny);
    float *dscr = dns ? dzero(dns) : NULL;
    if (sym)
        tdm_op_conv2d(&g_dev, dy, dx, dw, db, B, Cin, H, W, Cout, kh, kw, s, pt, dscr);
    else
        tdm_op_conv2d_pad4(&g_dev, dy, dx, dw, db, B, Cin, H, W, Cout, kh, kw, s, pt, pb, pl, pr,
                           dscr);
    check_dev(nm, dy, y, ny, TOL_GEMM);
    dfree(dx, nx); dfree(dw, nw); if (db) dfree(db, Cout); if (dscr) dfree(dscr, dns);
    free(x); free(w); free(b); free(y);
}

TEST(test_conv2d) {
    conv_case(2, 3, 9, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1);
    conv_case(1, 4, 8, 8, 6, 3, 3, 2, 1, 1, 1, 1, 1);
    conv_case(2, 8, 5, 5, 4, 1, 1, 1, 0, 0, 0, 0, 1);    /* 1×1: one batched GEMM */
    conv_case(3, 5, 4, 6, 3, 1, 1, 1, 0, 0, 0, 0, 0);
    conv_case(1, 2, 6, 7, 3, 3, 2, 1, 0, 0, 0, 0, 0);
    conv_case(2, 3, 8, 7, 5, 3, 3, 2, 0, 1, 0, 1, 1);    /* VAE encoder downsample padding */
    conv_case(1, 3, 5, 5, 2, 1, 1, 2, 0, 0, 0, 0, 0);    /* 1×1 stride 2: im2col path */
    conv_case(1, 16, 33, 31, 8, 3, 3, 1, 1, 1, 1, 1, 1);
    conv_case(1, 64, 300, 300, 4, 3, 3, 1, 1, 1, 1, 1, 1);   /* two im2col tiles */
}

/* ---- half-precision GEMM path ---------------------------------------------------------
 * g_dev.gemm_dtype set to F16/BF16 for the op call only; weights uploaded in
 * that type (as tdm_st_set_load_gemm_weight stores them). */
#define TOL_HALF_F16 2e-3
#define TOL_HALF_BF16 1e-2

static float round_half(float v, tdm_dtype dt) {
    return dt == TDM_F16 ? tdm_f16_to_f32(tdm_f32_to_f16(v)) : tdm_bf16_to_f32(tdm_f32_to_bf16(v));
}

/* A copy of h (n floats) with every element rounded to dt. */
static float *hround(const float *h, int64_t n, tdm_dtype dt) {
    float *r = hzero(n);
    for (int64_t i = 0; i < n; i++) r[i] = round_half(h[i], dt);
    return r;
}

/* A device copy of h (n floats) stored as dt (2 bytes an element). */
static float *up_half(const float *h, int64_t n, tdm_dtype dt) {
    uint16_t *t = malloc((size_t)(n > 0 ? n : 1) * 2);
    for (int64_t i = 0; i < n; i++) t[i] = dt == TDM_F16 ? tdm_f32_to_f16(h[i]) : tdm_f32_to_bf16(h[i]);
    void *p = tdm_dev_alloc(&g_dev, n * 2, "test half buffer");
    CHECK_MSG(p != NULL, "alloc: %s", tdm_last_error());
    if (p && tdm_dev_upload(&g_dev, p, t, n * 2, "test upload") != TDM_OK)
        CHECK_MSG(0, "upload: %s", tdm_last_error());
    free(t);
    return p;
}

/* Downloads d (n floats), compares with ref (float32 math on the unrounded
 * data, tolerance tol) and with rref (on operands rounded to the half type,
 * TOL_GEMM); frees d. */
static void check_half(const char *what, float *d, const float *ref, const float *rref, int64_t n,
                       double tol) {
    float *h = hzero(n);
    tdm_status st = tdm_dev_download(&g_dev, h, d, n * (int64_t)sizeof(float), what);
    CHECK_MSG(st == TDM_OK, "%s: download failed: %s", what, tdm_last_error());
    if (st == TDM_OK) {
        double e = test_rel_err(h, ref, (long)n), er = test_rel_err(h, rref, (long)n);
        int bad = 0;
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(h[i])) bad++;
        CHECK_MSG(bad == 0, "%s: %d NaN/Inf values", what, bad);
        CHECK_MSG(e <= tol, "%s: rel err vs fp32 %.3g > %.1g", what, e, tol);
        CHECK_MSG(er <= TOL_GEMM, "%s: rel err vs rounded-operand fp32 %.3g > %.1g", what, er,
                  TOL_GEMM);
        if (getenv("TDM_TEST_VERBOSE"))
            printf("  %s: rel err %.3g (vs rounded operands %.3g)\n", what, e, er);
    }
    free(h);
    dfree(d, n);
}

static void linear_half_case(tdm_dtype dt, int64_t M, int64_t K, int64_t N, int bias) {
    char nm[80];
    snprintf(nm, sizeof nm, "linear %s %lldx%lldx%lld%s", tdm_dtype_name(dt), (long long)M,
             (long long)K, (long long)N, bias ? " +b" : "");
    float *x = hrand(M * K, 1), *W = hrand(N * K, 1), *b = bias ? hrand(N, 1) : NULL;
    float *xr = hround(x, M * K, dt), *Wr = hround(W, N * K, dt);
    float *y = hzero(M * N), *yr = hzero(M * N);
    tdm_cpu_linear(NULL, y, x, W, b, M, K, N);
    tdm_cpu_linear(NULL, yr, xr, Wr, b, M, K, N);
    float *dx = up(x, M * K), *dW = up_half(W, N * K, dt), *db = bias ? up(b, N) : NULL;
    float *dy = dzero(M * N);
    g_dev.gemm_dtype = dt;
    tdm_op_linear(&g_dev, dy, dx, dW, db, M, K, N);
    g_dev.gemm_dtype = TDM_F32;
    check_half(nm, dy, y, yr, M * N, dt == TDM_F16 ? TOL_HALF_F16 : TOL_HALF_BF16);
    dfree(dx, M * K); tdm_dev_free(&g_dev, dW, N * K * 2); if (db) dfree(db, N);
    free(x); free(W); free(b); free(xr); free(Wr); free(y); free(yr);
}

/* Linear + tanh GELU into a wider matrix (ldy = N + pad): the columns past N
 * start as random values on both sides and must come back untouched. dt
 * F32 is the float32 path, F16/BF16 the tensor-core path (cuBLASLt epilogue). */
static void linear_gelu_case(tdm_dtype dt, int64_t M, int64_t K, int64_t N, int64_t pad,
                             int bias) {
    char nm[96];
    int64_t ldy = N + pad;
    snprintf(nm, sizeof nm, "linear_gelu %s %lldx%lldx%lld ldy %lld%s", tdm_dtype_name(dt),
             (long long)M, (long long)K, (long long)N, (long long)ldy, bias ? " +b" : "");
    float *x = hrand(M * K, 1), *W = hrand(N * K, 1), *b = bias ? hrand(N, 1) : NULL;
    float *y = hrand(M * ldy, 1), *yr = hzero(M * ldy);
    memcpy(yr, y, (size_t)(M * ldy) * sizeof(float));
    float *dy = up(y, M * ldy), *dx = up(x, M * K), *db = bias ? up(b, N) : NULL;
    if (dt == TDM_F32) {
        float *dW = up(W, N * K);
        tdm_cpu_linear_gelu(NULL, y, ldy, x, W, b, M, K, N);
        tdm_op_linear_gelu(&g_dev, dy, ldy, dx, dW, db, M, K, N);
        check_dev(nm, dy, y, M * ldy, TOL_GEMM);
        dfree(dW, N * K);
    } else {
        float *xr = hround(x, M * K, dt), *Wr = hround(W, N * K, dt);
        float *dW = up_half(W, N * K, dt);
        tdm_cpu_linear_gelu(NULL, y, ldy, x, W, b, M, K, N);
        tdm_cpu_linear_gelu(NULL, yr, ldy, xr, Wr, b, M, K, N);
        g_dev.gemm_dtype = dt;
        tdm_op_linear_gelu(&g_dev, dy, ldy, dx, dW, db, M, K, N);
        g_dev.gemm_dtype = TDM_F32;
        check_half(nm, dy, y, yr, M * ldy, dt == TDM_F16 ? TOL_HALF_F16 : TOL_HALF_BF16);
        tdm_dev_free(&g_dev, dW, N * K * 2);
        free(xr); free(Wr);
    }
    dfree(dx, M * K); if (db) dfree(db, N);   /* dy: freed by check_dev / check_half */
    free(x); free(W); free(b); free(y); free(yr);
}

TEST(test_linear_gelu) {
    const tdm_dtype dts[3] = {TDM_F32, TDM_F16, TDM_BF16};
    for (int i = 0; i < 3; i++) {
        linear_gelu_case(dts[i], 5, 7, 3, 0, 1);          /* odd sizes */
        linear_gelu_case(dts[i], 33, 64, 96, 0, 0);
        linear_gelu_case(dts[i], 300, 128, 512, 128, 1);  /* the FLUX single-block MLP shape */
        linear_gelu_case(dts[i], 1, 96, 384, 0, 1);       /* one row */
    }
}

static void gemm_half_case(tdm_dtype dt, int tA, int tB, int64_t M, int64_t N, int64_t K,
                           float alpha, float beta, int pad) {
    char nm[96];
    snprintf(nm, sizeof nm, "gemm %s tA=%d tB=%d %lldx%lldx%lld pad %d", tdm_dtype_name(dt), tA,
             tB, (long long)M, (long long)N, (long long)K, pad);
    int64_t ar = tA ? K : M, ac = tA ? M : K, br = tB ? N : K, bc = tB ? K : N;
    int64_t lda = ac + pad, ldb = bc + pad, ldc = N + pad;
    float *A = hrand(ar * lda, 1), *B = hrand(br * ldb, 1), *C = hrand(M * ldc, 1);
    float *Ar = hround(A, ar * lda, dt), *Br = hround(B, br * ldb, dt), *Cr = hzero(M * ldc);
    memcpy(Cr, C, (size_t)(M * ldc) * sizeof(float));
    float *dA = up(A, ar * lda), *dB = up_half(B, br * ldb, dt), *dC = up(C, M * ldc);
    tdm_cpu_gemm(NULL, tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    tdm_cpu_gemm(NULL, tA, tB, M, N, K, alpha, Ar, lda, Br, ldb, beta, Cr, ldc);
    g_dev.gemm_dtype = dt;
    tdm_op_gemm(&g_dev, tA, tB, M, N, K, alpha, dA, lda, dB, ldb, beta, dC, ldc);
    g_dev.gemm_dtype = TDM_F32;
    check_half(nm, dC, C, Cr, M * ldc, dt == TDM_F16 ? TOL_HALF_F16 : TOL_HALF_BF16);
    dfree(dA, ar * lda); tdm_dev_free(&g_dev, dB, br * ldb * 2);
    free(A); free(B); free(C); free(Ar); free(Br); free(Cr);
}

static void conv_half_case(tdm_dtype dt, int64_t B, int64_t Cin, int64_t H, int64_t W,
                           int64_t Cout, int64_t k, int64_t s, int64_t pt, int64_t pb, int64_t pl,
                           int64_t pr) {
    char nm[128];
    snprintf(nm, sizeof nm, "conv %s B%lld Cin%lld %lldx%lld Cout%lld k%lld s%lld p%lld%lld%lld%lld",
             tdm_dtype_name(dt), (long long)B, (long long)Cin, (long long)H, (long long)W,
             (long long)Cout, (long long)k, (long long)s, (long long)pt, (long long)pb,
             (long long)pl, (long long)pr);
    int64_t Ho = (H + pt + pb - k) / s + 1, Wo = (W + pl + pr - k) / s + 1;
    int64_t nx = B * Cin * H * W, nw = Cout * Cin * k * k, ny = B * Cout * Ho * Wo;
    float *x = hrand(nx, 1), *w = hrand(nw, 0.5f), *b = hrand(Cout, 1);
    float *xr = hround(x, nx, dt), *wr = hround(w, nw, dt);
    float *y = hzero(ny), *yr = hzero(ny);
    int64_t ns = tdm_cpu_conv2d_pad4_scratch(NULL, Cin, H, W, k, k, s, pt, pb, pl, pr);
    float *scr = ns ? hzero(ns) : NULL;
    tdm_cpu_conv2d_pad4(NULL, y, x, w, b, B, Cin, H, W, Cout, k, k, s, pt, pb, pl, pr, scr);
    tdm_cpu_conv2d_pad4(NULL, yr, xr, wr, b, B, Cin, H, W, Cout, k, k, s, pt, pb, pl, pr, scr);
    free(scr);
    g_dev.gemm_dtype = dt;
    int64_t dns = tdm_op_conv2d_pad4_scratch(&g_dev, Cin, H, W, k, k, s, pt, pb, pl, pr);
    float *dx = up(x, nx), *dw = up_half(w, nw, dt), *db = up(b, Cout), *dy = dzero(ny);
    float *dscr = dns ? dzero(dns) : NULL;
    tdm_op_conv2d_pad4(&g_dev, dy, dx, dw, db, B, Cin, H, W, Cout, k, k, s, pt, pb, pl, pr, dscr);
    g_dev.gemm_dtype = TDM_F32;
    check_half(nm, dy, y, yr, ny, dt == TDM_F16 ? TOL_HALF_F16 : TOL_HALF_BF16);
    dfree(dx, nx); tdm_dev_free(&g_dev, dw, nw * 2); dfree(db, Cout);
    if (dscr) dfree(dscr, dns);
    free(x); free(w); free(b); free(xr); free(wr); free(y); free(yr);
}

TEST(test_half_gemm) {
    const tdm_dtype dts[2] = {TDM_F16, TDM_BF16};
    for (int i = 0; i < 2; i++) {
        tdm_dtype dt = dts[i];
        linear_half_case(dt, 5, 7, 3, 1);              /* odd sizes: no tensor-core alignment */
        linear_half_case(dt, 13, 33, 17, 0);
        linear_half_case(dt, 257, 320, 640, 1);
        linear_half_case(dt, 4096, 320, 320, 0);       /* SD attention projection */
        linear_half_case(dt, 77, 768, 1280, 1);        /* cross-attention k/v */
        for (int tA = 0; tA < 2; tA++)
            for (int tB = 0; tB < 2; tB++) {
                gemm_half_case(dt, tA, tB, 6, 5, 9, 0.5f, 2.0f, 0);
                gemm_half_case(dt, tA, tB, 130, 70, 300, -1.5f, 1.0f, 1);   /* strided A */
            }
        gemm_half_case(dt, 0, 1, 300, 512, 128, 1.0f, 1.0f, 0);   /* the FLUX MLP call shape */
        conv_half_case(dt, 2, 3, 9, 7, 5, 3, 1, 1, 1, 1, 1);
        conv_half_case(dt, 2, 8, 5, 5, 4, 1, 1, 0, 0, 0, 0);      /* 1×1: batched GEMM */
        conv_half_case(dt, 2, 3, 8, 7, 5, 3, 2, 0, 1, 0, 1);      /* VAE downsample padding */
        conv_half_case(dt, 1, 3, 5, 5, 2, 1, 2, 0, 0, 0, 0);      /* 1×1 stride 2: im2col */
        conv_half_case(dt, 2, 320, 64, 64, 320, 3, 1, 1, 1, 1, 1); /* SD UNet level 0 */
        conv_half_case(dt, 1, 64, 300, 300, 4, 3, 1, 1, 1, 1, 1); /* two im2col tiles */
        conv_half_case(dt, 2, 64, 32, 32, 64, 3, 2, 1, 1, 1, 1);   /* SD downsample: 8-wide im2col, stride 2 */
        conv_half_case(dt, 1, 16, 64, 64, 16, 3, 2, 0, 1, 0, 1);   /* VAE downsample, 8-wide */
    }
}

/* The implicit-GEMM 3×3 convolution (conv_igemm.cu), forced on for every
 * shape it takes, then off: both paths against the references. Shapes: the
 * row tile's tail (Cout 320, 40), column tails with an odd pixel count and
 * columns straddling two images, stride 2, the VAE encoder's one-sided
 * padding; the 1024-channel case has K = 9216 (288 steps). */
TEST(test_conv_igemm) {
    const tdm_dtype dts[2] = {TDM_F16, TDM_BF16};
    for (int mode = 2; mode >= 0; mode -= 2) {
        const int old = g_dev.opts.conv_igemm;
        g_dev.opts.conv_igemm = mode;
        for (int i = 0; i < 2; i++) {
            tdm_dtype dt = dts[i];
            conv_half_case(dt, 2, 320, 64, 64, 320, 3, 1, 1, 1, 1, 1);   /* SD level 0 */
            conv_half_case(dt, 3, 64, 13, 11, 40, 3, 1, 1, 1, 1, 1);     /* P odd, tails */
            conv_half_case(dt, 2, 32, 33, 31, 130, 3, 2, 1, 1, 1, 1);    /* stride 2 */
            conv_half_case(dt, 1, 32, 17, 17, 64, 3, 2, 0, 1, 0, 1);     /* VAE downsample */
            conv_half_case(dt, 1, 1024, 9, 7, 136, 3, 1, 1, 1, 1, 1);
            conv_half_case(dt, 1, 128, 128, 128, 128, 3, 1, 1, 1, 1, 1); /* VAE level */
        }
        g_dev.opts.conv_igemm = old;
    }
}

/* ---- normalization ------------------------------------------------------------------ */

static void group_norm_case(int64_t B, int64_t C, int64_t S, int64_t G, int silu, int affine,
                            int alias) {
    char nm[96];
    snprintf(nm, sizeof nm, "group_norm B%lld C%lld S%lld G%lld silu%d affine%d alias%d",
             (long long)B, (long long)C, (long long)S, (long long)G, silu, affine, alias);
    int64_t n = B * C * S;
    float *x = hrand(n, 2), *ga = affine ? hrand(C, 1) : NULL, *be = affine ? hrand(C, 1) : NULL;
    for (int64_t i = 0; i < n; i++) x[i] += 0.7f;   /* a nonzero mean */
    float *y = hzero(n);
    tdm_cpu_group_norm(NULL, y, x, ga, be, B, C, S, G, 1e-6f, silu);
    float *dx = up(x, n), *dga = affine ? up(ga, C) : NULL, *dbe = affine ? up(be, C) : NULL;
    float *dy = alias ? dx : dzero(n);
    tdm_op_group_norm(&g_dev, dy, dx, dga, dbe, B, C, S, G, 1e-6f, silu);
    check_dev(nm, dy, y, n, TOL);
    if (!alias) dfree(dx, n);
    if (affine) { dfree(dga, C); dfree(dbe, C); }
    free(x); free(ga); free(be); free(y);
}

TEST(test_group_norm) {
    group_norm_case(2, 64, 37, 32, 0, 1, 0);
    group_norm_case(2, 64, 37, 32, 1, 1, 1);
    group_norm_case(1, 12, 1000, 3, 1, 0, 0);
    group_norm_case(3, 6, 1, 6, 0, 1, 0);
    group_norm_case(1, 128, 256 * 256, 32, 1, 1, 1);
    group_norm_case(2, 320, 64 * 64, 32, 1, 1, 0);   /* SD 64x64: the sliced path */
    group_norm_case(1, 64, 8191, 8, 1, 1, 0);        /* large groups, S % 4 != 0: one block */
    group_norm_case(2, 256, 128 * 128, 32, 0, 1, 1); /* sliced, in place */
}

static void layer_norm_case(int64_t rows, int64_t D, int affine, int alias) {
    char nm[80];
    snprintf(nm, sizeof nm, "layer_norm %lldx%lld affine%d alias%d", (long long)rows,
             (long long)D, affine, alias);
    int64_t n = rows * D;
    float *x = hrand(n, 3), *ga = affine ? hrand(D, 1) : NULL, *be = affine ? hrand(D, 1) : NULL;
    for (int64_t i = 0; i < n; i++) x[i] -= 1.3f;
    float *y = hzero(n);
    tdm_cpu_layer_norm(NULL, y, x, ga, be, rows, D, 1e-5f);
    float *dx = up(x, n), *dga = affine ? up(ga, D) : NULL, *dbe = affine ? up(be, D) : NULL;
    float *dy = alias ? dx : dzero(n);
    tdm_op_layer_norm(&g_dev, dy, dx, dga, dbe, rows, D, 1e-5f);
    check_dev(nm, dy, y, n, TOL);
    if (!alias) dfree(dx, n);
    if (affine) { dfree(dga, D); dfree(dbe, D); }
    free(x); free(ga); free(be); free(y);
}

TEST(test_layer_norm) {
    layer_norm_case(7, 33, 1, 0);
    layer_norm_case(5, 768, 1, 1);
    layer_norm_case(3, 3072, 0, 0);
    layer_norm_case(1000, 1, 1, 0);
    layer_norm_case(77, 1280, 1, 0);
}

/* ---- activations and element-wise ------------------------------------------------------ */

typedef void (*cpu_act_fn)(tdm_device_t *, float *, int64_t);
typedef void (*op_act_fn)(tdm_device_t *, float *, int64_t);

static void act_case(const char *name, cpu_act_fn cf, op_act_fn of, int64_t n) {
    char nm[64];
    snprintf(nm, sizeof nm, "%s n=%lld", name, (long long)n);
    float *x = hrand(n, 6);
    float *dx = up(x, n);
    cf(NULL, x, n);
    of(&g_dev, dx, n);
    check_dev(nm, dx, x, n, TOL);
    free(x);
}

TEST(test_activations) {
    int64_t ns[] = {1, 1000, 100003};
    for (int i = 0; i < 3; i++) {
        act_case("silu", tdm_cpu_silu, tdm_op_silu, ns[i]);
        act_case("gelu", tdm_cpu_gelu, tdm_op_gelu, ns[i]);
        act_case("gelu_tanh", tdm_cpu_gelu_tanh, tdm_op_gelu_tanh, ns[i]);
        act_case("quick_gelu", tdm_cpu_quick_gelu, tdm_op_quick_gelu, ns[i]);
    }
}

static void geglu_case(int64_t rows, int64_t F) {
    char nm[64];
    snprintf(nm, sizeof nm, "geglu %lldx%lld", (long long)rows, (long long)F);
    float *h = hrand(rows * 2 * F, 4), *y = hzero(rows * F);
    tdm_cpu_geglu(NULL, y, h, rows, F);
    float *dh = up(h, rows * 2 * F), *dy = dzero(rows * F);
    tdm_op_geglu(&g_dev, dy, dh, rows, F);
    check_dev(nm, dy, y, rows * F, TOL);
    dfree(dh, rows * 2 * F);
    free(h); free(y);
}

TEST(test_geglu) {
    geglu_case(7, 33);
    geglu_case(64, 1280);
    geglu_case(1, 1);
}

TEST(test_elementwise) {
    int64_t ns[] = {1, 4097, 300001};
    for (int k = 0; k < 3; k++) {
        int64_t n = ns[k];
        float *a = hrand(n, 5), *b = hrand(n, 5), *y = hzero(n);
        float *da = up(a, n), *db = up(b, n), *dy = dzero(n);
        tdm_cpu_add(NULL, y, a, b, n);
        tdm_op_add(&g_dev, dy, da, db, n);
        check_dev("add", dy, y, n, TOL);
        tdm_cpu_add(NULL, y, a, b, n);
        tdm_op_add(&g_dev, da, da, db, n);      /* y aliases a */
        check_dev("add alias", da, y, n, TOL);
        da = up(a, n);
        tdm_cpu_scale(NULL, y, a, -0.37f, n);
        tdm_op_scale(&g_dev, db, da, -0.37f, n);
        check_dev("scale", db, y, n, TOL);
        db = up(b, n);
        tdm_cpu_clamp(NULL, y, a, -1.5f, 2.0f, n);
        tdm_op_clamp(&g_dev, da, da, -1.5f, 2.0f, n);   /* in place */
        check_dev("clamp", da, y, n, TOL);
        dfree(db, n);
        free(a); free(b); free(y);
    }
    /* clamp keeps NaN and saturates infinities */
    float c[4] = {NAN, INFINITY, -INFINITY, 0.25f}, got[4] = {0};
    float *dc = up(c, 4);
    tdm_op_clamp(&g_dev, dc, dc, -30.0f, 20.0f, 4);
    CHECK(tdm_dev_download(&g_dev, got, dc, sizeof got, "clamp") == TDM_OK);
    CHECK(isnan(got[0]) && got[1] == 20.0f && got[2] == -30.0f && got[3] == 0.25f);
    dfree(dc, 4);
}

static void channel_bias_case(int64_t B, int64_t C, int64_t S) {
    int64_t n = B * C * S;
    float *x = hrand(n, 2), *v = hrand(B * C, 2);
    float *dx = up(x, n), *dv = up(v, B * C);
    tdm_cpu_add_channel_bias(NULL, x, v, B, C, S);
    tdm_op_add_channel_bias(&g_dev, dx, dv, B, C, S);
    check_dev("add_channel_bias", dx, x, n, TOL);
    dfree(dv, B * C);
    free(x); free(v);
}

TEST(test_add_channel_bias) {
    channel_bias_case(2, 3, 7);
    channel_bias_case(2, 320, 4096);
    channel_bias_case(1, 1, 1);
}

/* ---- attention -------------------------------------------------------------------------- */

static void attention_case(int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D, int causal) {
    char nm[96];
    snprintf(nm, sizeof nm, "attention B%lld Tq%lld Tk%lld H%lld D%lld causal%d", (long long)B,
             (long long)Tq, (long long)Tk, (long long)H, (long long)D, causal);
    int64_t nq = B * Tq * H * D, nk = B * Tk * H * D;
    float *q = hrand(nq, 2), *k = hrand(nk, 2), *v = hrand(nk, 1), *o = hzero(nq);
    float scale = 1.0f / sqrtf((float)D);
    tdm_cpu_attention(NULL, o, q, k, v, B, Tq, Tk, H, D, scale, causal);
    float *dq = up(q, nq), *dk = up(k, nk), *dv = up(v, nk), *dout = dzero(nq);
    tdm_op_attention(&g_dev, dout, dq, dk, dv, B, Tq, Tk, H, D, scale, causal);
    check_dev(nm, dout, o, nq, TOL_GEMM);
    dfree(dq, nq); dfree(dk, nk); dfree(dv, nk);
    free(q); free(k); free(v); free(o);
}

TEST(test_attention) {
    attention_case(2, 77, 77, 3, 40, 1);        /* CLIP text: causal, D 40 */
    attention_case(2, 77, 77, 12, 64, 1);
    attention_case(1, 100, 77, 2, 64, 0);       /* cross attention */
    attention_case(2, 256, 77, 5, 80, 0);
    attention_case(1, 33, 257, 2, 80, 0);
    attention_case(1, 64, 64, 2, 160, 0);
    attention_case(2, 129, 129, 2, 128, 1);     /* FLUX head dim */
    attention_case(1, 1024, 1024, 2, 128, 0);
    attention_case(1, 1, 5, 1, 13, 0);          /* odd head dim, one query */
    attention_case(1, 7, 3, 2, 1, 1);           /* Tq > Tk, causal */
    attention_case(1, 40, 33, 1, 256, 0);       /* largest head dim */
    attention_case(1, 5, 0, 2, 8, 0);           /* no keys: o = 0 */
    attention_case(1, 4096, 4096, 1, 40, 0);    /* SD 512² self-attention, one head */
    attention_case(1, 4096, 4096, 1, 512, 0);   /* the VAE mid-block: one 512-wide head */
    attention_case(2, 300, 70, 2, 320, 1);      /* wide heads, causal, Tq > Tk */
}

/* Tensor-core attention (attention_tc.cu): the device's gemm_dtype F16 / BF16
 * routes tdm_cuda_attention to FP16/BF16 operands with FP32 accumulation and
 * softmax. Output poisoned with NaN first, so an unwritten element fails. */
static void attention_tc_case(tdm_dtype dt, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                              int64_t D, int causal) {
    char nm[112];
    snprintf(nm, sizeof nm, "attention %s B%lld Tq%lld Tk%lld H%lld D%lld causal%d",
             dt == TDM_BF16 ? "bf16" : "f16", (long long)B, (long long)Tq, (long long)Tk,
             (long long)H, (long long)D, causal);
    int64_t nq = B * Tq * H * D, nk = B * Tk * H * D;
    float *q = hrand(nq, 2), *k = hrand(nk, 2), *v = hrand(nk, 1), *o = hzero(nq);
    float *poison = malloc((size_t)nq * sizeof(float));
    for (int64_t i = 0; i < nq; i++) poison[i] = NAN;
    float scale = 1.0f / sqrtf((float)D);
    tdm_cpu_attention(NULL, o, q, k, v, B, Tq, Tk, H, D, scale, causal);
    float *dq = up(q, nq), *dk = up(k, nk), *dv = up(v, nk), *dout = up(poison, nq);
    g_dev.gemm_dtype = dt;
    tdm_op_attention(&g_dev, dout, dq, dk, dv, B, Tq, Tk, H, D, scale, causal);
    g_dev.gemm_dtype = TDM_F32;
    {   /* the error, printed for the record */
        float *h = hzero(nq);
        if (tdm_dev_download(&g_dev, h, dout, nq * (int64_t)sizeof(float), nm) == TDM_OK)
            printf("  %s: rel err %.3g\n", nm, test_rel_err(h, o, (long)nq));
        free(h);
    }
    check_dev(nm, dout, o, nq, dt == TDM_BF16 ? 2e-2 : 5e-3);
    dfree(dq, nq); dfree(dk, nk); dfree(dv, nk);
    free(q); free(k); free(v); free(o); free(poison);
}

TEST(test_attention_tc) {
    for (int i = 0; i < 2; i++) {
        tdm_dtype dt = i ? TDM_BF16 : TDM_F16;
        attention_tc_case(dt, 1, 1024, 1024, 1, 512, 0);  /* D > 256: the fp32 wide-head path */
        attention_tc_case(dt, 2, 77, 77, 8, 40, 1);       /* CLIP text: causal, D 40 */
        attention_tc_case(dt, 2, 1000, 1000, 8, 40, 0);   /* SD self-attention, T % 64 != 0 */
        attention_tc_case(dt, 2, 4096, 77, 8, 40, 0);     /* SD cross-attention */
        attention_tc_case(dt, 1, 300, 300, 4, 64, 1);
        attention_tc_case(dt, 2, 256, 77, 5, 80, 0);
        attention_tc_case(dt, 1, 33, 257, 2, 80, 0);
        attention_tc_case(dt, 1, 200, 130, 2, 160, 0);
        attention_tc_case(dt, 2, 129, 129, 2, 128, 1);    /* FLUX head dim, causal */
        attention_tc_case(dt, 1, 1024, 1024, 3, 128, 0);
        attention_tc_case(dt, 1, 1, 5, 1, 13, 0);         /* odd head dim, one query */
        attention_tc_case(dt, 1, 7, 3, 2, 1, 1);          /* Tq > Tk, causal */
        attention_tc_case(dt, 1, 100, 70, 2, 100, 1);     /* D 100 → 128, Tq > Tk causal */
        attention_tc_case(dt, 1, 40, 33, 1, 256, 0);      /* largest head dim */
        attention_tc_case(dt, 1, 5, 0, 2, 8, 0);          /* no keys: o = 0 */
        /* query counts no multiple of the 128-row block (padding, tail and
         * causal masks of tc2_attention_kernel; opts.attn_tc_16row: the 64-row one) */
        attention_tc_case(dt, 2, 77, 77, 4, 128, 0);      /* FLUX head dim, Tq 77 */
        attention_tc_case(dt, 1, 200, 200, 3, 128, 1);
        attention_tc_case(dt, 1, 200, 200, 2, 40, 1);     /* D 40 → 48 */
        attention_tc_case(dt, 1, 200, 333, 3, 64, 0);
        attention_tc_case(dt, 1, 200, 200, 2, 80, 1);
        attention_tc_case(dt, 1, 130, 130, 2, 24, 1);     /* D 24 → 32 */
        attention_tc_case(dt, 1, 300, 300, 2, 96, 0);     /* DP 96: Q from shared memory */
        attention_tc_case(dt, 1, 77, 300, 2, 64, 1);      /* causal, Tq < Tk */
        attention_tc_case(dt, 1, 4097, 150, 2, 64, 1);    /* causal, Tq > Tk */
        attention_tc_case(dt, 1, 4097, 4097, 1, 128, 1);  /* 32·128 + 1 rows */
        attention_tc_case(dt, 1, 4097, 4097, 1, 40, 0);
    }
}

/* ---- layout ------------------------------------------------------------------------------- */

static void transpose_case(int64_t B, int64_t C, int64_t S) {
    int64_t n = B * C * S;
    float *x = hrand(n, 1), *y = hzero(n), *y2 = hzero(n);
    tdm_cpu_transpose_cs(NULL, y, x, B, C, S);
    tdm_cpu_transpose_sc(NULL, y2, y, B, S, C);
    float *dx = up(x, n), *dy = dzero(n), *dy2 = dzero(n);
    tdm_op_transpose_cs(&g_dev, dy, dx, B, C, S);
    tdm_op_transpose_sc(&g_dev, dy2, dy, B, S, C);
    check_dev("transpose_cs", dy, y, n, 0);
    check_dev("transpose_sc", dy2, y2, n, 0);
    dfree(dx, n);
    free(x); free(y); free(y2);
}

TEST(test_transpose) {
    transpose_case(2, 37, 45);
    transpose_case(1, 320, 4096);
    transpose_case(3, 1, 7);
    transpose_case(1, 33, 1);
}

TEST(test_upsample_resize_concat) {
    int64_t B = 2, C = 3, H = 5, W = 7;
    int64_t n = B * C * H * W, n4 = 4 * n;
    float *x = hrand(n, 1), *y = hzero(n4);
    float *dx = up(x, n), *dy = dzero(n4);
    tdm_cpu_upsample_nearest2x(NULL, y, x, B, C, H, W);
    tdm_op_upsample_nearest2x(&g_dev, dy, dx, B, C, H, W);
    check_dev("upsample_nearest2x", dy, y, n4, 0);
    free(y);
    int64_t sizes[][2] = {{10, 14}, {11, 13}, {3, 2}, {5, 7}, {10, 7}, {17, 29}};
    for (int i = 0; i < 6; i++) {
        int64_t Ho = sizes[i][0], Wo = sizes[i][1], m = B * C * Ho * Wo;
        char nm[64];
        snprintf(nm, sizeof nm, "resize_nearest %lldx%lld", (long long)Ho, (long long)Wo);
        y = hzero(m);
        dy = dzero(m);
        tdm_cpu_resize_nearest(NULL, y, x, B, C, H, W, Ho, Wo);
        tdm_op_resize_nearest(&g_dev, dy, dx, B, C, H, W, Ho, Wo);
        check_dev(nm, dy, y, m, 0);
        free(y);
    }
    int64_t Cb = 4, S = H * W, nb = B * Cb * S, nc = n + nb;
    float *b = hrand(nb, 1), *cat = hzero(nc);
    float *db = up(b, nb), *dcat = dzero(nc);
    tdm_cpu_concat_channels(NULL, cat, x, C, b, Cb, B, S);
    tdm_op_concat_channels(&g_dev, dcat, dx, C, db, Cb, B, S);
    check_dev("concat_channels", dcat, cat, nc, 0);
    dfree(dx, n); dfree(db, nb);
    free(x); free(b); free(cat);
}

TEST(test_gather_rows) {
    int64_t rows = 50, D = 33, n = 20;
    float *table = hrand(rows * D, 1), *y = hzero(n * D);
    int32_t idx[20];
    for (int i = 0; i < n; i++) idx[i] = (int32_t)((i * 7 + 3) % rows);
    idx[5] = 0;
    idx[6] = (int32_t)(rows - 1);
    tdm_cpu_gather_rows(NULL, y, table, idx, n, D);
    float *dt = up(table, rows * D), *dy = dzero(n * D);
    tdm_op_gather_rows(&g_dev, dy, dt, idx, n, D);
    for (int i = 0; i < n; i++) idx[i] = -1;   /* the caller may reuse idx at once */
    check_dev("gather_rows", dy, y, n * D, 0);
    /* a longer second gather grows the staging buffer */
    int32_t idx2[300];
    for (int i = 0; i < 300; i++) idx2[i] = (int32_t)((i * 13) % rows);
    float *y2 = hzero(300 * D), *dy2 = dzero(300 * D);
    tdm_cpu_gather_rows(NULL, y2, table, idx2, 300, D);
    tdm_op_gather_rows(&g_dev, dy2, dt, idx2, 300, D);
    check_dev("gather_rows 300", dy2, y2, 300 * D, 0);
    dfree(dt, rows * D);
    free(table); free(y); free(y2);
}

/* ---- T5 encoder ops ------------------------------------------------------------------------ */

static void rms_norm_case(int64_t rows, int64_t D, int with_w, int alias) {
    char nm[96];
    snprintf(nm, sizeof nm, "rms_norm %lldx%lld w%d alias%d", (long long)rows, (long long)D,
             with_w, alias);
    float *x = hrand(rows * D, 3), *w = hrand(D, 2), *y = hzero(rows * D);
    tdm_cpu_rms_norm(NULL, y, x, with_w ? w : NULL, rows, D, 1e-6f);
    float *dx = up(x, rows * D), *dw = up(w, D), *dy = alias ? dx : dzero(rows * D);
    tdm_op_rms_norm(&g_dev, dy, dx, with_w ? dw : NULL, rows, D, 1e-6f);
    check_dev(nm, dy, y, rows * D, TOL);
    if (!alias) dfree(dx, rows * D);
    dfree(dw, D);
    free(x); free(w); free(y);
}

/* q, k, v (B, T, H*D) and a bias table (H, 2T-1) with a wide range, as T5's
 * learned position biases have. */
static void attention_bias_case(int64_t B, int64_t T, int64_t H, int64_t D) {
    char nm[96];
    snprintf(nm, sizeof nm, "attention_bias B%lld T%lld H%lld D%lld", (long long)B, (long long)T,
             (long long)H, (long long)D);
    int64_t n = B * T * H * D, nt = H * (2 * T - 1);
    float *q = hrand(n, 1), *k = hrand(n, 1), *v = hrand(n, 1), *tab = hrand(nt, 8);
    float *o = hzero(n), *s = hzero(tdm_cpu_attention_bias_scratch(NULL, T));
    tdm_cpu_attention_bias(NULL, o, q, k, v, tab, s, B, T, H, D);
    int64_t ns = tdm_op_attention_bias_scratch(&g_dev, T);
    float *dq = up(q, n), *dk = up(k, n), *dv = up(v, n), *dt = up(tab, nt), *dout = dzero(n);
    float *ds = ns > 0 ? dzero(ns) : NULL;
    tdm_op_attention_bias(&g_dev, dout, dq, dk, dv, dt, ds, B, T, H, D);
    check_dev(nm, dout, o, n, TOL_GEMM);
    if (ds) dfree(ds, ns);
    dfree(dq, n); dfree(dk, n); dfree(dv, n); dfree(dt, nt);
    free(q); free(k); free(v); free(tab); free(o); free(s);
}

/* The same on the tensor cores: gemm_dtype F16 / BF16 routes tdm_cuda_attention_bias
 * to attention_tc.cu (half operands, FP32 softmax, the bias added to the raw
 * scores). Tolerances as attention_tc_case; output poisoned with NaN first. The
 * reference without the bias must be far off, so the bias is known to count. */
static void attention_bias_tc_case(tdm_dtype dt, int64_t B, int64_t T, int64_t H, int64_t D) {
    char nm[112];
    snprintf(nm, sizeof nm, "attention_bias %s B%lld T%lld H%lld D%lld",
             dt == TDM_BF16 ? "bf16" : "f16", (long long)B, (long long)T, (long long)H,
             (long long)D);
    const double tol = dt == TDM_BF16 ? 2e-2 : 5e-3;
    int64_t n = B * T * H * D, nt = H * (2 * T - 1);
    float *q = hrand(n, 1), *k = hrand(n, 1), *v = hrand(n, 1), *tab = hrand(nt, 5);
    float *o = hzero(n), *o0 = hzero(n), *tab0 = hzero(nt);
    float *s = hzero(tdm_cpu_attention_bias_scratch(NULL, T));
    float *poison = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) poison[i] = NAN;
    tdm_cpu_attention_bias(NULL, o, q, k, v, tab, s, B, T, H, D);
    tdm_cpu_attention_bias(NULL, o0, q, k, v, tab0, s, B, T, H, D);
    if (T > 1) {   /* one key: softmax weight 1 whatever the bias */
        double eb = test_rel_err(o0, o, (long)n);
        CHECK_MSG(eb > 4 * tol, "%s: the bias changes the output by only %.3g", nm, eb);
    }
    int64_t ns = tdm_op_attention_bias_scratch(&g_dev, T);
    float *dq = up(q, n), *dk = up(k, n), *dv = up(v, n), *dtab = up(tab, nt), *dout = up(poison, n);
    float *ds = ns > 0 ? dzero(ns) : NULL;
    g_dev.gemm_dtype = dt;
    tdm_op_attention_bias(&g_dev, dout, dq, dk, dv, dtab, ds, B, T, H, D);
    g_dev.gemm_dtype = TDM_F32;
    {   /* the error, printed for the record */
        float *h = hzero(n);
        if (tdm_dev_download(&g_dev, h, dout, n * (int64_t)sizeof(float), nm) == TDM_OK)
            printf("  %s: rel err %.3g\n", nm, test_rel_err(h, o, (long)n));
        free(h);
    }
    check_dev(nm, dout, o, n, tol);
    if (ds) dfree(ds, ns);
    dfree(dq, n); dfree(dk, n); dfree(dv, n); dfree(dtab, nt);
    free(q); free(k); free(v); free(tab); free(tab0); free(o); free(o0); free(s); free(poison);
}

TEST(test_t5_ops) {
    rms_norm_case(7, 33, 1, 0);
    rms_norm_case(5, 4096, 1, 1);     /* T5-XXL width, in place */
    rms_norm_case(1000, 1, 0, 0);
    rms_norm_case(77, 48, 0, 1);
    int64_t ns[] = {1, 1000, 100003};
    for (int i = 0; i < 3; i++) {
        act_case("relu", tdm_cpu_relu, tdm_op_relu, ns[i]);
        int64_t n = ns[i];
        float *a = hrand(n, 5), *b = hrand(n, 5), *y = hzero(n);
        float *da = up(a, n), *db = up(b, n), *dy = dzero(n);
        tdm_cpu_mul(NULL, y, a, b, n);
        tdm_op_mul(&g_dev, dy, da, db, n);
        check_dev("mul", dy, y, n, TOL);
        tdm_op_mul(&g_dev, da, da, db, n);   /* y aliases a */
        check_dev("mul alias", da, y, n, TOL);
        dfree(db, n);
        free(a); free(b); free(y);
    }
    /* relu maps NaN to 0 on both devices */
    float c[3] = {NAN, -2.0f, 3.0f}, got[3] = {1, 1, 1};
    float *dc = up(c, 3);
    tdm_op_relu(&g_dev, dc, 3);
    CHECK(tdm_dev_download(&g_dev, got, dc, sizeof got, "relu") == TDM_OK);
    CHECK(got[0] == 0.0f && got[1] == 0.0f && got[2] == 3.0f);
    dfree(dc, 3);
    attention_bias_case(2, 7, 4, 8);       /* the golden fixtures' shapes */
    attention_bias_case(2, 64, 4, 16);
    attention_bias_case(1, 1, 2, 64);      /* one token */
    attention_bias_case(2, 77, 3, 40);     /* odd T, head dim not a multiple of 32 */
    attention_bias_case(1, 512, 4, 64);    /* FLUX max_sequence_length, T5-XXL head dim */
    attention_bias_case(1, 33, 2, 256);    /* largest head dim */
    attention_bias_case(1, 5, 1, 1);
    /* tensor cores: T ≤ 64 runs tc_attention_kernel, longer tc2_attention_kernel
     * (opts.attn_tc_16row: tc_attention_kernel for all) */
    for (int i = 0; i < 2; i++) {
        tdm_dtype dt = i ? TDM_BF16 : TDM_F16;
        attention_bias_tc_case(dt, 1, 1, 2, 64);     /* one token */
        attention_bias_tc_case(dt, 2, 7, 3, 64);
        attention_bias_tc_case(dt, 2, 77, 4, 64);    /* CLIP-length prompt, partial tiles */
        attention_bias_tc_case(dt, 1, 130, 3, 64);   /* two 128-row blocks, 2 valid rows in the last */
        attention_bias_tc_case(dt, 1, 512, 4, 64);   /* FLUX max_sequence_length, T5-XXL head dim */
        attention_bias_tc_case(dt, 2, 512, 2, 64);
        attention_bias_tc_case(dt, 1, 200, 2, 40);   /* DP 48 */
        attention_bias_tc_case(dt, 1, 300, 2, 128);  /* DP 128: Q from shared memory */
        attention_bias_tc_case(dt, 1, 33, 2, 256);   /* largest head dim */
    }
}

/* ---- device behaviour --------------------------------------------------------------------- */

TEST(test_device_memory) {
    /* alloc is zero-filled; cur/peak bytes are counted */
    int64_t before = g_dev.cur_bytes;
    float *d = dzero(1000), h[1000];
    CHECK(g_dev.cur_bytes == before + 4000);
    for (int i = 0; i < 1000; i++) h[i] = 1.0f;
    CHECK(tdm_dev_download(&g_dev, h, d, sizeof h, "zeros") == TDM_OK);
    int nz = 0;
    for (int i = 0; i < 1000; i++) nz += h[i] != 0.0f;
    CHECK_MSG(nz == 0, "%d nonzero floats in a fresh allocation", nz);
    /* device-to-device copy */
    float src[7] = {1, 2, 3, 4, 5, 6, 7}, out[7] = {0};
    float *a = up(src, 7), *b = dzero(7);
    CHECK(g_dev.ops->copy(&g_dev, b, a, sizeof src) == 1);
    CHECK(tdm_dev_download(&g_dev, out, b, sizeof out, "copy") == TDM_OK);
    CHECK(memcmp(out, src, sizeof src) == 0);
    dfree(a, 7); dfree(b, 7); dfree(d, 1000);
    CHECK(g_dev.cur_bytes == before);
    /* an impossible allocation names the bytes needed and free */
    void *p = tdm_dev_alloc(&g_dev, (int64_t)1 << 52, "huge");
    CHECK(p == NULL);
    const char *msg = tdm_last_error();
    CHECK_MSG(strstr(msg, "out of GPU memory") && strstr(msg, "free"), "message: %s", msg);
    CHECK(g_dev.cur_bytes == before);
    CHECK(g_dev.ops->sync(&g_dev) == 1);   /* a failed alloc is not a device failure */
}

TEST(test_error_kept) {
    /* a second handle on the same GPU, so the kept failure stays off g_dev */
    tdm_device_t d2;
    CHECK(tdm_cuda_device_init(&d2, 0, NULL) == TDM_OK);
    float *o = tdm_dev_alloc(&d2, 4096, "o");
    CHECK(o != NULL);
    /* T5's biased attention has no path for head dims above 256 */
    tdm_op_attention_bias(&d2, o, o, o, o, o, NULL, 1, 1, 1, 300);
    tdm_op_silu(&d2, o, 16);                                       /* later ops still queue */
    CHECK(d2.ops->sync(&d2) == 0);
    const char *msg = tdm_last_error();
    CHECK_MSG(strstr(msg, "attention_bias_kernel") != NULL, "message: %s", msg);
    float h[4];
    CHECK(tdm_dev_download(&d2, h, o, sizeof h, "o") != TDM_OK);
    CHECK_MSG(strstr(tdm_last_error(), "attention_bias_kernel") != NULL, "message: %s",
              tdm_last_error());
    tdm_dev_free(&d2, o, 4096);
    tdm_cuda_device_free(&d2);
    CHECK(tdm_cuda_device_init(&d2, tdm_cuda_device_count(), NULL) != TDM_OK);   /* no such device */
    CHECK_MSG(strstr(tdm_last_error(), "no such CUDA device") != NULL, "message: %s",
              tdm_last_error());
}

/* ---- transformer row ops (FLUX) ---------------------------------------------------------- */

static void rope_case(int64_t B, int64_t S, int64_t H, int64_t hd) {
    char nm[80];
    int64_t n = B * S * H * hd;
    snprintf(nm, sizeof nm, "rope_interleaved B=%lld S=%lld H=%lld hd=%lld", (long long)B,
             (long long)S, (long long)H, (long long)hd);
    float *x = hrand(n, 3), *cs = hrand(S * hd, 1), *sn = hrand(S * hd, 1);
    float *dx = up(x, n), *dc = up(cs, S * hd), *ds = up(sn, S * hd);
    tdm_cpu_rope_interleaved(NULL, TDM_F32, x, cs, sn, B, S, H, hd);
    tdm_op_rope_interleaved(&g_dev, TDM_F32, dx, dc, ds, B, S, H, hd);
    check_dev(nm, dx, x, n, TOL);
    dfree(dc, S * hd);
    dfree(ds, S * hd);
    free(x); free(cs); free(sn);
}

static void rms_heads_case(int64_t B, int64_t S, int64_t r0, int64_t L, int64_t H, int64_t hd) {
    char nm[96];
    int64_t n = B * S * H * hd;
    snprintf(nm, sizeof nm, "rms_norm_heads B=%lld S=%lld rows [%lld,+%lld) H=%lld hd=%lld",
             (long long)B, (long long)S, (long long)r0, (long long)L, (long long)H,
             (long long)hd);
    float *x = hrand(n, 4), *w = hrand(hd, 2);
    float *dx = up(x, n), *dw = up(w, hd);
    tdm_cpu_rms_norm_heads(NULL, TDM_F32, x, w, B, S, r0, L, H, hd, 1e-6f);
    tdm_op_rms_norm_heads(&g_dev, TDM_F32, dx, dw, B, S, r0, L, H, hd, 1e-6f);
    check_dev(nm, dx, x, n, TOL);
    dfree(dw, hd);
    free(x); free(w);
}

/* y starts random (rows outside the segment must stay); alias: y == x. */
static void ln_mod_case(int64_t B, int64_t S, int64_t r0, int64_t L, int64_t D, int alias) {
    char nm[96];
    int64_t n = B * S * D, ms = 6 * D, nm_ = B * ms;
    snprintf(nm, sizeof nm, "layer_norm_modulate B=%lld S=%lld rows [%lld,+%lld) D=%lld%s",
             (long long)B, (long long)S, (long long)r0, (long long)L, (long long)D,
             alias ? " in place" : "");
    float *x = hrand(n, 5), *y = hrand(n, 1), *mod = hrand(nm_, 1);
    float *dx = up(x, n), *dy = alias ? dx : up(y, n), *dm = up(mod, nm_);
    float *hy = alias ? x : y;
    tdm_cpu_layer_norm_modulate(NULL, TDM_F32, hy, x, mod + 3 * D, mod + 4 * D, ms, B, S, r0, L, D, 1e-6f);
    tdm_op_layer_norm_modulate(&g_dev, TDM_F32, dy, dx, dm + 3 * D, dm + 4 * D, ms, B, S, r0, L, D,
                               1e-6f);
    check_dev(nm, dy, hy, n, TOL);
    if (!alias) dfree(dx, n);
    dfree(dm, nm_);
    free(x); free(y); free(mod);
}

static void gated_add_case(int64_t B, int64_t S, int64_t r0, int64_t L, int64_t D) {
    char nm[96];
    int64_t n = B * S * D, ms = 3 * D, nm_ = B * ms;
    snprintf(nm, sizeof nm, "gated_add_rows B=%lld S=%lld rows [%lld,+%lld) D=%lld",
             (long long)B, (long long)S, (long long)r0, (long long)L, (long long)D);
    float *x = hrand(n, 3), *y = hrand(n, 3), *mod = hrand(nm_, 2);
    float *dx = up(x, n), *dy = up(y, n), *dm = up(mod, nm_);
    tdm_cpu_gated_add_rows(NULL, TDM_F32, x, y, mod + 2 * D, ms, B, S, r0, L, D);
    tdm_op_gated_add_rows(&g_dev, TDM_F32, dx, dy, dm + 2 * D, ms, B, S, r0, L, D);
    check_dev(nm, dx, x, n, TOL);
    dfree(dy, n);
    dfree(dm, nm_);
    free(x); free(y); free(mod);
}

/* Copies cols columns into column offset off of y (rows, ldy); ldx = 0 broadcasts. */
static void copy_2d_case(int64_t rows, int64_t cols, int64_t ldy, int64_t off, int64_t ldx) {
    char nm[96];
    int64_t n = rows * ldy, nx = ldx ? rows * ldx : cols;
    snprintf(nm, sizeof nm, "copy_2d rows=%lld cols=%lld ldy=%lld ldx=%lld", (long long)rows,
             (long long)cols, (long long)ldy, (long long)ldx);
    float *y = hrand(n, 1), *x = hrand(nx, 1);
    float *dy = up(y, n), *dx = up(x, nx);
    tdm_cpu_copy_2d(NULL, TDM_F32, y + off, ldy, x, ldx, rows, cols);
    tdm_op_copy_2d(&g_dev, TDM_F32, dy + off, ldy, dx, ldx, rows, cols);
    check_dev(nm, dy, y, n, TOL);
    dfree(dx, nx);
    free(x); free(y);
}

TEST(test_flux_row_ops) {
    rope_case(2, 7, 3, 10);
    rope_case(1, 300, 24, 128);
    rms_heads_case(2, 9, 3, 4, 3, 40);
    rms_heads_case(1, 100, 0, 100, 24, 128);
    rms_heads_case(2, 5, 0, 5, 2, 8);
    ln_mod_case(2, 11, 4, 7, 300, 0);
    ln_mod_case(1, 50, 0, 50, 3072, 0);
    ln_mod_case(2, 6, 0, 3, 33, 1);
    gated_add_case(2, 11, 0, 4, 300);
    gated_add_case(1, 37, 0, 37, 1000);
    copy_2d_case(13, 40, 50, 10, 0);
    copy_2d_case(13, 10, 50, 0, 10);
    copy_2d_case(1, 1000, 1000, 0, 0);
}

/* ---- half-precision activations ----------------------------------------------------------
 * The ops whose activation operands are typed by `at` (backend/ops.h), run
 * with at = F16 / BF16 on a device of that gemm_dtype: inputs rounded to the
 * type on both sides, so the reference is the float32 CPU op on the same
 * values and the only extra error is the rounding of the stored output: at
 * most a step of the type relative to the largest output (2^-7 for BF16,
 * 2^-10 for F16; GEMM-based ops add TOL_GEMM, attention its own tolerance). */

/* n random floats in [-a, a), each rounded to dt. */
static float *hrand_r(int64_t n, float a, tdm_dtype dt) {
    float *t = hrand(n, a), *r = hround(t, n, dt);
    free(t);
    return r;
}

static double act_tol(tdm_dtype dt) { return dt == TDM_BF16 ? 0x1p-7 : 0x1p-10; }

/* Downloads d (n elements of dt), compares with ref; frees d. */
static void check_act(const char *what, void *d, tdm_dtype dt, const float *ref, int64_t n,
                      double tol) {
    uint16_t *t = malloc((size_t)(n > 0 ? n : 1) * 2);
    float *h = hzero(n);
    tdm_status st = tdm_dev_download(&g_dev, t, d, n * 2, what);
    CHECK_MSG(st == TDM_OK, "%s: download failed: %s", what, tdm_last_error());
    if (st == TDM_OK) {
        int bad = 0;
        for (int64_t i = 0; i < n; i++) {
            h[i] = dt == TDM_F16 ? tdm_f16_to_f32(t[i]) : tdm_bf16_to_f32(t[i]);
            if (!isfinite(h[i])) bad++;
        }
        double e = test_rel_err(h, ref, (long)n);
        CHECK_MSG(bad == 0, "%s: %d NaN/Inf values", what, bad);
        CHECK_MSG(e <= tol, "%s: rel err %.3g > %.3g", what, e, tol);
        if (getenv("TDM_TEST_VERBOSE")) printf("  %s: rel err %.3g\n", what, e);
    }
    free(t);
    free(h);
    tdm_dev_free(&g_dev, d, n * 2);
}

/* x (M, K) half → y (M, N; rows ldy apart) half or float32, [+ b], [GELU];
 * y's other columns start random and must stay. */
static void linear_act_case(tdm_dtype dt, int64_t M, int64_t K, int64_t N, int64_t ldy, int bias,
                            int gelu, int yhalf) {
    char nm[112];
    snprintf(nm, sizeof nm, "linear_ex %s→%s %lldx%lldx%lld ldy %lld%s%s", tdm_dtype_name(dt),
             yhalf ? tdm_dtype_name(dt) : "F32", (long long)M, (long long)K, (long long)N,
             (long long)ldy, bias ? " +b" : "", gelu ? " gelu" : "");
    float *x = hrand(M * K, 1), *W = hrand(N * K, 1), *b = bias ? hrand(N, 1) : NULL;
    float *xr = hround(x, M * K, dt), *Wr = hround(W, N * K, dt);
    /* with a half output the bias is rounded to the type first (backend/ops.h) */
    float *br = b ? hround(b, N, dt) : NULL;   /* float32 output: overwritten with b below */
    float *y = hrand_r(M * ldy, 1, dt);
    float *dx = up_half(xr, M * K, dt), *dW = up_half(Wr, N * K, dt), *db = bias ? up(b, N) : NULL;
    void *dy = yhalf ? (void *)up_half(y, M * ldy, dt) : (void *)up(y, M * ldy);
    if (br && !yhalf) memcpy(br, b, (size_t)N * sizeof(float));
    if (gelu) tdm_cpu_linear_gelu(NULL, y, ldy, xr, Wr, br, M, K, N);
    else {
        float *t = hzero(M * N);
        tdm_cpu_linear(NULL, t, xr, Wr, br, M, K, N);
        for (int64_t r = 0; r < M; r++) memcpy(y + r * ldy, t + r * N, (size_t)N * sizeof(float));
        free(t);
    }
    g_dev.gemm_dtype = dt;
    tdm_op_linear_ex(&g_dev, dy, yhalf ? dt : TDM_F32, ldy, dx, dt, (const float *)dW, db, M, K,
                     N, gelu);
    g_dev.gemm_dtype = TDM_F32;
    if (yhalf) check_act(nm, dy, dt, y, M * ldy, act_tol(dt) + TOL_GEMM);
    else check_dev(nm, dy, y, M * ldy, TOL_GEMM);
    tdm_dev_free(&g_dev, dx, M * K * 2); tdm_dev_free(&g_dev, dW, N * K * 2);
    if (db) dfree(db, N);
    free(x); free(W); free(b); free(br); free(xr); free(Wr); free(y);
}

/* RMSNorm of q rows [0, split) with w0, [split, S) with w1, then RoPE: dt F32
 * against the two separate CPU ops at TOL, F16 / BF16 on rounded inputs. */
static void qk_norm_rope_case(tdm_dtype dt, int64_t B, int64_t S, int64_t split, int64_t H,
                              int64_t hd) {
    char nm[112];
    int64_t n = B * S * H * hd;
    int half = dt != TDM_F32;
    snprintf(nm, sizeof nm, "qk_norm_rope %s B=%lld S=%lld split=%lld H=%lld hd=%lld",
             tdm_dtype_name(dt), (long long)B, (long long)S, (long long)split, (long long)H,
             (long long)hd);
    float *x = half ? hrand_r(n, 4, dt) : hrand(n, 4), *w0 = hrand(hd, 2), *w1 = hrand(hd, 2);
    float *cs = hrand(S * hd, 1), *sn = hrand(S * hd, 1);
    float *dx = half ? up_half(x, n, dt) : up(x, n), *dw0 = up(w0, hd), *dw1 = up(w1, hd);
    float *dc = up(cs, S * hd), *ds = up(sn, S * hd);
    if (split > 0) tdm_cpu_rms_norm_heads(NULL, TDM_F32, x, w0, B, S, 0, split, H, hd, 1e-6f);
    if (split < S) tdm_cpu_rms_norm_heads(NULL, TDM_F32, x, w1, B, S, split, S - split, H, hd, 1e-6f);
    tdm_cpu_rope_interleaved(NULL, TDM_F32, x, cs, sn, B, S, H, hd);
    g_dev.gemm_dtype = half ? dt : TDM_F32;
    tdm_op_qk_norm_rope(&g_dev, dt, dx, dw0, dw1, split, dc, ds, B, S, H, hd, 1e-6f);
    g_dev.gemm_dtype = TDM_F32;
    if (half) check_act(nm, dx, dt, x, n, act_tol(dt));
    else check_dev(nm, dx, x, n, TOL);
    dfree(dw0, hd); dfree(dw1, hd); dfree(dc, S * hd); dfree(ds, S * hd);
    free(x); free(w0); free(w1); free(cs); free(sn);
}

static void ln_mod_act_case(tdm_dtype dt, int64_t B, int64_t S, int64_t r0, int64_t L,
                            int64_t D) {
    char nm[112];
    int64_t n = B * S * D, ms = 6 * D, nm_ = B * ms;
    snprintf(nm, sizeof nm, "layer_norm_modulate %s B=%lld S=%lld rows [%lld,+%lld) D=%lld",
             tdm_dtype_name(dt), (long long)B, (long long)S, (long long)r0, (long long)L,
             (long long)D);
    float *x = hrand(n, 5), *y = hrand_r(n, 1, dt), *mod = hrand(nm_, 1);
    float *dx = up(x, n), *dy = up_half(y, n, dt), *dm = up(mod, nm_);
    tdm_cpu_layer_norm_modulate(NULL, TDM_F32, y, x, mod + 3 * D, mod + 4 * D, ms, B, S, r0, L, D, 1e-6f);
    g_dev.gemm_dtype = dt;
    tdm_op_layer_norm_modulate(&g_dev, dt, dy, dx, dm + 3 * D, dm + 4 * D, ms, B, S, r0, L, D,
                               1e-6f);
    g_dev.gemm_dtype = TDM_F32;
    check_act(nm, dy, dt, y, n, act_tol(dt));
    dfree(dx, n); dfree(dm, nm_);
    free(x); free(y); free(mod);
}

static void gated_add_act_case(tdm_dtype dt, int64_t B, int64_t S, int64_t r0, int64_t L,
                               int64_t D) {
    char nm[112];
    int64_t n = B * S * D, ms = 3 * D, nm_ = B * ms;
    snprintf(nm, sizeof nm, "gated_add_rows %s B=%lld S=%lld rows [%lld,+%lld) D=%lld",
             tdm_dtype_name(dt), (long long)B, (long long)S, (long long)r0, (long long)L,
             (long long)D);
    float *x = hrand(n, 3), *y = hrand_r(n, 3, dt), *mod = hrand(nm_, 2);
    float *dx = up(x, n), *dy = up_half(y, n, dt), *dm = up(mod, nm_);
    tdm_cpu_gated_add_rows(NULL, TDM_F32, x, y, mod + 2 * D, ms, B, S, r0, L, D);
    g_dev.gemm_dtype = dt;
    tdm_op_gated_add_rows(&g_dev, dt, dx, dy, dm + 2 * D, ms, B, S, r0, L, D);
    g_dev.gemm_dtype = TDM_F32;
    check_dev(nm, dx, x, n, TOL);
    tdm_dev_free(&g_dev, dy, n * 2); dfree(dm, nm_);
    free(x); free(y); free(mod);
}

/* copy_2d and cast of half elements: exact. */
static void copy_cast_act_case(tdm_dtype dt, int64_t rows, int64_t cols, int64_t ldy) {
    char nm[112];
    int64_t n = rows * ldy;
    snprintf(nm, sizeof nm, "copy_2d + cast %s rows=%lld cols=%lld ldy=%lld",
             tdm_dtype_name(dt), (long long)rows, (long long)cols, (long long)ldy);
    float *y = hrand_r(n, 1, dt), *x = hrand(rows * cols, 1);
    float *xr = hround(x, rows * cols, dt);
    float *dy = up_half(y, n, dt), *dx = up(x, rows * cols);
    void *dxh = tdm_dev_alloc(&g_dev, rows * cols * 2, "test half buffer");
    CHECK(dxh != NULL);
    tdm_cpu_copy_2d(NULL, TDM_F32, y, ldy, xr, cols, rows, cols);
    g_dev.gemm_dtype = dt;
    tdm_op_cast(&g_dev, dxh, dt, dx, TDM_F32, rows * cols);        /* rounds as the host */
    tdm_op_copy_2d(&g_dev, dt, dy, ldy, dxh, cols, rows, cols);
    g_dev.gemm_dtype = TDM_F32;
    check_act(nm, dy, dt, y, n, 0.0);
    {   /* and back: half → float32 is exact */
        float *df = dzero(rows * cols);
        tdm_op_cast(&g_dev, df, TDM_F32, dxh, dt, rows * cols);
        check_dev(nm, df, xr, rows * cols, 0.0);
    }
    tdm_dev_free(&g_dev, dxh, rows * cols * 2); dfree(dx, rows * cols);
    free(x); free(xr); free(y);
}

/* Attention with q, k, v, o all of type dt. */
static void attention_act_case(tdm_dtype dt, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                               int64_t D, int causal) {
    char nm[112];
    snprintf(nm, sizeof nm, "attention_t %s B%lld Tq%lld Tk%lld H%lld D%lld causal%d",
             tdm_dtype_name(dt), (long long)B, (long long)Tq, (long long)Tk, (long long)H,
             (long long)D, causal);
    int64_t nq = B * Tq * H * D, nk = B * Tk * H * D;
    float *q = hrand_r(nq, 2, dt), *k = hrand_r(nk, 2, dt);
    float *v = hrand_r(nk, 1, dt), *o = hzero(nq);
    float scale = 1.0f / sqrtf((float)D);
    tdm_cpu_attention(NULL, o, q, k, v, B, Tq, Tk, H, D, scale, causal);
    float *dq = up_half(q, nq, dt), *dk = up_half(k, nk, dt), *dv = up_half(v, nk, dt);
    float *dout = up_half(o, nq, dt);
    tdm_dev_upload(&g_dev, dout, (uint16_t[]){0x7fc0}, 2, "poison");   /* first element NaN */
    g_dev.gemm_dtype = dt;
    tdm_op_attention_t(&g_dev, dt, dout, dq, dk, dv, B, Tq, Tk, H, D, scale, causal);
    g_dev.gemm_dtype = TDM_F32;
    check_act(nm, dout, dt, o, nq, (dt == TDM_BF16 ? 2e-2 : 5e-3) + act_tol(dt));
    tdm_dev_free(&g_dev, dq, nq * 2); tdm_dev_free(&g_dev, dk, nk * 2);
    tdm_dev_free(&g_dev, dv, nk * 2);
    free(q); free(k); free(v); free(o);
}

/* T5's typed ops: RMS norm (float32 x → half y), product, activations (in
 * place) and the biased attention, all with half activations. */
static void t5_act_case(tdm_dtype dt, int64_t rows, int64_t D) {
    char nm[112];
    int64_t n = rows * D;
    snprintf(nm, sizeof nm, "rms_norm_t %s rows=%lld D=%lld", tdm_dtype_name(dt),
             (long long)rows, (long long)D);
    float *x = hrand(n, 3), *w = hrand(D, 2), *y = hzero(n);
    float *dx = up(x, n), *dw = up(w, D), *dy = up_half(y, n, dt);
    tdm_cpu_rms_norm(NULL, y, x, w, rows, D, 1e-6f);
    g_dev.gemm_dtype = dt;
    tdm_op_rms_norm_t(&g_dev, dt, dy, dx, dw, rows, D, 1e-6f);
    g_dev.gemm_dtype = TDM_F32;
    check_act(nm, dy, dt, y, n, act_tol(dt));
    dfree(dx, n); dfree(dw, D);
    free(x); free(w); free(y);
    /* y = a · b, then each activation in place */
    float *a = hrand_r(n, 4, dt), *b = hrand_r(n, 4, dt), *r = hzero(n);
    float *da = up_half(a, n, dt), *db = up_half(b, n, dt);
    tdm_cpu_mul(NULL, r, a, b, n);
    snprintf(nm, sizeof nm, "mul_t %s n=%lld", tdm_dtype_name(dt), (long long)n);
    g_dev.gemm_dtype = dt;
    tdm_op_mul_t(&g_dev, dt, da, da, db, n);   /* y aliases a */
    g_dev.gemm_dtype = TDM_F32;
    check_act(nm, da, dt, r, n, act_tol(dt));
    static const char *names[] = {"relu", "gelu", "gelu_tanh", "silu"};
    for (int f = 0; f < 4; f++) {
        memcpy(r, b, (size_t)n * sizeof(float));
        switch (f) {
        case 0: tdm_cpu_relu(NULL, r, n); break;
        case 1: tdm_cpu_gelu(NULL, r, n); break;
        case 2: tdm_cpu_gelu_tanh(NULL, r, n); break;
        default: tdm_cpu_silu(NULL, r, n); break;
        }
        void *dr = up_half(b, n, dt);
        snprintf(nm, sizeof nm, "act_t %s %s n=%lld", names[f], tdm_dtype_name(dt), (long long)n);
        g_dev.gemm_dtype = dt;
        tdm_op_act_t(&g_dev, dt, (tdm_act_fn)f, dr, n);
        g_dev.gemm_dtype = TDM_F32;
        check_act(nm, dr, dt, r, n, act_tol(dt));
    }
    tdm_dev_free(&g_dev, db, n * 2);
    free(a); free(b); free(r);
}

static void attention_bias_act_case(tdm_dtype dt, int64_t B, int64_t T, int64_t H, int64_t D) {
    char nm[112];
    snprintf(nm, sizeof nm, "attention_bias_t %s B%lld T%lld H%lld D%lld", tdm_dtype_name(dt),
             (long long)B, (long long)T, (long long)H, (long long)D);
    int64_t n = B * T * H * D, nt = H * (2 * T - 1);
    float *q = hrand_r(n, 1, dt), *k = hrand_r(n, 1, dt), *v = hrand_r(n, 1, dt);
    float *tab = hrand(nt, 5), *o = hzero(n);
    float *s = hzero(tdm_cpu_attention_bias_scratch(NULL, T));
    tdm_cpu_attention_bias(NULL, o, q, k, v, tab, s, B, T, H, D);
    float *dq = up_half(q, n, dt), *dk = up_half(k, n, dt), *dv = up_half(v, n, dt);
    float *dtab = up(tab, nt), *dout = up_half(o, n, dt);
    tdm_dev_upload(&g_dev, dout, (uint16_t[]){0x7fc0}, 2, "poison");   /* first element NaN */
    g_dev.gemm_dtype = dt;
    tdm_op_attention_bias_t(&g_dev, dt, dout, dq, dk, dv, dtab, NULL, B, T, H, D);
    g_dev.gemm_dtype = TDM_F32;
    check_act(nm, dout, dt, o, n, (dt == TDM_BF16 ? 2e-2 : 5e-3) + act_tol(dt));
    tdm_dev_free(&g_dev, dq, n * 2); tdm_dev_free(&g_dev, dk, n * 2);
    tdm_dev_free(&g_dev, dv, n * 2); dfree(dtab, nt);
    free(q); free(k); free(v); free(tab); free(o); free(s);
}

TEST(test_half_activations) {
    qk_norm_rope_case(TDM_F32, 2, 9, 3, 3, 40);
    qk_norm_rope_case(TDM_F32, 1, 100, 0, 24, 128);
    for (int i = 0; i < 2; i++) {
        tdm_dtype dt = i ? TDM_BF16 : TDM_F16;
        linear_act_case(dt, 300, 128, 256, 256, 1, 0, 1);
        linear_act_case(dt, 77, 96, 64, 64, 0, 0, 1);
        linear_act_case(dt, 300, 128, 512, 640, 1, 1, 1);   /* FLUX MLP into the concat buffer */
        linear_act_case(dt, 13, 33, 17, 21, 1, 0, 1);       /* odd: the fallback epilogue */
        linear_act_case(dt, 5, 7, 3, 3, 1, 1, 1);
        linear_act_case(dt, 300, 128, 64, 64, 1, 0, 0);     /* half in, float32 out */
        qk_norm_rope_case(dt, 2, 9, 3, 3, 40);
        qk_norm_rope_case(dt, 1, 300, 0, 24, 128);
        qk_norm_rope_case(dt, 2, 50, 50, 4, 128);
        ln_mod_act_case(dt, 2, 11, 4, 7, 300);
        ln_mod_act_case(dt, 1, 50, 0, 50, 3072);
        gated_add_act_case(dt, 2, 11, 0, 4, 300);
        gated_add_act_case(dt, 1, 37, 0, 37, 1000);
        copy_cast_act_case(dt, 13, 40, 50);
        copy_cast_act_case(dt, 1, 1001, 1001);
        attention_act_case(dt, 1, 300, 300, 4, 128, 0);   /* the 32-row kernel */
        attention_act_case(dt, 2, 77, 77, 4, 128, 0);
        attention_act_case(dt, 1, 40, 33, 2, 40, 1);      /* the 16-row kernel */
        attention_act_case(dt, 1, 5, 7, 1, 13, 0);        /* odd head dim: unaligned stores */
        attention_act_case(dt, 1, 64, 64, 1, 300, 0);     /* D > 256: the float32 fallback */
        t5_act_case(dt, 7, 33);
        t5_act_case(dt, 64, 4096);                        /* T5-XXL width */
        attention_bias_act_case(dt, 2, 7, 3, 64);         /* the 16-row kernel */
        attention_bias_act_case(dt, 1, 512, 4, 64);       /* FLUX's 512 tokens */
        attention_bias_act_case(dt, 1, 2, 66000, 8);      /* B·H > 65535: the float32 fallback */
    }
}

/* Every test starts from the same random stream, so its inputs do not depend
 * on which tests ran before it (adding a test must not change another's data). */
#define RUN_SEEDED(t)                   \
    do {                                \
        g_rng = 0x9e3779b97f4a7c15ull;  \
        RUN(t);                         \
    } while (0)

int main(void) {
    if (tdm_cuda_device_count() <= 0) {
        return test_skip("no CUDA device");
    }
    if (tdm_cuda_device_init(&g_dev, 0, NULL) != TDM_OK) {
        printf("cuda:0: %s\n", tdm_last_error());
        return EXIT_FAILURE;
    }
    RUN_SEEDED(test_linear);
    RUN_SEEDED(test_gemm);
    RUN_SEEDED(test_conv2d);
    RUN_SEEDED(test_half_gemm);
    RUN_SEEDED(test_conv_igemm);
    RUN_SEEDED(test_linear_gelu);
    RUN_SEEDED(test_group_norm);
    RUN_SEEDED(test_layer_norm);
    RUN_SEEDED(test_activations);
    RUN_SEEDED(test_geglu);
    RUN_SEEDED(test_elementwise);
    RUN_SEEDED(test_add_channel_bias);
    RUN_SEEDED(test_attention);
    RUN_SEEDED(test_attention_tc);
    RUN_SEEDED(test_half_activations);
    RUN_SEEDED(test_transpose);
    RUN_SEEDED(test_upsample_resize_concat);
    RUN_SEEDED(test_gather_rows);
    RUN_SEEDED(test_flux_row_ops);
    RUN_SEEDED(test_t5_ops);
    RUN_SEEDED(test_device_memory);
    RUN_SEEDED(test_error_kept);
    tdm_dev_trim(&g_dev);
    tdm_cuda_device_free(&g_dev);
    return test_summary();
}

#else

int main(void) {
    (void)test_cur_failed;
    (void)test_summary;
    return test_skip("built without CUDA (configure with -DTDM_CUDA=ON)");
}

#endif
