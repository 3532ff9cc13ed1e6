/* ldm.c — single-file LDM-layout checkpoints seen under diffusers' names
 * (ldm.h): the attach registry and, per component, the renaming of every
 * file key with the component's prefix — the inverse of nothing, the same
 * rules as diffusers' convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
 * convert_ldm_clip_checkpoint and convert_open_clip_checkpoint. Keys a rule
 * does not name are left out (a model binds only what it has). */
#include "io/ldm.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/config.h"
#include "io/folder.h"

#define LDM_MAX_ATTACH 16
#define LDM_NAME 512
#define LDM_NCOMP 3

/* the components a file of their own may replace (tdm_ldm_attach's comps) */
static const char *const COMP_SUB[LDM_NCOMP] = {"vae", "text_encoder", "text_encoder_2"};

static struct {
    char *root, *file;          /* file: the single file, or NULL (component files only) */
    char *comp[LDM_NCOMP];      /* a component's own file, or NULL */
    int   refs;
} g_att[LDM_MAX_ATTACH];

static int same_or_both_null(const char *a, const char *b) { return a && b ? !strcmp(a, b) : a == b; }

static void entry_free(int i) {
    free(g_att[i].root);
    free(g_att[i].file);
    for (int c = 0; c < LDM_NCOMP; c++) free(g_att[i].comp[c]);
    memset(&g_att[i], 0, sizeof g_att[i]);
}
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const UNET_PRE = "model.diffusion_model.";
static const char *const CLIP_PRE[] = {"cond_stage_model.transformer.", "conditioner.embedders.0.transformer."};
/* OpenCLIP: text_encoder of SD 2.x; text_encoder_2 of SDXL base, then of the refiner */
static const char *const OPEN_PRE_TE[] = {"cond_stage_model.model."};
static const char *const OPEN_PRE_TE2[] = {"conditioner.embedders.1.model.", "conditioner.embedders.0.model."};

static int starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

/* The first of the n prefixes some key of the file starts with, or NULL. */
static const char *find_prefix(const tdm_st_set_t *set, const char *const *pre, int n) {
    const int nt = tdm_st_set_raw_count(set);
    for (int k = 0; k < n; k++)
        for (int i = 0; i < nt; i++)
            if (starts(tdm_st_set_raw_at(set, i)->name, pre[k])) return pre[k];
    return NULL;
}

tdm_status tdm_ldm_attach(const char *root, const char *file, const char *const *comps) {
    tdm_status st = TDM_OK;
    tdm_st_set_t *set = NULL;
    if (file) {
        TDM_TRY(tdm_st_set_open_renamed(&set, file));
        static const char *const known[] = {"model.diffusion_model.", "double_blocks."};
        if (!find_prefix(set, known, 2)) {
            st = tdm_errorf(TDM_ERR_MODEL, "%s: neither \"model.diffusion_model.*\" nor \"double_blocks.*\" "
                            "tensors: not a single-file Stable Diffusion, SDXL or FLUX checkpoint", file);
            goto fail;
        }
    }
    pthread_mutex_lock(&g_lock);
    int slot = -1;
    for (int i = 0; i < LDM_MAX_ATTACH; i++) {
        if (g_att[i].root && !strcmp(g_att[i].root, root)) {
            int same = same_or_both_null(g_att[i].file, file);
            for (int c = 0; c < LDM_NCOMP; c++) same &= same_or_both_null(g_att[i].comp[c], comps ? comps[c] : NULL);
            if (!same)
                st = tdm_errorf(TDM_ERR_INVALID_ARG, "%s is already in use with other weight files in this "
                                "process; give each combination of files its own config folder", root);
            else
                g_att[i].refs++;
            slot = -2;
            break;
        }
        if (!g_att[i].root && slot == -1) slot = i;
    }
    if (slot == -1) {
        st = tdm_errorf(TDM_ERR_INVALID_ARG, "more than %d single-file checkpoints open at once", LDM_MAX_ATTACH);
    } else if (slot >= 0) {
        int ok = (g_att[slot].root = strdup(root)) != NULL && (!file || (g_att[slot].file = strdup(file)));
        for (int c = 0; ok && comps && c < LDM_NCOMP; c++)
            ok = !comps[c] || (g_att[slot].comp[c] = strdup(comps[c]));
        g_att[slot].refs = 1;
        if (!ok) {
            entry_free(slot);
            st = tdm_errorf(TDM_ERR_NOMEM, "out of memory");
        }
    }
    pthread_mutex_unlock(&g_lock);
fail:
    tdm_st_set_close(set);
    return st;
}

