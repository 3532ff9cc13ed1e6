/* flux.c — FluxTransformer2DModel (FLUX.1): config.json parsing and
 * validation, weight loading with shape checks, and the float32 forward pass:
 * time/guidance/pooled-text embedding, x/context embedders, RoPE tables from
 * the position ids, double-stream blocks, single-stream blocks, the final
 * AdaLayerNormContinuous and proj_out. The loader, run without weights,
 * also lists the parameters for the placement planner (tdm_flux_plist).
 *
 * Activations use one layout throughout: the joint sequence (B, S, width)
 * with S = T + N, text rows first ([txt, img], as diffusers concatenates for
 * attention and for the single blocks). A double block works on the two row
 * ranges ("segments") with separate weights; a single block on all S rows.
 * Every step is a device op (backend/ops.h), so the model runs where its
 * weights were loaded; only the timestep sinusoid and the RoPE tables are
 * made on the host (from host timesteps and ids) and uploaded.
 *
 * Context parallelism (tdm_flux_forward_cp) runs the same code on a rank's
 * rows: its share of the text rows then its share of the image rows stand
 * for [txt, img], the RoPE tables are made for those rows, and only the
 * joint attention (nn/ulysses.h, nn/ring.h) and the final gather see other
 * ranks.
 *
 * Tensor parallelism (tdm_flux_load_tp) is a property of the loaded model:
 * a rank holds its heads' columns of q/k/v and of the MLPs' first linears
 * and the matching input columns of the output projections (bind_col,
 * bind_row), runs every block on its Hl heads and Dl-wide slices, and one
 * allreduce per pair of output projections (tp_reduce) completes the
 * residual update; embedders, norms, modulation and the final layer run
 * whole on every rank. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "io/config.h"
#include "io/folder.h"
#include "io/safetensors.h"
#include "models/flux.h"
#include "nn/embed.h"
#include "nn/ffn.h"
#include "nn/group.h"
#include "nn/linear.h"
#include "nn/ptree.h"
#include "nn/ring.h"
#include "nn/ulysses.h"
#include "nn/weights.h"

#define FLUX_TIME_DIM 256          /* Timesteps(num_channels=256) */
#define FLUX_LN_EPS 1e-6f          /* every LayerNorm of the model */
#define FLUX_RMS_EPS 1e-6f         /* norm_q/k, norm_added_q/k */
#define FLUX_ROPE_THETA 10000.0

/* ---- model structures ------------------------------------------------------- */

/* FluxTransformerBlock (double stream): image weights, then the text ones. */
typedef struct {
    tdm_nn_linear_t mod, mod_ctx;              /* norm1/norm1_context.linear (D → 6D) */
    tdm_nn_linear_t q, k, v;                   /* attn.to_q/k/v (D → D) */
    tdm_nn_linear_t aq, ak, av;                /* attn.add_q/k/v_proj (D → D) */
    const float    *nq, *nk, *naq, *nak;       /* attn.norm_q/k, norm_added_q/k (hd) */
    tdm_nn_linear_t out, add_out;              /* attn.to_out.0, attn.to_add_out (D → D) */
    tdm_nn_linear_t ff1, ff2, cff1, cff2;      /* ff(_context).net.0.proj (D → 4D), net.2 */
} flux_double_t;

/* FluxSingleTransformerBlock. */
typedef struct {
    tdm_nn_linear_t mod;                       /* norm.linear (D → 3D) */
    tdm_nn_linear_t q, k, v;                   /* attn.to_q/k/v (D → D) */
    const float    *nq, *nk;                   /* attn.norm_q/k (hd) */
    tdm_nn_linear_t mlp;                       /* proj_mlp (D → 4D) */
    tdm_nn_linear_t out;                       /* proj_out (5D → D) */
} flux_single_t;

struct tdm_flux {
    tdm_flux_info_t info;
    tdm_device_t   *dev;
    int64_t D, H, hd;                          /* inner dim, heads, head dim */
    /* Tensor parallelism (tdm_flux_load_tp): this rank's Hl = H / tp->size
     * heads, Dl = Hl·hd wide; tp NULL (and Hl = H, Dl = D) on one device. */
    const tdm_nn_group_t *tp;
    int f8;   /* the blocks' Linears are FP8 (--dtype fp8: tdm_device_t.fp8_linears) */
    int64_t Hl, Dl;
    tdm_nn_linear_t x_emb, ctx_emb;            /* in → D, joint → D */
    tdm_nn_ffn_t    temb, gemb, pemb;          /* timestep/guidance/text_embedder (SiLU) */
    tdm_nn_linear_t norm_out;                  /* norm_out.linear (D → 2D): scale, shift */
    tdm_nn_linear_t proj_out;                  /* D → out_channels */
    flux_double_t *dbl;                        /* num_layers */
    flux_single_t *sgl;                        /* num_single_layers */
    /* RoPE tables cos | sin (2, S, hd) on the device for the ids of the last
     * forward (a denoising loop passes the same ids every step): rebuilt on
     * the host only when T, N or an id changes. */
    float  *rope;
    float  *rope_ids;                          /* host copy: txt (T, 3) then img (N, 3) */
    int64_t rope_T, rope_N;
    /* Split placement (tdm_flux_load_placed): the offloaded weights, each
     * brought to `dev` for its block (double block i = i, single block
     * i = num_layers + i, -1 = top level, for the whole forward) in w.off;
     * w owns every loaded tensor. */
    tdm_weights_t w;
};

/* ---- config ------------------------------------------------------------------- */

static tdm_status cfg_unsupported(const tdm_json_t *j, const char *key, const char *why) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j->root, key);
    char *txt = v ? cJSON_PrintUnformatted(v) : NULL;
    tdm_status st = tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: unsupported FLUX transformer config "
                               "%s=%s%s%s", j->path, key, txt ? txt : "(absent)",
                               why ? ": " : "", why ? why : "");
    if (txt) cJSON_free(txt);
    return st;
}

/* Bounds of config sizes, 10-100x those of FLUX.1 (19 + 38 blocks, 24
 * heads of 128, joint 4096, pooled 768, 64 input channels). */
#define FLUX_MAX_LAYERS   1024
#define FLUX_MAX_HEADS    1024
#define FLUX_MAX_DIM      65536
#define FLUX_MAX_CHANNELS 4096

static tdm_status cfg_parse(const tdm_json_t *j, tdm_flux_info_t *c) {
    tdm_status st = TDM_OK;
    char cls[64];
    int64_t patch, sum = 0;
    int n = 0;
    memset(c, 0, sizeof(*c));
    TDM_TRY(tdm_json_str(j, "_class_name", "FluxTransformer2DModel", cls, sizeof(cls)));
    if (strcmp(cls, "FluxTransformer2DModel") != 0) return cfg_unsupported(j, "_class_name", NULL);
    TDM_TRY(tdm_json_int(j, "patch_size", 1, &patch));
    if (patch != 1) return cfg_unsupported(j, "patch_size", "only 1 (FLUX.1) is supported");
    TDM_TRY(tdm_json_int_range(j, "in_channels", 64, 1, FLUX_MAX_CHANNELS, &c->in_channels));
    TDM_TRY(tdm_json_int_range(j, "out_channels", 0, 0, FLUX_MAX_CHANNELS, &c->out_channels));   /* null → in_channels */
    if (c->out_channels == 0) c->out_channels = c->in_channels;
    TDM_TRY(tdm_json_int_range(j, "num_layers", 19, 0, FLUX_MAX_LAYERS, &c->num_layers));
    TDM_TRY(tdm_json_int_range(j, "num_single_layers", 38, 0, FLUX_MAX_LAYERS, &c->num_single_layers));
    TDM_TRY(tdm_json_int_range(j, "attention_head_dim", 128, 1, FLUX_MAX_DIM, &c->attention_head_dim));
    TDM_TRY(tdm_json_int_range(j, "num_attention_heads", 24, 1, FLUX_MAX_HEADS, &c->num_attention_heads));
    TDM_TRY(tdm_json_int_range(j, "joint_attention_dim", 4096, 1, FLUX_MAX_DIM, &c->joint_attention_dim));
    TDM_TRY(tdm_json_int_range(j, "pooled_projection_dim", 768, 1, FLUX_MAX_DIM, &c->pooled_projection_dim));
    TDM_TRY(tdm_json_bool(j, "guidance_embeds", 0, &c->guidance_embeds));
    {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j->root, "axes_dims_rope");
        if (v && cJSON_IsArray(v) && cJSON_GetArraySize(v) != 3)
            return cfg_unsupported(j, "axes_dims_rope", "exactly 3 axes are supported");
    }
    TDM_TRY(tdm_json_int_array(j, "axes_dims_rope", 0, c->axes_dims_rope, 3, &n));
    if (n == 0) {
        c->axes_dims_rope[0] = 16;
        c->axes_dims_rope[1] = 56;
        c->axes_dims_rope[2] = 56;
    } else if (n != 3) {
        return cfg_unsupported(j, "axes_dims_rope", "exactly 3 axes are supported");
    }
    for (int i = 0; i < 3; i++) {
        if (c->axes_dims_rope[i] < 0 || c->axes_dims_rope[i] % 2 != 0)
            return cfg_unsupported(j, "axes_dims_rope", "each axis dim must be even and >= 0");
        sum += c->axes_dims_rope[i];
    }
    if (sum != c->attention_head_dim)
        return tdm_errorf(TDM_ERR_MODEL, "%s: axes_dims_rope%s sums to %lld but "
                          "attention_head_dim=%lld", j->path,
                          n == 0 ? " (absent: default [16, 56, 56])" : "", (long long)sum,
                          (long long)c->attention_head_dim);
    {   /* inner dim and the 5x-wide single-block proj_out must fit comfortably */
        const int64_t D = c->attention_head_dim * c->num_attention_heads;   /* both bounded above */
        if (D > FLUX_MAX_DIM)
            return tdm_errorf(TDM_ERR_MODEL, "%s: num_attention_heads %lld x attention_head_dim %lld = %lld is "
                              "out of range [1, %d]", j->path, (long long)c->num_attention_heads,
                              (long long)c->attention_head_dim, (long long)D, FLUX_MAX_DIM);
    }
