/* test_rng.c — tdm_rng against torch.Generator("cpu") + torch.randn/rand.
 * Golden values: tests/fixtures/rng/randn_{x86,libm}.txt, written by
 * tools/ref/rng_ref.py from torch (format described there). Every value
 * must match torch's float32 bits exactly. */
// label: golden
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "test.h"

static uint32_t bits_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* Distance in float ulps between two finite floats (monotonic mapping). */
static int64_t ulp_diff(uint32_t a, uint32_t b) {
    int64_t ia = (a & 0x80000000u) ? -(int64_t)(a & 0x7fffffffu) : (int64_t)a;
    int64_t ib = (b & 0x80000000u) ? -(int64_t)(b & 0x7fffffffu) : (int64_t)b;
    return ia > ib ? ia - ib : ib - ia;
}

static uint64_t fnv1a(const float *x, int64_t n) {
    uint64_t h = 0xcbf29ce484222325u;
    for (int64_t i = 0; i < n; i++) {
        h ^= bits_of(x[i]);
        h *= 0x100000001b3u;
    }
    return h;
}

/* Runs every case of one fixture file with the given flavour; returns the
 * number of draws compared (0 when the file could not be read). */
static int64_t run_fixture(const char *file, tdm_rng_flavor flavor) {
    char path[1024];
    snprintf(path, sizeof path, "%s/rng/%s", TDM_FIXTURES, file);
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "cannot open %s", path);
    if (!f) return 0;

    tdm_rng_t r;
    char tok[256], name[128] = "?";
    int64_t ndraws = 0;
    while (fscanf(f, "%255s", tok) == 1) {
        if (tok[0] == '#') {                        /* comment line */
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n') {}
            continue;
        }
        if (strcmp(tok, "end") == 0) continue;
        if (strcmp(tok, "case") == 0) {
            unsigned long long seed;
            if (fscanf(f, "%127s %llu", name, &seed) != 2) break;
            tdm_rng_seed(&r, (uint64_t)seed);
            tdm_rng_set_flavor(&r, flavor);
            continue;
        }
        int is_randn = strcmp(tok, "randn") == 0;
        CHECK_MSG(is_randn || strcmp(tok, "rand") == 0, "%s: bad token '%s'", file, tok);
        if (!is_randn && strcmp(tok, "rand") != 0) break;

        long long n, nh, nt;
        double want_sum;
        unsigned long long want_hash;
        if (fscanf(f, "%lld %lf %llx %lld %lld", &n, &want_sum, &want_hash, &nh, &nt) != 5) {
            CHECK_MSG(0, "%s: truncated record in case %s", file, name);
            break;
        }
        float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
        if (!x) { CHECK(x != NULL); break; }
        if (is_randn) tdm_rng_randn(&r, x, n);
        else tdm_rng_rand(&r, x, n);
        ndraws++;

        int64_t worst = 0, worst_i = -1, nbad = 0;
        for (long long k = 0; k < nh + nt; k++) {
            unsigned int want;
            if (fscanf(f, "%x", &want) != 1) { CHECK_MSG(0, "%s: short value list", file); break; }
            int64_t i = k < nh ? k : n - nt + (k - nh);
            int64_t d = ulp_diff(bits_of(x[i]), (uint32_t)want);
            if (d) nbad++;
            if (d > worst) { worst = d; worst_i = i; }
        }
        double sum = 0, asum = 0;
        for (int64_t i = 0; i < n; i++) { sum += x[i]; asum += fabs(x[i]); }
        uint64_t hash = fnv1a(x, n);
        CHECK_MSG(worst == 0, "%s case %s %s(%lld): %" PRId64 " stored values differ, "
                  "worst %" PRId64 " ulp at [%" PRId64 "]",
                  file, name, tok, n, nbad, worst, worst_i);
        CHECK_MSG(hash == (uint64_t)want_hash, "%s case %s %s(%lld): hash %016" PRIx64
                  " want %016llx (sum %.17g want %.17g)", file, name, tok, n, hash,
                  want_hash, sum, want_sum);
        CHECK_MSG(fabs(sum - want_sum) <= 1e-9 * (1.0 + asum), "%s case %s %s(%lld): "
                  "sum %.17g want %.17g", file, name, tok, n, sum, want_sum);
        free(x);
    }
    fclose(f);
    return ndraws;
}

/* Independent of torch: the C++ standard fixes std::mt19937's output for
 * the default seed 5489 (first 3499211612, 10000th 4123659995). */
TEST(mt19937_known_values) {
    tdm_rng_t r;
    tdm_rng_seed(&r, 5489);
    uint32_t first = tdm_rng_u32(&r), v = first;
    for (int i = 1; i < 10000; i++) v = tdm_rng_u32(&r);
    CHECK_MSG(first == 3499211612u, "first %u", first);
    CHECK_MSG(v == 4123659995u, "10000th %u", v);
}

