/* test_fp8.c — FP8 (e4m3fn) on the CPU: the code conversions against an
 * exhaustive reference (every code decoded by ldexp; every input rounded to
 * the nearest finite code, ties to the even code, beyond 448 saturated), the
 * per-row quantization rule, the loader's row-scaled FP8 weights, and the
 * CPU linear_f8 (the spec the CUDA op is tested against in
 * test_backend_ops) against a double-precision product of the same codes,
 * independent of thread and row count. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/ops.h"
#include "core/core.h"
#include "io/safetensors.h"
#include "models/flux.h"
#include "nn/ptree.h"
#include "nn/weights.h"
#include "test.h"

/* The value of code q from the format's definition alone. */
static double ref_decode(uint8_t q) {
    const int e = (q >> 3) & 15, m = q & 7, neg = q & 0x80;
    if (e == 15 && m == 7) return NAN;
    const double v = e == 0 ? ldexp(m, -9) : ldexp(8 + m, e - 10);
    return neg ? -v : v;
}

/* The code an exhaustive search picks for x: the nearest finite code, a tie
 * to the code with the even mantissa, |x| > 448 saturated, NaN → 0x7f. */
static uint8_t ref_encode(float x) {
    if (isnan(x)) return 0x7f;
    const uint8_t sign = signbit(x) ? 0x80 : 0;
    const double a = fabs((double)x);
    if (a >= 448) return sign | 0x7e;
    int best = 0;
    double bd = INFINITY;
    for (int q = 0; q <= 0x7e; q++) {
        const double d = fabs(ref_decode((uint8_t)q) - a);
        if (d < bd || (d == bd && (q & 1) == 0)) {
            bd = d;
            best = q;
        }
    }
    return sign | (uint8_t)best;
}

static uint64_t g_seed = 0x5eedf8;
static double urand(void) {
    g_seed = g_seed * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_seed >> 11) / 9007199254740992.0;
}

TEST(test_e4m3_decode) {
    for (int q = 0; q < 256; q++) {
        const double want = ref_decode((uint8_t)q);
        const float got = tdm_e4m3_to_f32((uint8_t)q);
        if (isnan(want)) CHECK_MSG(isnan(got), "code 0x%02x: %g, want NaN", q, got);
        else CHECK_MSG((double)got == want, "code 0x%02x: %.9g, want %.9g", q, got, want);
    }
    CHECK(tdm_e4m3_to_f32(0x7e) == 448.0f && tdm_e4m3_to_f32(0x01) == 0x1p-9f);
}

TEST(test_e4m3_encode) {
    int bad = 0;
    /* every code and the midpoints and near-midpoints between neighbours */
    for (int q = 0; q < 0x7e; q++) {
        const double lo = ref_decode((uint8_t)q), hi = ref_decode((uint8_t)(q + 1));
        const float pts[5] = {(float)lo, (float)((lo + hi) / 2), nextafterf((float)((lo + hi) / 2), 0),
                              nextafterf((float)((lo + hi) / 2), INFINITY), (float)hi};
        for (int i = 0; i < 5; i++)
            for (int s = 0; s < 2; s++) {
                const float x = s ? -pts[i] : pts[i];
                if (tdm_f32_to_e4m3(x) != ref_encode(x) && bad++ < 5)
                    CHECK_MSG(0, "%.9g -> 0x%02x, want 0x%02x", x, tdm_f32_to_e4m3(x), ref_encode(x));
            }
    }
    /* random magnitudes from far below the smallest subnormal to past 448 */
    for (int i = 0; i < 200000; i++) {
        const float x = (float)((urand() < 0.5 ? -1 : 1) * ldexp(1 + urand(), (int)(urand() * 24) - 14));
        if (tdm_f32_to_e4m3(x) != ref_encode(x) && bad++ < 5)
            CHECK_MSG(0, "%.9g -> 0x%02x, want 0x%02x", x, tdm_f32_to_e4m3(x), ref_encode(x));
    }
    CHECK_MSG(bad == 0, "%d conversions differ from the exhaustive search", bad);
    const struct { float x; uint8_t want; } edge[] = {
        {0.0f, 0x00},      {-0.0f, 0x80},     {464.0f, 0x7e},   {1e30f, 0x7e},
        {INFINITY, 0x7e},  {-INFINITY, 0xfe}, {NAN, 0x7f},      {0x1p-10f, 0x00},
        {0x3p-10f, 0x02},  {0x1.0p-6f, 0x08}, {0x1.1p0f, 0x38}, {0x1.3p0f, 0x3a}};
    for (size_t i = 0; i < sizeof edge / sizeof *edge; i++)
        CHECK_MSG(tdm_f32_to_e4m3(edge[i].x) == edge[i].want, "%.9g -> 0x%02x, want 0x%02x",
                  edge[i].x, tdm_f32_to_e4m3(edge[i].x), edge[i].want);
}

