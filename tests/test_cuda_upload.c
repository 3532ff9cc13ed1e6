/* test_cuda_upload.c — the CUDA weight uploads (backend/cuda/upload.cu)
 * against the host: tdm_cuda_upload_staged must give the source bytes and
 * tdm_cuda_upload_convert exactly the bytes of the host conversion
 * (tdm_convert_to_f32 / tdm_convert_to_half), for every pair of F32, F16 and
 * BF16. Sources mix random bit patterns with NaNs (quiet, signalling, with
 * payloads), ±Inf, ±0, float and half subnormals, ties that round to even
 * and the overflow edge of F16; sizes of 1, 1000 and 3 pinned chunks + 17
 * elements, from unaligned host addresses. Every F16 and BF16 pattern and
 * every one of the 2^32 F32 patterns (to F16 and BF16) is checked too. A run
 * of back-to-back uploads of mixed sizes whose host sources are overwritten
 * as soon as each call returns checks the pinned ring's reuse. Without a
 * CUDA build or device it prints "SKIP: no CUDA device" and exits 77 (skipped). */
// label: cuda
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#ifdef TDM_HAVE_CUDA
#include "backend/cuda/cuda_ops.h"
#endif
#include "test.h"

#ifdef TDM_HAVE_CUDA

static tdm_device_t g_dev;
static uint64_t g_rng = 0x2545f4914f6cdd1dull;

static uint64_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const uint32_t f32_special[] = {
    0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u,   /* ±0, ±Inf */
    0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u,   /* quiet / signalling NaN */
    0x7fbfffffu, 0x7fffffffu, 0x7fc0dead,  0xffa5a5a5u,   /* NaN payloads */
    0x00000001u, 0x807fffffu, 0x00400000u,                /* float32 subnormals */
    0x33000000u, 0x33000001u, 0x337fffffu, 0x33800000u,   /* around 2^-25, 2^-24 */
    0x33c00000u, 0x34200000u, 0x38800000u, 0x387fffffu,   /* half subnormal ties, 2^-14 */
    0x387fe000u, 0x387ff000u, 0xb87ff000u,                /* largest half subnormal, tie to 2^-14 */
    0x477fe000u, 0x477fefffu, 0x477ff000u, 0xc77ff000u,   /* 65504, last to 65504, first to Inf */
    0x477fffffu, 0x47800000u, 0x7f7fffffu, 0xff7fffffu,   /* above F16, FLT_MAX (BF16 Inf) */
    0x3f800000u, 0x3f801000u, 0x3f803000u, 0x3f808000u,   /* 1 and its F16/BF16 ties */
    0x3f818000u, 0x3f7fffffu, 0x00800000u, 0x00808000u,
};

static const uint16_t h16_special[] = {
    0x0000, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0x7c01, 0xfdff, 0x7fff,   /* F16 ±0, ±Inf, NaNs */
    0x0001, 0x8001, 0x03ff, 0x0400, 0x7bff, 0xfbff, 0x3c00, 0x3c01,   /* subnormals, limits */
    0x7f80, 0xff80, 0x7fc0, 0x7f81, 0xffff, 0x007f, 0x0080, 0x7f7f,   /* BF16 specials */
};

/* One float32 bit pattern, weighted towards the cases where rounding or
 * classification differs. */
static uint32_t f32_sample(void) {
    const uint64_t r = rnd();
    const uint32_t hi = (uint32_t)(r >> 32), sign = hi & 0x80000000u;
    switch (r & 7) {
    case 0: return hi;                                                        /* any */
    case 1: return f32_special[hi % (sizeof f32_special / sizeof f32_special[0])];
    case 2:                                   /* F16 tie: low 13 bits 0x1000, exponent in range */
        return sign | ((103u + (hi >> 8) % 40u) << 23) | (((hi << 13) & 0x7fe000u) | 0x1000u);
    case 3: return sign | (((hi >> 1) % 254u + 1u) << 23) | ((hi << 16) & 0x7f0000u) | 0x8000u;
    case 4: return sign | ((102u + (hi >> 8) % 11u) << 23) | (hi & 0x7fffffu);   /* half subnormal */
    case 5: return sign | (hi & 0x7fffffu);                                  /* float subnormal */
    case 6: return sign | (0x477fd000u + hi % 0x4000u);                      /* F16 overflow edge */
    default: {                                                               /* weight-like */
        float f = ((float)(hi & 0xffffff) / 16777216.0f - 0.5f) * 8.0f;
        uint32_t u;
        memcpy(&u, &f, 4);
        return u;
    }
    }
}

