/* unet2d.c — UNet2DConditionModel (SD1.x/2.x): config.json parsing and
 * validation, weight loading with shape checks, and the forward pass that
 * wires conv_in, the time embedding, down blocks (with their skip
 * connections), the mid block, up blocks and the output head. The blocks
 * themselves (ResNet, Transformer2D, resamplers) live in unet2d_blocks.c. */
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "io/config.h"
#include "io/folder.h"
#include "io/safetensors.h"
#include "models/unet2d_internal.h"
#include "nn/embed.h"
#include "nn/ptree.h"

#define UNET_MAX_BLOCKS 8
/* Bounds of config sizes, 10-100x those of SD 1.x/2.x/XL (channels up to
 * 1280, 2 layers per block, 10 transformer layers, head dims up to 64,
 * cross-attention 2048, 4 or 9 input channels). */
#define UNET_MAX_CHANNELS    65536
#define UNET_MAX_IO_CHANNELS 1024
#define UNET_MAX_LAYERS      64
#define UNET_MAX_DIM         4096

/* ---- config -------------------------------------------------------------- */

typedef struct {
    int     n;                                  /* number of blocks */
    int64_t in_ch, out_ch, sample_size;
    int64_t block_out[UNET_MAX_BLOCKS];
    int64_t layers[UNET_MAX_BLOCKS];            /* layers_per_block */
    int64_t heads[UNET_MAX_BLOCKS];             /* attention_head_dim (= number of heads) */
    int64_t tlayers[UNET_MAX_BLOCKS];           /* transformer_layers_per_block */
    int64_t cross_dim;
    int     only_cross[UNET_MAX_BLOCKS];
    int     down_cross[UNET_MAX_BLOCKS], up_cross[UNET_MAX_BLOCKS];
    int64_t groups, down_pad;
    double  eps, mid_scale, freq_shift;
    int     flip, center, linear;
    int64_t add_time_dim, add_in;               /* addition_embed_type "text_time"; 0: none */
    const char *path;                           /* the config file, for messages */
} unet_cfg_t;

static const cJSON *cfg_item(const tdm_json_t *j, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(j->root, key);
}

/* TDM_ERR_UNSUPPORTED naming the file, key and value. */
static tdm_status cfg_unsupported(const tdm_json_t *j, const char *key, const char *why) {
    const cJSON *v = cfg_item(j, key);
    char *txt = v ? cJSON_PrintUnformatted(v) : NULL;
    tdm_status st = tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: unsupported UNet config %s=%s%s%s",
                               j->path, key, txt ? txt : "(absent)", why ? ": " : "",
                               why ? why : "");
    if (txt) cJSON_free(txt);
    return st;
}

/* The key must be absent or null. */
static tdm_status cfg_need_null(const tdm_json_t *j, const char *key) {
    const cJSON *v = cfg_item(j, key);
    if (v && !cJSON_IsNull(v)) return cfg_unsupported(j, key, "only null is supported");
    return TDM_OK;
}

/* The key must be absent, null or false. */
static tdm_status cfg_need_false(const tdm_json_t *j, const char *key) {
    const cJSON *v = cfg_item(j, key);
    if (v && !cJSON_IsNull(v) && !cJSON_IsFalse(v))
        return cfg_unsupported(j, key, "only false is supported");
    return TDM_OK;
}

/* The string key must be absent or one of the allowed values (NULL-terminated). */
static tdm_status cfg_need_str(const tdm_json_t *j, const char *key, const char *const *ok) {
    const cJSON *v = cfg_item(j, key);
    if (!v) return TDM_OK;
    if (cJSON_IsString(v))
        for (int i = 0; ok[i]; i++)
            if (strcmp(v->valuestring, ok[i]) == 0) return TDM_OK;
    return cfg_unsupported(j, key, NULL);
}

/* The integer key must be absent or equal `want`. */
static tdm_status cfg_need_int(const tdm_json_t *j, const char *key, int64_t want) {
    tdm_status st;
    int64_t v;
    if ((st = tdm_json_int(j, key, want, &v)) != TDM_OK) return st;
    if (v != want) return cfg_unsupported(j, key, NULL);
    return TDM_OK;
}

/* An int or a per-block list of n ints (a scalar is repeated). */
static tdm_status cfg_per_block(const tdm_json_t *j, const char *key, int64_t def, int64_t hi, int n,
                                int64_t *out) {
    tdm_status st;
    const cJSON *v = cfg_item(j, key);
    int cnt = 0;
    if (v && cJSON_IsArray(v)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, v) {
            if (cJSON_IsArray(e)) return cfg_unsupported(j, key, "nested lists");
        }
    }
    if ((st = tdm_json_int_array(j, key, 1, out, UNET_MAX_BLOCKS, &cnt)) != TDM_OK) return st;
    if (!v || cJSON_IsNull(v)) {
        for (int i = 0; i < n; i++) out[i] = def;
    } else if (cJSON_IsNumber(v)) {
        for (int i = 1; i < n; i++) out[i] = out[0];
    } else if (cnt != n) {
        return tdm_errorf(TDM_ERR_MODEL, "%s: %s has %d entries but there are %d blocks",
                          j->path, key, cnt, n);
    }
    for (int i = 0; i < n; i++)
        if (out[i] < 1 || out[i] > hi) return tdm_json_range_error(j, key, out[i], 1, hi);
    return TDM_OK;
}

/* The keys that must hold their one supported value (or be absent). */
static tdm_status cfg_check_fixed_keys(const tdm_json_t *j) {
    tdm_status st = TDM_OK;
    static const char *const k_class[] = {"UNet2DConditionModel", NULL};
    static const char *const k_act[] = {"silu", "swish", NULL};
    static const char *const k_mid[] = {"UNetMidBlock2DCrossAttn", NULL};
    static const char *const k_default[] = {"default", NULL};
    static const char *const k_pos[] = {"positional", NULL};
    static const char *const k_no_null[] = {"norm_num_groups", "mid_block_type", NULL};
    static const char *const k_null[] = {
        "num_attention_heads", "class_embed_type", "encoder_hid_dim",
        "encoder_hid_dim_type", "time_cond_proj_dim", "num_class_embeds", "time_embedding_dim",
        "time_embedding_act_fn", "timestep_post_act", "reverse_transformer_layers_per_block",
        NULL};
    TDM_TRY(cfg_need_str(j, "_class_name", k_class));
    TDM_TRY(cfg_need_str(j, "act_fn", k_act));
    TDM_TRY(cfg_need_str(j, "mid_block_type", k_mid));
    TDM_TRY(cfg_need_str(j, "resnet_time_scale_shift", k_default));
    TDM_TRY(cfg_need_str(j, "attention_type", k_default));
    TDM_TRY(cfg_need_str(j, "time_embedding_type", k_pos));
    for (int i = 0; k_null[i]; i++) TDM_TRY(cfg_need_null(j, k_null[i]));
    for (int i = 0; k_no_null[i]; i++) {
        const cJSON *v = cfg_item(j, k_no_null[i]);
        if (v && cJSON_IsNull(v)) return cfg_unsupported(j, k_no_null[i], NULL);
    }
    TDM_TRY(cfg_need_false(j, "dual_cross_attention"));
    TDM_TRY(cfg_need_false(j, "class_embeddings_concat"));
    TDM_TRY(cfg_need_int(j, "conv_in_kernel", 3));
    TDM_TRY(cfg_need_int(j, "conv_out_kernel", 3));
fail:
    return st;
}

/* block_out_channels: 1 .. 8 blocks of 1 .. UNET_MAX_CHANNELS (default
 * 320, 640, 1280, 1280); sets c->n and c->block_out. */
