/* test_flux_cp.h — what the FLUX context-parallel tests share: the tiny
 * fixtures, the shapes (text and image lengths not divisible by the rank
 * counts, ranks without text rows), seeded inputs (the same on every rank)
 * and the one-device reference. Used by test_flux_cp.c (threads as ranks)
 * and test_flux_cp_mpi.c (ranks under mpirun). */
#ifndef TDM_TEST_FLUX_CP_H
#define TDM_TEST_FLUX_CP_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "models/flux.h"
#include "nn/ptree.h"
#include "test.h"

#define FCP_FIX TDM_FIXTURES "/flux"

typedef struct { int64_t B, T, N; } fcp_shape_t;

/* Two kinds of model. Bit identity needs every per-row op to give a row
 * the same bits whatever rows share its call. The tiny fixtures' 32-wide
 * linears over a rank's 1-3 rows take the CPU GEMM's small paths (computed
 * in order, or padded to OpenBLAS's regular kernel: backend/cpu/ops.c);
 * a random-weight model written here, 3 heads of 128 (inner 384,
 * out_channels 64), on sequences that give every rank at least 10 text rows
 * and 20 image rows per batch element at U <= 4, takes its plain blocks, as
 * FLUX.1's linears (3072 wide, hundreds of rows per rank) do. */
#define FCP_WIDE_CONFIG                                                              \
    "{\"_class_name\": \"FluxTransformer2DModel\", \"attention_head_dim\": 128, "      \
    "\"axes_dims_rope\": [16, 56, 56], \"guidance_embeds\": true, \"in_channels\": 64, " \
    "\"joint_attention_dim\": 64, \"num_attention_heads\": 3, \"num_layers\": 1, "      \
    "\"num_single_layers\": 1, \"out_channels\": null, \"patch_size\": 1, "            \
    "\"pooled_projection_dim\": 32}\n"

static const fcp_shape_t fcp_wide_shapes[] = { { 1, 43, 83 }, { 2, 41, 81 } };
#define FCP_NWIDE ((int)(sizeof fcp_wide_shapes / sizeof fcp_wide_shapes[0]))

/* dev: guidance, 2 heads; schnell: no guidance, 2 heads of 8; bf16: bf16
 * variant, 3 heads (padding over 2 and 4 ranks), out_channels 8 != 16. */
typedef struct { const char *name, *variant; } fcp_fixture_t;
static const fcp_fixture_t fcp_fixtures[] = { { "dev", NULL }, { "schnell", NULL },
                                              { "bf16", "bf16" } };
#define FCP_NFIX ((int)(sizeof fcp_fixtures / sizeof fcp_fixtures[0]))

static const fcp_shape_t fcp_shapes[] = { { 2, 5, 7 }, { 1, 1, 13 }, { 2, 0, 9 }, { 1, 11, 4 } };
#define FCP_NSHAPES ((int)(sizeof fcp_shapes / sizeof fcp_shapes[0]))

/* One shape's inputs and the one-device output, all malloc'd. */
typedef struct {
    int64_t B, T, N, C, Cout;
    float *img, *txt, *pooled, *t, *g, *iid, *tid, *ref;   /* g NULL without guidance */
} fcp_io_t;

