/* test_ops.c — the CPU kernels of src/backend/cpu/ops.c against torch
 * (float32, CPU). Golden values: tools/ref/ops_ref.py →
 * tests/fixtures/ops/ops.safetensors; the shapes of each case are repeated
 * here. Tolerance: normalized error (max |a-b| / max |ref|) <= 1e-5. */
// label: golden
#include <math.h>
#include <omp.h>
#include <stdint.h>

#include "backend/cpu/ops.h"
#include "backend/ops.h"
#include "core/core.h"
#include "io/safetensors.h"
#include "test.h"

#define TOL 1e-5

static tdm_safetensors_t *g_st;

/* A float32 copy of fixture tensor `name` with `n` elements, or NULL (and the
 * test fails) when it is missing or has another size. */
static float *fx(const char *name, int64_t n) {
    const tdm_st_tensor_t *t = g_st ? tdm_safetensors_find(g_st, name) : NULL;
    CHECK_MSG(t != NULL, "fixture tensor %s missing", name);
    if (!t) return NULL;
    CHECK_MSG(t->dtype == TDM_F32 && t->nbytes == n * 4, "%s: %lld bytes, expected %lld", name,
              (long long)t->nbytes, (long long)n * 4);
    if (t->dtype != TDM_F32 || t->nbytes != n * 4) return NULL;
    float *p = malloc((size_t)n * sizeof(float) + 1);
    memcpy(p, t->data, (size_t)n * sizeof(float));
    return p;
}

static float *zalloc(int64_t n) { return calloc((size_t)n + 1, sizeof(float)); }

static void check_close(const char *what, const float *got, const float *ref, int64_t n) {
    if (!got || !ref) return;
    double e = test_rel_err(got, ref, (long)n);
    CHECK_MSG(e <= TOL, "%s: rel err %.3g > %.1g", what, e, TOL);
}

static void linear_case(const char *c, int64_t M, int64_t K, int64_t N, int bias) {
    char nm[64];
    snprintf(nm, sizeof nm, "%s.x", c);
    float *x = fx(nm, M * K);
    snprintf(nm, sizeof nm, "%s.W", c);
    float *W = fx(nm, N * K);
    float *b = NULL;
    if (bias) {
        snprintf(nm, sizeof nm, "%s.b", c);
        b = fx(nm, N);
    }
    snprintf(nm, sizeof nm, "%s.y", c);
    float *ref = fx(nm, M * N), *y = zalloc(M * N);
    if (x && W && ref && (b || !bias)) {
        tdm_cpu_linear(NULL, y, x, W, b, M, K, N);
        check_close(c, y, ref, M * N);
    }
    free(x); free(W); free(b); free(ref); free(y);
}

TEST(test_linear) {
    linear_case("linear_a", 5, 7, 3, 1);
    linear_case("linear_b", 13, 33, 17, 0);
    linear_case("linear_c", 1, 64, 96, 1);
}