static tdm_status cfg_block_out(const tdm_json_t *j, unet_cfg_t *c) {
    tdm_status st = TDM_OK;
    static const int64_t def_out[4] = {320, 640, 1280, 1280};
    const cJSON *v = cfg_item(j, "block_out_channels");
    if (v && cJSON_IsArray(v) && cJSON_GetArraySize(v) > UNET_MAX_BLOCKS)
        return cfg_unsupported(j, "block_out_channels", "more than 8 blocks");
    TDM_TRY(tdm_json_int_array(j, "block_out_channels", 0, c->block_out, UNET_MAX_BLOCKS, &c->n));
    if (c->n == 0) {
        c->n = 4;
        memcpy(c->block_out, def_out, sizeof(def_out));
    }
    for (int i = 0; i < c->n; i++)
        if (c->block_out[i] < 1 || c->block_out[i] > UNET_MAX_CHANNELS)
            return tdm_json_range_error(j, "block_out_channels", c->block_out[i], 1, UNET_MAX_CHANNELS);
fail:
    return st;
}

/* down_block_types or up_block_types (`key`): n entries (the four of
 * `def` when absent), each `cross_type` (is_cross[i] = 1) or `plain_type`
 * (is_cross[i] = 0). */
static tdm_status cfg_block_types(const tdm_json_t *j, const char *key, const char *const def[4],
                                  const char *cross_type, const char *plain_type, int n,
                                  int *is_cross) {
    tdm_status st = TDM_OK;
    char types[UNET_MAX_BLOCKS][64];
    int nt = 0;
    if (cfg_item(j, key)) {
        const cJSON *v = cfg_item(j, key);
        if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > UNET_MAX_BLOCKS)
            return cfg_unsupported(j, key, "more than 8 blocks");
        TDM_TRY(tdm_json_str_array(j, key, types, UNET_MAX_BLOCKS, &nt));
    } else {
        nt = 4;
        for (int i = 0; i < 4; i++) strcpy(types[i], def[i]);
    }
    if (nt != n)
        return tdm_errorf(TDM_ERR_MODEL, "%s: %s has %d entries, "
                          "block_out_channels %d", j->path, key, nt, n);
    for (int i = 0; i < nt; i++) {
        if (strcmp(types[i], cross_type) == 0) is_cross[i] = 1;
        else if (strcmp(types[i], plain_type) == 0) is_cross[i] = 0;
        else return tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: unsupported UNet config "
                               "%s[%d]=\"%s\"", j->path, key, i, types[i]);
    }
fail:
    return st;
}

/* cross_attention_dim: an int or a per-block list whose values agree. */
static tdm_status cfg_cross_dim(const tdm_json_t *j, unet_cfg_t *c) {
    tdm_status st = TDM_OK;
    int64_t cd[UNET_MAX_BLOCKS];
    TDM_TRY(cfg_per_block(j, "cross_attention_dim", 1280, UNET_MAX_CHANNELS, c->n, cd));
    for (int i = 1; i < c->n; i++)
        if (cd[i] != cd[0])
            return cfg_unsupported(j, "cross_attention_dim", "per-block values must agree");
    c->cross_dim = cd[0];
fail:
    return st;
}

/* only_cross_attention: a bool for every block or a per-block list of bools. */
static tdm_status cfg_only_cross(const tdm_json_t *j, unet_cfg_t *c) {
    tdm_status st = TDM_OK;
    const cJSON *v = cfg_item(j, "only_cross_attention");
    if (v && cJSON_IsArray(v)) {
        int i = 0;
        const cJSON *e;
        if (cJSON_GetArraySize(v) != c->n)
            return tdm_errorf(TDM_ERR_MODEL, "%s: only_cross_attention has %d entries but "
                              "there are %d blocks", j->path, cJSON_GetArraySize(v), c->n);
        cJSON_ArrayForEach(e, v) {
            if (!cJSON_IsBool(e))
                return tdm_errorf(TDM_ERR_FORMAT, "%s: only_cross_attention[%d] must be a "
                                  "boolean", j->path, i);
            c->only_cross[i++] = cJSON_IsTrue(e);
        }
    } else {
        int b;
        TDM_TRY(tdm_json_bool(j, "only_cross_attention", 0, &b));
        for (int i = 0; i < c->n; i++) c->only_cross[i] = b;
    }
fail:
    return st;
}

/* sample_size: an int or a list of up to two (the first is kept; 0 when
 * absent). */
static tdm_status cfg_sample_size(const tdm_json_t *j, unet_cfg_t *c) {
    tdm_status st = TDM_OK;
    int64_t ss[2] = {0, 0};
    int nss = 0;
    TDM_TRY(tdm_json_int_array(j, "sample_size", 1, ss, 2, &nss));
    for (int i = 0; i < nss; i++)
        if (ss[i] < 1 || ss[i] > TDM_MAX_SAMPLE_SIZE)
            return tdm_json_range_error(j, "sample_size", ss[i], 1, TDM_MAX_SAMPLE_SIZE);
    c->sample_size = nss ? ss[0] : 0;
fail:
    return st;
}

/* addition_embed_type: absent/null, or "text_time" (SDXL's micro-conditioning:
 * add_time_proj = Timesteps(addition_time_embed_dim) of each time id, and
 * add_embedding = TimestepEmbedding(projection_class_embeddings_input_dim,
 * time_embed_dim) of [text_embeds, those sinusoids]); both sizes required,
 * as diffusers needs them. */
static tdm_status cfg_addition(const tdm_json_t *j, unet_cfg_t *c) {
    tdm_status st = TDM_OK;
    const cJSON *v = cfg_item(j, "addition_embed_type");
    if (!v || cJSON_IsNull(v)) return TDM_OK;
    if (!cJSON_IsString(v) || strcmp(v->valuestring, "text_time") != 0)
        return cfg_unsupported(j, "addition_embed_type", "only null and \"text_time\" are supported");
    static const char *const need[] = {"addition_time_embed_dim",
                                       "projection_class_embeddings_input_dim"};
    for (int i = 0; i < 2; i++) {
        const cJSON *n = cfg_item(j, need[i]);
        if (!n || !cJSON_IsNumber(n))
            return tdm_errorf(TDM_ERR_MODEL, "%s: addition_embed_type \"text_time\" needs %s (an "
                              "integer)", j->path, need[i]);
    }
    TDM_TRY(tdm_json_int_range(j, "addition_time_embed_dim", 0, 1, UNET_MAX_DIM, &c->add_time_dim));
    TDM_TRY(tdm_json_int_range(j, "projection_class_embeddings_input_dim", 0, 1, UNET_MAX_CHANNELS,
                               &c->add_in));
fail:
    return st;
}

/* Reads a UNet2DConditionModel config.json into c; the first unsupported
 * or out-of-range key, in a fixed order, is the one reported. */
static tdm_status cfg_parse(const tdm_json_t *j, unet_cfg_t *c) {
    tdm_status st = TDM_OK;
    static const char *const k_down_def[4] = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                              "CrossAttnDownBlock2D", "DownBlock2D"};
    static const char *const k_up_def[4] = {"UpBlock2D", "CrossAttnUpBlock2D",
                                            "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"};
    memset(c, 0, sizeof(*c));
    c->path = j->path;

    TDM_TRY(cfg_check_fixed_keys(j));
    TDM_TRY(cfg_block_out(j, c));
    TDM_TRY(cfg_block_types(j, "down_block_types", k_down_def, "CrossAttnDownBlock2D",
                            "DownBlock2D", c->n, c->down_cross));
    TDM_TRY(cfg_block_types(j, "up_block_types", k_up_def, "CrossAttnUpBlock2D", "UpBlock2D",
                            c->n, c->up_cross));
    TDM_TRY(cfg_per_block(j, "layers_per_block", 2, UNET_MAX_LAYERS, c->n, c->layers));
    TDM_TRY(cfg_per_block(j, "attention_head_dim", 8, UNET_MAX_DIM, c->n, c->heads));
    TDM_TRY(cfg_per_block(j, "transformer_layers_per_block", 1, UNET_MAX_LAYERS, c->n, c->tlayers));
    TDM_TRY(cfg_cross_dim(j, c));
    TDM_TRY(cfg_only_cross(j, c));
    TDM_TRY(tdm_json_int_range(j, "in_channels", 4, 1, UNET_MAX_IO_CHANNELS, &c->in_ch));
    TDM_TRY(tdm_json_int_range(j, "out_channels", 4, 1, UNET_MAX_IO_CHANNELS, &c->out_ch));
    TDM_TRY(cfg_sample_size(j, c));
    TDM_TRY(tdm_json_int_range(j, "norm_num_groups", 32, 1, UNET_MAX_CHANNELS, &c->groups));
    TDM_TRY(tdm_json_float(j, "norm_eps", 1e-5, &c->eps));
    TDM_TRY(tdm_json_float(j, "mid_block_scale_factor", 1.0, &c->mid_scale));
    if (!(c->mid_scale != 0.0)) return cfg_unsupported(j, "mid_block_scale_factor", NULL);
    TDM_TRY(tdm_json_float(j, "freq_shift", 0.0, &c->freq_shift));
    TDM_TRY(tdm_json_bool(j, "flip_sin_to_cos", 1, &c->flip));
    TDM_TRY(tdm_json_bool(j, "center_input_sample", 0, &c->center));
    TDM_TRY(tdm_json_bool(j, "use_linear_projection", 0, &c->linear));
    TDM_TRY(tdm_json_int(j, "downsample_padding", 1, &c->down_pad));
    if (c->down_pad < 0 || c->down_pad > 1) return cfg_unsupported(j, "downsample_padding", NULL);
    if (c->block_out[0] < 2)
        return cfg_unsupported(j, "block_out_channels", "the time embedding needs >= 2 channels");
    TDM_TRY(cfg_addition(j, c));
    /* upcast_attention only changes half-precision runs; dropout is off in eval. */