fail:
    return st;
}

/* ---- loading ------------------------------------------------------------------ */

/* The block a tensor belongs to (see tdm_flux_t.w), from its name; ctx is
 * the model. */
static int64_t block_of(const void *ctx, const char *name) {
    const tdm_flux_t *m = ctx;
    long long i;
    if (sscanf(name, "transformer_blocks.%lld.", &i) == 1) return i;
    if (sscanf(name, "single_transformer_blocks.%lld.", &i) == 1) return m->info.num_layers + i;
    return -1;
}

/* A column-split Linear `p``sfx` (in → out): under tensor parallelism this
 * rank's rows [r·out/T, (r+1)·out/T) of the weight and the bias (whole
 * heads: out is a multiple of head dim · T); else the whole Linear. */
static tdm_status bind_col(tdm_flux_t *m, tdm_nn_linear_t *l, int64_t in, int64_t out,
                           const char *p, const char *sfx) {
    tdm_status st = TDM_OK;
    if (!m->tp) return tdm_nn_linear_bind(&m->w, l, in, out, 1, "%s%s", p, sfx);
    const int64_t n = out / m->tp->size, b0 = m->tp->rank * n, ws[2] = {out, in};
    l->in = in;
    l->out = n;
    TDM_TRY(tdm_weights_bind_slice(&m->w, &l->w, 1, 2, ws, 0, 1, &b0, &n, "%s%s.weight", p, sfx));
    TDM_TRY(tdm_weights_bind_slice(&m->w, &l->b, 0, 1, &out, 0, 1, &b0, &n, "%s%s.bias", p, sfx));
fail:
    return st;
}

/* A row-split Linear `p``sfx` (sum(parts) → out) whose input is nparts
 * column-split parts side by side: under tensor parallelism this rank's
 * 1/T of each part's columns of the weight and, on rank 0 only, the bias
 * (the ranks' products are summed, so it is added once); else the whole
 * Linear. */
static tdm_status bind_row(tdm_flux_t *m, tdm_nn_linear_t *l, int64_t out, int nparts,
                           const int64_t *parts, const char *p, const char *sfx) {
    tdm_status st = TDM_OK;
    int64_t in = 0, off = 0, begin[2], count[2];
    for (int i = 0; i < nparts; i++) in += parts[i];
    if (!m->tp) return tdm_nn_linear_bind(&m->w, l, in, out, 1, "%s%s", p, sfx);
    const int64_t ws[2] = {out, in};
    l->in = 0;
    l->out = out;
    l->b = NULL;
    for (int i = 0; i < nparts; i++) {
        count[i] = parts[i] / m->tp->size;
        begin[i] = off + m->tp->rank * count[i];
        off += parts[i];
        l->in += count[i];
    }
    TDM_TRY(tdm_weights_bind_slice(&m->w, &l->w, 1, 2, ws, 1, nparts, begin, count,
                                   "%s%s.weight", p, sfx));
    if (m->tp->rank == 0) TDM_TRY(tdm_weights_bind(&m->w, &l->b, 0, 1, &out, "%s%s.bias", p, sfx));
fail:
    return st;
}

static tdm_status load_double(tdm_flux_t *m, flux_double_t *d, int64_t i) {
    tdm_status st = TDM_OK;
    int64_t D = m->D, D4 = 4 * D, hd = m->hd;
    char p[128];
    snprintf(p, sizeof(p), "transformer_blocks.%lld", (long long)i);
    TDM_TRY(tdm_weights_nosplit(&m->w, "FluxTransformerBlock", "%s", p));
    TDM_TRY(tdm_nn_linear_bind(&m->w, &d->mod, D, 6 * D, 1, "%s.norm1.linear", p));
    TDM_TRY(tdm_nn_linear_bind(&m->w, &d->mod_ctx, D, 6 * D, 1, "%s.norm1_context.linear", p));
    TDM_TRY(tdm_weights_bind(&m->w, &d->nq, 0, 1, &hd, "%s.attn.norm_q.weight", p));
    TDM_TRY(tdm_weights_bind(&m->w, &d->nk, 0, 1, &hd, "%s.attn.norm_k.weight", p));
    TDM_TRY(bind_col(m, &d->q, D, D, p, ".attn.to_q"));
    TDM_TRY(bind_col(m, &d->k, D, D, p, ".attn.to_k"));
    TDM_TRY(bind_col(m, &d->v, D, D, p, ".attn.to_v"));
    TDM_TRY(bind_row(m, &d->out, D, 1, &D, p, ".attn.to_out.0"));
    TDM_TRY(tdm_weights_bind(&m->w, &d->naq, 0, 1, &hd, "%s.attn.norm_added_q.weight", p));
    TDM_TRY(tdm_weights_bind(&m->w, &d->nak, 0, 1, &hd, "%s.attn.norm_added_k.weight", p));
    TDM_TRY(bind_col(m, &d->aq, D, D, p, ".attn.add_q_proj"));
    TDM_TRY(bind_col(m, &d->ak, D, D, p, ".attn.add_k_proj"));
    TDM_TRY(bind_col(m, &d->av, D, D, p, ".attn.add_v_proj"));
    TDM_TRY(bind_row(m, &d->add_out, D, 1, &D, p, ".attn.to_add_out"));
    TDM_TRY(bind_col(m, &d->ff1, D, 4 * D, p, ".ff.net.0.proj"));
    TDM_TRY(bind_row(m, &d->ff2, D, 1, &D4, p, ".ff.net.2"));
    TDM_TRY(bind_col(m, &d->cff1, D, 4 * D, p, ".ff_context.net.0.proj"));
    TDM_TRY(bind_row(m, &d->cff2, D, 1, &D4, p, ".ff_context.net.2"));
fail:
    return st;
}