static uint16_t h16_sample(void) {
    const uint64_t r = rnd();
    if ((r & 7) == 0) return h16_special[(r >> 32) % (sizeof h16_special / sizeof h16_special[0])];
    return (uint16_t)(r >> 40);
}

static void fill(void *p, tdm_dtype t, int64_t n) {
    uint8_t *b = p;
    for (int64_t i = 0; i < n; i++) {
        if (t == TDM_F32) {
            uint32_t u = f32_sample();
            memcpy(b + 4 * i, &u, 4);
        } else {
            uint16_t h = h16_sample();
            memcpy(b + 2 * i, &h, 2);
        }
    }
}

/* The host conversion the upload must reproduce. */
static tdm_status host_ref(void *dst, tdm_dtype to, const void *src, tdm_dtype from, int64_t n) {
    if (from == to) {
        memcpy(dst, src, (size_t)n * tdm_dtype_size(from));
        return TDM_OK;
    }
    if (to == TDM_F32) return tdm_convert_to_f32(dst, src, from, n);
    return tdm_convert_to_half(dst, src, from, n, to);
}

static uint32_t elem_bits(const void *p, tdm_dtype t, int64_t i) {
    if (t == TDM_F32) {
        uint32_t u;
        memcpy(&u, (const uint8_t *)p + 4 * i, 4);
        return u;
    }
    uint16_t h;
    memcpy(&h, (const uint8_t *)p + 2 * i, 2);
    return h;
}

/* Compares n elements of `got` with `want` (dtype `to`) bit for bit; prints
 * the count and the first mismatches with their source bits. */
static void compare(const char *what, const void *got, const void *want, tdm_dtype to,
                    const void *src, tdm_dtype from, int64_t n, int64_t base) {
    if (!memcmp(got, want, (size_t)n * tdm_dtype_size(to))) return;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t g = elem_bits(got, to, i), w = elem_bits(want, to, i);
        if (g == w) continue;
        if (bad < 5)
            printf("  %s: element %lld: source 0x%08x gives 0x%08x, host 0x%08x\n", what,
                   (long long)(base + i), elem_bits(src, from, i), g, w);
        bad++;
    }
    CHECK_MSG(bad == 0, "%s: %lld of %lld elements differ", what, (long long)bad, (long long)n);
}

/* Uploads n elements of `src` (any host address) as `to` through
 * tdm_cuda_upload_convert — or tdm_cuda_upload_staged when `staged` — and
 * checks the device bytes against the host conversion. */
static void convert_case(tdm_dtype from, tdm_dtype to, int64_t n, int misalign, int staged) {
    char what[128];
    snprintf(what, sizeof what, "%s %s->%s n=%lld src+%d", staged ? "staged" : "convert",
             tdm_dtype_name(from), tdm_dtype_name(to), (long long)n, misalign);
    const int64_t es = (int64_t)tdm_dtype_size(from), ed = (int64_t)tdm_dtype_size(to);
    uint8_t *buf = malloc((size_t)(n * es + 8));
    uint8_t *src = buf + misalign;
    void *want = malloc((size_t)(n * ed)), *got = malloc((size_t)(n * ed));
    fill(src, from, n);
    CHECK(host_ref(want, to, src, from, n) == TDM_OK);
    void *d = tdm_dev_alloc(&g_dev, n * ed, what);
    CHECK_MSG(d != NULL, "%s: alloc: %s", what, tdm_last_error());
    if (d) {
        int ok = staged ? tdm_cuda_upload_staged(&g_dev, d, src, n * es)
                        : tdm_cuda_upload_convert(&g_dev, d, to, src, from, n);
        CHECK_MSG(ok == 1, "%s: %s", what, tdm_last_error());
        tdm_status st = tdm_dev_download(&g_dev, got, d, n * ed, what);
        CHECK_MSG(st == TDM_OK, "%s: download: %s", what, tdm_last_error());
        if (ok && st == TDM_OK) compare(what, got, want, to, src, from, n, 0);
        tdm_dev_free(&g_dev, d, n * ed);
    }
    free(buf);
    free(want);
    free(got);
}

TEST(test_convert_pairs) {
    const tdm_dtype dts[3] = {TDM_F32, TDM_F16, TDM_BF16};
    for (int a = 0; a < 3; a++) {
        const int64_t chunk = TDM_CUDA_UPLOAD_CHUNK / (int64_t)tdm_dtype_size(dts[a]);
        const int64_t sizes[3] = {1, 1000, 3 * chunk + 17};
        for (int k = 0; k < 3; k++) {
            convert_case(dts[a], dts[a], sizes[k], k == 1, 1);   /* staged copy */
            for (int b = 0; b < 3; b++) convert_case(dts[a], dts[b], sizes[k], k % 2 ? 1 : 3, 0);
        }
    }
}