fail:
    return st;
}

/* ---- loading -------------------------------------------------------------- *
 * One walk over the model (load_model) binds every tensor through u->w
 * (nn/weights.h), which loads it from the weight files or, in list mode,
 * lists it with its shape (and the no-split modules) without touching any
 * file. The walk follows the registration order of diffusers' modules (a
 * block's attentions before its resnets, the up blocks before the mid
 * block), which is the order of named_parameters(). */

/* The streaming unit of a tensor of a split UNet: each resnet, each
 * transformer (attentions.j) and each down/upsampler of a block — the
 * no-split modules of diffusers' UNet2DConditionModel — numbered
 * ((part · 64 + block) · 4 + kind) · 64 + index, part 0 down, 1 mid, 2 up,
 * kind 0 resnets, 1 attentions, 2 down/upsamplers; -1 for the top-level
 * tensors (conv_in, time_embedding, conv_norm_out, conv_out). */
static int64_t unet_unit(int part, int64_t block, int kind, int64_t idx) {
    return ((part * 64 + block) * 4 + kind) * 64 + idx;
}

static int64_t unet_unit_of(const void *ctx, const char *name) {
    (void)ctx;
    long long b = 0, j = 0;
    int part, n = 0;
    char kind[16];
    if (sscanf(name, "down_blocks.%lld.%15[a-z].%lld.%n", &b, kind, &j, &n) == 3 && n) part = 0;
    else if (sscanf(name, "up_blocks.%lld.%15[a-z].%lld.%n", &b, kind, &j, &n) == 3 && n) part = 2;
    else if (sscanf(name, "mid_block.%15[a-z].%lld.%n", kind, &j, &n) == 2 && n) part = 1;
    else return -1;
    int k = !strcmp(kind, "resnets") ? 0 : !strcmp(kind, "attentions") ? 1 : 2;
    return unet_unit(part, b, k, k == 2 ? 0 : j);
}

static tdm_status check_groups(const unet_cfg_t *c, int64_t C, int64_t G, const char *where) {
    if (C % G != 0)
        return tdm_errorf(TDM_ERR_MODEL, "%s: norm_num_groups=%lld does not divide the %lld "
                          "channels of %s", c->path, (long long)G, (long long)C, where);
    return TDM_OK;
}

static tdm_status load_resnet(tdm_unet_t *u, tdm_nn_resnet_t *r, const char *p, int64_t cin,
                              int64_t cout, int64_t temb, const unet_cfg_t *c, double scale) {
    tdm_status st = TDM_OK;
    TDM_TRY(check_groups(c, cin, c->groups, p));
    TDM_TRY(check_groups(c, cout, c->groups, p));
    TDM_TRY(tdm_nn_resnet_bind(&u->w, r, cin, cout, temb, c->groups, (float)c->eps,
                               (float)scale, "%s", p));
fail:
    return st;
}

static tdm_status load_transformer(tdm_unet_t *u, unet_transformer_t *t, const char *p,
                                   int64_t C, int64_t heads, int64_t depth, int only_cross,
                                   const unet_cfg_t *c) {
    tdm_status st = TDM_OK;
    char q[256];
    if (heads < 1 || C / heads < 1)
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: attention_head_dim=%lld heads does not fit "
                          "the %lld channels of %s", c->path, (long long)heads,
                          (long long)C, p);
    t->C = C;
    t->heads = heads;
    t->head_dim = C / heads;                 /* diffusers: out_channels // num_attention_heads */
    t->inner = heads * t->head_dim;
    t->depth = depth;
    t->linear = c->linear;
    TDM_TRY(check_groups(c, C, c->groups, p));
    t->blocks = calloc((size_t)depth, sizeof(*t->blocks));
    if (!t->blocks) return tdm_errorf(TDM_ERR_NOMEM, "unet: out of memory for %s", p);
    int64_t in = t->inner, k1 = c->linear ? 0 : 1;
    TDM_TRY(tdm_nn_norm_bind(&u->w, &t->norm, C, c->groups, 1e-6f, "%s.norm", p));
    const int64_t pin[4] = {in, C, 1, 1}, pout[4] = {C, in, 1, 1};   /* Linear or 1×1 conv */
    TDM_TRY(tdm_weights_bind(&u->w, &t->pin_w, 1, k1 ? 4 : 2, pin, "%s.proj_in.weight", p));
    TDM_TRY(tdm_weights_bind(&u->w, &t->pin_b, 0, 1, &in, "%s.proj_in.bias", p));
    for (int64_t i = 0; i < depth; i++) {
        unet_tblock_t *b = &t->blocks[i];
        snprintf(q, sizeof(q), "%s.transformer_blocks.%lld", p, (long long)i);
        TDM_TRY(tdm_weights_nosplit(&u->w, "BasicTransformerBlock", "%s", q));
        TDM_TRY(tdm_nn_norm_bind(&u->w, &b->norm1, in, 0, 1e-5f, "%s.norm1", q));
        b->attn1_cross = only_cross;
        TDM_TRY(tdm_nn_attention_bind(&u->w, &b->attn1, in, only_cross ? c->cross_dim : in, in,
                                      heads, 0, "%s.attn1", q));
        TDM_TRY(tdm_nn_norm_bind(&u->w, &b->norm2, in, 0, 1e-5f, "%s.norm2", q));
        TDM_TRY(tdm_nn_attention_bind(&u->w, &b->attn2, in, c->cross_dim, in, heads, 0,
                                      "%s.attn2", q));
        TDM_TRY(tdm_nn_norm_bind(&u->w, &b->norm3, in, 0, 1e-5f, "%s.norm3", q));
        TDM_TRY(tdm_nn_ffn_bind(&u->w, &b->ff, in, 4 * in, in, NULL /* GEGLU */, "net.0.proj",
                                "net.2", "%s.ff", q));
    }
    TDM_TRY(tdm_weights_bind(&u->w, &t->pout_w, 1, k1 ? 4 : 2, pout, "%s.proj_out.weight", p));
    TDM_TRY(tdm_weights_bind(&u->w, &t->pout_b, 0, 1, &C, "%s.proj_out.bias", p));
fail:
    return st;
}

/* Allocates a block's resnet/attention arrays (nres resnets, nattn attentions). */
static tdm_status block_alloc(unet_block_t *b, int64_t nres, int64_t nattn, int64_t cout) {
    b->nres = nres;
    b->nattn = nattn;
    b->cross = nattn > 0;
    b->cout = cout;
    b->res = calloc((size_t)nres, sizeof(*b->res));
    b->attn = nattn ? calloc((size_t)nattn, sizeof(*b->attn)) : NULL;
    if (!b->res || (nattn && !b->attn))
        return tdm_errorf(TDM_ERR_NOMEM, "unet: out of memory for the block table");
    return TDM_OK;
}

