/* vae.c — diffusers AutoencoderKL in float32 on any device: config, weights,
 * Encoder / Decoder forward (diffusers models/autoencoders/vae.py) built from
 * ResnetBlock2D (temb None), the single-head mid-block Attention, Downsample2D
 * (pad right/bottom by 1, 3×3 stride-2 conv) and Upsample2D (nearest 2×,
 * 3×3 conv). Every step is a tdm_op_* on the model's device; this file never
 * touches activation or weight memory itself. Not here: tiling/slicing,
 * latent scaling, the kernels (backend/).
 *
 * Forward passes run over three activation buffers of the largest
 * activation size plus three attention buffers and one im2col scratch. A
 * dry run of the same code (run_t.dry) sizes them first, so the shape logic
 * exists once.
 *
 * The parallel decode (tdm_vae_decode_cp) runs the same code on a row band
 * of every activation (nn/band.h): run_t.band set, the convolutions, norms
 * and ResNet blocks go through the band functions (halo rows, statistics
 * gathered over the group), the mid-block attention takes its queries from
 * the band and its keys and values from the whole image (gathered), and the
 * output bands are gathered into the whole image on every rank. */
#include "models/vae.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "io/config.h"
#include "io/folder.h"
#include "io/safetensors.h"
#include "nn/attention.h"
#include "nn/band.h"
#include "nn/conv.h"
#include "nn/group.h"
#include "nn/norm.h"
#include "nn/ptree.h"
#include "nn/resnet.h"
#include "nn/weights.h"

#define VAE_MAX_LEVELS 8
#define VAE_MAX_LPB    64
/* Bounds of config sizes, 10-100x those of the SD/FLUX VAEs (4 levels of
 * 128..512 channels, 3 image and 4 or 16 latent channels). */
#define VAE_MAX_CHANNELS    65536
#define VAE_MAX_IO_CHANNELS 1024
#define VAE_EPS        1e-6f

/* ---- parameters -------------------------------------------------------- */

typedef struct {
    tdm_nn_norm_t gn;
    tdm_nn_attention_t at;   /* one head of c channels; every projection c → c with bias */
    int64_t c;
} attn_t;

typedef struct {
    tdm_nn_resnet_t r0, r1;
    attn_t at;
    int has_attn;
} mid_t;

typedef struct {
    tdm_nn_resnet_t *res;    /* nres blocks */
    int nres;
    tdm_nn_conv_t samp;      /* down- or upsampler conv */
    int has_samp;
} level_t;

struct tdm_vae {
    tdm_vae_info_t info;
    tdm_device_t *dev;
    int nlev;                /* len(block_out_channels) */
    int64_t ch[VAE_MAX_LEVELS];
    int64_t lpb, groups;
    int mid_attn, use_qc, use_pqc;
    int decoder_only;        /* encoder and quant_conv not loaded (tdm_vae_load_decoder) */
    /* encoder */
    tdm_nn_conv_t e_in, e_out;
    level_t e_lev[VAE_MAX_LEVELS];
    mid_t e_mid;
    tdm_nn_norm_t e_nout;
    tdm_nn_conv_t qc, pqc;
    /* decoder; d_lev[i] runs i-th, at channels ch[nlev-1-i] */
    tdm_nn_conv_t d_in, d_out;
    mid_t d_mid;
    level_t d_lev[VAE_MAX_LEVELS];
    tdm_nn_norm_t d_nout;
    /* the loaded tensors; w.off: those of a split load kept in host RAM or
     * on disk, brought to `dev` one unit (vae_unit_of) at a time; -1: the
     * top-level convs and norms */
    tdm_weights_t w;
};

/* ---- config ------------------------------------------------------------- */

static const char *const vae_known_keys[] = {
    "in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
    "layers_per_block", "act_fn", "latent_channels", "norm_num_groups", "sample_size",
    "scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast",
    "use_quant_conv", "use_post_quant_conv", "mid_block_add_attention", NULL};

