/* t5.c — T5EncoderModel (transformers) forward in float32 on any device:
 * token embedding, pre-RMS-norm blocks of bidirectional self-attention with
 * the shared relative position bias (no score scaling, no biases) and a
 * (gated) feed-forward, final RMS norm. The FLUX.1 text_encoder_2. Every
 * step on activations or weights is a tdm_op_* on the model's device; only
 * the token ids and the relative position buckets (host memory) are handled
 * here. The same walk over the blocks that loads them also lists them for
 * the placement planner (tdm_t5_plist). Not the decoder and not a
 * tokenizer. */
#include "models/t5.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "io/config.h"
#include "io/folder.h"
#include "io/safetensors.h"
#include "nn/linear.h"
#include "nn/ptree.h"
#include "nn/weights.h"

typedef enum {
    T5_ACT_RELU = 0,
    T5_ACT_GELU,        /* erf */
    T5_ACT_GELU_TANH,   /* gelu_new, gelu_pytorch_tanh */
    T5_ACT_SILU
} t5_act;

typedef struct {
    tdm_tensor_t   *ln0_w;                /* (D) before attention */
    tdm_nn_linear_t q, k, v;              /* D → HK with HK = H * d_kv, no biases */
    tdm_nn_linear_t o;                    /* HK → D */
    tdm_tensor_t   *ln1_w;                /* (D) before the feed-forward */
    tdm_nn_linear_t wi0, wi1;             /* D → F; wi1 unbound when not gated (wi0 = wi) */
    tdm_nn_linear_t wo;                   /* F → D */
} t5_block;

struct tdm_t5 {
    int64_t vocab, D, dkv, F, L, H, nbuckets, maxdist;
    float eps;
    int gated;
    t5_act act;
    tdm_device_t *dev;
    tdm_tensor_t *emb;        /* (vocab, D) */
    tdm_tensor_t *rel_bias;   /* (nbuckets, H), block 0's, shared by all blocks */
    tdm_tensor_t *fln_w;      /* (D) */
    t5_block *blocks;         /* L */
    /* the loaded tensors; w.off, for a split placement
     * (tdm_t5_load_placed): the offloaded ones, brought to `dev` for their
     * block (-1: embedding, position bias and final norm, for the whole
     * forward) */
    tdm_weights_t w;
};

/* ---- relative position buckets ---------------------------------------------- */

int64_t tdm_t5_relative_bucket(int64_t rel, int64_t num_buckets, int64_t max_distance) {
    /* transformers T5Attention._relative_position_bucket, bidirectional=True,
     * with its float32 arithmetic: the log-scale bucket is
     * trunc(log(f32(n) / me) / f32(log(max_distance / me)) * (nb - me)). */
    int64_t nb = num_buckets / 2;
    int64_t ret = rel > 0 ? nb : 0;
    int64_t n = rel < 0 ? -rel : rel;
    int64_t me = nb / 2;
    if (n < me) return ret + n;
    float r = (float)n / (float)me;
    float den = (float)log((double)max_distance / (double)me);
    float v = logf(r) / den * (float)(nb - me);
    int64_t big = nb - 1;
    if (v < (float)(nb - 1 - me)) big = me + (int64_t)v;   /* v >= 0; truncation as .to(long) */
    return ret + big;
}

/* ---- loading ----------------------------------------------------------------- */

/* The block a tensor belongs to (see tdm_t5_t.w); the relative position
 * bias, stored in block 0, serves every block. */
static int64_t t5_block_of(const void *ctx, const char *name) {
    (void)ctx;
    long long i;
    if (strstr(name, "relative_attention_bias")) return -1;
    if (sscanf(name, "encoder.block.%lld.", &i) == 1) return i;
    return -1;
}