TEST(test_gemm) {
    int64_t M = 6, N = 5, K = 9;
    float *A = fx("gemm_tt.A", K * M), *B = fx("gemm_tt.B", N * K), *C = fx("gemm_tt.C", M * N);
    float *ref = fx("gemm_tt.y", M * N);
    if (A && B && C && ref) {
        /* op(A) = A^T (A stored (K, M)), op(B) = B^T (B stored (N, K)) */
        tdm_cpu_gemm(NULL, 1, 1, M, N, K, 0.5f, A, M, B, K, 2.0f, C, N);
        check_close("gemm_tt", C, ref, M * N);
    }
    free(A); free(B); free(C); free(ref);
    A = fx("gemm_nn.A", M * K); B = fx("gemm_nn.B", K * N); ref = fx("gemm_nn.y", M * N);
    C = zalloc(M * N);
    for (int64_t i = 0; i < M * N; i++) C[i] = NAN;   /* beta 0 must ignore C */
    if (A && B && ref) {
        tdm_cpu_gemm(NULL, 0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
        check_close("gemm_nn", C, ref, M * N);
    }
    free(A); free(B); free(C); free(ref);
}

/* op(X) of shape (rows, cols) at (r, c), X stored transposed when t */
static float at_op(const float *X, int t, int64_t ld, int64_t r, int64_t c) {
    return t ? X[c * ld + r] : X[r * ld + c];
}

/* Row i of C must not depend on how many rows the call has (a rank of a
 * context-parallel group computes a share of the rows): for shapes on each
 * of tdm_cpu_gemm's paths (computed in order, padded to the regular OpenBLAS
 * kernel, plain blocks, several column blocks), every transpose pair, and
 * beta 0 and 1, the first m rows of an m-row call, and m rows from the
 * middle, equal those rows of the 300-row call bit for bit; the 300-row result is within 1e-5 of a double
 * reference. */
TEST(test_gemm_rows_independent) {
    const int64_t Mx = 300, shapes[][2] = {{8, 32}, {64, 512}, {40, 3000}, {300, 700}};
    const int64_t ms[] = {1, 2, 3, 7, 17, 64, 100, 255, 256, 257, 299};
    uint64_t seed = 7;
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        const int64_t N = shapes[sh][0], K = shapes[sh][1];
        float *A = zalloc(Mx * K), *B = zalloc(N * K), *C0 = zalloc(Mx * N), *Cf = zalloc(Mx * N),
              *Cm = zalloc(Mx * N);
        for (int64_t i = 0; i < Mx * K; i++) A[i] = (float)((seed = seed * 6364136223846793005ULL + 1) >> 40) / (1 << 24) - 0.5f;
        for (int64_t i = 0; i < N * K; i++) B[i] = (float)((seed = seed * 6364136223846793005ULL + 1) >> 40) / (1 << 24) - 0.5f;
        for (int64_t i = 0; i < Mx * N; i++) C0[i] = (float)(i % 13) - 6.0f;
        for (int tA = 0; tA < 2; tA++)
            for (int tB = 0; tB < 2; tB++)
                for (int beta = 0; beta < 2; beta++) {
                    const int64_t lda = tA ? Mx : K, ldb = tB ? K : N;
                    memcpy(Cf, C0, (size_t)(Mx * N) * sizeof(float));
                    tdm_cpu_gemm(NULL, tA, tB, Mx, N, K, 0.5f, A, lda, B, ldb, (float)beta, Cf, N);
                    double worst = 0, scale = 1e-30;
                    for (int64_t i = 0; i < Mx; i += 37)
                        for (int64_t j = 0; j < N; j++) {
                            double r = beta * (double)C0[i * N + j];
                            for (int64_t k = 0; k < K; k++)
                                r += 0.5 * (double)at_op(A, tA, lda, i, k) * (double)at_op(B, tB, ldb, k, j);
                            worst = fmax(worst, fabs(r - Cf[i * N + j]));
                            scale = fmax(scale, fabs(r));
                        }
                    CHECK_MSG(worst / scale <= TOL, "N %lld K %lld tA %d tB %d beta %d: rel err %.3g",
                              (long long)N, (long long)K, tA, tB, beta, worst / scale);
                    for (size_t q = 0; q < sizeof ms / sizeof ms[0]; q++) {
                        const int64_t m = ms[q];
                        memcpy(Cm, C0, (size_t)(Mx * N) * sizeof(float));
                        tdm_cpu_gemm(NULL, tA, tB, m, N, K, 0.5f, A, lda, B, ldb, (float)beta, Cm, N);
                        CHECK_MSG(!memcmp(Cm, Cf, (size_t)(m * N) * sizeof(float)),
                                  "N %lld K %lld tA %d tB %d beta %d: %lld rows differ from the %lld-row call",
                                  (long long)N, (long long)K, tA, tB, beta, (long long)m, (long long)Mx);
                        CHECK_MSG(!memcmp(Cm + m * N, C0 + m * N, (size_t)((Mx - m) * N) * sizeof(float)),
                                  "m %lld: rows past m written", (long long)m);
                        /* a share from the middle (a rank's rows): rows r0.. of the call */
                        const int64_t r0 = (Mx - m) / 2;
                        memcpy(Cm, C0, (size_t)(Mx * N) * sizeof(float));
                        tdm_cpu_gemm(NULL, tA, tB, m, N, K, 0.5f, tA ? A + r0 : A + r0 * lda, lda, B, ldb,
                                     (float)beta, Cm + r0 * N, N);
                        CHECK_MSG(!memcmp(Cm + r0 * N, Cf + r0 * N, (size_t)(m * N) * sizeof(float)),
                                  "N %lld K %lld tA %d tB %d beta %d: rows [%lld, %lld) differ from the "
                                  "%lld-row call's", (long long)N, (long long)K, tA, tB, beta,
                                  (long long)r0, (long long)(r0 + m), (long long)Mx);
                    }
                }
        free(A); free(B); free(C0); free(Cf); free(Cm);
    }
}