TEST(test_f8_quantize_row) {
    enum { N = 777 };
    float x[N], s;
    uint8_t q[N];
    for (int i = 0; i < N; i++) x[i] = (float)(urand() * 6 - 3);
    x[123] = -7.5f;   /* the row's amax, negative */
    tdm_f8_quantize_row(q, &s, x, N);
    CHECK(s == 7.5f / 448.0f);
    CHECK_MSG(q[123] == 0xfe, "amax element -> 0x%02x, want 0xfe (-448)", q[123]);
    double err = 0;
    for (int i = 0; i < N; i++) {
        CHECK(q[i] == tdm_f32_to_e4m3(x[i] * (448.0f / 7.5f)));
        err = fmax(err, fabs(tdm_e4m3_to_f32(q[i]) * s - x[i]) / 7.5);
    }
    /* 3 mantissa bits: at most half a step, 2^-4 of a value, of the amax */
    CHECK_MSG(err > 0 && err <= 1.0 / 16, "dequantized error %.3g of the amax", err);
    memset(x, 0, sizeof x);
    tdm_f8_quantize_row(q, &s, x, N);
    CHECK(s == 1.0f && q[0] == 0 && q[N - 1] == 0);
    CHECK(tdm_f8_scale_offset(3, 5) == 256 && tdm_f8_bytes(3, 5) == 268);
    CHECK(tdm_f8_scale_offset(16, 16) == 256 && tdm_f8_scale_offset(16, 17) == 512);
}

/* Row-scaled FP8 matrix (N, K) from w, as the loader makes it. */
static uint8_t *f8_matrix(const float *w, int64_t N, int64_t K) {
    uint8_t *m = calloc(1, (size_t)tdm_f8_bytes(N, K));
    float *s = (float *)(m + tdm_f8_scale_offset(N, K));
    for (int64_t n = 0; n < N; n++) tdm_f8_quantize_row(m + n * K, &s[n], w + n * K, K);
    return m;
}