static tdm_status parse_act(const char *name, const char *path, const char *key, t5_act *out) {
    if (!strcmp(name, "relu")) *out = T5_ACT_RELU;
    else if (!strcmp(name, "gelu")) *out = T5_ACT_GELU;
    else if (!strcmp(name, "gelu_new") || !strcmp(name, "gelu_pytorch_tanh")) *out = T5_ACT_GELU_TANH;
    else if (!strcmp(name, "silu") || !strcmp(name, "swish")) *out = T5_ACT_SILU;
    else
        return tdm_errorf(TDM_ERR_UNSUPPORTED,
                          "%s: %s activation \"%s\" is not supported (relu, gelu, gelu_new, "
                          "gelu_pytorch_tanh, silu, swish)", path, key, name);
    return TDM_OK;
}

static tdm_status read_config(tdm_t5_t *m, const char *path) {
    tdm_status st = TDM_OK;
    tdm_json_t j = {0};
    char ffp[64], act[64];
    double eps = 0;
    int gated = 0;
    TDM_TRY(tdm_json_load(&j, path));
    /* defaults: transformers T5Config */
    TDM_TRY(tdm_json_int(&j, "vocab_size", 32128, &m->vocab));
    TDM_TRY(tdm_json_int(&j, "d_model", 512, &m->D));
    TDM_TRY(tdm_json_int(&j, "d_kv", 64, &m->dkv));
    TDM_TRY(tdm_json_int(&j, "d_ff", 2048, &m->F));
    TDM_TRY(tdm_json_int(&j, "num_layers", 6, &m->L));
    TDM_TRY(tdm_json_int(&j, "num_heads", 8, &m->H));
    TDM_TRY(tdm_json_int(&j, "relative_attention_num_buckets", 32, &m->nbuckets));
    TDM_TRY(tdm_json_int(&j, "relative_attention_max_distance", 128, &m->maxdist));
    TDM_TRY(tdm_json_float(&j, "layer_norm_epsilon", 1e-6, &eps));
    TDM_TRY(tdm_json_str(&j, "feed_forward_proj", "relu", ffp, sizeof ffp));
    m->eps = (float)eps;

    /* T5Config: "ACT" or "gated-ACT"; "gated-gelu" means gelu_new. The keys
     * is_gated_act and dense_act_fn, when present, override (as the config's
     * keyword arguments do in transformers). */
    const char *dash = strchr(ffp, '-');
    if (dash && (strncmp(ffp, "gated-", 6) != 0 || strchr(dash + 1, '-') || !dash[1])) {
        st = tdm_errorf(TDM_ERR_UNSUPPORTED,
                        "%s: feed_forward_proj \"%s\" is not of the form \"ACT\" or \"gated-ACT\"",
                        path, ffp);
        goto fail;
    }
    gated = dash != NULL;
    snprintf(act, sizeof act, "%s", dash ? dash + 1 : ffp);
    if (!strcmp(ffp, "gated-gelu")) snprintf(act, sizeof act, "gelu_new");
    TDM_TRY(tdm_json_bool(&j, "is_gated_act", gated, &m->gated));
    TDM_TRY(tdm_json_str(&j, "dense_act_fn", act, act, sizeof act));
    TDM_TRY(parse_act(act, path, cJSON_GetObjectItemCaseSensitive(j.root, "dense_act_fn")
                                     ? "dense_act_fn" : "feed_forward_proj", &m->act));

    /* sizes that bound every later computation: 10-100x those of T5-XXL
     * (d_model 4096, d_ff 10240, 24 layers, 64 heads of 64, 32128 tokens) */
    const int64_t lim = (int64_t)1 << 16;
    struct { const char *k; int64_t v, lo, hi; } chk[] = {
        {"vocab_size", m->vocab, 1, (int64_t)1 << 22},
        {"d_model", m->D, 1, lim},
        {"d_kv", m->dkv, 1, 4096},
        {"d_ff", m->F, 1, 16 * lim},
        {"num_layers", m->L, 1, 1024},
        {"num_heads", m->H, 1, 1024},
        {"relative_attention_num_buckets", m->nbuckets, 4, 1 << 16},
        {"relative_attention_max_distance", m->maxdist, 1, 1 << 20},
    };
    for (size_t i = 0; i < sizeof chk / sizeof chk[0]; i++)
        if (chk[i].v < chk[i].lo || chk[i].v > chk[i].hi) {
            st = tdm_json_range_error(&j, chk[i].k, chk[i].v, chk[i].lo, chk[i].hi);
            goto fail;
        }
    if (m->H * m->dkv > lim) {
        st = tdm_errorf(TDM_ERR_MODEL, "%s: num_heads * d_kv = %lld is too large", path,
                        (long long)(m->H * m->dkv));
        goto fail;
    }
    /* the log-scale buckets start at num_buckets / 4 and need a larger max */
    if (m->maxdist <= m->nbuckets / 4) {
        st = tdm_errorf(TDM_ERR_MODEL,
                        "%s: relative_attention_max_distance %lld must exceed "
                        "relative_attention_num_buckets / 4 = %lld",
                        path, (long long)m->maxdist, (long long)(m->nbuckets / 4));
        goto fail;
    }
    if (!(m->eps > 0) || !isfinite(m->eps)) {
        st = tdm_errorf(TDM_ERR_MODEL, "%s: layer_norm_epsilon must be a positive number", path);
        goto fail;
    }
fail:
    tdm_json_free(&j);
    return st;
}