tdm_status tdm_ldm_default_config(const char *file, char *repo, size_t cap, char *family) {
    tdm_status st = TDM_OK;
    tdm_st_set_t *set = NULL;
    const char *r = NULL, *fam = NULL, *no = NULL;
    TDM_TRY(tdm_st_set_open_renamed(&set, file));
    static const char *const flux_pre[] = {"model.diffusion_model.double_blocks.", "double_blocks."};
    static const char *const xl2[] = {"conditioner.embedders.1.model."}, *const xl1[] = {"conditioner.embedders.0.model."};
    static const char *const v2[] = {"cond_stage_model.model."};
    const tdm_st_tensor_t *in0 = tdm_st_set_raw_find(set, "model.diffusion_model.input_blocks.0.0.weight");
    if (find_prefix(set, flux_pre, 2)) {
        const tdm_st_tensor_t *img = tdm_st_set_raw_find(set, "img_in.weight");
        if (!img) img = tdm_st_set_raw_find(set, "model.diffusion_model.img_in.weight");
        const int guided = tdm_st_set_raw_find(set, "guidance_in.in_layer.bias") ||
                           tdm_st_set_raw_find(set, "model.diffusion_model.guidance_in.in_layer.bias");
        if (guided && img && img->ndim == 2 && (img->shape[1] == 384 || img->shape[1] == 128))
            no = img->shape[1] == 384 ? "FLUX.1 Fill" : "FLUX.1 Depth";
        else if (guided) { r = "black-forest-labs/FLUX.1-dev"; fam = "FLUX.1-dev"; }
        else { r = "black-forest-labs/FLUX.1-schnell"; fam = "FLUX.1-schnell"; }
    } else if (in0 && in0->ndim == 4 && in0->shape[1] == 9) {
        no = "an inpainting model (9 UNet input channels)";
    } else if (tdm_st_set_raw_find(set, "edm_mean")) {
        no = "Playground v2.5";
    } else if (find_prefix(set, xl2, 1)) {
        r = "stabilityai/stable-diffusion-xl-base-1.0";
        fam = "SDXL base";
    } else if (find_prefix(set, xl1, 1)) {
        no = "the SDXL refiner (an img2img model)";
    } else if (find_prefix(set, v2, 1)) {
        r = "stabilityai/stable-diffusion-2-1";
        fam = "SD 2.x";
    } else if (find_prefix(set, &UNET_PRE, 1)) {
        r = "stable-diffusion-v1-5/stable-diffusion-v1-5";
        fam = "SD 1.x";
    } else {
        st = tdm_errorf(TDM_ERR_MODEL, "%s: no known key layout (neither Stable Diffusion's "
                        "model.diffusion_model.* nor FLUX's double_blocks.*)", file);
        goto fail;
    }
    if (no) {
        st = tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: %s, which tandem has no pipeline for", file, no);
        goto fail;
    }
    snprintf(repo, cap, "%s", r);
    snprintf(family, 32, "%s", fam);
fail:
    tdm_st_set_close(set);
    return st;
}