static tdm_status load_single(tdm_flux_t *m, flux_single_t *s, int64_t i) {
    tdm_status st = TDM_OK;
    int64_t D = m->D, hd = m->hd;
    const int64_t parts[2] = {D, 4 * D};   /* proj_out's input: [attention, MLP] */
    char p[128];
    snprintf(p, sizeof(p), "single_transformer_blocks.%lld", (long long)i);
    TDM_TRY(tdm_weights_nosplit(&m->w, "FluxSingleTransformerBlock", "%s", p));
    TDM_TRY(tdm_nn_linear_bind(&m->w, &s->mod, D, 3 * D, 1, "%s.norm.linear", p));
    TDM_TRY(bind_col(m, &s->mlp, D, 4 * D, p, ".proj_mlp"));
    TDM_TRY(bind_row(m, &s->out, D, 2, parts, p, ".proj_out"));
    TDM_TRY(tdm_weights_bind(&m->w, &s->nq, 0, 1, &hd, "%s.attn.norm_q.weight", p));
    TDM_TRY(tdm_weights_bind(&m->w, &s->nk, 0, 1, &hd, "%s.attn.norm_k.weight", p));
    TDM_TRY(bind_col(m, &s->q, D, D, p, ".attn.to_q"));
    TDM_TRY(bind_col(m, &s->k, D, D, p, ".attn.to_k"));
    TDM_TRY(bind_col(m, &s->v, D, D, p, ".attn.to_v"));
fail:
    return st;
}

static tdm_status load_model(tdm_flux_t *m) {
    tdm_status st = TDM_OK;
    const tdm_flux_info_t *c = &m->info;
    int64_t D = m->D;
    /* registration order of FluxTransformer2DModel (the parameter list
     * depends on it; loading does not) */
    const char *te = "time_text_embed", *l1 = "linear_1", *l2 = "linear_2";
    TDM_TRY(tdm_nn_ffn_bind(&m->w, &m->temb, FLUX_TIME_DIM, D, D, tdm_op_silu, l1, l2,
                            "%s.timestep_embedder", te));
    if (c->guidance_embeds)
        TDM_TRY(tdm_nn_ffn_bind(&m->w, &m->gemb, FLUX_TIME_DIM, D, D, tdm_op_silu, l1, l2,
                                "%s.guidance_embedder", te));
    TDM_TRY(tdm_nn_ffn_bind(&m->w, &m->pemb, c->pooled_projection_dim, D, D, tdm_op_silu, l1, l2,
                            "%s.text_embedder", te));
    TDM_TRY(tdm_nn_linear_bind(&m->w, &m->ctx_emb, c->joint_attention_dim, D, 1,
                               "context_embedder"));
    TDM_TRY(tdm_nn_linear_bind(&m->w, &m->x_emb, c->in_channels, D, 1, "x_embedder"));
    /* --dtype fp8: the blocks' Linears (the bulk of the weights and of the
     * FLOPs) as row-scaled FP8; the embedders, norm_out and proj_out, which
     * touch the latents and the conditioning directly, stay in gemm_dtype */
    m->w.f8 = m->f8;
    for (int64_t i = 0; i < c->num_layers; i++) TDM_TRY(load_double(m, &m->dbl[i], i));
    for (int64_t i = 0; i < c->num_single_layers; i++) TDM_TRY(load_single(m, &m->sgl[i], i));
    m->w.f8 = 0;
    TDM_TRY(tdm_nn_linear_bind(&m->w, &m->norm_out, D, 2 * D, 1, "norm_out.linear"));
    TDM_TRY(tdm_nn_linear_bind(&m->w, &m->proj_out, D, c->out_channels, 1, "proj_out"));
fail:
    return st;
}

/* A model of config `c` on `dev` with its block arrays and no weights.
 * OUT: *out, freed with tdm_flux_free. */
static tdm_status model_new(tdm_flux_t **out, const tdm_flux_info_t *c, tdm_device_t *dev) {
    tdm_status st = TDM_OK;
    tdm_flux_t *m = calloc(1, sizeof(*m));
    *out = NULL;
    if (!m) return tdm_errorf(TDM_ERR_NOMEM, "flux: out of memory");
    m->dev = dev;
    m->info = *c;
    m->info.param_bytes = 0;
    m->hd = c->attention_head_dim;
    m->H = c->num_attention_heads;
    m->D = m->hd * m->H;
    m->Hl = m->H;
    m->Dl = m->D;
    if (c->num_layers > 0 && !(m->dbl = calloc((size_t)c->num_layers, sizeof(*m->dbl)))) {
        st = tdm_errorf(TDM_ERR_NOMEM, "flux: out of memory for %lld blocks",
                        (long long)c->num_layers);
        goto fail;
    }
    if (c->num_single_layers > 0 &&
        !(m->sgl = calloc((size_t)c->num_single_layers, sizeof(*m->sgl)))) {
        st = tdm_errorf(TDM_ERR_NOMEM, "flux: out of memory for %lld single blocks",
                        (long long)c->num_single_layers);
        goto fail;
    }
    *out = m;
    return TDM_OK;
fail:
    tdm_flux_free(m);
    return st;
}

/* Whether T tensor-parallel ranks can split the model of config c (whole
 * heads each, hence whole quarters of the MLP width too); fn names the
 * caller in the error. */
static tdm_status tp_check(const tdm_flux_info_t *c, int T, const char *fn) {
    if (T < 1 || c->num_attention_heads % T != 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: tp=%d does not divide num_attention_heads=%lld "
                          "(tensor parallelism splits whole heads, and the MLP width %lld with them)",
                          fn, T, (long long)c->num_attention_heads,
                          (long long)(4 * c->num_attention_heads * c->attention_head_dim));
    return TDM_OK;
}

static tdm_status load_any(tdm_flux_t **out, const char *root, const char *sub,
                           const char *variant, tdm_device_t *dev,
                           const tdm_placement_t *place, const tdm_nn_group_t *tp) {
    tdm_status st = TDM_OK;
    tdm_json_t j = {0};
    tdm_flux_t *m = NULL;
    tdm_flux_info_t c;
    char path[TDM_PATH_MAX];
    if (!out)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_flux_load: out is required");
    *out = NULL;
    if (!root || !sub || !dev)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_flux_load: root, sub and dev are required");

    TDM_TRY(tdm_path_join(path, sizeof(path), root, sub, "config.json"));
    TDM_TRY(tdm_json_load(&j, path));
    TDM_TRY(cfg_parse(&j, &c));
    if (tp && tp->size > 1) TDM_TRY(tp_check(&c, tp->size, "tdm_flux_load_tp"));
    if (tp && tp->size > 1 && dev->fp8_linears) {
        st = tdm_errorf(TDM_ERR_UNSUPPORTED, "flux: --dtype fp8 does not combine with tensor "
                          "parallelism yet (tp=%d): a shard's FP8 row scales would differ from "
                          "one device's; use bf16, or cfg/ulysses/ring parallelism", tp->size);
        goto fail;
    }
    TDM_TRY(model_new(&m, &c, dev));
    m->f8 = dev->fp8_linears;
    if (tp && tp->size > 1) {
        m->tp = tp;
        m->Hl = m->H / tp->size;
        m->Dl = m->Hl * m->hd;
    }
    tdm_weights_init(&m->w, "flux", dev, place);
    m->w.unit_of = block_of;
    m->w.ctx = m;
    TDM_TRY(tdm_weights_open(&m->w, root, sub, variant));
    TDM_TRY(load_model(m));
    tdm_weights_finish(&m->w);
    m->info.param_bytes = m->w.bytes;
    tdm_json_free(&j);
    *out = m;
    return TDM_OK;
fail:
    tdm_flux_free(m);
    tdm_json_free(&j);
    return st;
}

tdm_status tdm_flux_load(tdm_flux_t **out, const char *root, const char *sub,
                         const char *variant, tdm_device_t *dev) {
    return load_any(out, root, sub, variant, dev, NULL, NULL);
}

tdm_status tdm_flux_load_tp(tdm_flux_t **out, const char *root, const char *sub,
                            const char *variant, tdm_device_t *dev, const tdm_nn_group_t *tp) {
    if (tp && (tp->size < 1 || tp->rank < 0 || tp->rank >= tp->size)) {
        if (out) *out = NULL;
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_flux_load_tp: rank %d of a tp group of %d",
                          tp->rank, tp->size);
    }
    return load_any(out, root, sub, variant, dev, NULL, tp);
}

tdm_status tdm_flux_load_placed(tdm_flux_t **out, const char *root, const char *sub,
                                const char *variant, const tdm_placement_t *pl) {
    tdm_status st = tdm_placement_check(pl, "flux");
    if (st != TDM_OK) return st;
    return load_any(out, root, sub, variant, pl->main, pl, NULL);
}