static tdm_status vae_parse_config(tdm_vae_t *v, const char *path) {
    tdm_status st = TDM_OK;
    tdm_json_t j = {0};
    char s[64];
    char types[VAE_MAX_LEVELS][64];
    int n = 0, nt = 0;
    int64_t ss[2];
    TDM_TRY(tdm_json_load(&j, path));

    /* every key must be one this code implements (or metadata: _name) */
    const cJSON *it;
    cJSON_ArrayForEach(it, j.root) {
        if (!it->string || it->string[0] == '_') continue;
        int known = 0;
        for (int i = 0; vae_known_keys[i]; i++)
            if (!strcmp(it->string, vae_known_keys[i])) known = 1;
        if (!known) {
            st = tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: config key \"%s\" is not supported", path,
                            it->string);
            goto fail;
        }
    }
    TDM_TRY(tdm_json_str(&j, "_class_name", "AutoencoderKL", s, sizeof s));
    if (strcmp(s, "AutoencoderKL")) {
        st = tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: _class_name \"%s\" is not AutoencoderKL", path, s);
        goto fail;
    }

    tdm_vae_info_t *in = &v->info;
    TDM_TRY(tdm_json_int_range(&j, "in_channels", 3, 1, VAE_MAX_IO_CHANNELS, &in->in_channels));
    TDM_TRY(tdm_json_int_range(&j, "out_channels", 3, 1, VAE_MAX_IO_CHANNELS, &in->out_channels));
    TDM_TRY(tdm_json_int_range(&j, "latent_channels", 4, 1, VAE_MAX_IO_CHANNELS, &in->latent_channels));
    TDM_TRY(tdm_json_int_range(&j, "layers_per_block", 1, 1, VAE_MAX_LPB, &v->lpb));
    TDM_TRY(tdm_json_int_range(&j, "norm_num_groups", 32, 1, VAE_MAX_CHANNELS, &v->groups));
    TDM_TRY(tdm_json_float(&j, "scaling_factor", 0.18215, &in->scaling_factor));
    TDM_TRY(tdm_json_float(&j, "shift_factor", 0.0, &in->shift_factor));
    TDM_TRY(tdm_json_bool(&j, "use_quant_conv", 1, &v->use_qc));
    TDM_TRY(tdm_json_bool(&j, "use_post_quant_conv", 1, &v->use_pqc));
    TDM_TRY(tdm_json_bool(&j, "mid_block_add_attention", 1, &v->mid_attn));
    TDM_TRY(tdm_json_int_array(&j, "sample_size", 1, ss, 2, &n));
    for (int i = 0; i < n; i++)
        if (ss[i] < 1 || ss[i] > TDM_MAX_IMAGE_SIDE) {
            st = tdm_json_range_error(&j, "sample_size", ss[i], 1, TDM_MAX_IMAGE_SIDE);
            goto fail;
        }
    in->sample_size = n > 0 ? ss[0] : 32;

    TDM_TRY(tdm_json_str(&j, "act_fn", "silu", s, sizeof s));
    if (strcmp(s, "silu") && strcmp(s, "swish")) {
        st = tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: act_fn \"%s\" is not supported (silu only)",
                        path, s);
        goto fail;
    }

    {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(j.root, "block_out_channels");
        if (cJSON_IsArray(b) && cJSON_GetArraySize(b) > VAE_MAX_LEVELS) {
            st = tdm_errorf(TDM_ERR_MODEL, "%s: block_out_channels has %d levels, out of range [1, %d]", path,
                            cJSON_GetArraySize(b), VAE_MAX_LEVELS);
            goto fail;
        }
    }
    TDM_TRY(tdm_json_int_array(&j, "block_out_channels", 1, v->ch, VAE_MAX_LEVELS, &n));
    if (n == 0) { v->ch[0] = 64; n = 1; }
    v->nlev = n;
    TDM_TRY(tdm_json_str_array(&j, "down_block_types", types, VAE_MAX_LEVELS, &nt));
    if (nt == 0) { strcpy(types[0], "DownEncoderBlock2D"); nt = 1; }
    if (nt != n) {
        st = tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: down_block_types has %d entries but "
                        "block_out_channels has %d", path, nt, n);
        goto fail;
    }
    for (int i = 0; i < nt; i++)
        if (strcmp(types[i], "DownEncoderBlock2D")) {
            st = tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: down_block_types[%d] \"%s\" is not "
                            "supported (DownEncoderBlock2D only)", path, i, types[i]);
            goto fail;
        }
    TDM_TRY(tdm_json_str_array(&j, "up_block_types", types, VAE_MAX_LEVELS, &nt));
    if (nt == 0) { strcpy(types[0], "UpDecoderBlock2D"); nt = 1; }
    if (nt != n) {
        st = tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: up_block_types has %d entries but "
                        "block_out_channels has %d", path, nt, n);
        goto fail;
    }
    for (int i = 0; i < nt; i++)
        if (strcmp(types[i], "UpDecoderBlock2D")) {
            st = tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: up_block_types[%d] \"%s\" is not "
                            "supported (UpDecoderBlock2D only)", path, i, types[i]);
            goto fail;
        }

    for (int i = 0; i < n; i++)
        if (v->ch[i] < 1 || v->ch[i] > VAE_MAX_CHANNELS) {
            st = tdm_json_range_error(&j, "block_out_channels", v->ch[i], 1, VAE_MAX_CHANNELS);
            goto fail;
        }
    for (int i = 0; i < n; i++)
        if (v->ch[i] % v->groups) {
            st = tdm_errorf(TDM_ERR_MODEL, "%s: block_out_channels[%d] = %lld is not a positive "
                            "multiple of norm_num_groups %lld", path, i, (long long)v->ch[i],
                            (long long)v->groups);
            goto fail;
        }
    in->scale_factor = (int64_t)1 << (n - 1);
fail:
    tdm_json_free(&j);
    return st;
}

/* ---- weights -------------------------------------------------------------
 * One walk over the model (vae_load_weights) binds every tensor through
 * v->w (nn/weights.h), which loads it from the weight files onto `dev` or, in
 * list mode, lists it with its shape (and the no-split modules) without
 * touching any file. Every tensor of 2+ dims here is a Conv or Linear weight
 * feeding only a GEMM (stored in the device's GEMM dtype); biases and norms
 * stay float32. The walk follows the registration order of diffusers' modules
 * (encoder, decoder with its up blocks before its mid block, quant_conv,
 * post_quant_conv; a mid block's attention before its resnets), which is
 * the order of named_parameters(). */

/* Streaming units of a split VAE: each resnet and each sampler of a level
 * and each mid block (a no-split unit of the plan), numbered
 * part · 4096 + level · 64 + index (index 63: the sampler; part 1 decoder up
 * blocks, 2 encoder down blocks, 3 decoder mid block, 4 encoder mid block);
 * -1 for the top-level convs and norms. */
#define VAE_UNIT_SAMPLER 63
static int64_t vae_unit(int part, int64_t level, int64_t idx) {
    return part * 4096 + level * 64 + idx;
}

static int64_t vae_unit_of(const void *ctx, const char *name) {
    (void)ctx;
    int i = 0, j = 0, n = 0;
    if (!strncmp(name, "decoder.mid_block.", 18)) return vae_unit(3, 0, 0);
    if (!strncmp(name, "encoder.mid_block.", 18)) return vae_unit(4, 0, 0);
    if (sscanf(name, "decoder.up_blocks.%d.resnets.%d.%n", &i, &j, &n) == 2 && n)
        return vae_unit(1, i, j);
    if (sscanf(name, "decoder.up_blocks.%d.upsamplers.%n", &i, &n) == 1 && n)
        return vae_unit(1, i, VAE_UNIT_SAMPLER);
    if (sscanf(name, "encoder.down_blocks.%d.resnets.%d.%n", &i, &j, &n) == 2 && n)
        return vae_unit(2, i, j);
    if (sscanf(name, "encoder.down_blocks.%d.downsamplers.%n", &i, &n) == 1 && n)
        return vae_unit(2, i, VAE_UNIT_SAMPLER);
    return -1;
}

/* The name a device map uses for tensor `name`: diffusers' current attention
 * names for the deprecated ones a checkpoint may hold (query, key, value,
 * proj_attn). */
static void vae_map_name(const void *ctx, char *out, size_t cap, const char *name) {
    (void)ctx;
    static const char *const from[] = {".query.", ".key.", ".value.", ".proj_attn."};
    static const char *const to[] = {".to_q.", ".to_k.", ".to_v.", ".to_out.0."};
    snprintf(out, cap, "%s", name);
    for (int i = 0; i < 4; i++) {
        const char *at = strstr(name, from[i]);
        if (at) {
            snprintf(out, cap, "%.*s%s%s", (int)(at - name), name, to[i], at + strlen(from[i]));
            return;
        }
    }
}