static tdm_status load_model(tdm_unet_t *u, const unet_cfg_t *c) {
    tdm_status st = TDM_OK;
    int n = c->n;
    int64_t C0 = c->block_out[0], Td = 4 * C0;
    char p[256];

    TDM_TRY(tdm_nn_conv_bind(&u->w, &u->conv_in, c->in_ch, C0, 3, "conv_in"));
    TDM_TRY(tdm_nn_ffn_bind(&u->w, &u->time_emb, C0, Td, Td, tdm_op_silu, "linear_1",
                            "linear_2", "time_embedding"));
    u->add_in = c->add_in;
    u->add_time_dim = c->add_time_dim;
    if (c->add_in)
        TDM_TRY(tdm_nn_ffn_bind(&u->w, &u->add_emb, c->add_in, Td, Td, tdm_op_silu, "linear_1",
                                "linear_2", "add_embedding"));

    for (int i = 0; i < n; i++) {
        unet_block_t *b = &u->down[i];
        int64_t cin = i == 0 ? C0 : c->block_out[i - 1], cout = c->block_out[i];
        int64_t nl = c->layers[i];
        TDM_TRY(block_alloc(b, nl, c->down_cross[i] ? nl : 0, cout));
        for (int64_t j = 0; j < b->nattn; j++) {
            snprintf(p, sizeof(p), "down_blocks.%d.attentions.%lld", i, (long long)j);
            TDM_TRY(load_transformer(u, &b->attn[j], p, cout, c->heads[i], c->tlayers[i],
                                     c->only_cross[i], c));
        }
        for (int64_t j = 0; j < nl; j++) {
            snprintf(p, sizeof(p), "down_blocks.%d.resnets.%lld", i, (long long)j);
            TDM_TRY(load_resnet(u, &b->res[j], p, j == 0 ? cin : cout, cout, Td, c, 1.0));
        }
        if (i < n - 1) {
            b->has_samp = 1;
            TDM_TRY(tdm_nn_conv_bind(&u->w, &b->samp, cout, cout, 3,
                                     "down_blocks.%d.downsamplers.0.conv", i));
        }
    }

    for (int i = 0; i < n; i++) {   /* up block i mirrors down block n-1-i */
        unet_block_t *b = &u->up[i];
        int r = n - 1 - i;
        int64_t prev = i == 0 ? c->block_out[n - 1] : c->block_out[r + 1];
        int64_t cout = c->block_out[r];
        int64_t cin = c->block_out[r > 0 ? r - 1 : 0];
        int64_t nl = c->layers[r] + 1;
        TDM_TRY(block_alloc(b, nl, c->up_cross[i] ? nl : 0, cout));
        snprintf(p, sizeof(p), "up_blocks.%d", i);
        TDM_TRY(tdm_weights_nosplit(&u->w, c->up_cross[i] ? "CrossAttnUpBlock2D" : "UpBlock2D",
                                    "%s", p));
        for (int64_t j = 0; j < b->nattn; j++) {
            snprintf(p, sizeof(p), "up_blocks.%d.attentions.%lld", i, (long long)j);
            TDM_TRY(load_transformer(u, &b->attn[j], p, cout, c->heads[r], c->tlayers[r],
                                     c->only_cross[r], c));
        }
        for (int64_t j = 0; j < nl; j++) {
            int64_t skip = j == nl - 1 ? cin : cout, rin = j == 0 ? prev : cout;
            snprintf(p, sizeof(p), "up_blocks.%d.resnets.%lld", i, (long long)j);
            TDM_TRY(load_resnet(u, &b->res[j], p, rin + skip, cout, Td, c, 1.0));
        }
        if (i < n - 1) {
            b->has_samp = 1;
            TDM_TRY(tdm_nn_conv_bind(&u->w, &b->samp, cout, cout, 3,
                                     "up_blocks.%d.upsamplers.0.conv", i));
        }
    }

    {   /* UNetMidBlock2DCrossAttn: resnet, (attention, resnet) x 1 */
        int64_t Cm = c->block_out[n - 1];
        TDM_TRY(block_alloc(&u->mid, 2, 1, Cm));
        TDM_TRY(load_transformer(u, &u->mid.attn[0], "mid_block.attentions.0", Cm,
                                 c->heads[n - 1], c->tlayers[n - 1], 0, c));
        TDM_TRY(load_resnet(u, &u->mid.res[0], "mid_block.resnets.0", Cm, Cm, Td, c,
                            c->mid_scale));
        TDM_TRY(load_resnet(u, &u->mid.res[1], "mid_block.resnets.1", Cm, Cm, Td, c,
                            c->mid_scale));
    }

    TDM_TRY(check_groups(c, C0, c->groups, "conv_norm_out"));
    TDM_TRY(tdm_nn_norm_bind(&u->w, &u->norm_out, C0, c->groups, (float)c->eps, "conv_norm_out"));
    TDM_TRY(tdm_nn_conv_bind(&u->w, &u->conv_out, C0, c->out_ch, 3, "conv_out"));
fail:
    return st;
}

static tdm_status load_any(tdm_unet_t **out, const char *root, const char *sub,
                           const char *variant, tdm_device_t *dev,
                           const tdm_placement_t *place) {
    tdm_status st = TDM_OK;
    tdm_json_t j = {0};
    tdm_unet_t *u = NULL;
    unet_cfg_t c;
    char path[TDM_PATH_MAX];
    *out = NULL;
    if (!root || !sub || !dev)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_unet_load: root, sub and dev are required");

    TDM_TRY(tdm_path_join(path, sizeof(path), root, sub, "config.json"));
    TDM_TRY(tdm_json_load(&j, path));
    TDM_TRY(cfg_parse(&j, &c));
    u = calloc(1, sizeof(*u));
    if (!u) { st = tdm_errorf(TDM_ERR_NOMEM, "unet: out of memory"); goto fail; }
    tdm_weights_init(&u->w, "unet", dev, place);
    u->w.unit_of = unet_unit_of;
    TDM_TRY(tdm_weights_open(&u->w, root, sub, variant));
    u->dev = dev;
    u->nblocks = c.n;
    memcpy(u->block_out, c.block_out, sizeof(c.block_out));
    u->flip_sin_to_cos = c.flip;
    u->freq_shift = c.freq_shift;
    u->center_input = c.center;
    u->down_pad = c.down_pad;
    u->info.in_channels = c.in_ch;
    u->info.out_channels = c.out_ch;
    u->info.sample_size = c.sample_size;
    u->info.cross_attention_dim = c.cross_dim;
    u->info.num_blocks = c.n;
    u->info.num_downsamplers = c.n - 1;
    u->info.time_embed_dim = 4 * c.block_out[0];
    u->info.add_time_dim = c.add_time_dim;
    u->info.add_in = c.add_in;
    TDM_TRY(load_model(u, &c));
    tdm_weights_finish(&u->w);
    u->info.param_bytes = u->w.bytes;
    tdm_json_free(&j);
    *out = u;
    return TDM_OK;
fail:
    tdm_unet_free(u);
    tdm_json_free(&j);
    return st;
}

tdm_status tdm_unet_load(tdm_unet_t **out, const char *root, const char *sub,
                         const char *variant, tdm_device_t *dev) {
    return load_any(out, root, sub, variant, dev, NULL);
}

tdm_status tdm_unet_load_placed(tdm_unet_t **out, const char *root, const char *sub,
                                const char *variant, const tdm_placement_t *pl) {
    tdm_status st = tdm_placement_check(pl, "unet");
    if (st != TDM_OK) return st;
    return load_any(out, root, sub, variant, pl->main, pl);
}

tdm_status tdm_unet_plist(const char *config_path, tdm_dtype dt, tdm_plist_t *out) {
    tdm_status st = TDM_OK;
    tdm_json_t j = {0};
    tdm_unet_t *u = NULL;
    unet_cfg_t c;
    tdm_plist_init(out, dt);
    if (!config_path)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_unet_plist: config_path is required");
    TDM_TRY(tdm_json_load(&j, config_path));
    TDM_TRY(cfg_parse(&j, &c));
    u = calloc(1, sizeof(*u));   /* holds the block tables of the walk; no weights */
    if (!u) { st = tdm_errorf(TDM_ERR_NOMEM, "unet: out of memory"); goto fail; }
    tdm_weights_init_list(&u->w, "unet", out);
    TDM_TRY(load_model(u, &c));
fail:
    if (st != TDM_OK) tdm_plist_free(out);
    tdm_unet_free(u);
    tdm_json_free(&j);
    return st;
}

