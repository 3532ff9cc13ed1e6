/* clip_text.c — CLIPTextModel (transformers) forward in float32 on any
 * device: token + position embeddings, pre-LN transformer layers with causal
 * self-attention and an MLP (quick_gelu / gelu / tanh gelu), final
 * LayerNorm, EOS pooling. Every step on activations or weights is a tdm_op_*
 * on the model's device; only the token ids (host memory) are read here.
 * The same walk over the tensors that loads them also lists them for the
 * placement planner (tdm_clip_text_plist). Not a tokenizer. The projection
 * head of CLIPTextModelWithProjection (SDXL's text_encoder_2) is loaded and
 * applied to the pooled output by tdm_clip_text_forward_penultimate. */
#include "models/clip_text.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "io/config.h"
#include "io/folder.h"
#include "io/safetensors.h"
#include "nn/attention.h"
#include "nn/ffn.h"
#include "nn/norm.h"
#include "nn/ptree.h"
#include "nn/weights.h"

typedef struct {
    tdm_nn_norm_t      ln1;               /* LayerNorm (D) */
    tdm_nn_attention_t attn;              /* self_attn: q/k/v/out_proj D → D with biases */
    tdm_nn_norm_t      ln2;               /* LayerNorm (D) */
    tdm_nn_ffn_t       mlp;               /* fc1 D → I, the hidden_act, fc2 I → D */
} clip_layer;

struct tdm_clip_text {
    int64_t vocab, D, I, L, heads, max_pos, eos;
    int64_t proj;               /* projection_dim (CLIPTextModelWithProjection only) */
    int     with_proj;          /* architectures[0] is CLIPTextModelWithProjection */
    float eps;
    tdm_nn_act_fn act;          /* hidden_act */
    tdm_device_t *dev;
    tdm_tensor_t *tok_emb;      /* (vocab, D) */
    tdm_tensor_t *pos_emb;      /* (max_pos, D) */
    tdm_nn_norm_t fln;          /* final_layer_norm (D) */
    tdm_nn_linear_t tproj;      /* text_projection D → proj, no bias (with_proj only) */
    clip_layer *layers;         /* L */
    /* the loaded tensors; w.off: those of a split load kept in host RAM or
     * on disk, brought to `dev` one encoder layer at a time (-1: the
     * embeddings and final norm) */
    tdm_weights_t w;
};

/* ---- loading ----------------------------------------------------------------- */

/* The encoder layer a tensor belongs to (its streaming unit), -1 for the
 * embeddings and the final norm. */
static int64_t clip_layer_of(const void *ctx, const char *name) {
    (void)ctx;
    long long l;
    const char *p = strstr(name, "encoder.layers.");
    return p && sscanf(p, "encoder.layers.%lld.", &l) == 1 ? l : -1;
}

/* The name the device map uses for file tensor `name`: as the parameter
 * list has it (tdm_clip_text_plist), "text_model." first exactly when the
 * config is a CLIPTextModelWithProjection, whatever the file's names have;
 * ctx is the model. */
static void clip_map_name(const void *ctx, char *out, size_t cap, const char *name) {
    const tdm_clip_text_t *m = ctx;
    if (!strncmp(name, "text_model.", 11)) name += 11;
    const int head = !strncmp(name, "text_projection.", 16);   /* outside text_model */
    snprintf(out, cap, "%s%s", m->with_proj && !head ? "text_model." : "", name);
}