/* The GroupNorm "<pfx>.<sub>" (eps 1e-6, the config's groups). */
static tdm_status ld_norm(tdm_vae_t *v, tdm_nn_norm_t *n, const char *pfx, const char *sub,
                          int64_t c) {
    return tdm_nn_norm_bind(&v->w, n, c, v->groups, VAE_EPS, "%s.%s", pfx, sub);
}

/* A ResnetBlock2D without a time embedding, output_scale_factor 1. */
static tdm_status ld_resnet(tdm_vae_t *v, tdm_nn_resnet_t *r, const char *pfx, int64_t cin,
                            int64_t cout) {
    return tdm_nn_resnet_bind(&v->w, r, cin, cout, 0, v->groups, VAE_EPS, 1.0f, "%s", pfx);
}

/* A linear of the mid-block attention: the current name, or the deprecated
 * one diffusers still converts on load. */
static tdm_status ld_attn_linear(tdm_vae_t *v, tdm_nn_linear_t *l, const char *pfx,
                                 const char *name, const char *old, int64_t c) {
    char n[256];
    snprintf(n, sizeof n, "%s.%s.weight", pfx, name);
    if (v->w.set && !tdm_st_set_find(v->w.set, n)) {
        snprintf(n, sizeof n, "%s.%s.weight", pfx, old);
        if (tdm_st_set_find(v->w.set, n)) name = old;
    }
    return tdm_nn_linear_bind(&v->w, l, c, c, 1, "%s.%s", pfx, name);
}

static tdm_status ld_mid(tdm_vae_t *v, mid_t *m, const char *pfx, int64_t c, int attn) {
    tdm_status st;
    char p[200], a[200];
    m->has_attn = attn;
    if (attn) {
        attn_t *t = &m->at;
        t->c = c;
        snprintf(a, sizeof a, "%s.attentions.0", pfx);
        TDM_TRY(ld_norm(v, &t->gn, a, "group_norm", c));
        t->at.heads = 1;
        TDM_TRY(ld_attn_linear(v, &t->at.q, a, "to_q", "query", c));
        TDM_TRY(ld_attn_linear(v, &t->at.k, a, "to_k", "key", c));
        TDM_TRY(ld_attn_linear(v, &t->at.v, a, "to_v", "value", c));
        TDM_TRY(ld_attn_linear(v, &t->at.o, a, "to_out.0", "proj_attn", c));
    }
    snprintf(p, sizeof p, "%s.resnets.0", pfx);
    TDM_TRY(ld_resnet(v, &m->r0, p, c, c));
    snprintf(p, sizeof p, "%s.resnets.1", pfx);
    TDM_TRY(ld_resnet(v, &m->r1, p, c, c));
fail:
    return st;
}

static tdm_status ld_level(tdm_vae_t *v, level_t *lv, const char *pfx, int nres,
                           int64_t cin, int64_t cout, int samp, const char *samp_name) {
    tdm_status st;
    char p[200];
    lv->res = calloc((size_t)nres, sizeof *lv->res);
    if (!lv->res) return tdm_errorf(TDM_ERR_NOMEM, "out of memory loading %s", pfx);
    lv->nres = nres;
    for (int j = 0; j < nres; j++) {
        snprintf(p, sizeof p, "%s.resnets.%d", pfx, j);
        TDM_TRY(ld_resnet(v, &lv->res[j], p, j == 0 ? cin : cout, cout));
    }
    lv->has_samp = samp;
    if (samp) {
        TDM_TRY(tdm_nn_conv_bind(&v->w, &lv->samp, cout, cout, 3, "%s.%s.0.conv", pfx, samp_name));
    }
fail:
    return st;
}

static tdm_status ld_encoder(tdm_vae_t *v) {
    tdm_status st;
    char p[200];
    const int64_t *ch = v->ch;
    int nl = v->nlev;
    int64_t lat = v->info.latent_channels;
    TDM_TRY(tdm_nn_conv_bind(&v->w, &v->e_in, v->info.in_channels, ch[0], 3, "encoder.conv_in"));
    for (int i = 0; i < nl; i++) {
        snprintf(p, sizeof p, "encoder.down_blocks.%d", i);
        TDM_TRY(ld_level(v, &v->e_lev[i], p, (int)v->lpb, i == 0 ? ch[0] : ch[i - 1], ch[i],
                         i < nl - 1, "downsamplers"));
    }
    TDM_TRY(ld_mid(v, &v->e_mid, "encoder.mid_block", ch[nl - 1], v->mid_attn));
    TDM_TRY(ld_norm(v, &v->e_nout, "encoder", "conv_norm_out", ch[nl - 1]));
    TDM_TRY(tdm_nn_conv_bind(&v->w, &v->e_out, ch[nl - 1], 2 * lat, 3, "encoder.conv_out"));
fail:
    return st;
}

static tdm_status vae_load_weights(tdm_vae_t *v) {
    tdm_status st;
    char p[200];
    const int64_t *ch = v->ch;
    int nl = v->nlev;
    int64_t lat = v->info.latent_channels;

    if (!v->decoder_only) TDM_TRY(ld_encoder(v));
    /* decoder */
    TDM_TRY(tdm_nn_conv_bind(&v->w, &v->d_in, lat, ch[nl - 1], 3, "decoder.conv_in"));
    for (int i = 0; i < nl; i++) {
        int64_t cin = ch[nl - 1 - (i > 0 ? i - 1 : 0)], cout = ch[nl - 1 - i];
        snprintf(p, sizeof p, "decoder.up_blocks.%d", i);
        TDM_TRY(ld_level(v, &v->d_lev[i], p, (int)v->lpb + 1, cin, cout, i < nl - 1,
                         "upsamplers"));
    }
    TDM_TRY(ld_mid(v, &v->d_mid, "decoder.mid_block", ch[nl - 1], v->mid_attn));
    TDM_TRY(ld_norm(v, &v->d_nout, "decoder", "conv_norm_out", ch[0]));
    TDM_TRY(tdm_nn_conv_bind(&v->w, &v->d_out, ch[0], v->info.out_channels, 3,
                             "decoder.conv_out"));

    if (v->use_qc && !v->decoder_only)
        TDM_TRY(tdm_nn_conv_bind(&v->w, &v->qc, 2 * lat, 2 * lat, 1, "quant_conv"));
    if (v->use_pqc) TDM_TRY(tdm_nn_conv_bind(&v->w, &v->pqc, lat, lat, 1, "post_quant_conv"));
fail:
    return st;
}