static double gelu_tanh_d(double v) {
    return 0.5 * v * (1 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
}

TEST(test_linear_f8_cpu) {
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    static const int64_t shapes[][4] = {{5, 7, 3, 3}, {37, 64, 96, 96}, {300, 128, 512, 640}, {2, 3072, 64, 64}};
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        const int64_t M = shapes[c][0], K = shapes[c][1], N = shapes[c][2], ldy = shapes[c][3];
        float *x = malloc((size_t)(M * K) * 4), *w = malloc((size_t)(N * K) * 4), *b = malloc((size_t)N * 4);
        float *y = calloc((size_t)(M * ldy), 4), *y1 = calloc((size_t)(M * ldy), 4);
        float *yr = calloc((size_t)N, 4), sx;
        uint8_t *qx = malloc((size_t)K);
        for (int64_t i = 0; i < M * K; i++) x[i] = (float)(urand() * 4 - 2);
        for (int64_t i = 0; i < N * K; i++) w[i] = (float)((urand() * 2 - 1) * (1 + i / K % 5));
        for (int64_t i = 0; i < N; i++) b[i] = (float)(urand() - 0.5);
        uint8_t *W = f8_matrix(w, N, K);
        const float *sw = (const float *)(W + tdm_f8_scale_offset(N, K));
        for (int gelu = 0; gelu < 2; gelu++) {
            const int64_t ld = gelu ? ldy : N;
            tdm_op_linear_f8(&dev, y, TDM_F32, ld, x, TDM_F32, W, b, M, K, N, gelu);
            double e = 0, mr = 1e-30, ef = 0, mf = 1e-30;
            for (int64_t m = 0; m < M; m++) {
                tdm_f8_quantize_row(qx, &sx, x + m * K, K);
                for (int64_t n = 0; n < N; n++) {
                    double acc = 0, fl = 0;
                    for (int64_t k = 0; k < K; k++) {
                        acc += (double)tdm_e4m3_to_f32(qx[k]) * tdm_e4m3_to_f32(W[n * K + k]);
                        fl += (double)x[m * K + k] * w[n * K + k];
                    }
                    /* the spec's bias is rounded to bf16 (what cuBLASLt's FP8 GEMMs take) */
                    double r = acc * sx * sw[n] + tdm_bf16_to_f32(tdm_f32_to_bf16(b[n])), f = fl + b[n];
                    if (gelu) r = gelu_tanh_d(r), f = gelu_tanh_d(f);
                    e = fmax(e, fabs(y[m * ld + n] - r));
                    mr = fmax(mr, fabs(r));
                    ef = fmax(ef, fabs(y[m * ld + n] - f));
                    mf = fmax(mf, fabs(f));
                }
            }
            CHECK_MSG(e / mr <= 1e-5, "M %lld K %lld N %lld gelu %d: rel err %.3g vs the double "
                      "product of the codes", (long long)M, (long long)K, (long long)N, gelu, e / mr);
            /* the FP8 product approximates the float one (scales applied the right way round) */
            CHECK_MSG(ef / mf > 1e-6 && ef / mf < 0.05, "M %lld K %lld N %lld: rel err %.3g vs the "
                      "float32 linear", (long long)M, (long long)K, (long long)N, ef / mf);
            /* the same bits on one thread, and for one row computed alone */
            const int nt = omp_get_max_threads();
            omp_set_num_threads(1);
            tdm_op_linear_f8(&dev, y1, TDM_F32, ld, x, TDM_F32, W, b, M, K, N, gelu);
            omp_set_num_threads(nt);
            CHECK_MSG(!memcmp(y, y1, (size_t)(M * ld) * 4), "thread count changes the bits");
            const int64_t r0 = M / 2;
            tdm_op_linear_f8(&dev, yr, TDM_F32, N, x + r0 * K, TDM_F32, W, b, 1, K, N, gelu);
            CHECK_MSG(!memcmp(yr, y + r0 * ld, (size_t)N * 4), "row %lld alone differs",
                      (long long)r0);
        }
        free(x); free(w); free(b); free(y); free(y1); free(yr); free(qx); free(W);
    }
}

/* A weight loaded as TDM_WEIGHT_F8: the codes and scales of its float32 rows. */
TEST(test_f8_load) {
    char dir[] = "/tmp/tdm-test-fp8-XXXXXX", path[64];
    if (!mkdtemp(dir)) {
        CHECK_MSG(0, "mkdtemp failed");
        return;
    }
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    enum { N = 24, K = 40 };
    float w[N * K];
    for (int i = 0; i < N * K; i++) w[i] = (float)((urand() * 2 - 1) * (i / K + 1));
    const char *names[1] = {"lin.weight"};
    const int ndims[1] = {2};
    const int64_t shape[2] = {N, K}, *shapes[1] = {shape};
    const float *data[1] = {w};
    CHECK(tdm_safetensors_write_f32(path, 1, names, ndims, shapes, data, 0, NULL) == TDM_OK);
    tdm_st_set_t *set = NULL;
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    tdm_tensor_t *t = NULL;
    CHECK(tdm_st_set_open(&set, path) == TDM_OK);
    if (set)
        CHECK_MSG(tdm_st_set_load_gemm_weight(set, "lin.weight", &dev, TDM_WEIGHT_F8, 2, shape,
                                              &t) == TDM_OK, "%s", tdm_last_error());
    if (t) {
        uint8_t *want = f8_matrix(w, N, K);
        CHECK(t->dtype == TDM_F8E4M3 && t->nbytes == tdm_f8_bytes(N, K));
        CHECK_MSG(!memcmp(t->data, want, (size_t)tdm_f8_bytes(N, K)), "loaded codes/scales "
                  "differ from tdm_f8_quantize_row's");
        free(want);
    }
    tdm_tensor_free(t);
    tdm_st_set_close(set);
    unlink(path);
    rmdir(dir);
}

/* An F8_E4M3 checkpoint tensor: read as float32 its codes' values; read as
 * TDM_WEIGHT_F8 its codes as they are with scale 1 (no second rounding). */