static tdm_status read_config(tdm_clip_text_t *m, const char *path) {
    tdm_status st = TDM_OK;
    tdm_json_t j = {0};
    char act[64];
    double eps = 0;
    TDM_TRY(tdm_json_load(&j, path));
    /* defaults: transformers CLIPTextConfig */
    TDM_TRY(tdm_json_int(&j, "vocab_size", 49408, &m->vocab));
    TDM_TRY(tdm_json_int(&j, "hidden_size", 512, &m->D));
    TDM_TRY(tdm_json_int(&j, "intermediate_size", 2048, &m->I));
    TDM_TRY(tdm_json_int(&j, "num_hidden_layers", 12, &m->L));
    TDM_TRY(tdm_json_int(&j, "num_attention_heads", 8, &m->heads));
    TDM_TRY(tdm_json_int(&j, "max_position_embeddings", 77, &m->max_pos));
    TDM_TRY(tdm_json_int(&j, "eos_token_id", 49407, &m->eos));
    TDM_TRY(tdm_json_float(&j, "layer_norm_eps", 1e-5, &eps));
    TDM_TRY(tdm_json_str(&j, "hidden_act", "quick_gelu", act, sizeof act));
    TDM_TRY(tdm_json_int(&j, "projection_dim", 512, &m->proj));
    {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j.root, "architectures");
        const cJSON *a0 = cJSON_IsArray(a) ? cJSON_GetArrayItem(a, 0) : NULL;
        m->with_proj = cJSON_IsString(a0) && !strcmp(a0->valuestring, "CLIPTextModelWithProjection");
    }
    m->eps = (float)eps;
    if (!strcmp(act, "quick_gelu")) m->act = tdm_op_quick_gelu;
    else if (!strcmp(act, "gelu")) m->act = tdm_op_gelu;
    else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh")) m->act = tdm_op_gelu_tanh;
    else {
        st = tdm_errorf(TDM_ERR_UNSUPPORTED,
                        "%s: hidden_act \"%s\" is not supported (quick_gelu, gelu, gelu_new, "
                        "gelu_pytorch_tanh)", path, act);
        goto fail;
    }
    /* sizes that bound every later computation: 10-100x those of CLIP-L and
     * OpenCLIP bigG (hidden 1280, 5120 wide MLP, 32 layers, 20 heads, 77
     * positions, 49408 tokens) */
    const int64_t dim = (int64_t)1 << 16;
    struct { const char *k; int64_t v, hi; } chk[] = {
        {"vocab_size", m->vocab, (int64_t)1 << 22}, {"hidden_size", m->D, dim},
        {"intermediate_size", m->I, 4 * dim},       {"num_hidden_layers", m->L, 1024},
        {"num_attention_heads", m->heads, 1024},    {"max_position_embeddings", m->max_pos, dim},
    };
    for (size_t i = 0; i < sizeof chk / sizeof chk[0]; i++)
        if (chk[i].v < 1 || chk[i].v > chk[i].hi) {
            st = tdm_json_range_error(&j, chk[i].k, chk[i].v, 1, chk[i].hi);
            goto fail;
        }
    if (m->with_proj && (m->proj < 1 || m->proj > dim)) {
        st = tdm_json_range_error(&j, "projection_dim", m->proj, 1, dim);
        goto fail;
    }
    if (m->D % m->heads != 0) {
        st = tdm_errorf(TDM_ERR_MODEL,
                        "%s: hidden_size %lld is not a multiple of num_attention_heads %lld", path,
                        (long long)m->D, (long long)m->heads);
        goto fail;
    }
    if (!(m->eps > 0) || !isfinite(m->eps)) {
        st = tdm_errorf(TDM_ERR_MODEL, "%s: layer_norm_eps must be a positive number", path);
        goto fail;
    }
fail:
    tdm_json_free(&j);
    return st;
}

/* Binds (through m->w: loads or lists) every parameter of CLIPTextModel in
 * registration order, each name prefixed with `pre`: embeddings, encoder
 * layers, final_layer_norm; with the no-split modules (CLIPTextEmbeddings,
 * CLIPEncoderLayer). A tensor of 2 dims in a layer is a Linear weight (GEMM
 * dtype), everything else float32. Allocates m->layers. */
static tdm_status load_tensors(tdm_clip_text_t *m, const char *pre) {
    tdm_status st = TDM_OK;
    const int64_t D = m->D, I = m->I;
    tdm_weights_t *w = &m->w;
    TDM_TRY(tdm_weights_nosplit(w, "CLIPTextEmbeddings", "%sembeddings", pre));
    TDM_TRY(tdm_weights_bind_tensor(w, &m->tok_emb, 0, 2, (int64_t[]){m->vocab, D},
                                    "%sembeddings.token_embedding.weight", pre));
    TDM_TRY(tdm_weights_bind_tensor(w, &m->pos_emb, 0, 2, (int64_t[]){m->max_pos, D},
                                    "%sembeddings.position_embedding.weight", pre));
    m->layers = calloc((size_t)m->L, sizeof *m->layers);
    if (!m->layers) return tdm_errorf(TDM_ERR_NOMEM, "clip_text: out of memory");
    for (int64_t l = 0; l < m->L; l++) {
        clip_layer *y = &m->layers[l];
        char p[128];
        snprintf(p, sizeof p, "%sencoder.layers.%lld", pre, (long long)l);
        TDM_TRY(tdm_weights_nosplit(w, "CLIPEncoderLayer", "%s", p));
        y->attn.heads = m->heads;   /* registration order: k, v, q, out */
        TDM_TRY(tdm_nn_linear_bind(w, &y->attn.k, D, D, 1, "%s.self_attn.k_proj", p));
        TDM_TRY(tdm_nn_linear_bind(w, &y->attn.v, D, D, 1, "%s.self_attn.v_proj", p));
        TDM_TRY(tdm_nn_linear_bind(w, &y->attn.q, D, D, 1, "%s.self_attn.q_proj", p));
        TDM_TRY(tdm_nn_linear_bind(w, &y->attn.o, D, D, 1, "%s.self_attn.out_proj", p));
        TDM_TRY(tdm_nn_norm_bind(w, &y->ln1, D, 0, m->eps, "%s.layer_norm1", p));
        TDM_TRY(tdm_nn_ffn_bind(w, &y->mlp, D, I, D, m->act, "fc1", "fc2", "%s.mlp", p));
        TDM_TRY(tdm_nn_norm_bind(w, &y->ln2, D, 0, m->eps, "%s.layer_norm2", p));
    }
    TDM_TRY(tdm_nn_norm_bind(w, &m->fln, D, 0, m->eps, "%sfinal_layer_norm", pre));
    /* CLIPTextModelWithProjection: Linear(hidden_size, projection_dim, bias=False) */
    if (m->with_proj) TDM_TRY(tdm_nn_linear_bind(w, &m->tproj, D, m->proj, 0, "text_projection"));
fail:
    return st;
}