static tdm_status load_any(tdm_vae_t **out, const char *root, const char *sub,
                           const char *variant, tdm_device_t *dev,
                           const tdm_placement_t *place, int decoder_only) {
    tdm_status st = TDM_OK;
    char path[TDM_PATH_MAX];
    *out = NULL;
    tdm_vae_t *v = calloc(1, sizeof *v);
    if (!v) return tdm_errorf(TDM_ERR_NOMEM, "out of memory loading the VAE");
    v->dev = dev;
    v->decoder_only = decoder_only;
    tdm_weights_init(&v->w, "vae", dev, place);
    v->w.unit_of = vae_unit_of;
    v->w.map_name = vae_map_name;
    TDM_TRY(tdm_path_join(path, sizeof path, root, sub, "config.json"));
    TDM_TRY(vae_parse_config(v, path));
    TDM_TRY(tdm_weights_open(&v->w, root, sub, variant));
    TDM_TRY(vae_load_weights(v));
    tdm_weights_finish(&v->w);
    *out = v;
    return TDM_OK;
fail:
    tdm_vae_free(v);
    return st;
}

static tdm_status plist_any(const char *config_path, tdm_dtype dt, tdm_plist_t *out,
                            int decoder_only) {
    tdm_status st = TDM_OK;
    tdm_plist_init(out, dt);
    if (!config_path)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_vae_plist: config_path is required");
    tdm_vae_t *v = calloc(1, sizeof *v);   /* holds the walk's level tables; no weights */
    if (!v) return tdm_errorf(TDM_ERR_NOMEM, "out of memory listing the VAE");
    TDM_TRY(vae_parse_config(v, config_path));
    v->decoder_only = decoder_only;
    tdm_weights_init_list(&v->w, "vae", out);
    TDM_TRY(vae_load_weights(v));
fail:
    if (st != TDM_OK) tdm_plist_free(out);
    tdm_vae_free(v);
    return st;
}

tdm_status tdm_vae_plist(const char *config_path, tdm_dtype dt, tdm_plist_t *out) {
    return plist_any(config_path, dt, out, 0);
}

tdm_status tdm_vae_decoder_plist(const char *config_path, tdm_dtype dt, tdm_plist_t *out) {
    return plist_any(config_path, dt, out, 1);
}

tdm_status tdm_vae_load(tdm_vae_t **out, const char *root, const char *sub, const char *variant,
                        tdm_device_t *dev) {
    return load_any(out, root, sub, variant, dev, NULL, 0);
}

tdm_status tdm_vae_load_placed(tdm_vae_t **out, const char *root, const char *sub,
                               const char *variant, const tdm_placement_t *pl) {
    tdm_status st = tdm_placement_check(pl, "vae");
    if (st != TDM_OK) return st;
    return load_any(out, root, sub, variant, pl->main, pl, 0);
}

tdm_status tdm_vae_load_decoder(tdm_vae_t **out, const char *root, const char *sub,
                                const char *variant, tdm_device_t *dev,
                                const tdm_placement_t *pl) {
    if (pl) {
        tdm_status st = tdm_placement_check(pl, "vae");
        if (st != TDM_OK) return st;
        dev = pl->main;
    }
    return load_any(out, root, sub, variant, dev, pl, 1);
}

void tdm_vae_free(tdm_vae_t *v) {
    if (!v) return;
    tdm_weights_free(&v->w);   /* every loaded tensor, host copies and the kept files */
    for (int i = 0; i < VAE_MAX_LEVELS; i++) {
        free(v->e_lev[i].res);
        free(v->d_lev[i].res);
    }
    free(v);
}

const tdm_vae_info_t *tdm_vae_info(const tdm_vae_t *v) { return &v->info; }

/* ---- forward ---------------------------------------------------------------
 * run_t carries the buffers. With dry != 0 every step only records the sizes
 * it would need (act: one activation buffer, att: one attention buffer,
 * scratch: im2col floats) and touches no memory. */

typedef struct {
    tdm_device_t *dev;       /* where the weights and buffers live */
    int dry;
    int64_t need_act, need_att, need_scratch;
    int64_t need_kernel;     /* bytes the attention kernel takes for itself */
    float *a, *t1, *t2;      /* activation buffers, need_act floats each */
    float *q, *k, *v;        /* attention buffers, need_att floats each */
    float *scratch;
    tdm_offload_t *off;      /* the model's streamed units (real runs) */
    tdm_status st;           /* first failure of a unit's streaming or an exchange; the rest is skipped */
    /* the parallel decode: this rank's band of the image at the current
     * resolution (NULL: the whole image, one device), the group, and the
     * band functions' buffers (need_ext, need_edge floats, need_stats doubles) */
    tdm_nn_band_t *band;
    const tdm_nn_group_t *g;
    int64_t need_ext, need_edge, need_stats;
    float *ext, *edge;
    double *stats;
} run_t;

/* Brings unit `id`'s offloaded weights to the device (real runs), and back. */
static void unit_in(run_t *r, int64_t id) {
    if (!r->dry && r->st == TDM_OK) r->st = tdm_offload_in(r->off, r->dev, id);
}
static void unit_out(run_t *r, int64_t id) {
    if (!r->dry) tdm_offload_out(r->off, id);
}

static void need(int64_t *slot, int64_t n) { if (n > *slot) *slot = n; }

static void swap_a_t1(run_t *r) { float *t = r->a; r->a = r->t1; r->t1 = t; }

static tdm_nn_band_buf_t band_buf(const run_t *r) {
    return (tdm_nn_band_buf_t){.ext = r->ext, .edge = r->edge, .scratch = r->scratch,
                               .stats = r->stats};
}

/* Keeps the first failure of a band function; the rest of the run is skipped. */
static void band_st(run_t *r, tdm_status st) { if (r->st == TDM_OK) r->st = st; }