static void block_free(unet_block_t *b) {
    if (b->attn)
        for (int64_t i = 0; i < b->nattn; i++) free(b->attn[i].blocks);
    free(b->attn);
    free(b->res);
}

void tdm_unet_free(tdm_unet_t *u) {
    if (!u) return;
    tdm_op_graph_free(u->dev, u->graph);
    if (u->g_emb) tdm_dev_free(u->dev, u->g_emb, u->g_emb_n * (int64_t)sizeof(float));
    tdm_weights_free(&u->w);
    for (int i = 0; i < UNET_MAX_BLOCKS; i++) {
        block_free(&u->down[i]);
        block_free(&u->up[i]);
    }
    block_free(&u->mid);
    free(u);
}

const tdm_unet_info_t *tdm_unet_info(const tdm_unet_t *u) { return u ? &u->info : NULL; }

int64_t tdm_unet_graph_bytes(const tdm_unet_t *u) {
    return u && u->g_emb ? u->g_emb_n * (int64_t)sizeof(float) : 0;
}

/* ---- forward ---------------------------------------------------------------- */

typedef struct {
    unet_buf_t buf;
    int64_t    C, H, W;
} unet_skip_t;

/* The running activation: `cur` owns a buffer, or is empty while `hp`
 * points into the newest skip connection. */
typedef struct {
    unet_buf_t   cur;
    const float *hp;
    int64_t      C, H, W;
} unet_act_t;

static void act_set(tdm_device_t *dev, unet_act_t *a, unet_buf_t nb, int64_t C, int64_t H,
                    int64_t W) {
    unet_buf_free(dev, &a->cur);
    a->cur = nb;
    a->hp = nb.p;
    a->C = C;
    a->H = H;
    a->W = W;
}

/* Moves the running activation into the skip stack (it stays readable). */
static void act_push(unet_act_t *a, unet_skip_t *skips, int64_t *ns) {
    skips[*ns].buf = a->cur;
    skips[*ns].C = a->C;
    skips[*ns].H = a->H;
    skips[*ns].W = a->W;
    (*ns)++;
    a->cur.p = NULL;
    a->cur.n = 0;
}

/* Layer j of block bi of `part` (0 down, 1 mid, 2 up): its resnet, then its
 * transformer; offloaded weights of each are brought in just for it. */
static tdm_status run_block_layer(tdm_unet_t *u, const unet_block_t *b, int part, int64_t bi,
                                  int64_t j, unet_act_t *a, int64_t B, const float *temb,
                                  const float *ctx, int64_t T) {
    tdm_status st = TDM_OK;
    unet_buf_t nb = {0};
    const tdm_nn_resnet_t *r = &b->res[j];
    if (r->cin != a->C)
        return tdm_errorf(TDM_ERR_INTERNAL, "unet: resnet expects %lld channels, got %lld",
                          (long long)r->cin, (long long)a->C);
    TDM_TRY(tdm_offload_in(&u->w.off, u->dev, unet_unit(part, bi, 0, j)));
    TDM_TRY(unet_resnet_forward(u->dev, r, a->hp, B, a->H, a->W, temb, &nb));
    tdm_offload_out(&u->w.off, unet_unit(part, bi, 0, j));
    act_set(u->dev, a, nb, r->cout, a->H, a->W);
    if (b->cross && j < b->nattn) {
        TDM_TRY(tdm_offload_in(&u->w.off, u->dev, unet_unit(part, bi, 1, j)));
        TDM_TRY(unet_transformer_forward(u->dev, &b->attn[j], a->hp, B, a->H, a->W, ctx, T, &nb));
        tdm_offload_out(&u->w.off, unet_unit(part, bi, 1, j));
        act_set(u->dev, a, nb, a->C, a->H, a->W);
    }
fail:
    return st;
}

/* The forward pass from the device-side sinusoidal timestep embedding emb
 * (B × C0 floats) on: only device work (no host reads, no syncs), so a CUDA
 * graph can capture it — except a split model's weight streaming and the
 * center_input constant (unet_graph_usable keeps those eager). */