/* Every F16 / BF16 pattern to every dtype, then all 2^32 F32 patterns to F16
 * and BF16, in blocks. */
TEST(test_exhaustive) {
    const tdm_dtype dts[3] = {TDM_F32, TDM_F16, TDM_BF16};
    uint16_t all16[65536];
    for (int i = 0; i < 65536; i++) all16[i] = (uint16_t)i;
    float out_h[65536], out_d[65536];
    void *d = tdm_dev_alloc(&g_dev, sizeof out_d, "exhaustive 16");
    CHECK(d != NULL);
    for (int a = 1; d && a < 3; a++)
        for (int b = 0; b < 3; b++) {
            char what[64];
            snprintf(what, sizeof what, "all %s -> %s", tdm_dtype_name(dts[a]), tdm_dtype_name(dts[b]));
            CHECK(host_ref(out_h, dts[b], all16, dts[a], 65536) == TDM_OK);
            CHECK_MSG(tdm_cuda_upload_convert(&g_dev, d, dts[b], all16, dts[a], 65536) == 1, "%s: %s",
                      what, tdm_last_error());
            CHECK(tdm_dev_download(&g_dev, out_d, d, 65536 * (int64_t)tdm_dtype_size(dts[b]), what) == TDM_OK);
            compare(what, out_d, out_h, dts[b], all16, dts[a], 65536, 0);
        }
    if (d) tdm_dev_free(&g_dev, d, sizeof out_d);

    const int64_t blk = (int64_t)1 << 26;
    uint32_t *src = malloc((size_t)blk * 4);
    uint16_t *want = malloc((size_t)blk * 2), *got = malloc((size_t)blk * 2);
    d = tdm_dev_alloc(&g_dev, blk * 2, "exhaustive f32");
    CHECK(d != NULL);
    const double t0 = now();
    for (int b = 1; d && b < 3 && !test_cur_failed; b++) {
        char what[64];
        snprintf(what, sizeof what, "all F32 -> %s", tdm_dtype_name(dts[b]));
        for (int64_t base = 0; base < ((int64_t)1 << 32) && !test_cur_failed; base += blk) {
#pragma omp parallel for
            for (int64_t i = 0; i < blk; i++) src[i] = (uint32_t)(base + i);
            CHECK(tdm_convert_to_half(want, src, TDM_F32, blk, dts[b]) == TDM_OK);
            CHECK_MSG(tdm_cuda_upload_convert(&g_dev, d, dts[b], src, TDM_F32, blk) == 1, "%s: %s",
                      what, tdm_last_error());
            CHECK(tdm_dev_download(&g_dev, got, d, blk * 2, what) == TDM_OK);
            compare(what, got, want, dts[b], src, TDM_F32, blk, base);
        }
    }
    printf("  all 2^32 F32 patterns to F16 and BF16: %.1f s\n", now() - t0);
    if (d) tdm_dev_free(&g_dev, d, blk * 2);
    free(src);
    free(want);
    free(got);
}

/* Back-to-back uploads of mixed sizes (1 byte to 2.5 chunks), converting or
 * not, each source overwritten as soon as the call returns; checked only
 * after all of them, so later copies would show on earlier results if the
 * ring reused a buffer still in flight. */