/* The band version of run_conv (stride 1, padding k/2) on r->band's rows. */
static void run_band_conv(run_t *r, const tdm_nn_conv_t *c, float *y, const float *x, int64_t B) {
    const tdm_nn_band_t *bd = r->band;
    if (r->dry) {
        need(&r->need_scratch, tdm_nn_band_conv_scratch(r->dev, bd, c));
        need(&r->need_ext, tdm_nn_band_conv_ext(bd, c, B));
        need(&r->need_edge, tdm_nn_band_conv_edge(bd, c, B));
        need(&r->need_act, B * c->cin * bd->rows * bd->W);
        need(&r->need_act, B * c->cout * bd->rows * bd->W);
        return;
    }
    const tdm_nn_band_buf_t b = band_buf(r);
    band_st(r, tdm_nn_band_conv_forward(r->dev, bd, c, y, x, B, &b));
}

/* y (B, cout, Ho, Wo) = conv(x (B, cin, H, W)); down: pad (0,1,0,1), stride 2, no pad
 * (Downsample2D with padding=0); else stride 1, pad k/2. */
static void run_conv(run_t *r, const tdm_nn_conv_t *c, float *y, const float *x, int64_t B,
                     int64_t H, int64_t W, int down) {
    const int64_t stride = down ? 2 : 1, pad = down ? TDM_NN_PAD_DOWN : c->k / 2;
    int64_t Ho, Wo;
    if (r->st != TDM_OK) return;
    if (r->band && !down) {
        run_band_conv(r, c, y, x, B);
        return;
    }
    if (r->dry) {
        tdm_nn_conv_out_size(c, H, W, stride, pad, &Ho, &Wo);
        need(&r->need_scratch, tdm_nn_conv_scratch(r->dev, c, H, W, stride, pad));
        need(&r->need_act, B * c->cin * H * W);
        need(&r->need_act, B * c->cout * Ho * Wo);
        return;
    }
    tdm_nn_conv_forward(r->dev, c, y, x, B, H, W, stride, pad, r->scratch);
}

static void run_norm(run_t *r, const tdm_nn_norm_t *n, float *y, const float *x,
                     int64_t B, int64_t S, int silu) {
    if (r->st != TDM_OK) return;
    if (r->dry) {
        need(&r->need_act, B * n->c * S);
        if (r->band) need(&r->need_stats, tdm_nn_band_norm_stats(r->band, n, B));
        return;
    }
    if (r->band) band_st(r, tdm_nn_band_group_norm_forward(r->dev, r->band, n, y, x, B, silu, r->stats));
    else tdm_nn_group_norm_forward(r->dev, n, y, x, B, S, silu);
}

/* ResnetBlock2D, temb None: r->a (B, cin, H, W) → r->a (B, cout, H, W), over
 * t1 and t2 (norm1 and conv2 in t1, conv1 and the shortcut in t2). */
static void run_resnet(run_t *r, const tdm_nn_resnet_t *rn, int64_t B, int64_t H, int64_t W) {
    if (r->st != TDM_OK) return;
    if (r->dry) {
        tdm_nn_resnet_sizes_t n;
        tdm_nn_resnet_sizes(r->dev, rn, B, H, W, &n);
        need(&r->need_act, n.t);
        need(&r->need_act, n.h);
        if (r->band)
            tdm_nn_band_resnet_sizes(r->dev, r->band, rn, B, &r->need_ext, &r->need_edge,
                                     &r->need_scratch, &r->need_stats);
        else
            need(&r->need_scratch, n.scratch);
        return;
    }
    const tdm_nn_resnet_buf_t b = {.t = r->t1, .h = r->t2, .o = r->t1, .sc = r->t2,
                                   .scratch = r->scratch};
    if (r->band) {
        const tdm_nn_band_buf_t bb = band_buf(r);
        band_st(r, tdm_nn_band_resnet_forward(r->dev, r->band, rn, r->a, r->a, B, &b, &bb));
        return;
    }
    tdm_nn_resnet_forward(r->dev, rn, r->a, r->a, NULL, B, H, W, &b);
}

/* Mid-block Attention (1 head of dim c, group norm, residual, rescale 1):
 * r->a (B, c, S) += to_out(attn(to_q(n), to_k(n), to_v(n))), n = norm(x)ᵀ. */
static void run_attn(run_t *r, const attn_t *at, int64_t B, int64_t S) {
    int64_t c = at->c;
    if (r->st != TDM_OK) return;
    if (r->dry) {
        tdm_nn_attention_sizes_t n;
        tdm_nn_attention_sizes(&at->at, B, S, S, &n);
        need(&r->need_act, B * c * S);
        need(&r->need_act, n.o);
        need(&r->need_att, n.q);
        need(&r->need_att, n.kv);
        need(&r->need_kernel, tdm_op_attention_scratch_bytes(r->dev, TDM_F32, B, S, S, 1, c));
        return;
    }
    tdm_device_t *d = r->dev;
    const tdm_nn_attention_buf_t b = {.q = r->q, .k = r->k, .v = r->v, .o = r->t1};
    tdm_nn_group_norm_forward(d, &at->gn, r->t1, r->a, B, S, 0);
    tdm_op_transpose_cs(d, r->t2, r->t1, B, c, S);                  /* (B, S, c) */
    tdm_nn_attention_forward(d, &at->at, r->q, r->t2, NULL, B, S, S, (float)pow((double)c, -0.5),
                             0, &b);                                /* (B, S, c) */
    tdm_op_transpose_sc(d, r->t2, r->q, B, S, c);                   /* (B, c, S) */
    tdm_op_add(d, r->a, r->a, r->t2, B * c * S);
}

/* run_attn on r->band's rows: queries from the band's pixels, keys and
 * values of the whole image (each rank projects its band, then they are
 * gathered), so each query attends to every pixel as on one device. */