static void conv_case(const char *c, int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout,
                      int64_t kh, int64_t kw, int64_t s, int64_t pt, int64_t pb, int64_t pl,
                      int64_t pr, int bias) {
    char nm[64];
    int64_t Ho = (H + pt + pb - kh) / s + 1, Wo = (W + pl + pr - kw) / s + 1;
    snprintf(nm, sizeof nm, "%s.x", c);
    float *x = fx(nm, B * Cin * H * W);
    snprintf(nm, sizeof nm, "%s.w", c);
    float *w = fx(nm, Cout * Cin * kh * kw);
    float *b = NULL;
    if (bias) {
        snprintf(nm, sizeof nm, "%s.b", c);
        b = fx(nm, Cout);
    }
    snprintf(nm, sizeof nm, "%s.y", c);
    float *ref = fx(nm, B * Cout * Ho * Wo), *y = zalloc(B * Cout * Ho * Wo);
    int64_t ns = tdm_cpu_conv2d_pad4_scratch(NULL, Cin, Cout, H, W, kh, kw, s, pt, pb, pl, pr);
    float *scratch = ns ? zalloc(ns) : NULL;
    if (x && w && ref && (b || !bias)) {
        int sym = pt == pb && pt == pl && pt == pr;
        if (sym) {
            CHECK(tdm_cpu_conv2d_scratch(NULL, Cin, Cout, H, W, kh, kw, s, pt) == ns);
            tdm_cpu_conv2d(NULL, y, x, w, b, B, Cin, H, W, Cout, kh, kw, s, pt, scratch);
        } else {
            tdm_cpu_conv2d_pad4(NULL, y, x, w, b, B, Cin, H, W, Cout, kh, kw, s, pt, pb, pl, pr,
                                scratch);
        }
        check_close(c, y, ref, B * Cout * Ho * Wo);
    }
    free(x); free(w); free(b); free(ref); free(y); free(scratch);
}

TEST(test_conv2d) {
    conv_case("conv_3x3", 2, 3, 7, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1);
    conv_case("conv_s2", 1, 4, 9, 8, 6, 3, 3, 2, 1, 1, 1, 1, 1);
    conv_case("conv_1x1", 2, 5, 4, 6, 3, 1, 1, 1, 0, 0, 0, 0, 1);
    conv_case("conv_nobias", 1, 2, 6, 7, 3, 3, 2, 1, 0, 0, 0, 0, 0);
    conv_case("conv_pad4", 2, 3, 8, 7, 5, 3, 3, 2, 0, 1, 0, 1, 1);
    conv_case("conv_1x1_s2", 1, 3, 5, 5, 2, 1, 1, 2, 0, 0, 0, 0, 0);
}

/* y (B, Cout, Ho, Wo): a direct, double-accumulated conv, the reference of
 * the tiled cases (no fixture: the shapes are too large to store). */
static void conv_naive(float *y, const float *x, const float *w, const float *b, int64_t B,
                       int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t kh, int64_t kw,
                       int64_t s, int64_t pt, int64_t pl, int64_t Ho, int64_t Wo) {
    for (int64_t n = 0; n < B; n++)
        for (int64_t co = 0; co < Cout; co++)
            for (int64_t oy = 0; oy < Ho; oy++)
                for (int64_t ox = 0; ox < Wo; ox++) {
                    double acc = b ? b[co] : 0.0;
                    for (int64_t c = 0; c < Cin; c++)
                        for (int64_t i = 0; i < kh; i++) {
                            int64_t iy = oy * s - pt + i;
                            if (iy < 0 || iy >= H) continue;
                            for (int64_t j = 0; j < kw; j++) {
                                int64_t ix = ox * s - pl + j;
                                if (ix < 0 || ix >= W) continue;
                                acc += (double)x[((n * Cin + c) * H + iy) * W + ix] *
                                       w[((co * Cin + c) * kh + i) * kw + j];
                            }
                        }
                    y[((n * Cout + co) * Ho + oy) * Wo + ox] = (float)acc;
                }
}

static void fill_rand(float *p, int64_t n, uint32_t seed) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)(seed >> 8) / 16777216.0f - 0.5f;
    }
}

/* One conv at the current tile cap against conv_naive; `rows` is the number
 * of output rows per im2col tile the cap must give (the scratch is checked to
 * be exactly that tile). */