/* random64 = first draw in the high half, second in the low half. */
TEST(u64_is_two_u32) {
    tdm_rng_t a, b;
    tdm_rng_seed(&a, 7);
    tdm_rng_seed(&b, 7);
    uint64_t w = tdm_rng_u64(&a);
    uint64_t hi = tdm_rng_u32(&b), lo = tdm_rng_u32(&b);
    CHECK(w == ((hi << 32) | lo));
}

/* torch seeds mt19937 from the low 32 bits only. */
TEST(seed_uses_low_32_bits) {
    tdm_rng_t a, b;
    float x[40], y[40];
    tdm_rng_seed(&a, 5);
    tdm_rng_seed(&b, (UINT64_C(1) << 32) + 5);
    tdm_rng_randn(&a, x, 40);
    tdm_rng_randn(&b, y, 40);
    CHECK(memcmp(x, y, sizeof x) == 0);
    CHECK(a.seed == 5 && b.seed == (UINT64_C(1) << 32) + 5);
}

TEST(randn_x86_matches_torch) {
    int64_t n = run_fixture("randn_x86.txt", TDM_RNG_NORMAL_X86);
    CHECK_MSG(n > 80, "only %" PRId64 " draws compared", n);
}

TEST(randn_libm_matches_torch) {
    int64_t n = run_fixture("randn_libm.txt", TDM_RNG_NORMAL_LIBM);
    CHECK_MSG(n > 80, "only %" PRId64 " draws compared", n);
}

/* The generator is plain data: a copy continues the same stream, including
 * the cached scalar normal. */
TEST(copy_forks_stream) {
    tdm_rng_t a, b;
    float x[37], y[37];
    tdm_rng_seed(&a, 123);
    tdm_rng_randn(&a, x, 3);                 /* leaves a cached value */
    b = a;
    tdm_rng_randn(&a, x, 1);
    tdm_rng_randn(&b, y, 1);
    CHECK(bits_of(x[0]) == bits_of(y[0]));
    tdm_rng_randn(&a, x, 37);
    tdm_rng_randn(&b, y, 37);
    CHECK(memcmp(x, y, sizeof x) == 0);
}

/* n <= 0 draws nothing and leaves the state alone. */
TEST(empty_draws_nothing) {
    tdm_rng_t a, b;
    tdm_rng_seed(&a, 9);
    b = a;
    float x = 42.0f;
    tdm_rng_randn(&a, &x, 0);
    tdm_rng_randn(&a, &x, -3);
    tdm_rng_rand(&a, &x, 0);
    CHECK(x == 42.0f);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
}

/* The two flavours share the stream and differ by rounding only (absolute:
 * near zeros of sin/cos the relative difference is large); the scalar (< 16)
 * path does not depend on the flavour. */
TEST(flavours_agree_closely) {
    enum { N = 4096 };
    static float x[N], y[N];
    tdm_rng_t a, b;
    tdm_rng_seed(&a, 2024);
    tdm_rng_seed(&b, 2024);
    tdm_rng_set_flavor(&a, TDM_RNG_NORMAL_X86);
    tdm_rng_set_flavor(&b, TDM_RNG_NORMAL_LIBM);
    tdm_rng_randn(&a, x, N);
    tdm_rng_randn(&b, y, N);
    double worst = 0;
    int64_t ndiff = 0;
    for (int i = 0; i < N; i++) {
        double d = fabs((double)x[i] - (double)y[i]);
        if (d > 0) ndiff++;
        if (d > worst) worst = d;
    }
    CHECK_MSG(worst <= 5e-6, "worst |diff| %g (%" PRId64 " of %d differ)", worst, ndiff, N);
    printf("  x86 vs libm flavour: %" PRId64 " of %d values differ, max |diff| %.3g\n",
           ndiff, N, worst);
    double m = 0, v = 0;                      /* and they are normals */
    for (int i = 0; i < N; i++) m += y[i];
    m /= N;
    for (int i = 0; i < N; i++) v += (y[i] - m) * (y[i] - m);
    v /= N;
    CHECK_MSG(fabs(m) < 0.08 && fabs(v - 1) < 0.08, "mean %g var %g", m, v);
    tdm_rng_randn(&a, x, 15);
    tdm_rng_randn(&b, y, 15);
    CHECK(memcmp(x, y, 15 * sizeof *x) == 0);
}

int main(void) {
    RUN(mt19937_known_values);
    RUN(u64_is_two_u32);
    RUN(seed_uses_low_32_bits);
    RUN(randn_x86_matches_torch);
    RUN(randn_libm_matches_torch);
    RUN(copy_forks_stream);
    RUN(empty_draws_nothing);
    RUN(flavours_agree_closely);
    return test_summary();
}