static tdm_status load_any(tdm_clip_text_t **out, const char *root, const char *sub,
                           const char *variant, tdm_device_t *dev,
                           const tdm_placement_t *place) {
    tdm_status st = TDM_OK;
    tdm_clip_text_t *m = NULL;
    char path[TDM_PATH_MAX];
    *out = NULL;
    if (!root || !sub || !dev)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "clip_text: root, sub and device are required");
    m = calloc(1, sizeof *m);
    if (!m) return tdm_errorf(TDM_ERR_NOMEM, "clip_text: out of memory");
    m->dev = dev;
    tdm_weights_init(&m->w, "clip_text", dev, place);
    m->w.unit_of = clip_layer_of;
    m->w.map_name = clip_map_name;
    m->w.ctx = m;
    TDM_TRY(tdm_path_join(path, sizeof path, root, sub, "config.json"));
    TDM_TRY(read_config(m, path));
    TDM_TRY(tdm_weights_open(&m->w, root, sub, variant));
    /* transformers 4.x checkpoints prefix every name with "text_model." */
    const char *tok = "text_model.embeddings.token_embedding.weight";
    TDM_TRY(load_tensors(m, tdm_st_set_find(m->w.set, tok) ? "text_model." : ""));
    tdm_weights_finish(&m->w);
    *out = m;
    return TDM_OK;
fail:
    tdm_clip_text_free(m);
    return st;
}

tdm_status tdm_clip_text_load(tdm_clip_text_t **out, const char *root, const char *sub,
                              const char *variant, tdm_device_t *dev) {
    return load_any(out, root, sub, variant, dev, NULL);
}

tdm_status tdm_clip_text_load_placed(tdm_clip_text_t **out, const char *root, const char *sub,
                                     const char *variant, const tdm_placement_t *pl) {
    tdm_status st = tdm_placement_check(pl, "clip_text");
    if (st != TDM_OK) return st;
    return load_any(out, root, sub, variant, pl->main, pl);
}

void tdm_clip_text_free(tdm_clip_text_t *m) {
    if (!m) return;
    tdm_weights_free(&m->w);   /* every loaded tensor, host copies and the kept files */
    free(m->layers);
    free(m);
}

tdm_status tdm_clip_text_plist(const char *config_path, tdm_dtype dt, tdm_plist_t *out) {
    tdm_status st = TDM_OK;
    tdm_clip_text_t *m = NULL;
    if (!config_path || !out)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "clip_text: config path and list are required");
    tdm_plist_init(out, dt);
    m = calloc(1, sizeof *m);
    if (!m) return tdm_errorf(TDM_ERR_NOMEM, "clip_text: out of memory");
    TDM_TRY(read_config(m, config_path));
    /* CLIPTextModelWithProjection holds the CLIPTextModel as text_model */
    const char *pre = m->with_proj ? "text_model." : "";
    tdm_weights_init_list(&m->w, "clip_text", out);
    TDM_TRY(load_tensors(m, pre));
    {   /* buffer of CLIPTextEmbeddings: arange(max_position_embeddings) */
        int64_t ps[2] = {1, m->max_pos};
        TDM_TRY(tdm_plist_add(out, 1, TDM_I64, 2, ps, "%sembeddings.position_ids", pre));
    }
    tdm_clip_text_free(m);
    return TDM_OK;