TEST(test_f8_checkpoint) {
    char dir[] = "/tmp/tdm-test-fp8-XXXXXX", path[64];
    if (!mkdtemp(dir)) {
        CHECK_MSG(0, "mkdtemp failed");
        return;
    }
    snprintf(path, sizeof path, "%s/f8.safetensors", dir);
    enum { N = 3, K = 16 };
    uint8_t codes[N * K];
    for (int i = 0; i < N * K; i++) {
        codes[i] = (uint8_t)(i * 37 + 11);
        if ((codes[i] & 0x7f) == 0x7f) codes[i] = 0x3c;   /* no NaN codes */
    }
    char hdr[128];
    int hl = snprintf(hdr, sizeof hdr, "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[%d,%d],"
                      "\"data_offsets\":[0,%d]}}", N, K, N * K);
    while (hl % 8) hdr[hl++] = ' ';
    FILE *f = fopen(path, "wb");
    uint8_t le[8] = {(uint8_t)hl};
    CHECK(f && fwrite(le, 1, 8, f) == 8 && fwrite(hdr, 1, (size_t)hl, f) == (size_t)hl &&
          fwrite(codes, 1, sizeof codes, f) == sizeof codes);
    if (f) fclose(f);
    tdm_st_set_t *set = NULL;
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    tdm_tensor_t *a = NULL, *b = NULL;
    const int64_t shape[2] = {N, K};
    CHECK_MSG(tdm_st_set_open(&set, path) == TDM_OK, "%s", tdm_last_error());
    if (set) {
        CHECK(tdm_st_set_load_f32(set, "w", &dev, 2, shape, &a) == TDM_OK);
        CHECK(tdm_st_set_load_gemm_weight(set, "w", &dev, TDM_WEIGHT_F8, 2, shape, &b) == TDM_OK);
    }
    for (int i = 0; a && i < N * K; i++)
        CHECK_MSG((double)tdm_f32(a)[i] == ref_decode(codes[i]), "element %d: %g, want %g", i,
                  tdm_f32(a)[i], ref_decode(codes[i]));
    if (b) {
        const float *s = (const float *)((uint8_t *)b->data + tdm_f8_scale_offset(N, K));
        CHECK(!memcmp(b->data, codes, sizeof codes));
        CHECK(s[0] == 1.0f && s[N - 1] == 1.0f);
    }
    tdm_tensor_free(a);
    tdm_tensor_free(b);
    tdm_st_set_close(set);
    unlink(path);
    rmdir(dir);
}

/* The planner weighs a --dtype fp8 FLUX transformer as it loads it: the
 * blocks' 2-D Linear weights at tdm_f8_bytes (codes + row scales), every
 * other tensor as in bf16. */
TEST(test_f8_plist) {
    const char *cfg = TDM_FIXTURES "/flux_pipelines/flux-dev-tiny/transformer/config.json";
    tdm_plist_t a, b;
    tdm_plist_init(&a, TDM_BF16);
    tdm_plist_init(&b, TDM_F8E4M3);
    CHECK_MSG(tdm_flux_plist(cfg, TDM_BF16, &a) == TDM_OK, "%s", tdm_last_error());
    CHECK_MSG(tdm_flux_plist(cfg, TDM_F8E4M3, &b) == TDM_OK, "%s", tdm_last_error());
    CHECK(a.n == b.n && a.n > 0);
    int nf8 = 0;
    for (int64_t i = 0; i < a.n && i < b.n; i++) {
        const tdm_pentry_t *x = &a.e[i], *y = &b.e[i];
        const char *n = x->name;
        const size_t len = strlen(n);
        const int blk = !strncmp(n, "transformer_blocks.", 19) || !strncmp(n, "single_transformer_blocks.", 26);
        const int lin = blk && x->ndim == 2 && len > 7 && !strcmp(n + len - 7, ".weight");
        const int64_t want = lin ? tdm_f8_bytes(x->shape[0], x->shape[1]) : tdm_pentry_bytes(x);
        nf8 += lin;
        CHECK_MSG(!strcmp(n, y->name) && tdm_pentry_bytes(y) == want && (y->dtype == TDM_F8E4M3) == lin,
                  "%s: %lld bytes as fp8 (dtype %s), want %lld", n, (long long)tdm_pentry_bytes(y),
                  tdm_dtype_name(y->dtype), (long long)want);
    }
    CHECK(nf8 > 0);
    tdm_plist_free(&a);
    tdm_plist_free(&b);
}

int main(void) {
    RUN(test_e4m3_decode);
    RUN(test_e4m3_encode);
    RUN(test_f8_quantize_row);
    RUN(test_linear_f8_cpu);
    RUN(test_f8_load);
    RUN(test_f8_checkpoint);
    RUN(test_f8_plist);
    return test_summary();
}