static void tiled_case(const char *c, int64_t B, int64_t Cin, int64_t H, int64_t W,
                       int64_t Cout, int64_t kh, int64_t kw, int64_t s, int64_t pt, int64_t pb,
                       int64_t pl, int64_t pr, int64_t rows, size_t tile) {
    int64_t Ho = (H + pt + pb - kh) / s + 1, Wo = (W + pl + pr - kw) / s + 1;
    int64_t K = Cin * kh * kw, ny = B * Cout * Ho * Wo;
    float *x = zalloc(B * Cin * H * W), *w = zalloc(Cout * K), *b = zalloc(Cout);
    float *y = zalloc(ny), *ref = zalloc(ny);
    fill_rand(x, B * Cin * H * W, 1u);
    fill_rand(w, Cout * K, 2u);
    fill_rand(b, Cout, 3u);
    tdm_device_t d;   /* a host device whose opts carry the tile cap */
    tdm_device_init(&d, TDM_DEV_CPU, 0);
    d.opts.conv_tile_bytes = tile;
    d.opts.conv_winograd = 0;   /* the im2col tiles are what is tested here */
    int64_t ns = tdm_cpu_conv2d_pad4_scratch(&d, Cin, Cout, H, W, kh, kw, s, pt, pb, pl, pr);
    CHECK_MSG(ns == K * rows * Wo, "%s: scratch %lld floats, expected %lld (%lld rows of %lld)",
              c, (long long)ns, (long long)(K * rows * Wo), (long long)rows, (long long)Ho);
    CHECK_MSG(ns <= K * Ho * Wo, "%s: scratch larger than the full im2col", c);
    float *scratch = zalloc(ns);
    tdm_cpu_conv2d_pad4(&d, y, x, w, b, B, Cin, H, W, Cout, kh, kw, s, pt, pb, pl, pr, scratch);
    conv_naive(ref, x, w, b, B, Cin, H, W, Cout, kh, kw, s, pt, pl, Ho, Wo);
    double e = test_rel_err(y, ref, (long)ny);
    printf("  %s: %lld of %lld output rows per tile, rel err %.3g\n", c, (long long)rows,
           (long long)Ho, e);
    CHECK_MSG(e <= TOL, "%s: rel err %.3g > %.1g", c, e, TOL);
    free(x); free(w); free(b); free(y); free(ref); free(scratch);
}

/* The Winograd F(2x2,3x3) path (ops.c) against the double-precision direct
 * conv: odd and even output sizes (partial last tile row / column),
 * symmetric, asymmetric and no padding, with and without bias, one chunk of
 * tiles or many (a small tile cap); then its bits: an image of a batch equals
 * the image run alone, and 1 thread equals 2. */
static void wino_case(const char *c, int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout,
                      int64_t pt, int64_t pb, int64_t pl, int64_t pr, int bias, size_t tile) {
    const int64_t Ho = H + pt + pb - 2, Wo = W + pl + pr - 2, ny = B * Cout * Ho * Wo;
    CHECK_MSG(((Ho + 1) / 2) * ((Wo + 1) / 2) >= 64, "%s: too few tiles for the Winograd path (ops.c: WINO_MIN_TILES)", c);
    float *x = zalloc(B * Cin * H * W), *w = zalloc(Cout * Cin * 9), *b = bias ? zalloc(Cout) : NULL;
    float *y = zalloc(ny), *ref = zalloc(ny), *y1 = zalloc(ny / B), *im = zalloc(ny);
    fill_rand(x, B * Cin * H * W, 11u);
    fill_rand(w, Cout * Cin * 9, 12u);
    if (b) fill_rand(b, Cout, 13u);
    tdm_device_t d;
    tdm_device_init(&d, TDM_DEV_CPU, 0);
    d.opts.conv_tile_bytes = tile;
    const int64_t ns = tdm_cpu_conv2d_pad4_scratch(&d, Cin, Cout, H, W, 3, 3, 1, pt, pb, pl, pr);
    d.opts.conv_winograd = 0;
    const int64_t ni = tdm_cpu_conv2d_pad4_scratch(&d, Cin, Cout, H, W, 3, 3, 1, pt, pb, pl, pr);
    d.opts.conv_winograd = 1;
    /* exactly what the scratch function says (ASan in CI catches an overrun) */
    float *scratch = zalloc(ns), *scratch_i = zalloc(ni);
    tdm_cpu_conv2d_pad4(&d, y, x, w, b, B, Cin, H, W, Cout, 3, 3, 1, pt, pb, pl, pr, scratch);
    conv_naive(ref, x, w, b, B, Cin, H, W, Cout, 3, 3, 1, pt, pl, Ho, Wo);
    double e = test_rel_err(y, ref, (long)ny);
    d.opts.conv_winograd = 0;
    tdm_cpu_conv2d_pad4(&d, im, x, w, b, B, Cin, H, W, Cout, 3, 3, 1, pt, pb, pl, pr, scratch_i);
    double ei = test_rel_err(im, ref, (long)ny);
    printf("  %s: Winograd rel err %.3g (im2col %.3g)\n", c, e, ei);
    CHECK_MSG(e <= TOL, "%s: rel err %.3g > %.1g", c, e, TOL);
    CHECK_MSG(memcmp(y, im, (size_t)ny * sizeof(float)) != 0, "%s: the im2col path ran, not Winograd", c);
    d.opts.conv_winograd = 1;
    const int64_t last = (B - 1) * Cin * H * W;   /* the batch's last image alone */
    tdm_cpu_conv2d_pad4(&d, y1, x + last, w, b, 1, Cin, H, W, Cout, 3, 3, 1, pt, pb, pl, pr, scratch);
    CHECK_MSG(!memcmp(y1, y + (B - 1) * Cout * Ho * Wo, (size_t)(ny / B) * sizeof(float)),
              "%s: image %lld of the batch differs from it run alone", c, (long long)(B - 1));
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    tdm_cpu_conv2d_pad4(&d, im, x, w, b, B, Cin, H, W, Cout, 3, 3, 1, pt, pb, pl, pr, scratch);
    omp_set_num_threads(threads);
    CHECK_MSG(!memcmp(y, im, (size_t)ny * sizeof(float)), "%s: 1 thread differs from %d", c, threads);
    free(x); free(w); free(b); free(y); free(ref); free(y1); free(im); free(scratch); free(scratch_i);
}