tdm_status tdm_ldm_resolve(const char *model, const char *config, const char *const *comps, char *root,
                           size_t cap, int *attached) {
    struct stat sb;
    const size_t n = model ? strlen(model) : 0;
    tdm_status st;
    *attached = 0;
    const int file = model && stat(model, &sb) == 0 && S_ISREG(sb.st_mode) && n > 12 &&
                     !strcmp(model + n - 12, ".safetensors");
    int any = 0;
    for (int c = 0; comps && c < LDM_NCOMP; c++) any |= comps[c] != NULL;
    if (!file) {
        if (config)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--config %s: only with a single-file checkpoint as "
                              "--model (a .safetensors file); --model %s is not one", config, model);
        if ((st = tdm_folder_resolve(model, root, cap)) != TDM_OK || !any) return st;
        if ((st = tdm_ldm_attach(root, NULL, comps)) != TDM_OK) return st;   /* the folder + component files */
        *attached = 1;
        return TDM_OK;
    }
    char repo[128], fam[32];
    if (!config) {   /* as diffusers: the configs of the family's base repo, from the HF cache */
        if ((st = tdm_ldm_default_config(model, repo, sizeof repo, fam)) != TDM_OK) return st;
        if (tdm_folder_resolve(repo, root, cap) != TDM_OK)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--model %s: a single-file %s checkpoint; its configs and "
                              "tokenizers come from --config DIR (a diffusers folder of the same architecture) or "
                              "from %s in the Hugging Face cache, which has no snapshot of it (download the "
                              "configs once: huggingface-cli download %s --exclude '*.safetensors' '*.bin' "
                              "'*.ckpt')", model, fam, repo, repo);
        tdm_log(TDM_LOG_INFO, "%s: a single-file %s checkpoint; configs from %s (%s)", model, fam, repo, root);
    } else if ((st = tdm_folder_resolve(config, root, cap)) != TDM_OK) {
        return tdm_errorf(st, "--config: %s", tdm_last_error());
    }
    if ((st = tdm_ldm_attach(root, model, comps)) != TDM_OK) return st;
    *attached = 1;
    return TDM_OK;
}

void tdm_ldm_detach(const char *root) {
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < LDM_MAX_ATTACH; i++)
        if (g_att[i].root && !strcmp(g_att[i].root, root) && --g_att[i].refs == 0) entry_free(i);
    pthread_mutex_unlock(&g_lock);
}

/* ---- renaming ------------------------------------------------------------ */

/* A view of all of tensor t under name `name`, matrices for 1x1 convs when
 * `as_matrix` (the VAE attention of the original code). */
static tdm_status view_whole(tdm_st_set_t *set, const char *name, const tdm_st_tensor_t *t, int as_matrix) {
    int64_t shape[TDM_MAX_DIMS];
    int nd = t->ndim;
    memcpy(shape, t->shape, (size_t)nd * sizeof *shape);
    if (as_matrix && nd > 2) {
        for (int d = 2; d < nd; d++)
            if (shape[d] != 1)
                return tdm_errorf(TDM_ERR_MODEL, "%s: attention weight is not a 1x1 conv", t->name);
        nd = 2;
    }
    if (nd == 0) { shape[0] = 1; nd = 1; }
    return tdm_st_set_add_view(set, name, t, 0, t->ndim ? t->shape[0] : 1, nd, shape);
}

/* diffusers' ResnetBlock2D names of the original ResBlock ones at the start
 * of `rest` (in_layers.0 → norm1, ...). */
static void resnet_name(char *out, size_t cap, const char *pre, const char *rest) {
    static const char *const m[][2] = {{"in_layers.0.", "norm1."},     {"in_layers.2.", "conv1."},
                                       {"out_layers.0.", "norm2."},    {"out_layers.3.", "conv2."},
                                       {"emb_layers.1.", "time_emb_proj."},
                                       {"skip_connection.", "conv_shortcut."}};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (starts(rest, m[i][0])) {
            snprintf(out, cap, "%s%s%s", pre, m[i][1], rest + strlen(m[i][0]));
            return;
        }
    snprintf(out, cap, "%s%s", pre, rest);
}