fail:
    tdm_clip_text_free(m);
    tdm_plist_free(out);
    tdm_plist_init(out, dt);
    return st;
}

int64_t tdm_clip_text_hidden_size(const tdm_clip_text_t *m) { return m->D; }
int64_t tdm_clip_text_max_positions(const tdm_clip_text_t *m) { return m->max_pos; }
int64_t tdm_clip_text_num_hidden_layers(const tdm_clip_text_t *m) { return m->L; }
int64_t tdm_clip_text_projection_dim(const tdm_clip_text_t *m) { return m->with_proj ? m->proj : 0; }

/* ---- forward ----------------------------------------------------------------- */

/* The row of ids that transformers pools, per batch row: eos_token_id == 2
 * (legacy configs) → the first argmax of the ids; otherwise the first
 * position holding eos_token_id (0 when there is none). rows[b] = b·T + pos. */
static void eos_rows(const tdm_clip_text_t *m, const int32_t *ids, int64_t B, int64_t T,
                     int32_t *rows) {
    for (int64_t b = 0; b < B; b++) {
        const int32_t *row = ids + b * T;
        int64_t pos = 0;
        if (m->eos == 2) {
            for (int64_t t = 1; t < T; t++)
                if (row[t] > row[pos]) pos = t;
        } else {
            for (int64_t t = 0; t < T; t++)
                if (row[t] == m->eos) { pos = t; break; }
        }
        rows[b] = (int32_t)(b * T + pos);   /* < N <= INT32_MAX */
    }
}

/* The forward pass behind both entry points. `hidden` receives the output
 * of the first `stop` encoder layers, final-normalized when `norm`.
 * `pooled` (or NULL) receives the EOS rows of the final-normalized output of
 * the first `pool_at` layers (pool_at = stop with norm: the rows of
 * `hidden`), projected by text_projection when `project`. */
static tdm_status clip_forward(tdm_clip_text_t *m, const int32_t *ids, int64_t B, int64_t T,
                               int64_t stop, int norm, float *hidden, int64_t pool_at,
                               int project, float *pooled) {
    tdm_status st = TDM_OK;
    float *arena = NULL;
    int32_t *rows = NULL;
    int64_t bytes = 0;
    if (B < 1 || T < 1 || T > m->max_pos)
        return tdm_errorf(TDM_ERR_INVALID_ARG,
                          "clip_text: batch %lld x %lld tokens; need batch >= 1 and 1 <= tokens "
                          "<= max_position_embeddings %lld",
                          (long long)B, (long long)T, (long long)m->max_pos);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            int64_t id = ids[b * T + t];
            if (id < 0 || id >= m->vocab)
                return tdm_errorf(TDM_ERR_INVALID_ARG,
                                  "clip_text: token id %lld at batch %lld position %lld is "
                                  "outside the vocabulary [0, %lld)",
                                  (long long)id, (long long)b, (long long)t, (long long)m->vocab);
        }

    const int64_t D = m->D, I = m->I, H = m->heads, hd = D / H;
    const int64_t run = pooled && pool_at > stop ? pool_at : stop;   /* layers to run */
    tdm_device_t *dev = m->dev;
    /* activations: x, h, q, k, v, a (N, D) and f (N, I), and the pooled rows
     * before projection (B, D); pooled rows are gathered by int32 row number,
     * so N must fit one */
    int64_t N, per_row = 6 * D + I, nfl;
    if (!tdm_mul_ok(B, T, &N) || N > INT32_MAX || !tdm_mul_ok(N, per_row, &nfl) ||
        !tdm_mul_ok(nfl + B * D, (int64_t)sizeof(float), &bytes))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "clip_text: batch %lld x %lld tokens is too large",
                          (long long)B, (long long)T);
    if (pooled && !(rows = malloc((size_t)B * sizeof *rows)))
        return tdm_errorf(TDM_ERR_NOMEM, "clip_text: out of memory");
    arena = tdm_dev_alloc(dev, bytes, "clip_text activations");
    if (!arena) {
        free(rows);
        return TDM_ERR_NOMEM;   /* message set by tdm_dev_alloc */
    }
    float *x = arena;          /* (N, D) residual stream */
    float *h = x + N * D;      /* (N, D) normalized */
    float *q = h + N * D;      /* (B, T, H*hd) */
    float *k = q + N * D;
    float *v = k + N * D;
    float *a = v + N * D;      /* (N, D) attention output */
    float *f = a + N * D;      /* (N, I) MLP hidden */
    float *pr = f + N * I;     /* (B, D) pooled rows */

    if ((st = tdm_offload_in(&m->w.off, dev, -1)) != TDM_OK) goto done;   /* top-level weights */
    /* embeddings: x[b, t] = tok_emb[ids[b, t]] + pos_emb[t] (ids checked above) */
    tdm_op_gather_rows(dev, x, tdm_f32(m->tok_emb), ids, N, D);
    for (int64_t b = 0; b < B; b++)
        tdm_op_add(dev, x + b * T * D, x + b * T * D, tdm_f32(m->pos_emb), T * D);

    const float scale = 1.0f / sqrtf((float)hd);   /* head_dim ** -0.5 */
    const tdm_nn_attention_buf_t ab = {q, k, v, a};
    for (int64_t l = 0; l < run; l++) {
        const clip_layer *y = &m->layers[l];
        if ((st = tdm_offload_in(&m->w.off, dev, l)) != TDM_OK) goto done;
        /* the next layer's offloaded weights copy while this one computes */
        if (l + 1 < run && (st = tdm_offload_prefetch(&m->w.off, dev, l + 1)) != TDM_OK)
            goto done;
        /* self-attention block */
        tdm_nn_layer_norm_forward(dev, &y->ln1, h, x, N);
        tdm_nn_attention_forward(dev, &y->attn, h, h, NULL, B, T, T, scale, 1, &ab);   /* causal */
        tdm_op_add(dev, x, x, h, N * D);
        /* MLP block */
        tdm_nn_layer_norm_forward(dev, &y->ln2, h, x, N);
        tdm_nn_ffn_forward(dev, &y->mlp, h, h, f, NULL, N);
        tdm_op_add(dev, x, x, h, N * D);
        tdm_offload_out(&m->w.off, l);
        if (l + 1 == stop) {   /* hidden_states[stop] */
            if (norm) tdm_nn_layer_norm_forward(dev, &m->fln, hidden, x, N);
            else tdm_op_copy_2d(dev, TDM_F32, hidden, D, x, D, N, D);
        }
    }

    if (pooled) {
        const float *src = hidden;   /* the normalized rows of `hidden` */
        if (!(norm && pool_at == stop)) {
            tdm_nn_layer_norm_forward(dev, &m->fln, h, x, N);
            src = h;
        }
        eos_rows(m, ids, B, T, rows);
        tdm_op_gather_rows(dev, project ? pr : pooled, src, rows, B, D);
        if (project) tdm_nn_linear_forward(dev, &m->tproj, pooled, pr, B);
    }