TEST(test_conv2d_winograd) {
    wino_case("wino_pad1", 2, 16, 32, 34, 12, 1, 1, 1, 1, 1, 0);
    wino_case("wino_odd", 1, 8, 35, 37, 5, 1, 1, 1, 1, 0, 0);            /* Ho 35, Wo 37 */
    wino_case("wino_pad4", 2, 6, 40, 33, 7, 0, 1, 1, 0, 1, 0);           /* Ho 39, Wo 32 */
    wino_case("wino_nopad", 1, 4, 36, 36, 3, 0, 0, 0, 0, 1, 0);
    wino_case("wino_chunks", 2, 16, 32, 32, 24, 1, 1, 1, 1, 1, (size_t)16 * 4 * (16 + 24) * 64);   /* 64-tile chunks */
    wino_case("wino_one_tile", 1, 3, 32, 32, 2, 1, 1, 1, 1, 1, 16 * 4 * (3 + 2));   /* one tile a chunk */
}

/* The im2col is tiled over output rows (ops.c): tiles that do not divide Ho,
 * one row per tile, strided and asymmetric padding, batch > 1, and one conv
 * whose full im2col really exceeds the default cap. */
/* The backend switches travel on the device: its conv tile cap sizes the
 * scratch tdm_op_conv2d*_scratch returns; a fresh device has the defaults. */
TEST(test_device_opts) {
    tdm_backend_params_t def;
    tdm_backend_params_init(&def);
    CHECK(def.conv_igemm == 1 && def.conv_igemm_bk == 64 && def.cuda_graph == 1);
    CHECK(!def.act_f32 && !def.lt_tune && !def.attn_tc_16row && !def.profile);
    CHECK(def.conv_tile_bytes == TDM_CONV_TILE_BYTES_DEFAULT);
    CHECK(def.pin_min_bytes == TDM_OFFLOAD_PIN_MIN);
    tdm_device_t d;
    tdm_device_init(&d, TDM_DEV_CPU, 0);
    CHECK(!memcmp(&d.opts, &def, sizeof def));
    CHECK(tdm_op_conv2d_pad4_scratch(&d, 64, 64, 128, 128, 3, 3, 1, 1, 1, 1, 1) ==
          tdm_cpu_conv2d_pad4_scratch(NULL, 64, 64, 128, 128, 3, 3, 1, 1, 1, 1, 1));
    d.opts.conv_tile_bytes = 64;   /* below one row: one row per tile */
    CHECK(tdm_op_conv2d_pad4_scratch(&d, 64, 64, 128, 128, 3, 3, 1, 1, 1, 1, 1) == 64 * 9 * 128);
    CHECK(tdm_op_conv2d_scratch(&d, 64, 64, 128, 128, 3, 3, 1, 1) == 64 * 9 * 128);
    d.opts.act_f32 = 1;
    CHECK(tdm_op_act_dtype(&d) == TDM_F32);
}

