/* test_flux_tp.h — what the FLUX tensor-parallel tests share: a wide
 * random model whose 4 heads split over 2 and 4 ranks, the relative error
 * they are held to (max|a - b| / max|b| <= 1e-5: the TP sums run in another
 * order than one device's) and the parameter bytes a TP rank must hold,
 * computed from the parameter list. Used by test_flux_tp.c (threads as
 * ranks) and test_flux_tp_mpi.c (ranks under mpirun); builds on
 * test_flux_cp.h (fixtures, inputs, the one-device reference). */
#ifndef TDM_TEST_FLUX_TP_H
#define TDM_TEST_FLUX_TP_H

#include <math.h>

#include "test_flux_cp.h"

/* 4 heads of 64 (inner 256): TP 2 and 4, TP 2 x Ulysses 2 (2 heads each). */
#define FTP_WIDE4_CONFIG                                                             \
    "{\"_class_name\": \"FluxTransformer2DModel\", \"attention_head_dim\": 64, "       \
    "\"axes_dims_rope\": [8, 28, 28], \"guidance_embeds\": true, \"in_channels\": 64, " \
    "\"joint_attention_dim\": 64, \"num_attention_heads\": 4, \"num_layers\": 2, "      \
    "\"num_single_layers\": 2, \"out_channels\": null, \"patch_size\": 1, "            \
    "\"pooled_projection_dim\": 32}\n"

#define FTP_TOL 1e-5

/* max |a - b| / max |b| over n floats (NaN or Inf in a: INFINITY). */
static inline double ftp_rel_err(const float *a, const float *b, int64_t n) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > num) num = d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return den > 0.0 ? num / den : num;
}

static inline int ftp_ends(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* The float32 bytes rank `rank` of T tensor-parallel ranks holds for the
 * model of config_path, from its parameter list: tensors outside the blocks
 * and the blocks' norms and modulation linears whole, the bias of a
 * row-split output projection on rank 0 only, every other block tensor
 * (q/k/v, MLP and output projection weights, column-split biases) 1/T.
 * -1 on failure (reported). */
static inline int64_t ftp_param_bytes(const char *config_path, int T, int rank) {
    tdm_plist_t pl;
    int64_t bytes = 0;
    if (tdm_flux_plist(config_path, TDM_F32, &pl) != TDM_OK) {
        CHECK_MSG(0, "%s", tdm_last_error());
        return -1;
    }
    for (int64_t i = 0; i < pl.n; i++) {
        const char *nm = pl.e[i].name;
        int64_t n = 4;
        for (int d = 0; d < pl.e[i].ndim; d++) n *= pl.e[i].shape[d];
        const int single = strncmp(nm, "single_transformer_blocks.", 26) == 0;
        const int block = single || strncmp(nm, "transformer_blocks.", 19) == 0;
        if (!block || strstr(nm, ".norm")) bytes += n;
        else if (ftp_ends(nm, "to_out.0.bias") || ftp_ends(nm, "to_add_out.bias") ||
                 ftp_ends(nm, "net.2.bias") || (single && ftp_ends(nm, "proj_out.bias")))
            bytes += rank == 0 ? n : 0;
        else bytes += n / T;
    }
    tdm_plist_free(&pl);
    return bytes;
}

#endif