static tdm_status unet_forward_dev(tdm_unet_t *u, const float *x, int64_t B, int64_t H,
                                   int64_t W, const float *emb, const float *ctx, int64_t T,
                                   float *out) {
    tdm_status st = TDM_OK;
    tdm_device_t *dev = u->dev;
    unet_buf_t t1 = {0}, temb = {0}, xin = {0}, nb = {0};
    unet_skip_t *skips = NULL;
    unet_act_t a = {{0}, NULL, 0, 0, 0};
    int64_t ns = 0, nskips = 1, n = u->nblocks, C0 = u->block_out[0];
    int64_t Td = u->info.time_embed_dim;
    for (int64_t i = 0; i < n; i++) nskips += u->down[i].nres + u->down[i].has_samp;
    skips = calloc((size_t)nskips, sizeof(*skips));
    if (!skips) return tdm_errorf(TDM_ERR_NOMEM, "unet: out of memory for the skip table");

    /* time embedding: temb = SiLU(linear_2(SiLU(linear_1(emb)))); the outer
     * SiLU is the one every resnet applies before time_emb_proj */
    TDM_TRY(tdm_offload_in(&u->w.off, dev, -1));   /* offloaded top-level weights, for the whole call */
    TDM_TRY(unet_buf_new(dev, &t1, B * Td, "unet time embedding"));
    TDM_TRY(unet_buf_new(dev, &temb, B * Td, "unet time embedding"));
    tdm_nn_ffn_forward(dev, &u->time_emb, temb.p, emb, t1.p, NULL, B);
    if (u->add_in) {   /* emb + add_embedding([text_embeds, time sinusoids]) (after emb) */
        unet_buf_t aug = {0};
        TDM_TRY(unet_buf_new(dev, &aug, B * Td, "unet added embedding"));
        tdm_nn_ffn_forward(dev, &u->add_emb, aug.p, emb + B * C0, t1.p, NULL, B);
        tdm_op_add(dev, temb.p, temb.p, aug.p, B * Td);
        unet_buf_free(dev, &aug);
    }
    tdm_op_silu(dev, temb.p, B * Td);
    unet_buf_free(dev, &t1);

    /* conv_in (optionally on 2x - 1: x * 2, then -1 added as the one
     * "channel bias" of a (1, 1, nx) view; 2x is exact, so this is 2x - 1) */
    if (u->center_input) {
        const float minus_one = -1.0f;
        int64_t nx = B * u->info.in_channels * H * W;
        TDM_TRY(unet_buf_new(dev, &xin, nx + 1, "unet centered input"));
        TDM_TRY(tdm_dev_upload(dev, xin.p + nx, &minus_one, (int64_t)sizeof(float),
                               "unet centered input"));
        tdm_op_scale(dev, xin.p, x, 2.0f, nx);
        tdm_op_add_channel_bias(dev, xin.p, xin.p + nx, 1, 1, nx);
    }
    TDM_TRY(unet_conv(dev, &u->conv_in, xin.p ? xin.p : x, B, H, W, 1, 1, &nb, NULL, NULL,
                      NULL));
    unet_buf_free(dev, &xin);
    act_set(dev, &a, nb, C0, H, W);
    act_push(&a, skips, &ns);

    /* down blocks: every layer's output and every downsampler's output is a skip */
    for (int64_t i = 0; i < n; i++) {
        const unet_block_t *b = &u->down[i];
        for (int64_t j = 0; j < b->nres; j++) {
            TDM_TRY(run_block_layer(u, b, 0, i, j, &a, B, temb.p, ctx, T));
            act_push(&a, skips, &ns);
        }
        if (b->has_samp) {   /* samp.w may be offloaded (NULL) until brought in */
            int64_t Ho, Wo;
            TDM_TRY(tdm_offload_in(&u->w.off, dev, unet_unit(0, i, 2, 0)));
            TDM_TRY(unet_conv(dev, &b->samp, a.hp, B, a.H, a.W, 2,
                              u->down_pad ? u->down_pad : TDM_NN_PAD_DOWN, &nb, NULL, &Ho, &Wo));
            tdm_offload_out(&u->w.off, unet_unit(0, i, 2, 0));
            act_set(dev, &a, nb, b->cout, Ho, Wo);
            act_push(&a, skips, &ns);
        }
    }

    /* mid block */
    TDM_TRY(run_block_layer(u, &u->mid, 1, 0, 0, &a, B, temb.p, ctx, T));
    TDM_TRY(run_block_layer(u, &u->mid, 1, 0, 1, &a, B, temb.p, ctx, T));

    /* up blocks: each resnet takes cat([h, newest skip], dim=1) */
    for (int64_t i = 0; i < n; i++) {
        const unet_block_t *b = &u->up[i];
        for (int64_t j = 0; j < b->nres; j++) {
            unet_skip_t *s;
            if (ns < 1) { st = tdm_errorf(TDM_ERR_INTERNAL, "unet: skip stack empty"); goto fail; }
            s = &skips[ns - 1];
            if (s->H != a.H || s->W != a.W) {
                st = tdm_errorf(TDM_ERR_INTERNAL, "unet: skip %lldx%lld vs activation %lldx%lld",
                                (long long)s->H, (long long)s->W, (long long)a.H, (long long)a.W);
                goto fail;
            }
            TDM_TRY(unet_buf_new(dev, &nb, B * (a.C + s->C) * a.H * a.W, "unet concat"));
            tdm_op_concat_channels(dev, nb.p, a.hp, a.C, s->buf.p, s->C, B, a.H * a.W);
            act_set(dev, &a, nb, a.C + s->C, a.H, a.W);
            unet_buf_free(dev, &s->buf);
            ns--;
            TDM_TRY(run_block_layer(u, b, 2, i, j, &a, B, temb.p, ctx, T));
        }
        if (b->has_samp) {   /* samp.w may be offloaded (NULL) until brought in */
            /* diffusers forwards upsample_size = the next skip's size when H or W
             * is not a multiple of 2^num_upsamplers; otherwise that size is 2x. */
            int64_t Ht = ns > 0 ? skips[ns - 1].H : 2 * a.H, Wt = ns > 0 ? skips[ns - 1].W : 2 * a.W;
            TDM_TRY(unet_buf_new(dev, &nb, B * a.C * Ht * Wt, "unet upsample"));
            tdm_nn_upsample_nearest(dev, nb.p, a.hp, B, a.C, a.H, a.W, Ht, Wt);
            act_set(dev, &a, nb, a.C, Ht, Wt);
            TDM_TRY(tdm_offload_in(&u->w.off, dev, unet_unit(2, i, 2, 0)));
            TDM_TRY(unet_conv(dev, &b->samp, a.hp, B, a.H, a.W, 1, 1, &nb, NULL, NULL, NULL));
            tdm_offload_out(&u->w.off, unet_unit(2, i, 2, 0));
            act_set(dev, &a, nb, b->cout, a.H, a.W);
        }
    }

    /* output head: conv_out(SiLU(conv_norm_out(h))) */
    if (a.C != C0 || a.H != H || a.W != W) {
        st = tdm_errorf(TDM_ERR_INTERNAL, "unet: up path ended at %lldx%lldx%lld",
                        (long long)a.C, (long long)a.H, (long long)a.W);
        goto fail;
    }
    TDM_TRY(unet_buf_new(dev, &nb, B * C0 * H * W, "unet norm_out"));
    tdm_nn_group_norm_forward(dev, &u->norm_out, nb.p, a.hp, B, H * W, 1);
    act_set(dev, &a, nb, C0, H, W);
    TDM_TRY(unet_conv(dev, &u->conv_out, a.hp, B, H, W, 1, 1, NULL, out, NULL, NULL));
fail:
    tdm_offload_out_all(&u->w.off);   /* whatever is still brought in */
    unet_buf_free(dev, &t1);
    unet_buf_free(dev, &temb);
    unet_buf_free(dev, &xin);
    unet_buf_free(dev, &a.cur);
    if (skips)
        for (int64_t i = 0; i < nskips; i++) unet_buf_free(dev, &skips[i].buf);
    free(skips);
    return st;
}

/* The eager forward pass: the host sinusoid emb_host (B × C0) uploaded into a
 * buffer of this call, then unet_forward_dev. */
static tdm_status unet_forward_eager(tdm_unet_t *u, const float *x, int64_t B, int64_t H,
                                     int64_t W, const float *emb_host, const float *ctx,
                                     int64_t T, float *out) {
    unet_buf_t emb = {0};
    tdm_status st = unet_buf_new(u->dev, &emb, B * (u->block_out[0] + u->add_in),
                                 "unet timestep embedding");
    if (st == TDM_OK)
        st = tdm_dev_upload(u->dev, emb.p, emb_host, emb.n * (int64_t)sizeof(float),
                            "unet timestep embedding");
    if (st == TDM_OK) st = unet_forward_dev(u, x, B, H, W, emb.p, ctx, T, out);
    unet_buf_free(u->dev, &emb);
    return st;
}

/* CUDA graphs: on a device that has them, for a model without streamed
 * weights or the center_input constant (both upload from the host). */
static int unet_graph_usable(const tdm_unet_t *u) {
    return u->w.off.n == 0 && !u->center_input && tdm_op_graph_ok(u->dev);
}

/* The forward pass through a CUDA graph. A call whose pointers and sizes
 * differ from the previous call's runs eagerly (and drops the graph): the
 * eager run creates the cuBLASLt plans and grows the staging buffers that a
 * capture may not create. The next call with the same arguments is captured
 * and replayed; later ones only replay. Before each replay the new timestep
 * embedding is uploaded into g_emb, which the graph reads. */
static tdm_status unet_forward_graphed(tdm_unet_t *u, const float *x, int64_t B, int64_t H,
                                       int64_t W, const float *emb_host, const float *ctx,
                                       int64_t T, float *out) {
    tdm_status st = TDM_OK, se;
    tdm_device_t *dev = u->dev;
    const int64_t n = B * (u->block_out[0] + u->add_in), bytes = n * (int64_t)sizeof(float);
    const struct unet_gkey key = {x, ctx, out, B, H, W, T};
    const int same = u->g_state && key.x == u->gkey.x && key.ctx == u->gkey.ctx &&
                     key.out == u->gkey.out && key.B == u->gkey.B && key.H == u->gkey.H &&
                     key.W == u->gkey.W && key.T == u->gkey.T;
    void *g = NULL;
    if (!same) {
        tdm_op_graph_free(dev, u->graph);
        u->graph = NULL;
        u->g_state = 0;
        if ((st = unet_forward_eager(u, x, B, H, W, emb_host, ctx, T, out)) != TDM_OK) return st;
        u->gkey = key;
        u->g_state = 1;
        return TDM_OK;
    }
    if (u->g_emb && u->g_emb_n != n) {
        tdm_dev_free(dev, u->g_emb, u->g_emb_n * (int64_t)sizeof(float));
        u->g_emb = NULL;
    }
    if (!u->g_emb) {
        if (!(u->g_emb = tdm_dev_alloc(dev, bytes, "unet graph timestep embedding")))
            return TDM_ERR_NOMEM;
        u->g_emb_n = n;
    }
    TDM_TRY(tdm_dev_upload(dev, u->g_emb, emb_host, bytes, "unet timestep embedding"));
    if (u->g_state == 1) {
        /* the device's reuse cache would hand the capture blocks allocated
         * outside it (and keep the graph's): off while capturing, so every
         * block the graph uses is its own */
        const int cache = dev->cache_enabled;
        TDM_TRY(tdm_op_graph_begin(dev));
        dev->cache_enabled = 0;
        st = unet_forward_dev(u, x, B, H, W, u->g_emb, ctx, T, out);
        dev->cache_enabled = cache;
        se = tdm_op_graph_end(dev, &g);   /* ends the capture whatever happened */
        if (st == TDM_OK) st = se;
        if (st != TDM_OK) {
            tdm_op_graph_free(dev, g);
            u->g_state = 0;
            return st;
        }
        u->graph = g;
        u->g_state = 2;
        /* the eager call's working set stays in the stream pool; the graph
         * has its own memory now */
        tdm_dev_trim(dev);
    }
    return tdm_op_graph_launch(dev, u->graph);
fail:
    return st;
}