/* UNet key k (without the prefix) → diffusers name in out ("" when none). */
static void unet_name(char *out, size_t cap, const char *k, int64_t lpb) {
    static const char *const top[][2] = {{"time_embed.0.", "time_embedding.linear_1."},
                                         {"time_embed.2.", "time_embedding.linear_2."},
                                         {"input_blocks.0.0.", "conv_in."},
                                         {"out.0.", "conv_norm_out."},
                                         {"out.2.", "conv_out."},
                                         {"label_emb.0.0.", "add_embedding.linear_1."},
                                         {"label_emb.0.2.", "add_embedding.linear_2."}};
    char pre[96];
    long long I = 0, S = 0;
    int n = 0;
    out[0] = 0;
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        if (starts(k, top[i][0])) {
            snprintf(out, cap, "%s%s", top[i][1], k + strlen(top[i][0]));
            return;
        }
    if (sscanf(k, "input_blocks.%lld.%lld.%n", &I, &S, &n) == 2 && n && I >= 1) {
        const long long b = (I - 1) / (lpb + 1), j = (I - 1) % (lpb + 1);
        const char *rest = k + n;
        if (S == 0 && starts(rest, "op.")) {
            snprintf(out, cap, "down_blocks.%lld.downsamplers.0.conv.%s", b, rest + 3);
        } else if (S == 0) {
            snprintf(pre, sizeof pre, "down_blocks.%lld.resnets.%lld.", b, j);
            resnet_name(out, cap, pre, rest);
        } else if (S == 1) {
            snprintf(out, cap, "down_blocks.%lld.attentions.%lld.%s", b, j, rest);
        }
    } else if (sscanf(k, "middle_block.%lld.%n", &I, &n) == 1 && n) {
        if (I % 2 == 0) {
            snprintf(pre, sizeof pre, "mid_block.resnets.%lld.", I ? I - 1 : 0);
            resnet_name(out, cap, pre, k + n);
        } else {
            snprintf(out, cap, "mid_block.attentions.%lld.%s", I - 1, k + n);
        }
    } else if (sscanf(k, "output_blocks.%lld.%lld.%n", &I, &S, &n) == 2 && n) {
        const long long b = I / (lpb + 1), j = I % (lpb + 1);
        const char *rest = k + n;
        if (S == 0) {
            snprintf(pre, sizeof pre, "up_blocks.%lld.resnets.%lld.", b, j);
            resnet_name(out, cap, pre, rest);
        } else if ((S == 1 || S == 2) && starts(rest, "conv.")) {
            snprintf(out, cap, "up_blocks.%lld.upsamplers.0.conv.%s", b, rest + 5);
        } else if (S == 1) {
            snprintf(out, cap, "up_blocks.%lld.attentions.%lld.%s", b, j, rest);
        }
    }
}

/* A VAE resnet's name: pre + rest with nin_shortcut → conv_shortcut. */
static void vae_res(char *out, size_t cap, const char *pre, const char *rest) {
    if (starts(rest, "nin_shortcut.")) snprintf(out, cap, "%sconv_shortcut.%s", pre, rest + 13);
    else snprintf(out, cap, "%s%s", pre, rest);
}

/* VAE key k (without the prefix) → diffusers name ("" when none); *attn set
 * for the mid-block attention weights (1x1 convs in the file). */
static void vae_name(char *out, size_t cap, const char *k, int64_t levels, int *attn) {
    static const char *const att[][2] = {{"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."},
                                         {"v.", "to_v."}, {"proj_out.", "to_out.0."}};
    char side[16], pre[96];
    long long i = 0, j = 0;
    int n = 0;
    out[0] = 0;
    *attn = 0;
    if (sscanf(k, "%15[a-z].%n", side, &n) != 1 || !n || (strcmp(side, "encoder") && strcmp(side, "decoder"))) {
        if (starts(k, "quant_conv.") || starts(k, "post_quant_conv.")) snprintf(out, cap, "%s", k);
        return;
    }
    const char *r = k + n;
    if (starts(r, "norm_out.")) {
        snprintf(out, cap, "%s.conv_norm_out.%s", side, r + 9);
        return;
    }
    if (starts(r, "conv_in.") || starts(r, "conv_out.")) {
        snprintf(out, cap, "%s.%s", side, r);
        return;
    }
    if (starts(r, "mid.attn_1.")) {
        r += 11;
        for (size_t a = 0; a < sizeof att / sizeof att[0]; a++)
            if (starts(r, att[a][0])) {
                snprintf(out, cap, "%s.mid_block.attentions.0.%s%s", side, att[a][1], r + strlen(att[a][0]));
                *attn = 1;
            }
        return;
    }
    n = 0;
    if (sscanf(r, "down.%lld.block.%lld.%n", &i, &j, &n) == 2 && n) {
        snprintf(pre, sizeof pre, "%s.down_blocks.%lld.resnets.%lld.", side, i, j);
        vae_res(out, cap, pre, r + n);
        return;
    }
    n = 0;
    if (sscanf(r, "down.%lld.downsample.conv.%n", &i, &n) == 1 && n) {
        snprintf(out, cap, "%s.down_blocks.%lld.downsamplers.0.conv.%s", side, i, r + n);
        return;
    }
    n = 0;
    if (sscanf(r, "up.%lld.block.%lld.%n", &i, &j, &n) == 2 && n) {
        snprintf(pre, sizeof pre, "%s.up_blocks.%lld.resnets.%lld.", side, (long long)levels - 1 - i, j);
        vae_res(out, cap, pre, r + n);
        return;
    }
    n = 0;
    if (sscanf(r, "up.%lld.upsample.conv.%n", &i, &n) == 1 && n) {
        snprintf(out, cap, "%s.up_blocks.%lld.upsamplers.0.conv.%s", side, (long long)levels - 1 - i, r + n);
        return;
    }
    n = 0;
    if (sscanf(r, "mid.block_%lld.%n", &i, &n) == 1 && n && i >= 1) {
        snprintf(pre, sizeof pre, "%s.mid_block.resnets.%lld.", side, i - 1);
        vae_res(out, cap, pre, r + n);
    }
}