static void run_band_attn(run_t *r, const attn_t *at, int64_t B) {
    const tdm_nn_band_t *bd = r->band;
    const int64_t c = at->c, Sl = bd->rows * bd->W, S = bd->H * bd->W;
    if (r->st != TDM_OK) return;
    if (r->dry) {
        need(&r->need_act, B * c * Sl);
        need(&r->need_att, B * S * c);   /* the whole k and v; q is the band's */
        need(&r->need_stats, tdm_nn_band_norm_stats(bd, &at->gn, B));
        need(&r->need_kernel, tdm_op_attention_scratch_bytes(r->dev, TDM_F32, B, Sl, S, 1, c));
        return;
    }
    tdm_device_t *d = r->dev;
    tdm_status st;
    TDM_TRY(tdm_nn_band_group_norm_forward(d, bd, &at->gn, r->t1, r->a, B, 0, r->stats));
    tdm_op_transpose_cs(d, r->t2, r->t1, B, c, Sl);                   /* (B, Sl, c) */
    tdm_nn_linear_forward(d, &at->at.q, r->q, r->t2, B * Sl);
    tdm_nn_linear_forward(d, &at->at.k, r->t1, r->t2, B * Sl);
    TDM_TRY(tdm_nn_band_gather(d, bd, r->k, r->t1, B, 1, bd->W * c));   /* (B, S, c) */
    tdm_nn_linear_forward(d, &at->at.v, r->t1, r->t2, B * Sl);
    TDM_TRY(tdm_nn_band_gather(d, bd, r->v, r->t1, B, 1, bd->W * c));
    tdm_op_attention(d, r->t1, r->q, r->k, r->v, B, Sl, S, 1, c, (float)pow((double)c, -0.5), 0);
    tdm_nn_linear_forward(d, &at->at.o, r->q, r->t1, B * Sl);         /* (B, Sl, c) */
    tdm_op_transpose_sc(d, r->t2, r->q, B, Sl, c);                    /* (B, c, Sl) */
    tdm_op_add(d, r->a, r->a, r->t2, B * c * Sl);
    return;
fail:
    band_st(r, st);
}

/* The mid block (one streaming unit, `id`). */
static void run_mid(run_t *r, const mid_t *m, int64_t B, int64_t H, int64_t W, int64_t id) {
    unit_in(r, id);
    run_resnet(r, &m->r0, B, H, W);
    if (m->has_attn && r->band) run_band_attn(r, &m->at, B);
    else if (m->has_attn) run_attn(r, &m->at, B, H * W);
    run_resnet(r, &m->r1, B, H, W);
    unit_out(r, id);
}

/* Parallel decode: this rank's band of z (B, L, h, w) into r->t1, the band
 * set up for the latent; returns the band's rows. */
static int64_t band_latent(run_t *r, const float *z, int64_t B, int64_t L, int64_t h, int64_t w) {
    tdm_nn_band_init(r->band, r->g, h, w);
    const int64_t rows = r->band->rows;
    if (r->dry) need(&r->need_act, B * L * rows * w);
    else tdm_op_copy_2d(r->dev, TDM_F32, r->t1, rows * w, z + r->band->r0 * w, h * w, B * L, rows * w);
    return rows;
}

/* Parallel decode: the output bands (B, out, rows, W) in r->t2 gathered into
 * img (B, out, H, W) on every rank. */
static void band_output(run_t *r, int64_t B, int64_t C, float *img) {
    if (r->st != TDM_OK || r->dry) return;
    band_st(r, tdm_nn_band_gather(r->dev, r->band, img, r->t2, B, C, r->band->W));
}

/* Decoder: z (B, L, h, w) → img (B, out, h*s, w*s). With r->band: this
 * rank's rows of every activation (H the band's rows). */
static void run_decode(run_t *r, const tdm_vae_t *v, const float *z, int64_t B, int64_t h,
                       int64_t w, float *img) {
    int64_t H = h, W = w;
    const float *x = z;
    if (r->band) {
        H = band_latent(r, z, B, v->info.latent_channels, h, w);
        x = z = r->t1;
    }
    if (v->use_pqc) {
        run_conv(r, &v->pqc, r->t2, z, B, H, W, 0);
        x = r->t2;
    }
    run_conv(r, &v->d_in, r->a, x, B, H, W, 0);
    run_mid(r, &v->d_mid, B, H, W, vae_unit(3, 0, 0));
    for (int i = 0; i < v->nlev; i++) {
        const level_t *lv = &v->d_lev[i];
        for (int j = 0; j < lv->nres; j++) {
            unit_in(r, vae_unit(1, i, j));
            run_resnet(r, &lv->res[j], B, H, W);
            unit_out(r, vae_unit(1, i, j));
        }
        if (lv->has_samp) {
            int64_t C = lv->samp.cin;
            if (r->dry) need(&r->need_act, B * C * 4 * H * W);
            else if (r->st == TDM_OK)
                tdm_nn_upsample_nearest(r->dev, r->t1, r->a, B, C, H, W, 2 * H, 2 * W);
            H *= 2;
            W *= 2;
            if (r->band) tdm_nn_band_scale2(r->band);
            unit_in(r, vae_unit(1, i, VAE_UNIT_SAMPLER));
            run_conv(r, &lv->samp, r->a, r->t1, B, H, W, 0);
            unit_out(r, vae_unit(1, i, VAE_UNIT_SAMPLER));
        }
    }
    run_norm(r, &v->d_nout, r->t1, r->a, B, H * W, 1);
    run_conv(r, &v->d_out, r->band ? r->t2 : img, r->t1, B, H, W, 0);
    if (r->band) band_output(r, B, v->info.out_channels, img);
}

/* Encoder + quant_conv: img (B, in, H, W) → moments (B, 2L, H/s, W/s); returns
 * the buffer holding the moments (NULL in a dry run). */
static const float *run_encode(run_t *r, const tdm_vae_t *v, const float *img, int64_t B,
                               int64_t H, int64_t W) {
    run_conv(r, &v->e_in, r->a, img, B, H, W, 0);
    for (int i = 0; i < v->nlev; i++) {
        const level_t *lv = &v->e_lev[i];
        for (int j = 0; j < lv->nres; j++) {
            unit_in(r, vae_unit(2, i, j));
            run_resnet(r, &lv->res[j], B, H, W);
            unit_out(r, vae_unit(2, i, j));
        }
        if (lv->has_samp) {
            unit_in(r, vae_unit(2, i, VAE_UNIT_SAMPLER));
            run_conv(r, &lv->samp, r->t1, r->a, B, H, W, 1);
            unit_out(r, vae_unit(2, i, VAE_UNIT_SAMPLER));
            swap_a_t1(r);
            H = (H - 2) / 2 + 1;
            W = (W - 2) / 2 + 1;
        }
    }
    run_mid(r, &v->e_mid, B, H, W, vae_unit(4, 0, 0));
    run_norm(r, &v->e_nout, r->t1, r->a, B, H * W, 1);
    run_conv(r, &v->e_out, r->t2, r->t1, B, H, W, 0);
    if (!v->use_qc) return r->t2;
    run_conv(r, &v->qc, r->t1, r->t2, B, H, W, 0);
    return r->t1;
}