/* Binds (through m->w: loads or lists) the encoder blocks and the final
 * norm in registration order; block 0 alone holds the relative position
 * bias (after its o projection, as T5Attention registers it). With the
 * no-split modules (T5Block). Allocates m->blocks. */
static tdm_status load_blocks(tdm_t5_t *m) {
    tdm_status st = TDM_OK;
    const int64_t D = m->D, HK = m->H * m->dkv, F = m->F, rb[2] = {m->nbuckets, m->H};
    m->blocks = calloc((size_t)m->L, sizeof *m->blocks);
    if (!m->blocks) return tdm_errorf(TDM_ERR_NOMEM, "t5: out of memory");
    for (int64_t l = 0; l < m->L; l++) {
        t5_block *y = &m->blocks[l];
        char p[64];   /* a Linear has no bias; the rest is float32 */
        snprintf(p, sizeof p, "encoder.block.%lld.layer", (long long)l);
        TDM_TRY(tdm_weights_nosplit(&m->w, "T5Block", "encoder.block.%lld", (long long)l));
        TDM_TRY(tdm_nn_linear_bind(&m->w, &y->q, D, HK, 0, "%s.0.SelfAttention.q", p));
        TDM_TRY(tdm_nn_linear_bind(&m->w, &y->k, D, HK, 0, "%s.0.SelfAttention.k", p));
        TDM_TRY(tdm_nn_linear_bind(&m->w, &y->v, D, HK, 0, "%s.0.SelfAttention.v", p));
        TDM_TRY(tdm_nn_linear_bind(&m->w, &y->o, HK, D, 0, "%s.0.SelfAttention.o", p));
        if (l == 0)   /* shared by every block; an embedding table (rows gathered), not a Linear */
            TDM_TRY(tdm_weights_bind_tensor(&m->w, &m->rel_bias, 0, 2, rb, "%s.0.SelfAttention."
                                            "relative_attention_bias.weight", p));
        TDM_TRY(tdm_weights_bind_tensor(&m->w, &y->ln0_w, 0, 1, &D, "%s.0.layer_norm.weight", p));
        if (m->gated) {
            TDM_TRY(tdm_nn_linear_bind(&m->w, &y->wi0, D, F, 0, "%s.1.DenseReluDense.wi_0", p));
            TDM_TRY(tdm_nn_linear_bind(&m->w, &y->wi1, D, F, 0, "%s.1.DenseReluDense.wi_1", p));
        } else {
            TDM_TRY(tdm_nn_linear_bind(&m->w, &y->wi0, D, F, 0, "%s.1.DenseReluDense.wi", p));
        }
        TDM_TRY(tdm_nn_linear_bind(&m->w, &y->wo, F, D, 0, "%s.1.DenseReluDense.wo", p));
        TDM_TRY(tdm_weights_bind_tensor(&m->w, &y->ln1_w, 0, 1, &D, "%s.1.layer_norm.weight", p));
    }
    TDM_TRY(tdm_weights_bind_tensor(&m->w, &m->fln_w, 0, 1, &D, "encoder.final_layer_norm.weight"));
fail:
    return st;
}

