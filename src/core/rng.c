/* rng.c — torch.Generator("cpu") and float32 torch.randn / torch.rand,
 * reproduced bit for bit (see rng.h). Written from the behaviour of ATen's
 * CPUGeneratorImpl (mt19937), DistributionsHelper.h (uniform and scalar
 * normal), native/cpu/DistributionTemplates.h (normal_fill) and, for the
 * x86 flavour, the Cephes polynomials of native/cpu/avx_mathfun.h as GCC
 * compiles them for torch's AVX2/AVX512 kernels (multiply-add pairs fused
 * into FMAs). This file is not a vectorized kernel: one value at a time,
 * with every rounding step spelled out so the compiler cannot change it. */
#include "core/rng.h"

#include <math.h>
#include <string.h>

/* Every fused multiply-add below is an explicit fmaf(), and no expression
 * here has the a * b + c shape a contracting compiler could fuse on its own
 * (keep it that way: -ffp-contract=fast is GCC's default for gnu11). */

#define MT_M 397
#define MT_MATRIX_A 0x9908b0dfu
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu

/* ---- mt19937 ---------------------------------------------------------- */

tdm_rng_flavor tdm_rng_flavor_default(void) {
#if defined(__x86_64__) || defined(_M_X64)
    return TDM_RNG_NORMAL_X86;
#else
    return TDM_RNG_NORMAL_LIBM;
#endif
}

void tdm_rng_seed(tdm_rng_t *r, uint64_t seed) {
    memset(r, 0, sizeof *r);
    r->seed = seed;
    r->state[0] = (uint32_t)(seed & 0xffffffffu);
    for (int32_t j = 1; j < TDM_RNG_MT_N; j++) {
        uint32_t p = r->state[j - 1];
        r->state[j] = 1812433253u * (p ^ (p >> 30)) + (uint32_t)j;
    }
    r->left = 1;               /* the first draw twists */
    r->next = 0;
    r->has_cached_normal = 0;
    r->flavor = tdm_rng_flavor_default();
}

void tdm_rng_set_flavor(tdm_rng_t *r, tdm_rng_flavor flavor) { r->flavor = flavor; }

static uint32_t mt_twist(uint32_t u, uint32_t v) {
    uint32_t y = (u & MT_UPPER) | (v & MT_LOWER);
    return (y >> 1) ^ ((v & 1u) ? MT_MATRIX_A : 0u);
}

/* Regenerates all 624 state words. */
static void mt_next_state(tdm_rng_t *r) {
    uint32_t *s = r->state;
    int32_t k = 0;
    for (; k < TDM_RNG_MT_N - MT_M; k++) s[k] = s[k + MT_M] ^ mt_twist(s[k], s[k + 1]);
    for (; k < TDM_RNG_MT_N - 1; k++)
        s[k] = s[k + MT_M - TDM_RNG_MT_N] ^ mt_twist(s[k], s[k + 1]);
    s[k] = s[k + MT_M - TDM_RNG_MT_N] ^ mt_twist(s[k], s[0]);
    r->left = TDM_RNG_MT_N;
    r->next = 0;
}