TEST(test_conv2d_tiled) {
    const size_t cap = TDM_CONV_TILE_BYTES_DEFAULT;
    /* 64 ch × 9 × 128² floats = 36 MiB of im2col > the 32 MiB default cap */
    int64_t K = 64 * 9, Wo = 128, rows = (int64_t)(cap / 4) / (K * Wo);
    if (rows > 128) rows = 128;
    if (rows < 1) rows = 1;
    CHECK_MSG(rows < 128, "the default tile cap (%zu bytes) no longer tiles the big case", cap);
    tiled_case("tiled_default_cap", 1, 64, 128, 128, 4, 3, 3, 1, 1, 1, 1, 1, rows, 0);
    tiled_case("tiled_default_cap_explicit", 1, 64, 128, 128, 4, 3, 3, 1, 1, 1, 1, 1, rows, cap);

    /* 6 rows of 16 ch × 9 × 40 floats: 37 rows → 6 full tiles + 1 row, threaded */
    tiled_case("tiled_remainder", 2, 16, 37, 40, 7, 3, 3, 1, 1, 1, 1, 1, 6,
               (size_t)(16 * 9 * 40 * 6) * 4 + 100);
    /* stride 2, pad (0,1,0,1): Ho = Wo = 20, 3 rows per tile */
    tiled_case("tiled_s2_pad4", 1, 16, 40, 39, 5, 3, 3, 2, 0, 1, 0, 1, 3,
               (size_t)(16 * 9 * 20 * 3) * 4);
    /* a cap below one row: one row per tile, 3×2 kernel, 1×1 stride 2 */
    tiled_case("tiled_one_row", 2, 3, 9, 11, 4, 3, 2, 1, 1, 1, 0, 0, 1, 64);
    tiled_case("tiled_1x1_s2", 1, 5, 9, 9, 3, 1, 1, 2, 0, 0, 0, 0, 1, 64);
    /* a cap above the full im2col: one tile, scratch = the full size */
    tiled_case("tiled_one_tile", 1, 4, 10, 12, 3, 3, 3, 1, 1, 1, 1, 1, 10, (size_t)1 << 40);
}

static void gn_case(const char *c, const char *fix, int64_t B, int64_t C, int64_t S, int64_t G,
                    float eps, int silu) {
    char nm[64];
    snprintf(nm, sizeof nm, "%s.x", c);
    float *x = fx(nm, B * C * S);
    snprintf(nm, sizeof nm, "%s.g", c);
    float *g = fx(nm, C);
    snprintf(nm, sizeof nm, "%s.b", c);
    float *b = fx(nm, C);
    snprintf(nm, sizeof nm, "%s.y", fix);
    float *ref = fx(nm, B * C * S), *y = zalloc(B * C * S);
    if (x && g && b && ref) {
        tdm_cpu_group_norm(NULL, y, x, g, b, B, C, S, G, eps, silu);
        check_close(fix, y, ref, B * C * S);
        tdm_cpu_group_norm(NULL, x, x, g, b, B, C, S, G, eps, silu);   /* in place */
        check_close("group_norm in place", x, ref, B * C * S);
    }
    free(x); free(g); free(b); free(ref); free(y);
}

TEST(test_group_norm) {
    gn_case("group_norm", "group_norm", 2, 6, 10, 3, 1e-6f, 0);
    gn_case("group_norm", "group_norm_silu", 2, 6, 10, 3, 1e-6f, 1);
    gn_case("group_norm_32", "group_norm_32", 1, 64, 49, 32, 1e-5f, 0);
}

TEST(test_layer_norm) {
    int64_t R = 5, D = 33;
    float *x = fx("layer_norm.x", R * D), *g = fx("layer_norm.g", D), *b = fx("layer_norm.b", D);
    float *ref = fx("layer_norm.y", R * D), *y = zalloc(R * D);
    if (x && g && b && ref) {
        tdm_cpu_layer_norm(NULL, y, x, g, b, R, D, 1e-5f);
        check_close("layer_norm", y, ref, R * D);
        tdm_cpu_layer_norm(NULL, x, x, g, b, R, D, 1e-5f);
        check_close("layer_norm in place", x, ref, R * D);
    }
    free(x); free(g); free(b); free(ref); free(y);
}

TEST(test_activations) {
    int64_t n = 1001;
    const char *names[4] = {"act.silu", "act.gelu", "act.gelu_tanh", "act.quick_gelu"};
    void (*fns[4])(tdm_device_t *, float *, int64_t) = {tdm_cpu_silu, tdm_cpu_gelu, tdm_cpu_gelu_tanh,
                                        tdm_cpu_quick_gelu};
    for (int i = 0; i < 4; i++) {
        float *x = fx("act.x", n), *ref = fx(names[i], n);
        if (x && ref) {
            fns[i](NULL, x, n);
            check_close(names[i], x, ref, n);
        }
        free(x); free(ref);
    }
    int64_t R = 3, F = 17;
    float *h = fx("geglu.h", R * 2 * F), *ref = fx("geglu.y", R * F), *y = zalloc(R * F);
    if (h && ref) {
        tdm_cpu_geglu(NULL, y, h, R, F);
        check_close("geglu", y, ref, R * F);
    }
    free(h); free(ref); free(y);
}