void tdm_flux_free(tdm_flux_t *m) {
    if (!m) return;
    if (m->rope) tdm_dev_free(m->dev, m->rope, 2 * (m->rope_T + m->rope_N) * m->hd * (int64_t)sizeof(float));
    free(m->rope_ids);
    tdm_weights_free(&m->w);
    free(m->dbl);
    free(m->sgl);
    free(m);
}

tdm_status tdm_flux_plist(const char *config_path, tdm_dtype dt, tdm_plist_t *out) {
    return tdm_flux_plist_tp(config_path, dt, 1, 0, out);
}

tdm_status tdm_flux_plist_tp(const char *config_path, tdm_dtype dt, int tp, int rank,
                             tdm_plist_t *out) {
    tdm_status st = TDM_OK;
    tdm_json_t j = {0};
    tdm_flux_t *m = NULL;
    tdm_flux_info_t c;
    tdm_nn_group_t g;   /* rank and size only: a list walk calls no collective */
    if (!config_path || !out || tp < 1 || rank < 0 || rank >= tp)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_flux_plist: config path, list and rank %d of "
                          "tp=%d >= 1 are required", rank, tp);
    tdm_plist_init(out, dt);
    TDM_TRY(tdm_json_load(&j, config_path));
    TDM_TRY(cfg_parse(&j, &c));
    if (tp > 1) TDM_TRY(tp_check(&c, tp, "tdm_flux_plist_tp"));
    TDM_TRY(model_new(&m, &c, NULL));
    m->f8 = dt == TDM_F8E4M3;
    if (tp > 1) {
        memset(&g, 0, sizeof g);
        g.rank = rank, g.size = tp;
        m->tp = &g;
    }
    tdm_weights_init_list(&m->w, "flux", out);
    TDM_TRY(load_model(m));
    tdm_flux_free(m);
    tdm_json_free(&j);
    return TDM_OK;
fail:
    tdm_flux_free(m);
    tdm_json_free(&j);
    tdm_plist_free(out);
    tdm_plist_init(out, dt);
    return st;
}

const tdm_flux_info_t *tdm_flux_info(const tdm_flux_t *m) { return m ? &m->info : NULL; }

/* ---- host-side tables ------------------------------------------------------- */

/* FluxPosEmbed: for each position s of ids (S, 3) and axis a of dim d_a,
 * freq_j = 1 / theta^(2j / d_a) and angle = id[s][a] * freq_j in double;
 * cos/sin rounded to float and each repeated twice (repeat_interleave_real).
 * Axes are laid side by side: cos, sin (S, hd); host memory. */
static void rope_tables(float *cosb, float *sinb, const float *ids, int64_t S,
                        const int64_t *axes, int64_t hd) {
    for (int64_t s = 0; s < S; s++) {
        int64_t off = 0;
        for (int a = 0; a < 3; a++) {
            int64_t da = axes[a];
            double pos = (double)ids[s * 3 + a];
            for (int64_t jj = 0; jj < da / 2; jj++) {
                double freq = 1.0 / pow(FLUX_ROPE_THETA, (double)(2 * jj) / (double)da);
                double ang = pos * freq;
                float c = (float)cos(ang), sn = (float)sin(ang);
                cosb[s * hd + off + 2 * jj] = c;
                cosb[s * hd + off + 2 * jj + 1] = c;
                sinb[s * hd + off + 2 * jj] = sn;
                sinb[s * hd + off + 2 * jj + 1] = sn;
            }
            off += da;
        }
    }
}

/* ---- forward ------------------------------------------------------------------ */

/* The forward pass's activations, carved from one device allocation. The
 * residual stream x, the modulation chunks and the embeddings are float32;
 * the GEMM inputs and outputs (nx, q, k, v, o, y, h) are of type `at`
 * (tdm_op_act_dtype: bf16 / fp16 on a half-precision GPU, float32 on the
 * CPU), so the GEMMs read and write them without a cast pass. */
typedef struct {
    tdm_dtype at;
    float *tproj, *th, *temb, *tmp, *semb;         /* embeddings: (B,256), (B,D) x4 */
    const float *cosb, *sinb;                      /* RoPE tables (S, hd) */
    float *x;                                      /* residual stream (B, S, D) */
    void *nx, *q, *k, *v, *o, *y;                  /* (B, S, D), type at */
    void *h;                                       /* (B, S, 5D): FF hidden / [attn, mlp] */
    float *mod;                                    /* (2, B, 6D) modulation chunks */
    struct flux_cp *cp;                            /* context parallelism; NULL: one device */
    /* Under tensor parallelism q, k, v, o hold this rank's Dl columns and h
     * its 5·Dl, and y (an output projection's partial sum, summed over the
     * TP ranks) is float32: yt = TDM_F32; else yt = at. */
    tdm_dtype yt;
    tdm_status tp_st;                              /* first failure of a TP allreduce */
} flux_ws_t;

/* Context parallelism (tdm_flux_forward_cp): this rank's rows, its
 * exchanges (Ulysses, ring or both) and the parts of the workspace that
 * only it uses. */
typedef struct flux_cp {
    const tdm_nn_group_t *gu, *gr;                 /* Ulysses (U ranks), ring (R); NULL: one */
    int u, U, r, R;                                /* this rank's place in the R × U grid */
    tdm_nn_ulysses_shape_t shape;                  /* B, H, hd, segments {T, N} */
    tdm_nn_usp_sizes_t n;                          /* this rank's shares (count[0] text rows) */
    void *ws;                                      /* n.ws_bytes: the exchange's workspace */
    float *out;                                    /* (B, count[1], out_channels) own image rows */
    float *slot;                                   /* (B, slot[1], out_channels): the ring
                                                      slot's image rows (R, U > 1) */
    tdm_status st;                                 /* first failure of an exchange */
} flux_cp_t;

/* Sizes (or, with base != NULL, places) the workspace; returns its bytes or
 * -1 on overflow. Every part starts on a 64-byte boundary. */
static int64_t ws_layout(flux_ws_t *w, char *base, int64_t B, int64_t S, int64_t D, int64_t Dl) {
    int64_t off = 0, BSD, BSDl, BD, B6D;
    int64_t fs = (int64_t)sizeof(float), as = (int64_t)tdm_dtype_size(w->at),
            ys = (int64_t)tdm_dtype_size(w->yt);
    if (!tdm_mul_ok(B, S, &BSD) || !tdm_mul_ok(BSD, D, &BSD) || BSD > INT64_MAX / 64 ||
        !tdm_mul_ok(B, D, &BD) || BD > INT64_MAX / 64 || B > INT64_MAX / (4 * FLUX_TIME_DIM))
        return -1;
    B6D = 6 * BD;
    BSDl = BSD / D * Dl;   /* Dl <= D */
    struct { void **p; int64_t bytes; } parts[] = {
        {(void **)&w->tproj, B * FLUX_TIME_DIM * fs}, {(void **)&w->th, BD * fs},
        {(void **)&w->temb, BD * fs}, {(void **)&w->tmp, BD * fs}, {(void **)&w->semb, BD * fs},
        {(void **)&w->x, BSD * fs}, {&w->nx, BSD * as}, {&w->q, BSDl * as}, {&w->k, BSDl * as},
        {&w->v, BSDl * as}, {&w->o, BSDl * as}, {&w->y, BSD * ys}, {&w->h, 5 * BSDl * as},
        {(void **)&w->mod, 2 * B6D * fs},
    };
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        int64_t n = (parts[i].bytes + 63) / 64 * 64;
        if (base) *parts[i].p = base + off;
        if (n > INT64_MAX / 4 - off) return -1;
        off += n;
    }
    return off;
}

/* y = Linear l (K = l->in → l->out) on segment rows [r0, r0+L) of every
 * batch element: x (B, S, K), y (B, S, ·; rows ldy apart), both of type at;
 * tanh GELU after it when gelu. */
static void seg_linear_ex(tdm_device_t *dev, tdm_dtype at, void *y, int64_t ldy, const void *x,
                          const tdm_nn_linear_t *l, int64_t B, int64_t S, int64_t r0, int64_t L,
                          int gelu) {
    const int64_t K = l->in;
    if (L == S) {
        tdm_nn_linear_forward_ex(dev, l, y, at, ldy, x, at, B * S, gelu);
        return;
    }
    for (int64_t b = 0; b < B; b++)
        tdm_nn_linear_forward_ex(dev, l, tdm_act_at(y, at, (b * S + r0) * ldy), at, ldy,
                                 tdm_act_at(x, at, (b * S + r0) * K), at, L, gelu);
}