static tdm_status load_any(tdm_t5_t **out, const char *root, const char *sub,
                           const char *variant, tdm_device_t *dev, const tdm_placement_t *place) {
    tdm_status st = TDM_OK;
    tdm_t5_t *m = NULL;
    char path[TDM_PATH_MAX];
    if (!out) return tdm_errorf(TDM_ERR_INVALID_ARG, "t5: out is required");
    *out = NULL;
    if (!root || !sub || !dev)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "t5: root, sub and device are required");
    m = calloc(1, sizeof *m);
    if (!m) return tdm_errorf(TDM_ERR_NOMEM, "t5: out of memory");
    m->dev = dev;
    tdm_weights_init(&m->w, "t5", dev, place);
    m->w.unit_of = t5_block_of;
    TDM_TRY(tdm_path_join(path, sizeof path, root, sub, "config.json"));
    TDM_TRY(read_config(m, path));
    TDM_TRY(tdm_weights_open(&m->w, root, sub, variant));

    /* tied embedding: T5EncoderModel saves shared.weight; some exports keep
     * only encoder.embed_tokens.weight */
    const char *emb = tdm_st_set_find(m->w.set, "shared.weight") ? "shared.weight"
                                                                 : "encoder.embed_tokens.weight";
    TDM_TRY(tdm_weights_bind_tensor(&m->w, &m->emb, 0, 2, (int64_t[]){m->vocab, m->D}, "%s", emb));
    TDM_TRY(load_blocks(m));
    tdm_weights_finish(&m->w);
    *out = m;
    return TDM_OK;
fail:
    tdm_t5_free(m);
    return st;
}

tdm_status tdm_t5_load(tdm_t5_t **out, const char *root, const char *sub, const char *variant,
                       tdm_device_t *dev) {
    return load_any(out, root, sub, variant, dev, NULL);
}

tdm_status tdm_t5_load_placed(tdm_t5_t **out, const char *root, const char *sub,
                              const char *variant, const tdm_placement_t *pl) {
    tdm_status st = tdm_placement_check(pl, "t5");
    if (st != TDM_OK) return st;
    return load_any(out, root, sub, variant, pl->main, pl);
}

void tdm_t5_free(tdm_t5_t *m) {
    if (!m) return;
    tdm_weights_free(&m->w);   /* every loaded tensor, host copies and the kept files */
    free(m->blocks);
    free(m);
}

tdm_status tdm_t5_plist(const char *config_path, tdm_dtype dt, tdm_plist_t *out) {
    tdm_status st = TDM_OK;
    tdm_t5_t *m = NULL;
    if (!config_path || !out)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "t5: config path and list are required");
    tdm_plist_init(out, dt);
    m = calloc(1, sizeof *m);
    if (!m) return tdm_errorf(TDM_ERR_NOMEM, "t5: out of memory");
    TDM_TRY(read_config(m, config_path));
    tdm_weights_init_list(&m->w, "t5", out);
    /* T5EncoderModel registers shared, then T5Stack's own embed_tokens: two
     * tensors (see tdm_t5_plist in t5.h for when from_pretrained ties them) */
    const int64_t es[2] = {m->vocab, m->D};
    TDM_TRY(tdm_weights_bind_tensor(&m->w, NULL, 0, 2, es, "shared.weight"));
    TDM_TRY(tdm_weights_bind_tensor(&m->w, NULL, 0, 2, es, "encoder.embed_tokens.weight"));
    TDM_TRY(load_blocks(m));
    tdm_t5_free(m);
    return TDM_OK;
fail:
    tdm_t5_free(m);
    tdm_plist_free(out);
    tdm_plist_init(out, dt);
    return st;
}

int64_t tdm_t5_d_model(const tdm_t5_t *m) { return m->D; }
int64_t tdm_t5_num_layers(const tdm_t5_t *m) { return m->L; }
int64_t tdm_t5_vocab_size(const tdm_t5_t *m) { return m->vocab; }

/* ---- forward ----------------------------------------------------------------- */