/* Rows [r0, r0 + n) of fused tensor t as view `name` (a matrix's rows, a
 * vector's entries). */
static tdm_status view_rows(tdm_st_set_t *set, const char *name, const tdm_st_tensor_t *t, int64_t r0,
                            int64_t n) {
    const int64_t shape[2] = {n, t->ndim > 1 ? t->shape[1] : 1};
    if (t->ndim < 1 || t->ndim > 2 || r0 + n > t->shape[0])
        return tdm_errorf(TDM_ERR_MODEL, "%s: %lld rows, not the fused parts the config implies", t->name,
                          t->ndim ? (long long)t->shape[0] : 0LL);
    return tdm_st_set_add_view(set, name, t, r0, n, t->ndim, shape);
}

/* When `r` starts with a `from` of table tab (n pairs {from, to}): the view
 * pre + to + the rest of r of all of t, *hit = 1. */
static tdm_status view_table(tdm_st_set_t *set, const tdm_st_tensor_t *t, const char *const (*tab)[2], size_t n,
                             const char *pre, const char *r, int *hit) {
    char name[LDM_NAME];
    *hit = 0;
    for (size_t i = 0; i < n; i++)
        if (starts(r, tab[i][0])) {
            *hit = 1;
            snprintf(name, sizeof name, "%s%s%s", pre, tab[i][1], r + strlen(tab[i][0]));
            return view_whole(set, name, t, 0);
        }
    return TDM_OK;
}

/* The three D-row thirds of a fused q/k/v tensor t as the views
 * pre + letter + mid + post, letter q, k, v in turn. */
static tdm_status view_qkv(tdm_st_set_t *set, const tdm_st_tensor_t *t, int64_t D, const char *pre,
                           const char *mid, const char *post) {
    static const char qkv[3] = {'q', 'k', 'v'};
    char name[LDM_NAME];
    tdm_status st = TDM_OK;
    for (int q = 0; q < 3 && st == TDM_OK; q++) {
        snprintf(name, sizeof name, "%s%c%s%s", pre, qkv[q], mid, post);
        st = view_rows(set, name, t, q * D, D);
    }
    return st;
}

/* OpenCLIP key k (without the prefix) → views of the CLIPTextModel(WithProjection)
 * tensors it holds. */