/* Allocates the buffers a dry run asked for; all on v->dev. */
static tdm_status run_alloc(run_t *r, tdm_device_t *dev) {
    int64_t act, att, scr;
    if (!tdm_mul_ok(r->need_act, 4, &act) || !tdm_mul_ok(r->need_att, 4, &att) ||
        !tdm_mul_ok(r->need_scratch, 4, &scr))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "VAE: work buffer size overflows");
    r->dry = 0;
    if (!(r->a = tdm_dev_alloc(dev, act, "VAE activations")) ||
        !(r->t1 = tdm_dev_alloc(dev, act, "VAE activations")) ||
        !(r->t2 = tdm_dev_alloc(dev, act, "VAE activations")))
        return TDM_ERR_NOMEM;
    if (att > 0 && (!(r->q = tdm_dev_alloc(dev, att, "VAE attention")) ||
                    !(r->k = tdm_dev_alloc(dev, att, "VAE attention")) ||
                    !(r->v = tdm_dev_alloc(dev, att, "VAE attention"))))
        return TDM_ERR_NOMEM;
    if (scr > 0 && !(r->scratch = tdm_dev_alloc(dev, scr, "VAE im2col scratch")))
        return TDM_ERR_NOMEM;
    /* the parallel decode's band buffers (sizes within the activations' bounds) */
    if (r->need_ext > 0 && !(r->ext = tdm_dev_alloc(dev, r->need_ext * 4, "VAE halo band")))
        return TDM_ERR_NOMEM;
    if (r->need_edge > 0 && !(r->edge = tdm_dev_alloc(dev, r->need_edge * 4, "VAE halo rows")))
        return TDM_ERR_NOMEM;
    if (r->need_stats > 0 &&
        !(r->stats = tdm_dev_alloc(dev, r->need_stats * 8, "VAE group-norm sums")))
        return TDM_ERR_NOMEM;
    return TDM_OK;
}

static void run_free(run_t *r, tdm_device_t *dev) {
    int64_t act = r->need_act * 4, att = r->need_att * 4;
    tdm_dev_free(dev, r->a, act);
    tdm_dev_free(dev, r->t1, act);
    tdm_dev_free(dev, r->t2, act);
    tdm_dev_free(dev, r->q, att);
    tdm_dev_free(dev, r->k, att);
    tdm_dev_free(dev, r->v, att);
    tdm_dev_free(dev, r->scratch, r->need_scratch * 4);
    tdm_dev_free(dev, r->ext, r->need_ext * 4);
    tdm_dev_free(dev, r->edge, r->need_edge * 4);
    tdm_dev_free(dev, r->stats, r->need_stats * 8);
}

/* Checks B * C * H * W (and the same at the other end) fits the counters. */
static tdm_status check_dims(const char *what, int64_t B, int64_t C, int64_t H, int64_t W,
                             int64_t scale) {
    int64_t n;
    if (B < 1 || H < 1 || W < 1)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: batch %lld, size %lldx%lld must be positive",
                          what, (long long)B, (long long)H, (long long)W);
    if (!tdm_mul_ok(B, C, &n) || !tdm_mul_ok(n, H, &n) || !tdm_mul_ok(n, W, &n) ||
        !tdm_mul_ok(n, scale, &n) || !tdm_mul_ok(n, scale, &n) || !tdm_mul_ok(n, 1024, &n))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: size %lldx%lldx%lldx%lld is too large",
                          what, (long long)B, (long long)C, (long long)H, (long long)W);
    return TDM_OK;
}

/* Bytes of the work buffers a dry run counted (run_alloc's three activation
 * and three attention buffers, the im2col scratch, the band buffers of a
 * parallel decode) and of the attention kernel's own scratch; -1 on
 * overflow. */
static int64_t run_bytes(const run_t *r) {
    int64_t act, att, scr, band;
    if (!tdm_mul_ok(r->need_act, 12, &act) || !tdm_mul_ok(r->need_att, 12, &att) ||
        !tdm_mul_ok(r->need_scratch, 4, &scr) || act > INT64_MAX - att - scr ||
        act + att + scr > INT64_MAX - r->need_kernel)
        return -1;
    /* the band sizes are bounded by the activations' (check_dims) */
    band = 4 * (r->need_ext + r->need_edge) + 8 * r->need_stats;
    if (act + att + scr + r->need_kernel > INT64_MAX - band) return -1;
    return act + att + scr + r->need_kernel + band;
}

/* Before allocating: the work buffers the dry run counted must fit the
 * device (its cap, or for the host its physical memory); the error says
 * how much an image of this size needs. */
static tdm_status vae_fits(const run_t *r, const tdm_device_t *dev, const char *what, int64_t B, int64_t H,
                           int64_t W) {
    const int64_t total = run_bytes(r);
    if (total < 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: work buffers for %lld image(s) of %lldx%lld overflow", what,
                          (long long)B, (long long)W, (long long)H);
    int64_t have = dev && dev->cap_bytes > 0 ? dev->cap_bytes - dev->cur_bytes
                   : tdm_dev_is_host(dev)     ? tdm_host_memory_bytes()
                                              : 0;
    if (have > 0 && total > have)
        return tdm_errorf(TDM_ERR_NOMEM, "%s: %lld image(s) of %lldx%lld need %.2f GiB of work buffers, more than "
                          "the %.2f GiB %s", what, (long long)B, (long long)W, (long long)H,
                          (double)total / (1 << 30), (double)have / (1 << 30),
                          dev && dev->cap_bytes > 0 ? "left under the device's cap" : "of memory of this machine");
    return TDM_OK;
}

/* tdm_vae_decode (g NULL) or tdm_vae_decode_cp's run on a group of 2+ ranks. */
static tdm_status decode_any(tdm_vae_t *v, const tdm_nn_group_t *g, const float *z, int64_t B,
                             int64_t h, int64_t w, float *img) {
    tdm_status st;
    tdm_nn_band_t band;
    run_t r = {.dev = v->dev, .dry = 1, .off = &v->w.off, .g = g, .band = g ? &band : NULL};
    int64_t cmax = 0;
    for (int i = 0; i < v->nlev; i++) need(&cmax, v->ch[i]);
    TDM_TRY(check_dims("VAE decode", B, cmax + v->info.latent_channels, h, w,
                       v->info.scale_factor));
    run_decode(&r, v, z, B, h, w, img);
    TDM_TRY(vae_fits(&r, v->dev, "VAE decode", B, h * v->info.scale_factor, w * v->info.scale_factor));
    TDM_TRY(run_alloc(&r, v->dev));
    TDM_TRY(tdm_offload_in(&v->w.off, v->dev, -1));   /* offloaded top-level weights */
    run_decode(&r, v, z, B, h, w, img);
    st = r.st;
fail:
    tdm_offload_out_all(&v->w.off);   /* whatever is still brought in */
    run_free(&r, v->dev);
    return st;
}