TEST(test_softmax) {
    float *x = fx("softmax.x", 4 * 37), *ref = fx("softmax.y", 4 * 37);
    if (x && ref) {
        tdm_cpu_softmax(x, 4, 37);
        check_close("softmax", x, ref, 4 * 37);
    }
    free(x); free(ref);
}

static void attn_case(const char *c, int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D,
                      int causal) {
    char nm[64];
    snprintf(nm, sizeof nm, "%s.q", c);
    float *q = fx(nm, B * Tq * H * D);
    snprintf(nm, sizeof nm, "%s.k", c);
    float *k = fx(nm, B * Tk * H * D);
    snprintf(nm, sizeof nm, "%s.v", c);
    float *v = fx(nm, B * Tk * H * D);
    snprintf(nm, sizeof nm, "%s.y", c);
    float *ref = fx(nm, B * Tq * H * D), *o = zalloc(B * Tq * H * D);
    if (q && k && v && ref) {
        float scale = 1.0f / sqrtf((float)D);
        tdm_cpu_attention(NULL, o, q, k, v, B, Tq, Tk, H, D, scale, causal);
        check_close(c, o, ref, B * Tq * H * D);
        memset(o, 0, (size_t)(B * Tq * H * D) * sizeof(float));
        tdm_cpu_attention_ref(o, q, k, v, B, Tq, Tk, H, D, scale, causal);
        snprintf(nm, sizeof nm, "%s (ref path)", c);
        check_close(nm, o, ref, B * Tq * H * D);
    }
    free(q); free(k); free(v); free(ref); free(o);
}

TEST(test_attention) {
    attn_case("attn_small", 2, 7, 11, 3, 8, 0);
    attn_case("attn_causal", 1, 77, 77, 2, 40, 1);
    attn_case("attn_long_q", 1, 130, 9, 1, 40, 0);
    attn_case("attn_causal_rect", 2, 5, 9, 2, 8, 1);
    attn_case("attn_one_key", 1, 3, 1, 2, 8, 0);
}

TEST(test_upsample) {
    int64_t B = 2, C = 3, H = 5, W = 7;
    float *x = fx("upsample.x", B * C * H * W), *ref = fx("upsample.y", B * C * 4 * H * W);
    float *y = zalloc(B * C * 4 * H * W);
    if (x && ref) {
        tdm_cpu_upsample_nearest2x(NULL, y, x, B, C, H, W);
        check_close("upsample", y, ref, B * C * 4 * H * W);
    }
    free(x); free(ref); free(y);
}

/* Layout and element-wise ops are exact: compared with their definitions. */
TEST(test_layout_elementwise) {
    int64_t B = 2, C = 5, S = 37, n = B * C * S;
    float *x = zalloc(n), *t = zalloc(n), *u = zalloc(n), *v = zalloc(B * C);
    for (int64_t i = 0; i < n; i++) x[i] = (float)i * 0.5f - 7.0f;
    for (int64_t i = 0; i < B * C; i++) v[i] = (float)i + 0.25f;
    tdm_cpu_transpose_cs(NULL, t, x, B, C, S);
    int ok = 1;
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++)
                ok &= t[(b * S + s) * C + c] == x[(b * C + c) * S + s];
    CHECK_MSG(ok, "transpose_cs");
    tdm_cpu_transpose_sc(NULL, u, t, B, S, C);
    CHECK_MSG(memcmp(u, x, (size_t)n * sizeof(float)) == 0, "transpose_sc round trip");

    tdm_cpu_add(NULL, u, x, x, n);
    ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= u[i] == 2 * x[i];
    CHECK_MSG(ok, "add");
    tdm_cpu_scale(NULL, u, u, 0.5f, n);
    CHECK_MSG(memcmp(u, x, (size_t)n * sizeof(float)) == 0, "scale in place");
    tdm_cpu_add_channel_bias(NULL, u, v, B, C, S);
    ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= u[i] == x[i] + v[i / S];
    CHECK_MSG(ok, "add_channel_bias");

    /* concat: (B, 2, S) ++ (B, 3, S) → (B, 5, S) */
    float *a = zalloc(B * 2 * S), *bb = zalloc(B * 3 * S);
    for (int64_t i = 0; i < B * 2 * S; i++) a[i] = (float)i;
    for (int64_t i = 0; i < B * 3 * S; i++) bb[i] = -(float)i - 1;
    tdm_cpu_concat_channels(NULL, u, a, 2, bb, 3, B, S);
    ok = 1;
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < 5; c++)
            for (int64_t s = 0; s < S; s++) {
                float want = c < 2 ? a[(b * 2 + c) * S + s] : bb[(b * 3 + c - 2) * S + s];
                ok &= u[(b * 5 + c) * S + s] == want;
            }
    CHECK_MSG(ok, "concat_channels");
    free(x); free(t); free(u); free(v); free(a); free(bb);
}