static tdm_status open_clip_views(tdm_st_set_t *set, const char *k, const tdm_st_tensor_t *t) {
    static const char *const top[][2] = {{"positional_embedding", "text_model.embeddings.position_embedding.weight"},
                                         {"token_embedding.weight", "text_model.embeddings.token_embedding.weight"},
                                         {"ln_final.weight", "text_model.final_layer_norm.weight"},
                                         {"ln_final.bias", "text_model.final_layer_norm.bias"}};
    static const char *const blk[][2] = {{"ln_1.", "layer_norm1."}, {"ln_2.", "layer_norm2."},
                                         {"mlp.c_fc.", "mlp.fc1."}, {"mlp.c_proj.", "mlp.fc2."},
                                         {"attn.out_proj.", "self_attn.out_proj."}};
    char pre[96];
    long long l = 0;
    int n = 0, hit = 0;
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        if (!strcmp(k, top[i][0])) return view_whole(set, top[i][1], t, 0);
    if (!strcmp(k, "text_projection")) return tdm_st_set_add_transposed(set, "text_projection.weight", t);
    if (sscanf(k, "transformer.resblocks.%lld.%n", &l, &n) != 1 || !n) return TDM_OK;
    const char *r = k + n;
    snprintf(pre, sizeof pre, "text_model.encoder.layers.%lld.", l);
    if (!strcmp(r, "attn.in_proj_weight") || !strcmp(r, "attn.in_proj_bias")) {
        if (t->ndim < 1 || t->shape[0] % 3)
            return tdm_errorf(TDM_ERR_MODEL, "%s: not a fused q/k/v tensor", t->name);
        strncat(pre, "self_attn.", sizeof pre - strlen(pre) - 1);
        return view_qkv(set, t, t->shape[0] / 3, pre, "_proj.", r[13] == 'w' ? "weight" : "bias");
    }
    return view_table(set, t, blk, sizeof blk / sizeof blk[0], pre, r, &hit);
}

/* BFL FLUX key k (after the optional model.diffusion_model.) → views of the
 * FluxTransformer2DModel tensors it holds (D = heads · head_dim). */
static tdm_status flux_views(tdm_st_set_t *set, const char *k, const tdm_st_tensor_t *t, int64_t D) {
    static const char *const top[][2] = {
        {"time_in.in_layer.", "time_text_embed.timestep_embedder.linear_1."},
        {"time_in.out_layer.", "time_text_embed.timestep_embedder.linear_2."},
        {"vector_in.in_layer.", "time_text_embed.text_embedder.linear_1."},
        {"vector_in.out_layer.", "time_text_embed.text_embedder.linear_2."},
        {"guidance_in.in_layer.", "time_text_embed.guidance_embedder.linear_1."},
        {"guidance_in.out_layer.", "time_text_embed.guidance_embedder.linear_2."},
        {"txt_in.", "context_embedder."}, {"img_in.", "x_embedder."}, {"final_layer.linear.", "proj_out."}};
    static const char *const dbl[][2] = {
        {"img_mod.lin.", "norm1.linear."}, {"txt_mod.lin.", "norm1_context.linear."},
        {"img_attn.norm.query_norm.scale", "attn.norm_q.weight"}, {"img_attn.norm.key_norm.scale", "attn.norm_k.weight"},
        {"txt_attn.norm.query_norm.scale", "attn.norm_added_q.weight"},
        {"txt_attn.norm.key_norm.scale", "attn.norm_added_k.weight"},
        {"img_mlp.0.", "ff.net.0.proj."}, {"img_mlp.2.", "ff.net.2."}, {"txt_mlp.0.", "ff_context.net.0.proj."},
        {"txt_mlp.2.", "ff_context.net.2."}, {"img_attn.proj.", "attn.to_out.0."}, {"txt_attn.proj.", "attn.to_add_out."}};
    static const char *const sgl[][2] = {{"modulation.lin.", "norm.linear."}, {"norm.query_norm.scale", "attn.norm_q.weight"},
                                         {"norm.key_norm.scale", "attn.norm_k.weight"}, {"linear2.", "proj_out."}};
    char name[LDM_NAME], pre[96];
    long long i = 0;
    int n = 0, hit = 0;
    tdm_status st = view_table(set, t, top, sizeof top / sizeof top[0], "", k, &hit);
    if (st != TDM_OK || hit) return st;
    if (starts(k, "final_layer.adaLN_modulation.1.")) {   /* shift, scale → diffusers' scale, shift */
        snprintf(name, sizeof name, "norm_out.linear.%s", k + 31);
        return tdm_st_set_add_halves_swapped(set, name, t);
    }
    if (sscanf(k, "double_blocks.%lld.%n", &i, &n) == 1 && n) {
        const char *r = k + n;
        snprintf(pre, sizeof pre, "transformer_blocks.%lld.attn.", i);
        const int img = starts(r, "img_attn.qkv."), txt = starts(r, "txt_attn.qkv.");
        if (img || txt) {   /* attn.to_q. / attn.add_q_proj. ... */
            strncat(pre, img ? "to_" : "add_", sizeof pre - strlen(pre) - 1);
            return view_qkv(set, t, D, pre, img ? "." : "_proj.", r + 13);
        }
        snprintf(pre, sizeof pre, "transformer_blocks.%lld.", i);
        return view_table(set, t, dbl, sizeof dbl / sizeof dbl[0], pre, r, &hit);
    }
    n = 0;
    if (sscanf(k, "single_blocks.%lld.%n", &i, &n) == 1 && n) {
        const char *r = k + n;
        if (starts(r, "linear1.")) {   /* q, k, v, then the MLP input, fused */
            snprintf(pre, sizeof pre, "single_transformer_blocks.%lld.attn.to_", i);
            if ((st = view_qkv(set, t, D, pre, ".", r + 8)) != TDM_OK) return st;
            snprintf(name, sizeof name, "single_transformer_blocks.%lld.proj_mlp.%s", i, r + 8);
            return view_rows(set, name, t, 3 * D, t->shape[0] - 3 * D);
        }
        snprintf(pre, sizeof pre, "single_transformer_blocks.%lld.", i);
        return view_table(set, t, sgl, sizeof sgl / sizeof sgl[0], pre, r, &hit);
    }
    return TDM_OK;
}