tdm_status tdm_vae_decode(tdm_vae_t *v, const float *z, int64_t B, int64_t h, int64_t w,
                          float *img) {
    return decode_any(v, NULL, z, B, h, w, img);
}

/* The checks of a group and latent height for a decode over g (2+ ranks). */
static tdm_status check_group(const tdm_nn_group_t *g, int64_t h, const char *fn) {
    if (g->size < 1 || g->rank < 0 || g->rank >= g->size)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: rank %d of a group of %d", fn, g->rank,
                          g->size);
    if (h < g->size)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: a latent of %lld rows over %d ranks: every "
                          "rank needs at least one row", fn, (long long)h, g->size);
    return TDM_OK;
}

tdm_status tdm_vae_decode_cp(tdm_vae_t *v, const tdm_nn_group_t *g, const float *z, int64_t B,
                             int64_t h, int64_t w, float *img) {
    if (!g || g->size == 1) return tdm_vae_decode(v, z, B, h, w, img);
    tdm_status st = check_group(g, h, "VAE decode");
    return st != TDM_OK ? st : decode_any(v, g, z, B, h, w, img);
}

tdm_status tdm_vae_encode(tdm_vae_t *v, const float *img, int64_t B, int64_t H, int64_t W,
                          float *mean, float *logvar) {
    tdm_status st;
    run_t r = {.dev = v->dev, .dry = 1, .off = &v->w.off};
    int64_t s = v->info.scale_factor, L = v->info.latent_channels, cmax = 0;
    for (int i = 0; i < v->nlev; i++) need(&cmax, v->ch[i]);
    if (v->decoder_only)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "VAE encode: this VAE was loaded for decoding only "
                          "(no encoder weights)");
    TDM_TRY(check_dims("VAE encode", B, cmax + v->info.in_channels + 2 * L, H, W, 1));
    if (H < s || W < s) {
        st = tdm_errorf(TDM_ERR_INVALID_ARG, "VAE encode: image %lldx%lld is smaller than the "
                        "VAE scale factor %lld", (long long)H, (long long)W, (long long)s);
        goto fail;
    }
    run_encode(&r, v, img, B, H, W);
    TDM_TRY(vae_fits(&r, v->dev, "VAE encode", B, H, W));
    TDM_TRY(run_alloc(&r, v->dev));
    TDM_TRY(tdm_offload_in(&v->w.off, v->dev, -1));   /* offloaded top-level weights */
    const float *mom = run_encode(&r, v, img, B, H, W);   /* (B, 2L, h, w) */
    TDM_TRY(r.st);
    int64_t S = (H / s) * (W / s);
    for (int64_t b = 0; b < B; b++) {
        const float *m = mom + b * 2 * L * S, *lv = m + L * S;
        if (mean) tdm_op_scale(v->dev, mean + b * L * S, m, 1.0f, L * S);   /* exact copy */
        if (logvar) tdm_op_clamp(v->dev, logvar + b * L * S, lv, -30.0f, 20.0f, L * S);
    }
fail:
    tdm_offload_out_all(&v->w.off);   /* whatever is still brought in */
    run_free(&r, v->dev);
    return st;
}

/* ---- post-processing ------------------------------------------------------ */

void tdm_vae_to_rgb8(const float *img, int64_t B, int64_t H, int64_t W, uint8_t *out) {
    int64_t S = H * W;
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < 3; c++) {
            const float *x = img + (b * 3 + c) * S;
            uint8_t *o = out + b * S * 3 + c;
            for (int64_t i = 0; i < S; i++) {
                float t = x[i] * 0.5f;            /* exact: the sum below rounds once */
                t = t + 0.5f;
                t = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
                float u = t * 255.0f;
                o[i * 3] = u == u ? (uint8_t)nearbyintf(u) : 0;   /* round half to even */
            }
        }
}

tdm_status tdm_vae_decode_work_bytes(const char *config_path, tdm_device_t *dev, int64_t B,
                                     int64_t h, int64_t w, int64_t *out) {
    return tdm_vae_decode_work_bytes_cp(config_path, dev, B, h, w, 1, out);
}

tdm_status tdm_vae_decode_work_bytes_cp(const char *config_path, tdm_device_t *dev, int64_t B,
                                        int64_t h, int64_t w, int ranks, int64_t *out) {
    tdm_status st = TDM_OK;
    tdm_plist_t pl;
    tdm_vae_t *v = NULL;
    tdm_nn_group_t g0 = {.rank = 0, .size = ranks};   /* sizes only: no call is made */
    tdm_nn_band_t band;
    run_t r = {.dev = dev, .dry = 1, .g = &g0, .band = ranks > 1 ? &band : NULL};
    int64_t cmax = 0;
    *out = 0;
    tdm_plist_init(&pl, TDM_F32);
    if (!config_path || !dev || ranks < 1)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_vae_decode_work_bytes: config, device and "
                          "ranks >= 1 are required");
    if (ranks > 1) TDM_TRY(check_group(&g0, h, "VAE decode"));
    if (!(v = calloc(1, sizeof *v))) return tdm_errorf(TDM_ERR_NOMEM, "out of memory sizing the VAE");
    TDM_TRY(vae_parse_config(v, config_path));
    v->decoder_only = 1;
    tdm_weights_init_list(&v->w, "vae", &pl);   /* listing: fills the level tables only */
    TDM_TRY(vae_load_weights(v));
    for (int i = 0; i < v->nlev; i++) need(&cmax, v->ch[i]);
    TDM_TRY(check_dims("VAE decode", B, cmax + v->info.latent_channels, h, w, v->info.scale_factor));
    run_decode(&r, v, NULL, B, h, w, NULL);
    *out = run_bytes(&r);
    if (*out < 0) *out = INT64_MAX;
fail:
    tdm_plist_free(&pl);
    tdm_vae_free(v);
    return st;
}