static void seg_linear(tdm_device_t *dev, tdm_dtype at, void *y, const void *x,
                       const tdm_nn_linear_t *l, int64_t B, int64_t S, int64_t r0, int64_t L) {
    seg_linear_ex(dev, at, y, l->out, x, l, B, S, r0, L, 0);
}

/* w->y (type w->yt) = output projection l on segment rows [r0, r0+L) of x
 * (B, S, l->in; type at) of every batch element. Under tensor parallelism
 * l is row-split and this is the rank's float32 partial sum (the bias on
 * rank 0 only), which tp_reduce completes; else seg_linear into y. */
static void seg_out(tdm_device_t *dev, const flux_ws_t *w, const void *x, const tdm_nn_linear_t *l,
                    int64_t B, int64_t S, int64_t r0, int64_t L) {
    const int64_t K = l->in, n = l->out;
    if (L == S) {
        tdm_nn_linear_forward_ex(dev, l, w->y, w->yt, n, x, w->at, B * S, 0);
        return;
    }
    for (int64_t b = 0; b < B; b++)
        tdm_nn_linear_forward_ex(dev, l, tdm_act_at(w->y, w->yt, (b * S + r0) * n), w->yt, n,
                                 tdm_act_at(x, w->at, (b * S + r0) * K), w->at, L, 0);
}

/* Tensor parallelism: w->y (B, S, D; float32) = the sum over the TP ranks
 * of their partial products — one allreduce for a block's pair of output
 * projections (text and image rows together). Nothing on one device; a
 * failure is kept in w->tp_st and the later reductions are skipped. */
static void tp_reduce(const tdm_flux_t *m, flux_ws_t *w, int64_t B, int64_t S) {
    if (!m->tp || w->tp_st != TDM_OK) return;
    w->tp_st = tdm_nn_group_allreduce_sum(m->tp, m->dev, w->y, w->y, B * S * m->D, TDM_F32);
}

/* Joint attention over all S rows: per-head RMSNorm of q and k (rows before
 * `split` with the text weights wq0 / wk0, the rest with wq1 / wk1) and RoPE,
 * then softmax(q kᵀ/√hd) v → o. Under context parallelism the S rows are
 * this rank's share ([its text rows; its image rows]) and the attention runs
 * over the whole sequence through the Ulysses, ring or USP exchange; a
 * failure of it is kept in w->cp->st (and the later attentions skipped). */
static void joint_attention(const tdm_flux_t *m, flux_ws_t *w, int64_t B, int64_t S,
                            int64_t split, const float *wq0, const float *wq1, const float *wk0,
                            const float *wk1) {
    tdm_device_t *dev = m->dev;
    tdm_op_qk_norm_rope(dev, w->at, w->q, wq0, wq1, split, w->cosb, w->sinb, B, S, m->Hl, m->hd,
                        FLUX_RMS_EPS);
    tdm_op_qk_norm_rope(dev, w->at, w->k, wk0, wk1, split, w->cosb, w->sinb, B, S, m->Hl, m->hd,
                        FLUX_RMS_EPS);
    if (!w->cp) {
        tdm_op_attention_t(dev, w->at, w->o, w->q, w->k, w->v, B, S, S, m->Hl, m->hd,
                           (float)(1.0 / sqrt((double)m->hd)), 0);
    } else if (w->cp->st == TDM_OK) {   /* S rows of this rank; the exchange sees all of them */
        flux_cp_t *cp = w->cp;
        cp->st = tdm_nn_usp_attention(dev, cp->gu, cp->gr, w->at, w->o, w->q, w->k, w->v,
                                      &cp->shape, (float)(1.0 / sqrt((double)m->hd)), cp->ws,
                                      cp->n.ws_bytes);
    }
}

/* FluxTransformerBlock on w->x (B, S, D): text rows [0, T), image rows [T, S).
 * Under tensor parallelism this rank's heads and MLP columns (Dl, 4·Dl),
 * each output projection pair summed over the ranks by tp_reduce. */
static void double_block(const tdm_flux_t *m, const flux_double_t *d, flux_ws_t *w, int64_t B,
                         int64_t T, int64_t N) {
    tdm_device_t *dev = m->dev;
    tdm_dtype at = w->at;
    int64_t D = m->D, Dl = m->Dl, S = T + N, ms = 6 * D;
    float *modi = w->mod, *modt = w->mod + B * ms;
    /* chunks of 6: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp */
    tdm_nn_linear_forward(dev, &d->mod, modi, w->semb, B);
    tdm_nn_linear_forward(dev, &d->mod_ctx, modt, w->semb, B);

    /* attention: text takes the add_* projections, image the to_* ones */
    tdm_op_layer_norm_modulate(dev, at, w->nx, w->x, modt, modt + D, ms, B, S, 0, T, D,
                               FLUX_LN_EPS);
    tdm_op_layer_norm_modulate(dev, at, w->nx, w->x, modi, modi + D, ms, B, S, T, N, D,
                               FLUX_LN_EPS);
    seg_linear(dev, at, w->q, w->nx, &d->aq, B, S, 0, T);
    seg_linear(dev, at, w->k, w->nx, &d->ak, B, S, 0, T);
    seg_linear(dev, at, w->v, w->nx, &d->av, B, S, 0, T);
    seg_linear(dev, at, w->q, w->nx, &d->q, B, S, T, N);
    seg_linear(dev, at, w->k, w->nx, &d->k, B, S, T, N);
    seg_linear(dev, at, w->v, w->nx, &d->v, B, S, T, N);
    joint_attention(m, w, B, S, T, d->naq, d->nq, d->nak, d->nk);
    seg_out(dev, w, w->o, &d->add_out, B, S, 0, T);
    seg_out(dev, w, w->o, &d->out, B, S, T, N);
    tp_reduce(m, w, B, S);
    tdm_op_gated_add_rows(dev, w->yt, w->x, w->y, modt + 2 * D, ms, B, S, 0, T, D);
    tdm_op_gated_add_rows(dev, w->yt, w->x, w->y, modi + 2 * D, ms, B, S, T, N, D);

    /* feed-forwards: ff_context on text, ff on image, GELU (tanh) */
    tdm_op_layer_norm_modulate(dev, at, w->nx, w->x, modt + 3 * D, modt + 4 * D, ms, B, S, 0, T,
                               D, FLUX_LN_EPS);
    tdm_op_layer_norm_modulate(dev, at, w->nx, w->x, modi + 3 * D, modi + 4 * D, ms, B, S, T, N,
                               D, FLUX_LN_EPS);
    seg_linear_ex(dev, at, w->h, 4 * Dl, w->nx, &d->cff1, B, S, 0, T, 1);
    seg_linear_ex(dev, at, w->h, 4 * Dl, w->nx, &d->ff1, B, S, T, N, 1);
    seg_out(dev, w, w->h, &d->cff2, B, S, 0, T);
    seg_out(dev, w, w->h, &d->ff2, B, S, T, N);
    tp_reduce(m, w, B, S);
    tdm_op_gated_add_rows(dev, w->yt, w->x, w->y, modt + 5 * D, ms, B, S, 0, T, D);
    tdm_op_gated_add_rows(dev, w->yt, w->x, w->y, modi + 5 * D, ms, B, S, T, N, D);
}

/* FluxSingleTransformerBlock on all S rows of w->x (B, S, D):
 * x += gate * proj_out([attn(nx), gelu_tanh(proj_mlp(nx))]). Under tensor
 * parallelism h holds this rank's [Dl attention | 4·Dl MLP] columns and
 * proj_out's partial sums are summed over the ranks by tp_reduce. */