uint32_t tdm_rng_u32(tdm_rng_t *r) {
    if (--r->left == 0) mt_next_state(r);
    uint32_t y = r->state[r->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

uint64_t tdm_rng_u64(tdm_rng_t *r) {
    uint64_t hi = tdm_rng_u32(r);
    uint64_t lo = tdm_rng_u32(r);
    return (hi << 32) | lo;
}

/* ---- uniforms ---------------------------------------------------------- */

/* [0, 1) float from the low 24 bits of one 32-bit draw. */
static float uniform_f32(tdm_rng_t *r) {
    return (float)(tdm_rng_u32(r) & 0xffffffu) * (1.0f / 16777216.0f);
}

/* [0, 1) double from the low 53 bits of one 64-bit draw. */
static double uniform_f64(tdm_rng_t *r) {
    return (double)(tdm_rng_u64(r) & ((UINT64_C(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

void tdm_rng_rand(tdm_rng_t *r, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = uniform_f32(r);
}

/* ---- x86 flavour: avx_mathfun log and sincos, one lane ----------------- */
/* torch builds these kernels with GCC at -O2 -mfma and its default
 * -ffp-contract=fast, so every multiply whose only use is an add became one
 * FMA; each fmaf() below is one of those, each separate product is not.
 * (Checked against torch 2.15 on 32768 values: bit-identical; without the
 * fusions a few hundred values differ by 1-2 ulp.) */

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float    u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* Natural log of x > 0 as torch's log256_ps computes it (NaN for x <= 0). */
static float x86_log(float x) {
    const float one = 1.0f;
    int invalid = x <= 0.0f;
    if (!(x > 1.17549435e-38f)) x = 1.17549435e-38f;   /* max_ps(x, FLT_MIN) */
    uint32_t bits = f2u(x);
    int32_t  ex = (int32_t)(bits >> 23) - 0x7f;
    x = u2f((bits & ~0x7f800000u) | f2u(0.5f));          /* mantissa in [0.5, 1) */
    float e = (float)ex + one;
    int lt = x < 0.707106781186547524f;
    float tmp = lt ? x : 0.0f;
    x = x - one;
    e = e - (lt ? one : 0.0f);
    x = x + tmp;

    float z = x * x;
    float y = 7.0376836292E-2f;
    y = fmaf(y, x, -1.1514610310E-1f);
    y = fmaf(y, x, 1.1676998740E-1f);
    y = fmaf(y, x, -1.2420140846E-1f);
    y = fmaf(y, x, +1.4249322787E-1f);
    y = fmaf(y, x, -1.6668057665E-1f);
    y = fmaf(y, x, +2.0000714765E-1f);
    y = fmaf(y, x, -2.4999993993E-1f);
    y = fmaf(y, x, +3.3333331174E-1f);
    y = y * x;
    y = fmaf(y, z, e * -2.12194440e-4f);
    y = fmaf(-z, 0.5f, y);                                /* z * 0.5 is exact */
    x = x + y;
    x = fmaf(e, 0.693359375f, x);                         /* e * ln2_hi is exact */
    if (invalid) return NAN;
    return x;
}

/* sin and cos of x as torch's sincos256_ps computes them. */
static void x86_sincos(float x, float *s, float *c) {
    uint32_t sign_sin = f2u(x) & 0x80000000u;
    x = u2f(f2u(x) & 0x7fffffffu);
    float y = x * 1.27323954473516f;                    /* 4 / pi */
    /* cvttps: truncate; out of range (not reached for x < 2 pi) gives INT_MIN */
    uint32_t j = y < 2147483648.0f ? (uint32_t)(int32_t)y : 0x80000000u;
    j = (j + 1u) & ~1u;
    y = (float)(int32_t)j;
    uint32_t swap_sign_sin = (j & 4u) << 29;
    int poly1 = (j & 2u) == 0;                            /* cos poly for cos */
    x = fmaf(y, -0.78515625f, x);
    x = fmaf(y, -2.4187564849853515625e-4f, x);
    x = fmaf(y, -3.77489497744594108e-8f, x);
    uint32_t sign_cos = (~(j - 2u) & 4u) << 29;
    sign_sin ^= swap_sign_sin;

    float z = x * x;
    float yc = fmaf(2.443315711809948E-005f, z, -1.388731625493765E-003f);
    yc = fmaf(yc, z, 4.166664568298827E-002f);
    yc = yc * z;
    yc = fmaf(yc, z, -(z * 0.5f));
    yc = yc + 1.0f;

    float ys = fmaf(-1.9515295891E-4f, z, 8.3321608736E-3f);
    ys = fmaf(ys, z, -1.6666654611E-1f);
    ys = ys * z;
    ys = fmaf(ys, x, x);

    /* select: masked lanes become +0.0 and are added, as the kernel does */
    float ysin2 = poly1 ? ys : 0.0f;
    float ysin1 = poly1 ? 0.0f : yc;
    ys = ys - ysin2;
    yc = yc - ysin1;
    float vs = ysin1 + ysin2;
    float vc = yc + ys;
    *s = u2f(f2u(vs) ^ sign_sin);
    *c = u2f(f2u(vc) ^ sign_cos);
}

/* ---- normals ------------------------------------------------------------ */

/* Box-Muller on 16 uniforms in place, mean 0 and std 1: data[j] (j < 8)
 * becomes r cos t and data[j + 8] r sin t, with r = sqrt(-2 log(1 - data[j]))
 * and t = 2 pi data[j + 8]. */
static void normal_fill_16(float *data, tdm_rng_flavor flavor) {
    const float mean = 0.0f, std = 1.0f;
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - data[j];                        /* (0, 1] for log */
        float u2 = data[j + 8];
        float radius, sn, cs;
        if (flavor == TDM_RNG_NORMAL_X86) {
            radius = sqrtf(-2.0f * x86_log(u1));
            float theta = 6.28318548f * u2;               /* (float)(2 pi) */
            x86_sincos(theta, &sn, &cs);
        } else {
            radius = sqrtf(-2.0f * logf(u1));
            float theta = (float)(6.283185307179586 * (double)u2);
            cs = cosf(theta);
            sn = sinf(theta);
        }
        data[j] = fmaf(radius * cs, std, mean);
        data[j + 8] = fmaf(radius * sn, std, mean);
    }
}

/* One value of at::normal_distribution<double>(0, 1), with the generator's
 * cached second value. */
static double normal_f64(tdm_rng_t *r) {
    if (r->has_cached_normal) {
        r->has_cached_normal = 0;
        return r->cached_normal;
    }
    double u1 = uniform_f64(r);
    double u2 = uniform_f64(r);
    double radius = sqrt(-2.0 * log1p(-u2));
    double theta = 6.283185307179586 * u1;                /* 2 pi as a double */
    r->cached_normal = radius * sin(theta);
    r->has_cached_normal = 1;
    return radius * cos(theta);
}

void tdm_rng_randn(tdm_rng_t *r, float *out, int64_t n) {
    if (n <= 0) return;
    if (n < 16) {
        for (int64_t i = 0; i < n; i++) {
            double v = normal_f64(r);
            out[i] = (float)(v + 0.0);    /* torch's v * std + mean: -0 -> +0 */
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) out[i] = uniform_f32(r);
    for (int64_t i = 0; i + 16 <= n; i += 16) normal_fill_16(out + i, r->flavor);
    if (n % 16 != 0) {
        float *tail = out + n - 16;
        for (int i = 0; i < 16; i++) tail[i] = uniform_f32(r);
        normal_fill_16(tail, r->flavor);
    }
}