typedef enum { L_UNET, L_VAE, L_CLIP, L_OPEN_CLIP, L_FLUX, L_SAME } ldm_kind;

/* Adds the views of component kind `kind` (file keys under `pre`). */
static tdm_status add_views(tdm_st_set_t *set, ldm_kind kind, const char *pre, int64_t lpb, int64_t levels) {
    const int nt = tdm_st_set_raw_count(set);
    const size_t np = strlen(pre);
    char name[LDM_NAME];
    for (int i = 0; i < nt; i++) {
        const tdm_st_tensor_t *t = tdm_st_set_raw_at(set, i);
        if (strncmp(t->name, pre, np) != 0) continue;
        const char *k = t->name + np;
        int attn = 0;
        tdm_status st = TDM_OK;
        switch (kind) {
        case L_UNET:
            unet_name(name, sizeof name, k, lpb);
            if (name[0]) st = view_whole(set, name, t, 0);
            break;
        case L_VAE:
            vae_name(name, sizeof name, k, levels, &attn);
            if (name[0]) st = view_whole(set, name, t, attn);
            break;
        case L_CLIP:   /* transformers' own names under the prefix */
            if (starts(k, "text_model.")) st = view_whole(set, k, t, 0);
            break;
        case L_OPEN_CLIP:
            st = open_clip_views(set, k, t);
            break;
        case L_FLUX:   /* lpb: D */
            st = flux_views(set, k, t, lpb);
            break;
        case L_SAME:
            st = view_whole(set, k, t, 0);
            break;
        }
        if (st != TDM_OK) return st;
    }
    return TDM_OK;
}

/* The views of a VAE in the original layout: under first_stage_model. or
 * vae. (a single file), or bare as FLUX's ae.safetensors; *pre NULL when
 * the set holds none (j: the VAE's config). */
static tdm_status vae_views(tdm_st_set_t *set, const tdm_json_t *j, const char **pre) {
    static const char *const p[] = {"first_stage_model.", "vae.", "decoder.up.", "encoder.down."};
    int64_t bo[16];
    int n = 0;
    tdm_status st = tdm_json_int_array(j, "block_out_channels", 0, bo, 16, &n);
    if (st != TDM_OK || !(*pre = find_prefix(set, p, 4))) return st;
    if (*pre == p[2] || *pre == p[3]) *pre = "";
    return add_views(set, L_VAE, *pre, 0, n);
}