static void single_block(const tdm_flux_t *m, const flux_single_t *s, flux_ws_t *w, int64_t B,
                         int64_t S) {
    tdm_device_t *dev = m->dev;
    tdm_dtype at = w->at;
    int64_t D = m->D, Dl = m->Dl, ms = 3 * D, rows = B * S;
    float *mod = w->mod;   /* shift, scale, gate */
    tdm_nn_linear_forward(dev, &s->mod, mod, w->semb, B);
    tdm_op_layer_norm_modulate(dev, at, w->nx, w->x, mod, mod + D, ms, B, S, 0, S, D,
                               FLUX_LN_EPS);

    /* MLP branch straight into columns [Dl, 5Dl) of h (B*S, 5Dl) */
    seg_linear_ex(dev, at, tdm_act_at(w->h, at, Dl), 5 * Dl, w->nx, &s->mlp, B, S, 0, S, 1);

    /* attention branch into columns [0, Dl) */
    seg_linear(dev, at, w->q, w->nx, &s->q, B, S, 0, S);
    seg_linear(dev, at, w->k, w->nx, &s->k, B, S, 0, S);
    seg_linear(dev, at, w->v, w->nx, &s->v, B, S, 0, S);
    joint_attention(m, w, B, S, 0, s->nq, s->nq, s->nk, s->nk);
    tdm_op_copy_2d(dev, at, w->h, 5 * Dl, w->o, Dl, rows, Dl);

    seg_out(dev, w, w->h, &s->out, B, S, 0, S);
    tp_reduce(m, w, B, S);
    tdm_op_gated_add_rows(dev, w->yt, w->x, w->y, mod + 2 * D, ms, B, S, 0, S, D);
}

/* m->rope holds the tables of cat(txt_ids, img_ids): reused when the ids
 * equal the last call's, else made in `host` (2·S·hd floats) and uploaded. */
static tdm_status rope_cached(tdm_flux_t *m, const float *txt_ids, int64_t T,
                              const float *img_ids, int64_t N, float *host) {
    const int64_t S = T + N, hd = m->hd, bytes = 2 * S * hd * (int64_t)sizeof(float);
    if (m->rope && m->rope_T == T && m->rope_N == N &&
        (T == 0 || !memcmp(m->rope_ids, txt_ids, (size_t)(T * 3) * sizeof(float))) &&
        !memcmp(m->rope_ids + T * 3, img_ids, (size_t)(N * 3) * sizeof(float)))
        return TDM_OK;
    if (m->rope) tdm_dev_free(m->dev, m->rope, 2 * (m->rope_T + m->rope_N) * hd * (int64_t)sizeof(float));
    free(m->rope_ids);
    m->rope_T = m->rope_N = 0;
    m->rope_ids = malloc((size_t)(S * 3) * sizeof(float));
    m->rope = tdm_dev_alloc(m->dev, bytes, "flux RoPE tables");
    if (!m->rope_ids || !m->rope) {
        free(m->rope_ids);
        m->rope_ids = NULL;
        if (m->rope) tdm_dev_free(m->dev, m->rope, bytes);
        m->rope = NULL;
        return tdm_errorf(TDM_ERR_NOMEM, "flux: out of memory for the RoPE tables (%lld bytes)",
                          (long long)bytes);
    }
    if (T) memcpy(m->rope_ids, txt_ids, (size_t)(T * 3) * sizeof(float));
    memcpy(m->rope_ids + T * 3, img_ids, (size_t)(N * 3) * sizeof(float));
    rope_tables(host, host + S * hd, txt_ids, T, m->info.axes_dims_rope, hd);
    rope_tables(host + T * hd, host + S * hd + T * hd, img_ids, N, m->info.axes_dims_rope, hd);
    tdm_status st = tdm_dev_upload(m->dev, m->rope, host, bytes, "flux RoPE tables");
    if (st != TDM_OK) {
        tdm_dev_free(m->dev, m->rope, bytes);
        m->rope = NULL;
        return st;
    }
    m->rope_T = T;
    m->rope_N = N;
    return TDM_OK;
}

/* dst (B, D) = TimestepEmbedding e of Timesteps(256, flip_sin_to_cos, shift 0)
 * of v * 1000. v (B) is host memory; the sinusoid is made in `host` (B * 256
 * floats) and uploaded. */
static tdm_status time_embedder(const tdm_flux_t *m, flux_ws_t *w, const float *v, int64_t B,
                                const tdm_nn_ffn_t *e, float *dst, float *host) {
    tdm_nn_timestep_embedding(host, v, B, FLUX_TIME_DIM, 1, 0.0, 1000.0f);
    tdm_status st = tdm_dev_upload(m->dev, w->tproj, host,
                                   B * FLUX_TIME_DIM * (int64_t)sizeof(float),
                                   "flux timestep embedding");
    if (st == TDM_OK) tdm_nn_ffn_forward(m->dev, e, dst, w->tproj, w->th, NULL, B);
    return st;
}

/* One forward's inputs (as tdm_flux_forward documents them) and the rows it
 * computes: its share [tb, tb + Tl) of the T text rows and [nb, nb + Nl) of
 * the N image rows (all of them on one device). */
typedef struct {
    const float *img, *txt, *pooled, *timestep, *guidance, *img_ids, *txt_ids;
    int64_t B, N, T;           /* batch, image and text rows of the whole sequence */
    int64_t tb, Tl, nb, Nl;    /* this forward's rows */
} flux_in_t;

/* The argument checks of the forward `fn`. */
static tdm_status check_args(const tdm_flux_t *m, const flux_in_t *in, const float *out,
                             const char *fn) {
    if (!m || !in->img || !in->txt || !in->pooled || !in->timestep || !in->img_ids ||
        !in->txt_ids || !out)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: NULL argument", fn);
    if (m->info.guidance_embeds && !in->guidance)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: this transformer has "
                          "guidance_embeds=true (FLUX.1-dev style) and needs a guidance value", fn);
    if (!m->info.guidance_embeds && in->guidance)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: guidance given but this "
                          "transformer has guidance_embeds=false (no guidance embedder)", fn);
    if (in->B < 1 || in->N < 1 || in->T < 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: B=%lld N=%lld T=%lld: need B >= 1, N >= 1, "
                          "T >= 0", fn, (long long)in->B, (long long)in->N, (long long)in->T);
    if (in->N > INT64_MAX / 2 - in->T)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: N=%lld T=%lld too large", fn,
                          (long long)in->N, (long long)in->T);
    return TDM_OK;
}

/* w->temb, w->semb = SiLU(temb) and w->x (B, Tl + Nl, D) = [context_embedder
 * of the own text rows, x_embedder of the own image rows]. */
static tdm_status embed(tdm_flux_t *m, flux_ws_t *w, const flux_in_t *in, float *host) {
    tdm_status st = TDM_OK;
    tdm_device_t *dev = m->dev;
    const int64_t B = in->B, D = m->D, Sl = in->Tl + in->Nl, J = m->info.joint_attention_dim,
                  C = m->info.in_channels;
    /* temb = timestep_embedder(t) [+ guidance_embedder(g)] + text_embedder(pooled) */
    TDM_TRY(time_embedder(m, w, in->timestep, B, &m->temb, w->temb, host));
    if (in->guidance) {
        TDM_TRY(time_embedder(m, w, in->guidance, B, &m->gemb, w->tmp, host));
        tdm_op_add(dev, w->temb, w->temb, w->tmp, B * D);
    }
    tdm_nn_ffn_forward(dev, &m->pemb, w->tmp, in->pooled, w->th, NULL, B);
    tdm_op_add(dev, w->temb, w->temb, w->tmp, B * D);
    /* every AdaLN linear sees SiLU(temb) */
    tdm_op_copy_2d(dev, TDM_F32, w->semb, 0, w->temb, 0, 1, B * D);
    tdm_op_silu(dev, w->semb, B * D);

    /* x = [context_embedder(txt), x_embedder(img)] per batch element */
    for (int64_t b = 0; b < B; b++) {
        tdm_nn_linear_forward(dev, &m->ctx_emb, w->x + b * Sl * D,
                              in->txt + (b * in->T + in->tb) * J, in->Tl);
        tdm_nn_linear_forward(dev, &m->x_emb, w->x + (b * Sl + in->Tl) * D,
                              in->img + (b * in->N + in->nb) * C, in->Nl);
    }
fail:
    return st;
}

/* The blocks in order (unit ids 0 .. nl + ns - 1) on w->x (B, T + N, D):
 * each one's offloaded weights are brought in, and the next one's copies
 * are queued to run while this one computes. */