tdm_status tdm_unet_forward(tdm_unet_t *u, const float *x, int64_t B, int64_t H, int64_t W,
                            const float *timesteps, const float *ctx, int64_t T, float *out) {
    return tdm_unet_forward_added(u, x, B, H, W, timesteps, ctx, T, NULL, out);
}

tdm_status tdm_unet_forward_added(tdm_unet_t *u, const float *x, int64_t B, int64_t H, int64_t W,
                                  const float *timesteps, const float *ctx, int64_t T,
                                  const tdm_unet_added_t *add, float *out) {
    tdm_status st;
    float *emb_host = NULL;
    int64_t n, C0, chk;
    if (!u || !x || !timesteps || !ctx || !out)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_unet_forward: NULL argument");
    if (B < 1 || H < 1 || W < 1 || T < 1)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_unet_forward: B=%lld H=%lld W=%lld T=%lld "
                          "must be >= 1", (long long)B, (long long)H, (long long)W, (long long)T);
    if (u->add_in && (!add || !add->text_embeds || !add->time_ids))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "unet: addition_embed_type \"text_time\" needs the "
                          "pooled text embeddings and the time ids (an SDXL UNet)");
    if (!u->add_in && add)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "unet: text_embeds and time_ids given, but the UNet "
                          "has no addition_embed_type");
    if (add && (add->text_dim < 0 || add->n_ids < 0 ||
                add->text_dim + add->n_ids * u->add_time_dim != u->add_in))
        return tdm_errorf(TDM_ERR_MODEL, "unet: the added embedding takes %lld values "
                          "(projection_class_embeddings_input_dim), but %lld text embedding values "
                          "+ %lld time ids x addition_time_embed_dim %lld = %lld were given",
                          (long long)u->add_in, (long long)add->text_dim, (long long)add->n_ids,
                          (long long)u->add_time_dim,
                          (long long)(add->text_dim + add->n_ids * u->add_time_dim));
    n = u->nblocks;
    C0 = u->block_out[0];
    {   /* every activation is at most B * H * W * 16 * (largest channel count) floats */
        int64_t cmax = C0;
        for (int64_t i = 0; i < n; i++)
            if (u->block_out[i] > cmax) cmax = u->block_out[i];
        if (!tdm_mul_ok(B, H, &chk) || !tdm_mul_ok(chk, W, &chk) || !tdm_mul_ok(chk, cmax, &chk) ||
            !tdm_mul_ok(chk, 64, &chk) || !tdm_mul_ok(B * cmax, T, &chk) ||
            !tdm_mul_ok(chk, 16, &chk) || !tdm_mul_ok(B, C0 + u->add_in, &chk))
            return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_unet_forward: B=%lld H=%lld W=%lld "
                              "T=%lld is too large", (long long)B, (long long)H, (long long)W,
                              (long long)T);
    }
    /* the sinusoid (B x C0 floats) is computed on the host from the host
     * timesteps; the added embedding's input (B x add_in) follows it: per
     * row the text embeddings, then each time id's sinusoid */
    emb_host = malloc((size_t)(B * (C0 + u->add_in)) * sizeof(float));
    if (!emb_host) return tdm_errorf(TDM_ERR_NOMEM, "unet: out of memory for the timestep embedding");
    tdm_nn_timestep_embedding(emb_host, timesteps, B, C0, u->flip_sin_to_cos, u->freq_shift,
                              1.0f);
    for (int64_t b = 0; add && b < B; b++) {
        float *row = emb_host + B * C0 + b * u->add_in;
        memcpy(row, add->text_embeds + b * add->text_dim, (size_t)add->text_dim * sizeof(float));
        tdm_nn_timestep_embedding(row + add->text_dim, add->time_ids + b * add->n_ids, add->n_ids,
                                  u->add_time_dim, u->flip_sin_to_cos, u->freq_shift, 1.0f);
    }
    st = unet_graph_usable(u) ? unet_forward_graphed(u, x, B, H, W, emb_host, ctx, T, out)
                              : unet_forward_eager(u, x, B, H, W, emb_host, ctx, T, out);
    free(emb_host);
    return st;
}

/* ---- working memory ----------------------------------------------------------
 * unet_forward_dev's allocations replayed without memory: every unet_buf_new
 * of the forward (and of unet2d_blocks.c) is a take of the same size here and
 * every free a give, in the same order, so `peak` is the high-water mark of
 * what one forward call holds on the device; attention kernels' own scratch
 * (tdm_op_attention_scratch_bytes) is added at the moment it exists. Sizes
 * saturate at INT64_MAX. Keep in step with the forward functions. */
typedef struct {
    tdm_device_t *dev;
    int64_t cur, peak;
} unet_wk_t;

static int64_t wk_mul(int64_t a, int64_t b) {
    int64_t r;
    return tdm_mul_ok(a, b, &r) ? r : INT64_MAX;
}

static int64_t wk_add(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }

/* n floats taken; returns n (to give back later). */
static int64_t wk_take(unet_wk_t *k, int64_t n) {
    k->cur = wk_add(k->cur, wk_mul(n, (int64_t)sizeof(float)));
    if (k->cur > k->peak) k->peak = k->cur;
    return n;
}

static void wk_give(unet_wk_t *k, int64_t n) {
    if (k->cur < INT64_MAX) k->cur -= wk_mul(n, (int64_t)sizeof(float));
}

/* bytes held only for a moment (kernel scratch) on top of what is held */
static void wk_peek(unet_wk_t *k, int64_t bytes) {
    int64_t t = wk_add(k->cur, bytes);
    if (t > k->peak) k->peak = t;
}

/* unet_conv: scratch, then (when `out` is 0) the output buffer; returns the
 * output floats (0 when written to the caller's buffer). */
static int64_t wk_conv(unet_wk_t *k, const tdm_nn_conv_t *c, int64_t B, int64_t H, int64_t W,
                       int64_t stride, int64_t pad, int out, int64_t *Ho, int64_t *Wo) {
    int64_t ho, wo, y = 0;
    tdm_nn_conv_out_size(c, H, W, stride, pad, &ho, &wo);
    const int64_t ns = wk_take(k, tdm_nn_conv_scratch(k->dev, c, H, W, stride, pad));
    if (!out) y = wk_take(k, wk_mul(B * c->cout, wk_mul(ho, wo)));
    wk_give(k, ns);
    if (Ho) *Ho = ho;
    if (Wo) *Wo = wo;
    return y;
}

/* unet_resnet_forward; returns its output floats (held). */
static int64_t wk_resnet(unet_wk_t *k, const tdm_nn_resnet_t *r, int64_t B, int64_t H, int64_t W) {
    tdm_nn_resnet_sizes_t n;
    tdm_nn_resnet_sizes(k->dev, r, B, H, W, &n);
    const int64_t y = wk_take(k, n.o), h = wk_take(k, n.h);
    const int64_t t = wk_take(k, n.t > n.sc ? n.t : n.sc), tp = wk_take(k, n.tp);
    const int64_t scr = wk_take(k, n.scratch > 0 ? n.scratch : 0);
    wk_give(k, h);
    wk_give(k, t);
    wk_give(k, tp);
    wk_give(k, scr);
    return y;
}

/* attn_forward (cross: keys and values from the T context tokens) */
static void wk_attn(unet_wk_t *k, const tdm_nn_attention_t *a, int cross, int64_t B, int64_t S,
                    int64_t T) {
    const int64_t Tk = cross ? T : S;
    tdm_nn_attention_sizes_t n;
    tdm_nn_attention_sizes(a, B, S, Tk, &n);
    const int64_t q = wk_take(k, n.q), kk = wk_take(k, n.kv), v = wk_take(k, n.kv);
    const int64_t o = wk_take(k, n.o), p = wk_take(k, n.y);
    wk_peek(k, tdm_op_attention_scratch_bytes(k->dev, TDM_F32, B, S, Tk, a->heads,
                                              a->q.out / a->heads));
    wk_give(k, q);
    wk_give(k, kk);
    wk_give(k, v);
    wk_give(k, o);
    wk_give(k, p);
}