done:
    tdm_offload_out_all(&m->w.off);   /* whatever is still brought in */
    tdm_dev_free(dev, arena, bytes);
    free(rows);
    return st;
}

tdm_status tdm_clip_text_forward(tdm_clip_text_t *m, const int32_t *ids, int64_t B, int64_t T,
                                 float *hidden, float *pooled) {
    return tdm_clip_text_forward_skip(m, ids, B, T, 0, hidden, pooled);
}

tdm_status tdm_clip_text_forward_skip(tdm_clip_text_t *m, const int32_t *ids, int64_t B,
                                      int64_t T, int64_t skip, float *hidden, float *pooled) {
    if (!m || !ids || !hidden)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "clip_text: model, ids and hidden are required");
    if (skip < 0 || skip >= m->L)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "clip_text: clip skip %lld not in [0, %lld)",
                          (long long)skip, (long long)m->L);
    return clip_forward(m, ids, B, T, m->L - skip, 1, hidden, m->L - skip, 0, pooled);
}

tdm_status tdm_clip_text_forward_penultimate(tdm_clip_text_t *m, const int32_t *ids, int64_t B,
                                             int64_t T, int64_t skip, float *hidden,
                                             float *text_embeds) {
    if (!m || !ids || !hidden)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "clip_text: model, ids and hidden are required");
    if (skip < 0 || skip + 1 >= m->L)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "clip_text: hidden_states[-%lld] of %lld layers: "
                          "clip skip %lld not in [0, %lld)", (long long)(skip + 2), (long long)m->L,
                          (long long)skip, (long long)(m->L - 1));
    if (text_embeds && !m->with_proj)
        return tdm_errorf(TDM_ERR_MODEL, "clip_text: the pooled text embeddings need a "
                          "CLIPTextModelWithProjection (its config's architectures[0]); this "
                          "encoder has no text_projection");
    return clip_forward(m, ids, B, T, m->L - 1 - skip, 0, hidden, m->L, 1, text_embeds);
}