static tdm_status run_blocks(tdm_flux_t *m, flux_ws_t *w, int64_t B, int64_t T, int64_t N) {
    tdm_status st = TDM_OK;
    const int64_t nl = m->info.num_layers, nunits = nl + m->info.num_single_layers;
    for (int64_t i = 0; i < nunits; i++) {
        TDM_TRY(tdm_offload_in(&m->w.off, m->dev, i));
        if (i + 1 < nunits) TDM_TRY(tdm_offload_prefetch(&m->w.off, m->dev, i + 1));
        if (i < nl) double_block(m, &m->dbl[i], w, B, T, N);
        else single_block(m, &m->sgl[i - nl], w, B, T + N);
        tdm_offload_out(&m->w.off, i);
        if (w->cp && w->cp->st != TDM_OK) return w->cp->st;
        if (w->tp_st != TDM_OK) return w->tp_st;
    }
fail:
    return st;
}

/* norm_out (AdaLayerNormContinuous: chunks scale, shift) and proj_out on the
 * image rows [T, T + N) of w->x (B, T + N, D) → dst (B, N, out_channels). */
static void final_layer(const tdm_flux_t *m, flux_ws_t *w, int64_t B, int64_t T, int64_t N,
                        float *dst) {
    tdm_device_t *dev = m->dev;
    const int64_t D = m->D, S = T + N, Cout = m->info.out_channels;
    tdm_nn_linear_forward(dev, &m->norm_out, w->mod, w->semb, B);
    tdm_op_layer_norm_modulate(dev, w->at, w->nx, w->x, w->mod + D, w->mod, 2 * D, B, S, T, N, D,
                               FLUX_LN_EPS);
    for (int64_t b = 0; b < B; b++)
        tdm_op_linear_ex(dev, dst + b * N * Cout, TDM_F32, Cout,
                         tdm_act_at(w->nx, w->at, (b * S + T) * D), w->at, m->proj_out.w,
                         m->proj_out.b, N, D, Cout, 0);
}

/* The workspace parts only a context-parallel rank has (after ws_layout's):
 * the exchange's workspace, its own output rows (B, Nl, Cout) and, on a
 * ring of Ulysses groups, its slot's output rows (B, slot[1], Cout). Sizes
 * them (and, with base != NULL, places them); -1 on overflow. */
static int64_t cp_layout(flux_cp_t *cp, char *base, int64_t B, int64_t Nl, int64_t Cout) {
    int64_t a = (cp->n.ws_bytes + 63) / 64 * 64, o, sl = 0;
    if (cp->n.ws_bytes > INT64_MAX / 4 || !tdm_mul_ok(B, Nl, &o) || !tdm_mul_ok(o, Cout, &o) ||
        o > INT64_MAX / 64 || a > INT64_MAX / 4 - 4 * o - 64)
        return -1;
    if (cp->R > 1 && cp->U > 1 &&
        (!tdm_mul_ok(B, cp->n.slot[1], &sl) || !tdm_mul_ok(sl, Cout, &sl) || sl > INT64_MAX / 64 ||
         a + (4 * o + 63) / 64 * 64 > INT64_MAX / 4 - 4 * sl - 64))
        return -1;
    if (base) {
        cp->ws = base;
        cp->out = (float *)(base + a);
        cp->slot = sl ? (float *)(base + a + (4 * o + 63) / 64 * 64) : NULL;
    }
    return a + (4 * o + 63) / 64 * 64 + (4 * sl + 63) / 64 * 64;
}

/* dst (B, L, Cout) = every rank's rows of the L rows split over g
 * (tdm_nn_ulysses_split), rank i's from its src (B, count_i, Cout); one
 * allgatherv per batch element. */
static tdm_status gather_level(const tdm_flux_t *m, const tdm_nn_group_t *g, const float *src,
                               float *dst, int64_t B, int64_t L, int64_t Cout) {
    tdm_status st = TDM_OK;
    const int n = g->size;
    int64_t *counts = malloc((size_t)n * 2 * sizeof(int64_t)), *displs = counts + n, own = 0;
    if (!counts) return tdm_errorf(TDM_ERR_NOMEM, "flux: out of memory for %d ranks' counts", n);
    for (int r = 0; r < n; r++) {
        int64_t b0, c;
        tdm_nn_ulysses_split(L, r, n, &b0, &c);
        counts[r] = c * Cout;
        displs[r] = b0 * Cout;
        if (r == g->rank) own = c;
    }
    for (int64_t b = 0; b < B; b++)
        TDM_TRY(tdm_nn_group_allgatherv(g, m->dev, src + b * own * Cout, own * Cout,
                                        dst + b * L * Cout, counts, displs, TDM_F32));
fail:
    free(counts);
    return st;
}

/* Every rank's image rows of cp->out (B, Nl, Cout) into out (B, N, Cout):
 * over the Ulysses group into the ring slot's rows, then over the ring. */
static tdm_status cp_gather(const tdm_flux_t *m, const flux_cp_t *cp, const flux_in_t *in,
                            float *out) {
    const int64_t Cout = m->info.out_channels;
    if (cp->R == 1) return gather_level(m, cp->gu, cp->out, out, in->B, in->N, Cout);
    if (cp->U == 1) return gather_level(m, cp->gr, cp->out, out, in->B, in->N, Cout);
    tdm_status st = gather_level(m, cp->gu, cp->out, cp->slot, in->B, cp->n.slot[1], Cout);
    return st != TDM_OK ? st : gather_level(m, cp->gr, cp->slot, out, in->B, in->N, Cout);
}

/* The forward of the rows `in` names (checked by check_args): one device
 * when cp is NULL, else this rank of cp->g, whose image rows are gathered
 * into out on every rank. */
static tdm_status forward_rows(tdm_flux_t *m, flux_cp_t *cp, const flux_in_t *in, float *out) {
    tdm_status st = TDM_OK;
    tdm_device_t *dev = m->dev;
    flux_ws_t w;
    char *base = NULL;
    float *host = NULL;
    const int64_t B = in->B, S = in->T + in->N, Sl = in->Tl + in->Nl, D = m->D, hd = m->hd;
    int64_t nws, ncp = 0, nhost;
    w.at = tdm_op_act_dtype(dev);
    w.yt = m->tp ? TDM_F32 : w.at;
    w.tp_st = TDM_OK;
    w.cp = cp;
    nws = ws_layout(&w, NULL, B, Sl, D, m->Dl);
    if (cp && nws >= 0) ncp = cp_layout(cp, NULL, B, in->Nl, m->info.out_channels);
    if (nws < 0 || ncp < 0 || ncp > INT64_MAX / 4 - nws || S > INT64_MAX / 64 / hd)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_flux_forward: B=%lld N=%lld T=%lld is too "
                          "large", (long long)B, (long long)in->N, (long long)in->T);
    /* host staging for the sinusoid (B, 256) and the RoPE tables 2 x (Sl, hd);
     * both products are bounded above */
    nhost = 2 * Sl * hd > B * FLUX_TIME_DIM ? 2 * Sl * hd : B * FLUX_TIME_DIM;
    host = malloc((size_t)nhost * sizeof(float));
    if (!host) return tdm_errorf(TDM_ERR_NOMEM, "flux: out of memory for %lld host floats",
                                 (long long)nhost);
    base = tdm_dev_alloc(dev, nws + ncp, "flux activations");
    if (!base) { st = TDM_ERR_NOMEM; goto fail; }
    ws_layout(&w, base, B, Sl, D, m->Dl);
    if (cp) cp_layout(cp, base + nws, B, in->Nl, m->info.out_channels);

    TDM_TRY(tdm_offload_in(&m->w.off, m->dev, -1));   /* offloaded top-level weights, for the whole call */
    TDM_TRY(embed(m, &w, in, host));
    /* RoPE over the own rows of ids = cat(txt_ids, img_ids), made on the host */
    TDM_TRY(rope_cached(m, in->txt_ids + in->tb * 3, in->Tl, in->img_ids + in->nb * 3, in->Nl,
                        host));
    w.cosb = m->rope;
    w.sinb = m->rope + Sl * hd;
    TDM_TRY(run_blocks(m, &w, B, in->Tl, in->Nl));
    final_layer(m, &w, B, in->Tl, in->Nl, cp ? cp->out : out);
    if (cp) TDM_TRY(cp_gather(m, cp, in, out));

fail:
    tdm_offload_out_all(&m->w.off);   /* whatever is still brought in */
    if (base) tdm_dev_free(dev, base, nws + ncp);
    free(host);
    return st;
}