/* unet_transformer_forward; returns its output floats (held). */
static int64_t wk_transformer(unet_wk_t *k, const unet_transformer_t *t, int64_t B, int64_t H,
                              int64_t W, int64_t T) {
    const int64_t S = wk_mul(H, W), C = t->C, in = t->inner, rows = wk_mul(B, S), F = 4 * in;
    int64_t nrm = wk_take(k, wk_mul(B * C, S)), a, y;
    const int64_t tok = wk_take(k, wk_mul(rows, in));
    const tdm_nn_conv_t pin = {NULL, NULL, C, in, 1}, pout = {NULL, NULL, in, C, 1};
    a = !t->linear ? wk_conv(k, &pin, B, H, W, 1, 0, 0, NULL, NULL) : wk_take(k, wk_mul(rows, C));
    wk_give(k, a);
    wk_give(k, nrm);
    for (int64_t i = 0; i < t->depth; i++) {   /* tblock_forward */
        const unet_tblock_t *tb = &t->blocks[i];
        nrm = wk_take(k, wk_mul(rows, in));
        wk_attn(k, &tb->attn1, tb->attn1_cross, B, S, T);
        wk_attn(k, &tb->attn2, 1, B, S, T);
        const int64_t h = wk_take(k, wk_mul(rows, 2 * F)), g = wk_take(k, wk_mul(rows, F));
        wk_give(k, nrm);
        wk_give(k, h);
        wk_give(k, g);
    }
    if (!t->linear) {
        a = wk_take(k, wk_mul(rows, in));
        y = wk_conv(k, &pout, B, H, W, 1, 0, 0, NULL, NULL);
    } else {
        a = wk_take(k, wk_mul(rows, C));
        y = wk_take(k, wk_mul(rows, C));
    }
    wk_give(k, a);
    wk_give(k, tok);
    return y;
}

/* run_block_layer: the running activation `cur` is replaced by the resnet's
 * output, then by the transformer's. */
static void wk_layer(unet_wk_t *k, const unet_block_t *b, int64_t j, int64_t *cur, int64_t B,
                     int64_t H, int64_t W, int64_t T) {
    int64_t nb = wk_resnet(k, &b->res[j], B, H, W);
    wk_give(k, *cur);
    *cur = nb;
    if (b->cross && j < b->nattn) {
        nb = wk_transformer(k, &b->attn[j], B, H, W, T);
        wk_give(k, *cur);
        *cur = nb;
    }
}

/* The peak of unet_forward_eager(B, H, W, T) on u->dev, in bytes. */
static int64_t unet_work_walk(const tdm_unet_t *u, int64_t B, int64_t H, int64_t W, int64_t T) {
    unet_wk_t k = {u->dev, 0, 0};
    const int64_t n = u->nblocks, C0 = u->block_out[0], Td = u->info.time_embed_dim;
    int64_t (*sk)[3], nsk = 1, ns = 0, cur, xin = 0, Ha = H, Wa = W;   /* skips: floats, H, W */
    for (int64_t i = 0; i < n; i++) nsk += u->down[i].nres + u->down[i].has_samp;
    if (!(sk = calloc((size_t)nsk, sizeof *sk))) return INT64_MAX;
    wk_take(&k, B * (C0 + u->add_in));                   /* timestep (+ added) embedding */
    const int64_t t1 = wk_take(&k, B * Td);
    wk_take(&k, B * Td);                                 /* temb, held to the end */
    if (u->add_in) wk_give(&k, wk_take(&k, B * Td));     /* the added embedding */
    wk_give(&k, t1);
    if (u->center_input) xin = wk_take(&k, wk_add(wk_mul(B * u->info.in_channels, wk_mul(H, W)), 1));
    cur = wk_conv(&k, &u->conv_in, B, H, W, 1, 1, 0, NULL, NULL);
    wk_give(&k, xin);
#define PUSH()                                                             \
    do {                                                                   \
        sk[ns][0] = cur; sk[ns][1] = Ha; sk[ns][2] = Wa; ns++;             \
        cur = 0;                                                           \
    } while (0)
    PUSH();
    for (int64_t i = 0; i < n; i++) {
        const unet_block_t *b = &u->down[i];
        for (int64_t j = 0; j < b->nres; j++) {
            wk_layer(&k, b, j, &cur, B, Ha, Wa, T);
            PUSH();
        }
        if (b->has_samp) {
            int64_t Ho, Wo;
            cur = wk_conv(&k, &b->samp, B, Ha, Wa, 2, u->down_pad ? u->down_pad : TDM_NN_PAD_DOWN, 0,
                          &Ho, &Wo);
            Ha = Ho;
            Wa = Wo;
            PUSH();
        }
    }
#undef PUSH
    wk_layer(&k, &u->mid, 0, &cur, B, Ha, Wa, T);
    wk_layer(&k, &u->mid, 1, &cur, B, Ha, Wa, T);
    int64_t C = u->mid.cout;
    for (int64_t i = 0; i < n; i++) {
        const unet_block_t *b = &u->up[i];
        for (int64_t j = 0; j < b->nres && ns > 0; j++) {
            const int64_t nb = wk_take(&k, wk_mul(B * b->res[j].cin, wk_mul(Ha, Wa)));
            wk_give(&k, cur);
            cur = nb;
            wk_give(&k, sk[--ns][0]);
            wk_layer(&k, b, j, &cur, B, Ha, Wa, T);
            C = b->cout;
        }
        if (b->has_samp) {
            const int64_t Ht = ns > 0 ? sk[ns - 1][1] : 2 * Ha, Wt = ns > 0 ? sk[ns - 1][2] : 2 * Wa;
            int64_t nb = wk_take(&k, wk_mul(B * C, wk_mul(Ht, Wt)));
            wk_give(&k, cur);
            cur = nb;
            Ha = Ht;
            Wa = Wt;
            nb = wk_conv(&k, &b->samp, B, Ha, Wa, 1, 1, 0, NULL, NULL);
            wk_give(&k, cur);
            cur = nb;
        }
    }
    const int64_t nb = wk_take(&k, wk_mul(B * C0, wk_mul(H, W)));   /* norm_out */
    wk_give(&k, cur);
    (void)nb;
    wk_conv(&k, &u->conv_out, B, H, W, 1, 1, 1, NULL, NULL);
    free(sk);
    return k.peak;
}

tdm_status tdm_unet_work_bytes(const char *config_path, tdm_device_t *dev, int64_t B, int64_t H,
                               int64_t W, int64_t T, int64_t *out) {
    tdm_status st = TDM_OK;
    tdm_json_t j = {0};
    tdm_plist_t pl;
    tdm_unet_t *u = NULL;
    unet_cfg_t c;
    *out = 0;
    tdm_plist_init(&pl, TDM_F32);
    if (!config_path || !dev || B < 1 || H < 1 || W < 1 || T < 1)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_unet_work_bytes: config, device and sizes >= 1 "
                          "are required");
    TDM_TRY(tdm_json_load(&j, config_path));
    TDM_TRY(cfg_parse(&j, &c));
    u = calloc(1, sizeof(*u));   /* the block tables of the walk; no weights */
    if (!u) { st = tdm_errorf(TDM_ERR_NOMEM, "unet: out of memory"); goto fail; }
    u->dev = dev;
    u->nblocks = c.n;
    memcpy(u->block_out, c.block_out, sizeof(c.block_out));
    u->center_input = c.center;
    u->down_pad = c.down_pad;
    u->info.in_channels = c.in_ch;
    u->info.out_channels = c.out_ch;
    u->info.time_embed_dim = 4 * c.block_out[0];
    tdm_weights_init_list(&u->w, "unet", &pl);   /* listing: fills the tables only */
    TDM_TRY(load_model(u, &c));
    *out = unet_work_walk(u, B, H, W, T);
fail:
    tdm_plist_free(&pl);
    tdm_unet_free(u);
    tdm_json_free(&j);
    return st;
}