TEST(test_ring_reuse) {
    enum { N = 200 };
    const tdm_dtype dts[3] = {TDM_F32, TDM_F16, TDM_BF16};
    void *dev[N] = {0}, *want[N] = {0};
    int64_t nb[N];
    tdm_dtype to[N];
    uint8_t *src = malloc((size_t)(5 * TDM_CUDA_UPLOAD_CHUNK / 2 + 8));
    int fails = 0;
    for (int i = 0; i < N; i++) {
        const uint64_t r = rnd();
        const tdm_dtype from = dts[r % 3];
        to[i] = (r >> 8) % 4 == 3 ? from : dts[(r >> 4) % 3];
        const int64_t es = (int64_t)tdm_dtype_size(from), ed = (int64_t)tdm_dtype_size(to[i]);
        int64_t n;
        switch ((r >> 12) % 8) {
        case 0: case 1: case 2: n = 1 + (int64_t)((r >> 16) % 64); break;
        case 3: case 4: case 5: n = 1 + (int64_t)((r >> 16) % 50000); break;
        case 6: n = 1 + (int64_t)((r >> 16) % (TDM_CUDA_UPLOAD_CHUNK / es)); break;
        default: n = 1 + (int64_t)((r >> 16) % (5 * TDM_CUDA_UPLOAD_CHUNK / 2 / es)); break;
        }
        const int off = (int)((r >> 60) & 3);
        nb[i] = n * ed;
        fill(src + off, from, n);
        want[i] = malloc((size_t)nb[i]);
        host_ref(want[i], to[i], src + off, from, n);
        dev[i] = tdm_dev_alloc(&g_dev, nb[i], "ring");
        if (!dev[i]) { fails++; continue; }
        int ok = (r >> 62) == 0 && from == to[i]
                     ? tdm_cuda_upload_staged(&g_dev, dev[i], src + off, n * es)
                     : tdm_cuda_upload_convert(&g_dev, dev[i], to[i], src + off, from, n);
        if (!ok) {
            printf("  upload %d: %s\n", i, tdm_last_error());
            fails++;
        }
        memset(src, i & 0xff, (size_t)(n * es + off));
    }
    CHECK_MSG(fails == 0, "%d uploads failed", fails);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        if (!dev[i]) continue;
        void *got = malloc((size_t)nb[i]);
        if (tdm_dev_download(&g_dev, got, dev[i], nb[i], "ring") != TDM_OK ||
            memcmp(got, want[i], (size_t)nb[i])) {
            if (bad < 5) printf("  upload %d (%lld bytes as %s) differs\n", i, (long long)nb[i],
                                tdm_dtype_name(to[i]));
            bad++;
        }
        free(got);
        tdm_dev_free(&g_dev, dev[i], nb[i]);
        free(want[i]);
    }
    CHECK_MSG(bad == 0, "%d of %d uploads differ", bad, N);
    free(src);
}

/* A fresh device: small copies before the ring exists, then a large one,
 * then small ones through the ring; device free releases it all. */
TEST(test_fresh_device) {
    tdm_device_t d2;
    if (tdm_backend_device_open(&d2, "cuda:0", NULL) != TDM_OK) {
        CHECK_MSG(0, "cuda:0: %s", tdm_last_error());
        return;
    }
    const int64_t sizes[4] = {12, 3 << 20, 5, 100000};
    for (int k = 0; k < 4; k++) {
        uint8_t *h = malloc((size_t)sizes[k]), *g = malloc((size_t)sizes[k]);
        for (int64_t i = 0; i < sizes[k]; i++) h[i] = (uint8_t)rnd();
        void *d = tdm_dev_alloc(&d2, sizes[k], "fresh");
        CHECK(d != NULL);
        if (d) {
            CHECK_MSG(tdm_cuda_upload_staged(&d2, d, h, sizes[k]) == 1, "%s", tdm_last_error());
            CHECK(tdm_dev_download(&d2, g, d, sizes[k], "fresh") == TDM_OK);
            CHECK_MSG(!memcmp(g, h, (size_t)sizes[k]), "%lld bytes differ after a fresh upload",
                      (long long)sizes[k]);
            tdm_dev_free(&d2, d, sizes[k]);
        }
        free(h);
        free(g);
    }
    CHECK(tdm_cuda_upload_staged(&d2, NULL, NULL, 0) == 1);   /* nothing to copy */
    tdm_backend_device_close(&d2);
}

TEST(test_bad_dtype) {
    double h[4] = {1, 2, 3, 4};
    void *d = tdm_dev_alloc(&g_dev, 16, "bad");
    CHECK(d != NULL);
    CHECK(tdm_cuda_upload_convert(&g_dev, d, TDM_F32, h, TDM_F64, 4) == 0);
    CHECK_MSG(strstr(tdm_last_error(), "F64") != NULL, "message: %s", tdm_last_error());
    CHECK(tdm_cuda_upload_convert(&g_dev, d, TDM_I32, h, TDM_F32, 4) == 0);
    CHECK(g_dev.ops->sync(&g_dev) == 1);   /* not a device failure */
    tdm_dev_free(&g_dev, d, 16);
}

int main(void) {
    if (tdm_backend_device_count("cuda") <= 0) {
        return test_skip("no CUDA device");
    }
    if (tdm_backend_device_open(&g_dev, "cuda:0", NULL) != TDM_OK) {
        printf("cuda:0: %s\n", tdm_last_error());
        return EXIT_FAILURE;
    }
    RUN(test_fresh_device);
    RUN(test_convert_pairs);
    RUN(test_ring_reuse);
    RUN(test_bad_dtype);
    RUN(test_exhaustive);
    tdm_backend_device_close(&g_dev);
    return test_summary();
}

#else

int main(void) {
    (void)test_cur_failed;
    (void)test_summary;
    return test_skip("built without CUDA (configure with -DTDM_CUDA=ON)");
}

#endif