tdm_status tdm_flux_forward(tdm_flux_t *m, const float *img, int64_t B, int64_t N,
                            const float *txt, int64_t T, const float *pooled,
                            const float *timestep, const float *guidance,
                            const float *img_ids, const float *txt_ids, float *out) {
    const flux_in_t in = { img, txt, pooled, timestep, guidance, img_ids, txt_ids,
                           B, N, T, 0, T, 0, N };
    tdm_status st = check_args(m, &in, out, "tdm_flux_forward");
    return st != TDM_OK ? st : forward_rows(m, NULL, &in, out);
}

/* A group of the grid is well formed (NULL is one rank). */
static tdm_status check_group(const tdm_nn_group_t *g, const char *name) {
    if (g && (g->size < 1 || g->rank < 0 || g->rank >= g->size))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_flux_forward_cp: rank %d of a %s group of %d",
                          g->rank, name, g->size);
    return TDM_OK;
}

tdm_status tdm_flux_forward_cp(tdm_flux_t *m, const tdm_flux_cp_groups_t *g, const float *img,
                               int64_t B, int64_t N, const float *txt, int64_t T,
                               const float *pooled, const float *timestep, const float *guidance,
                               const float *img_ids, const float *txt_ids, float *out) {
    flux_in_t in = { img, txt, pooled, timestep, guidance, img_ids, txt_ids,
                     B, N, T, 0, T, 0, N };
    flux_cp_t cp;
    tdm_status st = check_args(m, &in, out, "tdm_flux_forward_cp");
    if (st != TDM_OK) return st;
    memset(&cp, 0, sizeof(cp));
    cp.gu = g ? g->ulysses : NULL, cp.gr = g ? g->ring : NULL;
    if ((st = check_group(cp.gu, "Ulysses")) != TDM_OK || (st = check_group(cp.gr, "ring")) != TDM_OK)
        return st;
    if (cp.gu && cp.gu->size == 1) cp.gu = NULL;
    if (cp.gr && cp.gr->size == 1) cp.gr = NULL;
    if (!cp.gu && !cp.gr) return forward_rows(m, NULL, &in, out);
    cp.u = cp.gu ? cp.gu->rank : 0, cp.U = cp.gu ? cp.gu->size : 1;
    cp.r = cp.gr ? cp.gr->rank : 0, cp.R = cp.gr ? cp.gr->size : 1;
    if (N < (int64_t)cp.U * cp.R)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_flux_forward_cp: %lld image rows over %d "
                          "ranks (ring %d x ulysses %d): every rank needs at least one",
                          (long long)N, cp.U * cp.R, cp.R, cp.U);
    cp.shape = (tdm_nn_ulysses_shape_t){ B, m->Hl, m->hd, 2, { T, N } };
    st = tdm_nn_usp_sizes(&cp.shape, cp.r, cp.R, cp.u, cp.U, tdm_op_act_dtype(m->dev), &cp.n);
    if (st != TDM_OK) return st;
    in.tb = cp.n.begin[0], in.Tl = cp.n.count[0];
    in.nb = cp.n.begin[1], in.Nl = cp.n.count[1];
    return forward_rows(m, &cp, &in, out);
}

/* ---- working memory ---------------------------------------------------------- */

/* What rank (0, 0) (the one with the most rows) of tdm_flux_forward_cp(B,
 * N, T) over R ring slots of U Ulysses ranks (U = R = 1: tdm_flux_forward)
 * holds for the model described by `c` on dev: the workspace (ws_layout
 * and cp_layout, the functions that size the forward's one allocation), the
 * RoPE tables it keeps, the attention kernel's scratch (the attention op
 * over the whole sequence without a ring; with one, attention_lse of the
 * slot's rows against one ring block) and, on a host device, the host
 * staging buffer. Saturates at INT64_MAX. */
static int64_t flux_work_total(const tdm_flux_info_t *c, tdm_device_t *dev, int64_t B, int64_t N,
                               int64_t T, int U, int R, int tp) {
    flux_ws_t w;
    const int64_t hd = c->attention_head_dim, H = c->num_attention_heads / tp, D = hd * H * tp;
    int64_t S, Sl, Nl = N, heads = H, nws, ncp = 0, rope, att, nhost, total;
    if (N > INT64_MAX / 2 - T) return INT64_MAX;
    S = T + N;
    Sl = S;
    if (S > INT64_MAX / 64 / hd) return INT64_MAX;
    w.at = tdm_op_act_dtype(dev);
    w.yt = tp > 1 ? TDM_F32 : w.at;
    att = tdm_op_attention_scratch_bytes(dev, w.at, B, S, S, heads, hd);
    if (U > 1 || R > 1) {
        flux_cp_t cp;
        memset(&cp, 0, sizeof(cp));
        cp.U = U, cp.R = R;
        cp.shape = (tdm_nn_ulysses_shape_t){ B, H, hd, 2, { T, N } };
        if (tdm_nn_usp_sizes(&cp.shape, 0, R, 0, U, w.at, &cp.n) != TDM_OK) return INT64_MAX;
        Nl = cp.n.count[1];
        Sl = cp.n.rows;
        heads = cp.n.heads_local;
        if ((ncp = cp_layout(&cp, NULL, B, Nl, c->out_channels)) < 0) return INT64_MAX;
        att = R > 1 ? tdm_op_attention_scratch_bytes(dev, w.at, B, cp.n.slot_rows,
                                                     (T + R - 1) / R + (N + R - 1) / R, heads, hd)
                    : tdm_op_attention_scratch_bytes(dev, w.at, B, S, S, heads, hd);
    }
    if ((nws = ws_layout(&w, NULL, B, Sl, D, hd * H)) < 0) return INT64_MAX;
    rope = 2 * Sl * hd * (int64_t)sizeof(float);
    nhost = 2 * Sl * hd > B * FLUX_TIME_DIM ? 2 * Sl * hd : B * FLUX_TIME_DIM;
    total = nws;
    total = total > INT64_MAX - ncp ? INT64_MAX : total + ncp;
    total = total > INT64_MAX - rope ? INT64_MAX : total + rope;
    total = total > INT64_MAX - att ? INT64_MAX : total + att;
    if (tdm_dev_is_host(dev)) total = total > INT64_MAX - 4 * nhost ? INT64_MAX : total + 4 * nhost;
    return total;
}

/* The working memory of a rank of an R × U context-parallel grid of a
 * model over tp TP ranks (each 1 when absent). */
static tdm_status work_bytes(const char *config_path, tdm_device_t *dev, int64_t B, int64_t N, int64_t T,
                             int U, int R, int tp, const char *fn, int64_t *out) {
    tdm_status st = TDM_OK;
    tdm_json_t j = {0};
    tdm_flux_info_t c;
    *out = 0;
    if (!config_path || !dev || B < 1 || N < 1 || T < 0 || U < 1 || R < 1 || tp < 1)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: config, device, B >= 1, N >= 1, T >= 0, U >= 1, "
                          "R >= 1 and tp >= 1 are required", fn);
    TDM_TRY(tdm_json_load(&j, config_path));
    TDM_TRY(cfg_parse(&j, &c));
    TDM_TRY(tp_check(&c, tp, fn));
    *out = flux_work_total(&c, dev, B, N, T, U, R, tp);
fail:
    tdm_json_free(&j);
    return st;
}

tdm_status tdm_flux_work_bytes_cp(const char *config_path, tdm_device_t *dev, int64_t B,
                                  int64_t N, int64_t T, int U, int R, int64_t *out) {
    return work_bytes(config_path, dev, B, N, T, U, R, 1, "tdm_flux_work_bytes_cp", out);
}

tdm_status tdm_flux_work_bytes_tp(const char *config_path, tdm_device_t *dev, int64_t B,
                                  int64_t N, int64_t T, int U, int tp, int64_t *out) {
    return work_bytes(config_path, dev, B, N, T, U, 1, tp, "tdm_flux_work_bytes_tp", out);
}

tdm_status tdm_flux_work_bytes(const char *config_path, tdm_device_t *dev, int64_t B, int64_t N,
                               int64_t T, int64_t *out) {
    return tdm_flux_work_bytes_cp(config_path, dev, B, N, T, 1, 1, out);
}