tdm_status tdm_t5_forward(tdm_t5_t *m, const int32_t *ids, int64_t B, int64_t T, float *hidden) {
    float *arena = NULL;
    int32_t *buckets = NULL;
    int64_t bytes = 0;
    if (!m || !ids || !hidden)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "t5: model, ids and hidden are required");
    /* the attention takes int sizes; T is bounded well inside them */
    if (B < 1 || T < 1 || T > (1 << 20))
        return tdm_errorf(TDM_ERR_INVALID_ARG,
                          "t5: batch %lld x %lld tokens; need batch >= 1 and 1 <= tokens <= %d",
                          (long long)B, (long long)T, 1 << 20);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            int64_t id = ids[b * T + t];
            if (id < 0 || id >= m->vocab)
                return tdm_errorf(TDM_ERR_INVALID_ARG,
                                  "t5: token id %lld at batch %lld position %lld is outside the "
                                  "vocabulary [0, %lld)",
                                  (long long)id, (long long)b, (long long)t, (long long)m->vocab);
        }

    tdm_device_t *dev = m->dev;
    const int64_t D = m->D, H = m->H, dk = m->dkv, HK = H * dk, F = m->F, R = 2 * T - 1;
    /* The normalized rows hn, input of five of the seven GEMMs, are stored in the
     * activation type (bf16 / fp16 on a half GPU: no cast pass before those GEMMs);
     * the GEMM outputs stay float32 (ft): at M = 512 rows cuBLASLt's bf16-output
     * kernels measured slower than its float32-output ones (T5-XXL on H200: 11.7 vs
     * 10.7 ms a forward with every activation in bf16). */
    const tdm_dtype at = tdm_op_act_dtype(dev), ft = TDM_F32;
    const int64_t as = (int64_t)tdm_dtype_size(at), fs = (int64_t)tdm_dtype_size(ft);
    static const tdm_act_fn fns[] = {
        [T5_ACT_RELU] = TDM_FN_RELU, [T5_ACT_GELU] = TDM_FN_GELU,
        [T5_ACT_GELU_TANH] = TDM_FN_GELU_TANH, [T5_ACT_SILU] = TDM_FN_SILU,
    };
    int64_t N, nfl, nft, ns, ntab, off_ft, off_at;
    /* float32: x, hy (N, D); s: the attention scratch of this device (T·T on the
     * CPU, none on CUDA); tab (H, 2T-1) and its transpose rt (2T-1, H).
     * Type ft: q, k, v, a (N, HK); f0 (N, F), f1 (N, F) when gated. Type at: hn (N, D). */
    ns = tdm_op_attention_bias_scratch(dev, T);
    if (!tdm_mul_ok(B, T, &N) || !tdm_mul_ok(N, 2 * D, &nfl) || !tdm_mul_ok(H, 2 * R, &ntab) ||
        !tdm_mul_ok(N, 4 * HK + (m->gated ? 2 : 1) * F, &nft) ||
        nfl > INT64_MAX / 16 - ns - ntab || nft > INT64_MAX / 16 - (nfl + ns + ntab) ||
        N * D > INT64_MAX / 16 - (nfl + ns + ntab + nft))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "t5: batch %lld x %lld tokens is too large",
                          (long long)B, (long long)T);
    off_ft = ((nfl + ns + ntab) * (int64_t)sizeof(float) + 63) / 64 * 64;
    off_at = (off_ft + nft * fs + 63) / 64 * 64;
    bytes = off_at + N * D * as;
    buckets = malloc((size_t)R * sizeof *buckets);
    if (!buckets) return tdm_errorf(TDM_ERR_NOMEM, "t5: out of memory");
    arena = tdm_dev_alloc(dev, bytes, "t5 activations");
    if (!arena) {
        free(buckets);
        return TDM_ERR_NOMEM;   /* message set by tdm_dev_alloc */
    }
    float *x = arena;          /* (N, D) residual stream */
    float *hy = x + N * D;     /* (N, D) block output */
    float *s = hy + N * D;     /* attention scratch (ns floats) */
    float *tab = s + ns;       /* (H, 2T-1) position bias per relative position */
    float *rt = tab + H * R;   /* (2T-1, H) rows of rel_bias per relative position */
    void *q = (char *)arena + off_ft;            /* (B, T, H*dk) */
    void *k = tdm_act_at(q, ft, N * HK);
    void *v = tdm_act_at(k, ft, N * HK);
    void *a = tdm_act_at(v, ft, N * HK);         /* (N, HK) attention output */
    void *f0 = tdm_act_at(a, ft, N * HK);        /* (N, F) */
    void *f1 = tdm_act_at(f0, ft, N * F);        /* (N, F) gated branch (gated only) */
    void *hn = (char *)arena + off_at;           /* (N, D) normalized */

    tdm_status st = tdm_offload_in(&m->w.off, dev, -1);   /* offloaded top-level weights */
    if (st != TDM_OK) goto done;
    /* x[b, t] = emb[ids[b, t]] (ids checked above) */
    tdm_op_gather_rows(dev, x, tdm_f32(m->emb), ids, N, D);

    /* position bias of block 0: tab[h][rel + T - 1] = rel_bias[bucket(rel), h],
     * gathered by bucket (host indices, each < nbuckets) and transposed */
    for (int64_t rel = -(T - 1); rel <= T - 1; rel++)
        buckets[rel + T - 1] = (int32_t)tdm_t5_relative_bucket(rel, m->nbuckets, m->maxdist);
    tdm_op_gather_rows(dev, rt, tdm_f32(m->rel_bias), buckets, R, H);
    tdm_op_transpose_sc(dev, tab, rt, 1, R, H);

    for (int64_t l = 0; l < m->L; l++) {
        const t5_block *y = &m->blocks[l];
        if ((st = tdm_offload_in(&m->w.off, dev, l)) != TDM_OK) goto done;
        /* the next block's offloaded weights copy while this one computes */
        if (l + 1 < m->L && (st = tdm_offload_prefetch(&m->w.off, dev, l + 1)) != TDM_OK) goto done;
        /* self-attention block */
        tdm_op_rms_norm_t(dev, at, hn, x, tdm_f32(y->ln0_w), N, D, m->eps);
        tdm_op_linear_ex(dev, q, ft, HK, hn, at, y->q.w, NULL, N, D, HK, 0);
        tdm_op_linear_ex(dev, k, ft, HK, hn, at, y->k.w, NULL, N, D, HK, 0);
        tdm_op_linear_ex(dev, v, ft, HK, hn, at, y->v.w, NULL, N, D, HK, 0);
        tdm_op_attention_bias_t(dev, ft, a, q, k, v, tab, s, B, T, H, dk);
        tdm_op_linear_ex(dev, hy, TDM_F32, D, a, ft, y->o.w, NULL, N, HK, D, 0);
        tdm_op_add(dev, x, x, hy, N * D);
        /* feed-forward block: wo(act(wi_0 h) * wi_1 h) or wo(act(wi h)); the tanh
         * GELU (gated-gelu, FLUX's T5) runs in the GEMM's epilogue */
        tdm_op_rms_norm_t(dev, at, hn, x, tdm_f32(y->ln1_w), N, D, m->eps);
        tdm_op_linear_ex(dev, f0, ft, F, hn, at, y->wi0.w, NULL, N, D, F,
                         m->act == T5_ACT_GELU_TANH);
        if (m->act != T5_ACT_GELU_TANH) tdm_op_act_t(dev, ft, fns[m->act], f0, N * F);
        if (m->gated) {
            tdm_op_linear_ex(dev, f1, ft, F, hn, at, y->wi1.w, NULL, N, D, F, 0);
            tdm_op_mul_t(dev, ft, f0, f0, f1, N * F);
        }
        tdm_op_linear_ex(dev, hy, TDM_F32, D, f0, ft, y->wo.w, NULL, N, F, D, 0);
        tdm_op_add(dev, x, x, hy, N * D);
        tdm_offload_out(&m->w.off, l);
    }
    tdm_op_rms_norm(dev, hidden, x, tdm_f32(m->fln_w), N, D, m->eps);
done:
    tdm_offload_out_all(&m->w.off);
    tdm_dev_free(dev, arena, bytes);
    free(buckets);
    return st;
}
