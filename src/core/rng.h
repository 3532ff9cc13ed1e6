/* rng.h — torch-compatible CPU random numbers: the mt19937 generator of
 * torch.Generator("cpu") and the float32 torch.randn / torch.rand built on
 * it, reproduced bit for bit, so that a seed gives diffusers' initial
 * latents and per-step noise. Not a general-purpose RNG library: only the
 * draws tandem needs, with torch's exact consumption of generator state.
 *
 * torch.randn(float32, >= 16 elements) runs a Box-Muller kernel whose
 * log/sin/cos depend on torch's CPU capability, so the generator carries a
 * "normal flavour" naming which one to reproduce (see tdm_rng_flavor). */
#ifndef TDM_RNG_H
#define TDM_RNG_H

#include <stdint.h>

#define TDM_RNG_MT_N 624

/* Which torch Box-Muller kernel tdm_rng_randn reproduces for >= 16 values.
 * Both give the same mt19937 stream and the same < 16-element path; they
 * differ by at most a few float ulps. */
typedef enum {
    /* x86-64 torch (ATen CPU capability AVX2 or AVX512): the avx_mathfun
     * (Cephes) log/sincos polynomials with torch's GCC-contracted FMAs. */
    TDM_RNG_NORMAL_X86 = 0,
    /* torch's scalar kernel (capability DEFAULT, aarch64): libm logf,
     * cosf, sinf. Matches torch where both use the same libm. */
    TDM_RNG_NORMAL_LIBM = 1
} tdm_rng_flavor;

/* The state of one torch.Generator("cpu"). Plain data: copy it to fork a
 * stream, no heap, no cleanup. Seed it with tdm_rng_seed before use. */
typedef struct {
    uint32_t state[TDM_RNG_MT_N];
    int32_t  next;                 /* index of the next state word */
    int32_t  left;                 /* words left before the next twist, + 1 */
    uint64_t seed;                 /* as passed to tdm_rng_seed */
    int32_t  has_cached_normal;    /* torch's next_double_normal_sample */
    double   cached_normal;
    tdm_rng_flavor flavor;
} tdm_rng_t;

/* The flavour torch uses on the machine this file was built for:
 * TDM_RNG_NORMAL_X86 on x86-64, TDM_RNG_NORMAL_LIBM elsewhere. (torch on an
 * x86-64 CPU without AVX2 uses the libm kernel; set it by hand there.) */
tdm_rng_flavor tdm_rng_flavor_default(void);

/* Same as torch.Generator("cpu").manual_seed(seed): mt19937 initialised from
 * the low 32 bits of `seed` (torch ignores the high bits for the stream),
 * cached normal sample dropped. Sets the flavour to
 * tdm_rng_flavor_default(). Python callers passing a negative seed give
 * the two's-complement uint64, as torch does. */
void tdm_rng_seed(tdm_rng_t *r, uint64_t seed);

/* Chooses the Box-Muller kernel for later tdm_rng_randn calls; keeps the
 * stream position. */
void tdm_rng_set_flavor(tdm_rng_t *r, tdm_rng_flavor flavor);

/* Next 32-bit output of mt19937 (torch CPUGeneratorImpl::random). */
uint32_t tdm_rng_u32(tdm_rng_t *r);

/* Next 64-bit output (CPUGeneratorImpl::random64): two 32-bit outputs,
 * the first one in the high half. */
uint64_t tdm_rng_u64(tdm_rng_t *r);

/* out[0..n) = torch.randn(n, generator=g, dtype=torch.float32) on CPU, and
 * the generator advances exactly as torch's does:
 *   n >= 16: n uniforms (24-bit floats), Box-Muller over 16-value blocks
 *            (u1 = 1 - first 8, u2 = next 8; cos to the first 8, sin to
 *            the next); if n % 16 != 0 the last 16 values are redrawn from
 *            16 fresh uniforms and transformed again. Cache untouched.
 *   n < 16:  one value at a time in double precision (53-bit uniforms),
 *            the sin half of each pair cached in the generator and returned
 *            by the next scalar draw, across calls.
 * A multi-dimensional contiguous tensor draws as its numel. n <= 0 draws
 * nothing. `out` must hold n floats. */
void tdm_rng_randn(tdm_rng_t *r, float *out, int64_t n);

/* out[0..n) = torch.rand(n, generator=g, dtype=torch.float32) on CPU:
 * one 32-bit output per value, low 24 bits scaled by 2^-24. */
void tdm_rng_rand(tdm_rng_t *r, float *out, int64_t n);

#endif