/* Seeded values in [-1, 1). */
static inline void fcp_fill(float *x, int64_t n, uint32_t seed) {
    uint32_t z = seed * 2654435761u + 777u;
    for (int64_t i = 0; i < n; i++) {
        z = z * 1664525u + 1013904223u;
        x[i] = (float)((z >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
}

static inline float *fcp_alloc(int64_t n) { return malloc((size_t)(n > 0 ? n : 1) * sizeof(float)); }

static inline void fcp_io_free(fcp_io_t *io) {
    free(io->img), free(io->txt), free(io->pooled), free(io->t), free(io->g);
    free(io->iid), free(io->tid), free(io->ref);
    memset(io, 0, sizeof(*io));
}

/* Fills io for shape s of the model m (inputs seeded by seed) and runs
 * tdm_flux_forward for io->ref. 0 on failure (reported). */
static inline int fcp_io_make(tdm_flux_t *m, const fcp_shape_t *s, uint32_t seed, fcp_io_t *io) {
    const tdm_flux_info_t *c = tdm_flux_info(m);
    const int64_t B = s->B, T = s->T, N = s->N;
    memset(io, 0, sizeof(*io));
    io->B = B, io->T = T, io->N = N, io->C = c->in_channels, io->Cout = c->out_channels;
    io->img = fcp_alloc(B * N * io->C);
    io->txt = fcp_alloc(B * T * c->joint_attention_dim);
    io->pooled = fcp_alloc(B * c->pooled_projection_dim);
    io->t = fcp_alloc(B);
    io->g = c->guidance_embeds ? fcp_alloc(B) : NULL;
    io->iid = fcp_alloc(N * 3);
    io->tid = fcp_alloc(T * 3);
    io->ref = fcp_alloc(B * N * io->Cout);
    if (!io->img || !io->txt || !io->pooled || !io->t || (c->guidance_embeds && !io->g) ||
        !io->iid || !io->tid || !io->ref) {
        CHECK_MSG(0, "out of memory");
        return 0;
    }
    fcp_fill(io->img, B * N * io->C, seed);
    fcp_fill(io->txt, B * T * c->joint_attention_dim, seed + 1);
    fcp_fill(io->pooled, B * c->pooled_projection_dim, seed + 2);
    for (int64_t b = 0; b < B; b++) {
        io->t[b] = 0.9f - 0.3f * (float)b;
        if (io->g) io->g[b] = 3.5f + (float)b;
    }
    for (int64_t i = 0; i < N; i++)   /* a 4-wide grid */
        io->iid[i * 3] = 0, io->iid[i * 3 + 1] = (float)(i / 4), io->iid[i * 3 + 2] = (float)(i % 4);
    for (int64_t i = 0; i < T; i++)   /* non-zero text ids: the tables' rows must follow */
        io->tid[i * 3] = 0.5f * (float)i, io->tid[i * 3 + 1] = 1, io->tid[i * 3 + 2] = (float)(T - i);
    tdm_status st = tdm_flux_forward(m, io->img, B, N, io->txt, T, io->pooled, io->t, io->g,
                                     io->iid, io->tid, io->ref);
    CHECK_MSG(st == TDM_OK, "reference forward: %s", tdm_last_error());
    return st == TDM_OK;
}

/* Writes a random model of config.json text `config` (seeded weights
 * scaled by 1/sqrt(fan-in), RMSNorm weights near 1) to root/transformer.
 * 0 on failure (reported). */
static inline int fcp_make_model(const char *root, const char *config) {
    char path[1200];
    tdm_plist_t pl;
    FILE *f;
    int ok = 1;
    snprintf(path, sizeof path, "%s/transformer", root);
    mkdir(root, 0755);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/transformer/config.json", root);
    if (!(f = fopen(path, "w")) || fputs(config, f) < 0 || fclose(f) != 0) {
        CHECK_MSG(0, "cannot write %s", path);
        return 0;
    }
    if (tdm_flux_plist(path, TDM_F32, &pl) != TDM_OK) {
        CHECK_MSG(0, "%s", tdm_last_error());
        return 0;
    }
    const int n = (int)pl.n;
    const char **names = calloc((size_t)n, sizeof(*names));
    int *nd = calloc((size_t)n, sizeof(*nd));
    const int64_t **shapes = calloc((size_t)n, sizeof(*shapes));
    float **data = calloc((size_t)n, sizeof(*data));
    ok = names && nd && shapes && data;
    for (int i = 0; ok && i < n; i++) {
        const tdm_pentry_t *e = &pl.e[i];
        int64_t cnt = 1;
        for (int d = 0; d < e->ndim; d++) cnt *= e->shape[d];
        names[i] = e->name, nd[i] = e->ndim, shapes[i] = e->shape;
        if (!(data[i] = fcp_alloc(cnt))) { ok = 0; break; }
        fcp_fill(data[i], cnt, 1000u + (uint32_t)i);
        const float sc = e->ndim == 2 ? 1.0f / sqrtf((float)e->shape[1]) : 0.1f;
        const float add = strstr(e->name, "norm_") ? 1.0f : 0.0f;
        for (int64_t j = 0; j < cnt; j++) data[i][j] = add + sc * data[i][j];
    }
    snprintf(path, sizeof path, "%s/transformer/diffusion_pytorch_model.safetensors", root);
    if (ok) ok = tdm_safetensors_write_f32(path, n, names, nd, shapes,
                                           (const float *const *)data, 0, NULL) == TDM_OK;
    CHECK_MSG(ok, "cannot write the wide model: %s", tdm_last_error());
    for (int i = 0; data && i < n; i++) free(data[i]);
    free(names), free(nd), free(shapes), free(data);
    tdm_plist_free(&pl);
    return ok;
}

/* Writes the wide model (FCP_WIDE_CONFIG) to root/transformer. 0 on
 * failure (reported). */
static inline int fcp_make_wide(const char *root) { return fcp_make_model(root, FCP_WIDE_CONFIG); }

/* Removes what fcp_make_wide or fcp_make_model wrote. */
static inline void fcp_remove_wide(const char *root) {
    char p[1200];
    snprintf(p, sizeof p, "%s/transformer/config.json", root);
    unlink(p);
    snprintf(p, sizeof p, "%s/transformer/diffusion_pytorch_model.safetensors", root);
    unlink(p);
    snprintf(p, sizeof p, "%s/transformer", root);
    rmdir(p);
    rmdir(root);
}

/* Index of the first float where a and b differ in bits, -1 if none. */
static inline int64_t fcp_first_diff(const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) return i;
    return -1;
}

#endif
