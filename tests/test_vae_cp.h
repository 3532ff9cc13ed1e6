/* test_vae_cp.h — what the parallel VAE decode tests share: the tiny VAE
 * fixtures (SD's, FLUX's and a two-resnet one without mid-block attention),
 * latent sizes whose height the rank counts do not divide (and heights equal
 * to them: one row a rank), seeded latents (the same on every rank), the
 * one-device reference with its device peak, and the error measure. Used by
 * test_vae_cp.c (threads as ranks) and test_vae_cp_mpi.c (ranks under
 * mpirun). */
#ifndef TDM_TEST_VAE_CP_H
#define TDM_TEST_VAE_CP_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/vae.h"
#include "test.h"

#define VCP_FIX TDM_FIXTURES "/vae"
/* the bound of the parallel decode against tdm_vae_decode: max|a-b| / max|b| */
#define VCP_TOL 1e-5

typedef struct { const char *fixture; int64_t B, h, w; } vcp_case_t;

/* sd: 4 latent channels, 2 levels, attention; flux: 16 channels, no
 * post_quant_conv, 3 levels (two upsamplings); f32: 2 resnets a level, no
 * attention. Heights 5 and 7 divide by neither 2 nor 3; 3 gives every rank
 * of 3 one row; batch 2. */
static const vcp_case_t vcp_cases[] = {
    { "sd", 1, 5, 6 }, { "sd", 2, 7, 4 }, { "sd", 1, 3, 5 },
    { "flux", 1, 5, 4 }, { "flux", 1, 3, 6 },
    { "f32", 1, 7, 3 },
};
#define VCP_NCASES ((int)(sizeof vcp_cases / sizeof vcp_cases[0]))

/* Seeded values in [-1.5, 1.5). */
static inline void vcp_fill(float *x, int64_t n, uint32_t seed) {
    uint32_t z = seed * 2654435761u + 777u;
    for (int64_t i = 0; i < n; i++) {
        z = z * 1664525u + 1013904223u;
        x[i] = (float)((z >> 8) & 0xffff) / 21845.0f - 1.5f;
    }
}

static inline float *vcp_alloc(int64_t n) { return malloc((size_t)(n > 0 ? n : 1) * sizeof(float)); }

/* One case's latent, the one-device image and the one-device work-buffer
 * peak (bytes beyond what the device held before). */
typedef struct {
    int64_t B, L, h, w, H, W, nimg;
    float *z, *ref;
    int64_t peak;
} vcp_io_t;

/* The latent of case c (seeded) and its one-device decode by v, loaded on
 * dev (a CPU device). 0 on failure (a failed check). */
static inline int vcp_io_make(tdm_vae_t *v, tdm_device_t *dev, const vcp_case_t *c, uint32_t seed,
                              vcp_io_t *io) {
    const tdm_vae_info_t *in = tdm_vae_info(v);
    memset(io, 0, sizeof *io);
    io->B = c->B, io->L = in->latent_channels, io->h = c->h, io->w = c->w;
    io->H = c->h * in->scale_factor, io->W = c->w * in->scale_factor;
    io->nimg = io->B * in->out_channels * io->H * io->W;
    io->z = vcp_alloc(io->B * io->L * io->h * io->w);
    io->ref = vcp_alloc(io->nimg);
    if (!io->z || !io->ref) { CHECK_MSG(0, "out of memory"); return 0; }
    vcp_fill(io->z, io->B * io->L * io->h * io->w, seed);
    const int64_t before = dev->cur_bytes;
    dev->peak_bytes = dev->cur_bytes;
    tdm_status st = tdm_vae_decode(v, io->z, io->B, io->h, io->w, io->ref);
    CHECK_MSG(st == TDM_OK, "%s: one-device decode: %s", c->fixture, tdm_last_error());
    io->peak = dev->peak_bytes - before;
    return st == TDM_OK;
}

static inline void vcp_io_free(vcp_io_t *io) {
    free(io->z);
    free(io->ref);
    memset(io, 0, sizeof *io);
}

/* The normalized error of img against the reference (test_rel_err). */
static inline double vcp_err(const vcp_io_t *io, const float *img) {
    return test_rel_err(img, io->ref, (long)io->nimg);
}

#endif