tdm_status tdm_ldm_open(const char *root, const char *sub, tdm_st_set_t **out, int *attached) {
    tdm_status st = TDM_OK;
    char file[TDM_PATH_MAX], path[TDM_PATH_MAX];
    tdm_st_set_t *set = NULL;
    tdm_json_t j = {0};
    char own[TDM_PATH_MAX];
    *attached = 0;
    file[0] = own[0] = 0;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < LDM_MAX_ATTACH; i++)
        if (g_att[i].root && !strcmp(g_att[i].root, root)) {
            if (g_att[i].file) snprintf(file, sizeof file, "%s", g_att[i].file);
            for (int c = 0; c < LDM_NCOMP; c++)
                if (g_att[i].comp[c] && !strcmp(sub, COMP_SUB[c])) snprintf(own, sizeof own, "%s", g_att[i].comp[c]);
        }
    pthread_mutex_unlock(&g_lock);
    if (!own[0] && !file[0]) return TDM_OK;
    *attached = 1;
    TDM_TRY(tdm_st_set_open_renamed(&set, own[0] ? own : file));
    TDM_TRY(tdm_path_join(path, sizeof path, root, sub, "config.json"));
    TDM_TRY(tdm_json_load(&j, path));
    const char *pre = NULL;
    if (!strcmp(sub, "vae")) {
        TDM_TRY(vae_views(set, &j, &pre));
    } else if (own[0]) {   /* a text encoder's own file: OpenCLIP (also bare), else the names as they are */
        static const char *const open[] = {"cond_stage_model.model.", "conditioner.embedders.1.model.",
                                           "conditioner.embedders.0.model.", "transformer.resblocks."};
        if ((pre = find_prefix(set, open, 4))) TDM_TRY(add_views(set, L_OPEN_CLIP, pre == open[3] ? "" : pre, 0, 0));
    } else if (!strcmp(sub, "unet")) {
        int64_t lpb = 2;
        int64_t per[8];
        int n = 0;
        TDM_TRY(tdm_json_int_array(&j, "layers_per_block", 1, per, 8, &n));
        if (n > 0) lpb = per[0];
        for (int i = 1; i < n; i++)
            if (per[i] != lpb) {
                st = tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: per-block layers_per_block in a single file", path);
                goto fail;
            }
        TDM_TRY(add_views(set, L_UNET, UNET_PRE, lpb, 0));
        pre = UNET_PRE;
    } else if (!strcmp(sub, "text_encoder")) {
        if ((pre = find_prefix(set, CLIP_PRE, 2))) TDM_TRY(add_views(set, L_CLIP, pre, 0, 0));
        else if ((pre = find_prefix(set, OPEN_PRE_TE, 1))) TDM_TRY(add_views(set, L_OPEN_CLIP, pre, 0, 0));
    } else if (!strcmp(sub, "text_encoder_2")) {
        if ((pre = find_prefix(set, OPEN_PRE_TE2, 2))) TDM_TRY(add_views(set, L_OPEN_CLIP, pre, 0, 0));
    } else if (!strcmp(sub, "transformer")) {   /* BFL FLUX: bare keys or under model.diffusion_model. */
        int64_t heads = 24, hd = 128;
        TDM_TRY(tdm_json_int(&j, "num_attention_heads", 24, &heads));
        TDM_TRY(tdm_json_int(&j, "attention_head_dim", 128, &hd));
        static const char *const fpre[] = {"model.diffusion_model.double_blocks.", "double_blocks."};
        if ((pre = find_prefix(set, fpre, 2))) {
            pre = pre == fpre[0] ? UNET_PRE : "";
            TDM_TRY(add_views(set, L_FLUX, pre, heads * hd, 0));
        }
    }
    if (!pre && own[0]) {   /* a component's own file in the names its model binds */
        TDM_TRY(add_views(set, L_SAME, "", 0, 0));
        pre = "";
    }
    if (!pre) {   /* the folder's own weights, when it has them (FLUX files hold the transformer alone) */
        char w[TDM_PATH_MAX];
        TDM_TRY(tdm_folder_weights_opt(root, sub, NULL, w, sizeof w));
        if (w[0]) {
            tdm_log(TDM_LOG_INFO, "%s: no %s weights in it; %s from %s", file, sub, sub, w);
            *attached = 0;
            goto fail;   /* not an error: the caller opens the folder's */
        }
        st = tdm_errorf(TDM_ERR_MODEL, "%s: holds no weights of component %s (in the original key layout) "
                        "and --config %s has none either", file, sub, root);
        goto fail;
    }
    tdm_json_free(&j);
    *out = set;
    return TDM_OK;
fail:
    tdm_json_free(&j);
    tdm_st_set_close(set);
    return st;
}