/* Larger than the OpenMP thresholds, so the threaded paths run too; the
 * tiled attention is checked against the scratch-free reference path. */
TEST(test_threaded_paths) {
    int64_t B = 2, T = 200, H = 3, D = 16, n = B * T * H * D;
    float *q = zalloc(n), *k = zalloc(n), *v = zalloc(n), *o1 = zalloc(n), *o2 = zalloc(n);
    uint32_t r = 12345;
    for (int64_t i = 0; i < n; i++) {
        r = r * 1664525u + 1013904223u; q[i] = (float)(r >> 8) / 16777216.0f - 0.5f;
        r = r * 1664525u + 1013904223u; k[i] = (float)(r >> 8) / 16777216.0f - 0.5f;
        r = r * 1664525u + 1013904223u; v[i] = (float)(r >> 8) / 16777216.0f - 0.5f;
    }
    for (int causal = 0; causal < 2; causal++) {
        tdm_cpu_attention(NULL, o1, q, k, v, B, T, T, H, D, 0.25f, causal);
        tdm_cpu_attention_ref(o2, q, k, v, B, T, T, H, D, 0.25f, causal);
        check_close(causal ? "attention causal vs ref" : "attention vs ref", o1, o2, n);
    }
    free(q); free(k); free(v); free(o1); free(o2);
}

/* Devices are opened by name: cpu and cpu:N are host devices with the given
 * switches, and an op on one reaches the CPU kernel; a kind this build lacks
 * or a malformed name is refused naming it. */
TEST(test_device_open) {
    tdm_backend_params_t p;
    tdm_backend_params_init(&p);
    p.conv_tile_bytes = 4096;
    tdm_device_t d;
    CHECK(tdm_backend_find("cpu") == &tdm_backend_cpu && tdm_backend_device_count("cpu") == 1);
    CHECK(tdm_backend_device_open(&d, "cpu", NULL) == TDM_OK);
    CHECK(d.kind == TDM_DEV_CPU && d.index == 0 && tdm_dev_is_host(&d));
    CHECK(d.opts.conv_tile_bytes == TDM_CONV_TILE_BYTES_DEFAULT);
    tdm_backend_device_close(&d);
    CHECK(tdm_backend_device_open(&d, "cpu:3", &p) == TDM_OK);
    CHECK(d.index == 3 && d.opts.conv_tile_bytes == 4096);
    float a[3] = {1, -2, 3}, b[3] = {4, 5, -6}, y[3];
    tdm_op_add(&d, y, a, b, 3);
    CHECK(y[0] == 5 && y[1] == 3 && y[2] == -3);
    tdm_backend_device_close(&d);
    static const char *const bad[] = {"", "gpu:0", "cpu:", "cpu:x", "cpu:-1", "cpu:1x",
                                      "cuda:99999", "averyveryverylongname:0"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tdm_status st = tdm_backend_device_open(&d, bad[i], NULL);
        CHECK_MSG(st == TDM_ERR_INVALID_ARG && strstr(tdm_last_error(), bad[i]),
                  "\"%s\": status %d, %s", bad[i], (int)st, tdm_last_error());
    }
    if (!tdm_backend_find("cuda")) {   /* a CPU-only build says so */
        tdm_status st = tdm_backend_device_open(&d, "cuda:0", NULL);
        CHECK_MSG(st == TDM_ERR_UNSUPPORTED && strstr(tdm_last_error(), "only the CPU backend"),
                  "cuda:0 in a CPU-only build: %s", tdm_last_error());
        CHECK(tdm_backend_device_count("cuda") == 0);
    }
}

int main(void) {
    tdm_status st = tdm_safetensors_open(&g_st, TDM_FIXTURES "/ops/ops.safetensors");
    if (st != TDM_OK) printf("cannot open fixtures: %s\n", tdm_last_error());
    RUN(test_linear);
    RUN(test_gemm);
    RUN(test_gemm_rows_independent);
    RUN(test_conv2d);
    RUN(test_device_opts);
    RUN(test_device_open);
    RUN(test_conv2d_tiled);
    RUN(test_conv2d_winograd);
    RUN(test_group_norm);
    RUN(test_layer_norm);
    RUN(test_activations);
    RUN(test_softmax);
    RUN(test_attention);
    RUN(test_upsample);
    RUN(test_layout_elementwise);
    RUN(test_threaded_paths);
    tdm_safetensors_close(g_st);
    return test_summary();
}
