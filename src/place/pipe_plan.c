/* pipe_plan.c — placement of a whole pipeline folder (tdm_plan, `tandem
 * plan`): which device each component, or each block of a split component,
 * goes to, from the config files alone or, where a component's folder holds
 * its safetensors weights, from their headers too (shapes checked against
 * the config, sizes in the files' dtypes unless --dtype is given). No tensor
 * data is read.
 *
 * Two levels, as in the diffusers guide:
 *  - model level, "COMPONENT=STRATEGY": that component's blocks are planned
 *    over the budgets by place.h (accelerate's infer_auto_device_map with
 *    its bugs fixed), like AutoModel.from_pretrained(device_map="auto");
 *  - pipeline level, a plain STRATEGY (default "balanced"): whole
 *    components, largest first, over the GPUs as diffusers'
 *    device_map="balanced" does (GPU ids sorted by budget, visited in the
 *    zig-zag order ids + reversed ids), improved: a component that does not
 *    fit the GPU whose turn it is tries every other GPU before anything
 *    else; one that fits no single GPU is split block-wise over what the
 *    GPUs (then host RAM, then disk) have left instead of being
 *    CPU-offloaded whole; no component is ever dropped from the map.
 *    "sequential" gives each component the first GPU (by id) with room;
 *    "balanced_low_0" takes the lowest GPU id only when no other fits.
 * Components with a model-level strategy are planned first, over the full
 * budgets; the others then share what is left. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/config.h"
#include "io/folder.h"
#include "io/ldm.h"
#include "io/safetensors.h"
#include "models/clip_text.h"
#include "models/flux.h"
#include "models/t5.h"
#include "models/unet2d.h"
#include "models/vae.h"
#include "place/pipe_plan.h"
#include "place/place.h"
#include "tandem.h"

#define MAX_COMPONENTS 16

typedef struct {
    char        name[64];
    char        cls[64];
    tdm_plist_t pl;
    int64_t     bytes;
    int         strategy;        /* model-level strategy, or -1 */
    int         dev;             /* whole-component device, or TDM_PLACE_DISK - 1 when split */
    tdm_place_map_t map;         /* the split plan */
    int         planned;
} comp_t;

void tdm_plan_params_init(tdm_plan_params_t *p) { memset(p, 0, sizeof *p); }

typedef tdm_status (*plist_fn)(const char *config_path, tdm_dtype dt, tdm_plist_t *out);

static plist_fn builder_of(const char *cls) {
    if (!strcmp(cls, "UNet2DConditionModel")) return tdm_unet_plist;
    if (!strcmp(cls, "AutoencoderKL")) return tdm_vae_decoder_plist;   /* what decode runs */
    if (!strcmp(cls, "CLIPTextModel") || !strcmp(cls, "CLIPTextModelWithProjection"))
        return tdm_clip_text_plist;
    if (!strcmp(cls, "T5EncoderModel")) return tdm_t5_plist;
    if (!strcmp(cls, "FluxTransformer2DModel")) return tdm_flux_plist;
    return NULL;
}

/* Other spellings of a list name that the loaders accept in a checkpoint,
 * tried when the name itself is absent: the first occurrence of `from` is
 * replaced by `to` ("" from: `to` is prepended). transformers 4.x saves
 * CLIPTextModel under "text_model." (clip_text.c reads both); diffusers'
 * deprecated VAE attention names, which it still converts on load (vae.c
 * reads both); T5EncoderModel's embedding, saved under either of its two
 * names (t5.c reads whichever is there for both). */
static const struct {
    const char *cls, *from, *to;
} spellings[] = {
    {"CLIPTextModel", "", "text_model."},
    {"CLIPTextModelWithProjection", "", "text_model."},
    {"AutoencoderKL", ".to_q.", ".query."},
    {"AutoencoderKL", ".to_k.", ".key."},
    {"AutoencoderKL", ".to_v.", ".value."},
    {"AutoencoderKL", ".to_out.0.", ".proj_attn."},
    {"T5EncoderModel", "shared.weight", "encoder.embed_tokens.weight"},
    {"T5EncoderModel", "encoder.embed_tokens.weight", "shared.weight"},
};

/* Tensor `name` of a `cls` component in set, under its own name or another
 * spelling (the one found is left in buf), or NULL. */
static const tdm_st_tensor_t *find_spelled(const tdm_st_set_t *set, const char *cls,
                                           const char *name, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", name);
    const tdm_st_tensor_t *t = tdm_st_set_find(set, name);
    for (size_t i = 0; !t && i < sizeof spellings / sizeof spellings[0]; i++) {
        const char *at = strcmp(spellings[i].cls, cls) ? NULL : strstr(name, spellings[i].from);
        if (!at) continue;
        if ((size_t)snprintf(buf, cap, "%.*s%s%s", (int)(at - name), name, spellings[i].to,
                             at + strlen(spellings[i].from)) < cap)
            t = tdm_st_set_find(set, buf);
    }
    if (!t) snprintf(buf, cap, "%s", name);
    return t;
}

static void shape_str(char *buf, size_t cap, int nd, const int64_t *sh) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < nd && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)sh[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

static int is_float(tdm_dtype t) {
    return t == TDM_F32 || t == TDM_F16 || t == TDM_BF16 || t == TDM_F64;
}

/* Checks entry e of component `comp` against its tensor t in the weight
 * files `files` (t NULL: absent) and takes the file's dtype for a floating
 * entry unless keep_dtype. A buffer may be absent: non-persistent buffers
 * (CLIP's position_ids) are not saved; it keeps the list's size. */
static tdm_status weigh_entry(tdm_pentry_t *e, const tdm_st_tensor_t *t, const char *fname,
                              const char *comp, const char *files, int keep_dtype) {
    char want[160], got[160];
    shape_str(want, sizeof want, e->ndim, e->shape);
    if (!t) {
        if (e->is_buffer) return TDM_OK;
        return tdm_errorf(TDM_ERR_MODEL, "plan: %s: tensor %s: config says %s, missing from %s",
                          comp, fname, want, files);
    }
    int same = t->ndim == e->ndim;
    for (int d = 0; same && d < e->ndim; d++) same = t->shape[d] == e->shape[d];
    if (!same) {
        shape_str(got, sizeof got, t->ndim, t->shape);
        return tdm_errorf(TDM_ERR_MODEL, "plan: %s: tensor %s: config says %s, %s has %s", comp,
                          fname, want, t->file, got);
    }
    if (!keep_dtype && is_float(e->dtype)) e->dtype = t->dtype;
    return TDM_OK;
}

/* Component c against its weight files, when its folder has them (the
 * files the loaders open: tdm_folder_weights with `variant`): every list
 * entry checked by weigh_entry, the list's bytes summed again. Only the
 * safetensors headers are read. Without weights the list stays as the
 * config made it. The new sum stays below 2^59: the list's was at most
 * TDM_PLIST_MAX_BYTES with floating entries of 2 or 4 bytes, and a file
 * dtype has at most 8. */
static tdm_status weigh(comp_t *c, const char *root, const char *variant, int keep_dtype) {
    char files[TDM_PATH_MAX], fname[512];
    tdm_st_set_t *set = NULL;
    int single = 0;   /* a single-file checkpoint attached to root: its renamed views */
    tdm_status st = tdm_ldm_open(root, c->name, &set, &single);
    if (st != TDM_OK) return tdm_errorf(st, "plan: %s: %s", c->name, tdm_last_error());
    if (single) {
        snprintf(files, sizeof files, "the single file");
    } else {
        st = tdm_folder_weights_opt(root, c->name, variant, files, sizeof files);
        if (st != TDM_OK || !files[0]) return st;
        if ((st = tdm_st_set_open(&set, files)) != TDM_OK)
            return tdm_errorf(st, "plan: %s: %s", c->name, tdm_last_error());
    }
    tdm_plist_t *l = &c->pl;
    l->bytes = 0;
    for (int64_t i = 0; i < l->n && st == TDM_OK; i++) {
        tdm_pentry_t *e = &l->e[i];
        const tdm_st_tensor_t *t = find_spelled(set, c->cls, e->name, fname, sizeof fname);
        st = weigh_entry(e, t, fname, c->name, files, keep_dtype);
        l->bytes += tdm_pentry_bytes(e);
    }
    tdm_st_set_close(set);
    return st;
}

/* 1 if model_index.json (root) has a model component `name` the planner knows. */
static int in_folder(const cJSON *root, const char *name) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, name);
    const cJSON *cl = it ? cJSON_GetArrayItem(it, 1) : NULL;
    return cJSON_IsString(cl) && builder_of(cl->valuestring) != NULL;
}

static const char *strategy_name(int s) {
    return s == TDM_PLACE_SEQUENTIAL ? "sequential"
           : s == TDM_PLACE_BALANCED_LOW_0 ? "balanced_low_0" : "balanced";
}

/* The next item of the comma list at *q into buf (cap bytes); advances *q.
 * 0 at the end of the list. */
static int next_item(const char **q, char *buf, size_t cap) {
    if (!*q || !**q) return 0;
    const char *e = strchr(*q, ',');
    size_t len = e ? (size_t)(e - *q) : strlen(*q);
    snprintf(buf, cap, "%.*s", (int)len, *q);
    *q = e ? e + 1 : *q + len;
    return 1;
}

static int listed(const char *csv, const char *name) {
    char item[128];
    while (next_item(&csv, item, sizeof item))
        if (!strcmp(item, name)) return 1;
    return 0;
}

/* Index of device `dev` in mm, or -1. */
static int mm_index(const tdm_max_memory_t *mm, int dev) {
    for (int i = 0; i < mm->n; i++)
        if (mm->dev[i] == dev) return i;
    return -1;
}

static void dev_key(char *buf, size_t cap, int dev) {
    if (dev == TDM_PLACE_CPU) snprintf(buf, cap, "cpu");
    else if (dev == TDM_PLACE_DISK) snprintf(buf, cap, "disk");
    else snprintf(buf, cap, "%d", dev);
}

static void json_dev(FILE *f, int dev) {
    if (dev >= 0) fprintf(f, "%d", dev);
    else fprintf(f, "\"%s\"", dev == TDM_PLACE_CPU ? "cpu" : "disk");
}

/* The GPUs' visiting order for whole components (indexes into rem), fixed
 * once as diffusers does: "sequential" ids ascending; otherwise ids sorted by
 * budget, largest first (stable), then the zig-zag ids + reversed ids. */
static int gpu_cycle(const tdm_max_memory_t *rem, int strategy, int *cyc) {
    int ids[TDM_PLACE_MAX_DEVICES], n = 0, nc = 0;
    for (int i = 0; i < rem->n; i++)
        if (rem->dev[i] >= 0) ids[n++] = i;
    if (strategy == TDM_PLACE_SEQUENTIAL) {
        memcpy(cyc, ids, (size_t)n * sizeof *ids);
        return n;
    }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && rem->bytes[ids[j]] > rem->bytes[ids[j - 1]]; j--) {
            int t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    for (int i = 0; i < n; i++) cyc[nc++] = ids[i];
    for (int i = n - 1; i >= 0; i--) cyc[nc++] = ids[i];
    return nc;
}

/* The GPU (index into rem) for a whole component of `need` bytes, or -1.
 * The GPU whose turn it is (cyc[*k]) takes it if it has room, and the turn
 * moves on; otherwise every other GPU is tried in cycle order (the turn
 * stays). "sequential": the first GPU with room. "balanced_low_0": the
 * lowest GPU id only when no other GPU has room. */
static int pick_gpu(const tdm_max_memory_t *rem, int strategy, const int *cyc, int nc,
                    int64_t need, int *k) {
    if (nc == 0) return -1;
    int lowest = -1;
    if (strategy == TDM_PLACE_BALANCED_LOW_0 && nc > 2)
        for (int t = 0; t < nc; t++)
            if (lowest < 0 || rem->dev[cyc[t]] < rem->dev[lowest]) lowest = cyc[t];
    for (int pass = 0; pass < 2; pass++)
        for (int t = 0; t < nc; t++) {
            int i = cyc[(*k + t) % nc];
            if ((pass == 0) == (i == lowest)) continue;   /* pass 0: all but lowest; pass 1: lowest */
            if (rem->bytes[i] < need) continue;
            if (t == 0 && strategy != TDM_PLACE_SEQUENTIAL) (*k)++;
            return i;
        }
    return -1;
}

/* Plans component c block-wise over rem, then takes its use off rem. */
static tdm_status plan_split(comp_t *c, tdm_max_memory_t *rem, int strategy) {
    tdm_status st = tdm_place_plan(&c->pl, rem, (tdm_place_strategy)strategy, 0, &c->map);
    if (st != TDM_OK)
        return tdm_errorf(st, "%s (%s): %s", c->name, strategy_name(strategy), tdm_last_error());
    for (int i = 0; i < c->map.ndev; i++) {
        int j = mm_index(rem, c->map.dev[i]);
        if (j >= 0) rem->bytes[j] -= c->map.used[i];
    }
    c->dev = TDM_PLACE_DISK - 1;
    c->planned = 1;
    return TDM_OK;
}

tdm_status tdm_pipe_plan_used(const tdm_pipe_plan_t *p, tdm_max_memory_t *all, int *disk_implicit,
                              int64_t used[TDM_PLACE_MAX_DEVICES]) {
    /* budgets without "disk" plan over an unlimited one (place.h), shown as
     * "disk": "unlimited" and counted in "bytes" like the others */
    *all = p->mm;
    *disk_implicit = mm_index(&p->mm, TDM_PLACE_DISK) < 0;
    if (*disk_implicit && tdm_max_memory_set(all, TDM_PLACE_DISK, 0) != TDM_OK)
        return TDM_ERR_INVALID_ARG;   /* message set */
    for (int i = 0; i < TDM_PLACE_MAX_DEVICES; i++) used[i] = 0;
    for (int c = 0; c < p->nc; c++) {
        const tdm_pipe_plan_comp_t *pc = &p->c[c];
        if (pc->dev >= TDM_PLACE_DISK) {   /* whole */
            int j = mm_index(all, pc->dev);
            if (j >= 0) used[j] += pc->bytes;
            continue;
        }
        for (int i = 0; i < pc->map.ndev; i++) {
            int j = mm_index(all, pc->map.dev[i]);
            if (j >= 0) used[j] += pc->map.used[i];
        }
    }
    return TDM_OK;
}

tdm_status tdm_pipe_plan_json(const tdm_pipe_plan_t *p, char **json) {
    char *buf = NULL;
    size_t len = 0;
    char key[32];
    int64_t used[TDM_PLACE_MAX_DEVICES];
    tdm_max_memory_t all;
    int disk_implicit;
    *json = NULL;
    tdm_status st = tdm_pipe_plan_used(p, &all, &disk_implicit, used);
    if (st != TDM_OK) return st;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return tdm_errorf(TDM_ERR_NOMEM, "plan: out of memory");
    fprintf(f, "{\"strategy\": \"%s\", \"max_memory\": {", strategy_name(p->strategy));
    for (int i = 0; i < all.n; i++) {
        dev_key(key, sizeof key, all.dev[i]);
        if (disk_implicit && all.dev[i] == TDM_PLACE_DISK)
            fprintf(f, "%s\"%s\": \"unlimited\"", i ? ", " : "", key);
        else
            fprintf(f, "%s\"%s\": %lld", i ? ", " : "", key, (long long)all.bytes[i]);
    }
    fprintf(f, "}, \"device_map\": {");
    int first = 1;
    for (int c = 0; c < p->nc; c++) {
        const tdm_pipe_plan_comp_t *pc = &p->c[c];
        if (pc->dev >= TDM_PLACE_DISK) {   /* whole */
            fprintf(f, "%s\"%s\": ", first ? "" : ", ", pc->name);
            json_dev(f, pc->dev);
            first = 0;
            continue;
        }
        const tdm_place_map_t *m = &pc->map;
        for (int64_t e = 0; e < m->n; e++) {
            fprintf(f, "%s\"%s%s%s\": ", first ? "" : ", ", pc->name, m->e[e].name[0] ? "." : "",
                    m->e[e].name);
            json_dev(f, m->e[e].dev);
            first = 0;
        }
    }
    fprintf(f, "}, \"bytes\": {");
    for (int i = 0; i < all.n; i++) {
        dev_key(key, sizeof key, all.dev[i]);
        fprintf(f, "%s\"%s\": %lld", i ? ", " : "", key, (long long)used[i]);
    }
    fprintf(f, "}}\n");
    if (fclose(f) != 0 || !buf) {
        free(buf);
        return tdm_errorf(TDM_ERR_NOMEM, "plan: out of memory");
    }
    *json = buf;
    return TDM_OK;
}

void tdm_pipe_plan_free(tdm_pipe_plan_t *p) {
    if (!p) return;
    for (int i = 0; i < p->nc; i++)
        if (p->c[i].map.e) tdm_place_map_free(&p->c[i].map);
    free(p->c);
    memset(p, 0, sizeof *p);
}

tdm_status tdm_dtype_parse(const char *s, tdm_dtype *out) {
    if (!strcmp(s, "fp32")) *out = TDM_F32;
    else if (!strcmp(s, "fp16")) *out = TDM_F16;
    else if (!strcmp(s, "bf16")) *out = TDM_BF16;
    else if (!strcmp(s, "fp8")) *out = TDM_F8E4M3;
    else return tdm_errorf(TDM_ERR_INVALID_ARG, "--dtype %s: expected fp32, fp16, bf16 or fp8", s);
    return TDM_OK;
}

const char *tdm_dtype_flag(tdm_dtype t) {
    return t == TDM_BF16 ? "bf16" : t == TDM_F16 ? "fp16" : t == TDM_F8E4M3 ? "fp8" : "fp32";
}

tdm_dtype tdm_dtype_gemm(tdm_dtype t, int gpu) {
    if (!gpu) return TDM_F32;
    return t == TDM_F8E4M3 ? TDM_BF16 : t;
}

tdm_dtype tdm_dtype_default(int flux, int gpu) {
    return !gpu ? TDM_F32 : flux ? TDM_BF16 : TDM_F16;
}

tdm_status tdm_plan(const tdm_plan_params_t *p, char **json) {
    tdm_status st;
    tdm_max_memory_t mm;
    tdm_pipe_plan_t plan;
    char root[4096];
    tdm_dtype dt = TDM_F32;
    *json = NULL;
    if (!p->model) return tdm_errorf(TDM_ERR_INVALID_ARG, "plan: --model is required");
    if (!p->max_memory || !*p->max_memory)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--max-memory is required for plan (e.g. "
                          "0=16GiB,1=16GiB,cpu=64GiB): budgets are never guessed from free memory");
    if ((st = tdm_max_memory_parse(p->max_memory, &mm)) != TDM_OK) return st;   /* names the flag */
    if (p->dtype && (st = tdm_dtype_parse(p->dtype, &dt)) != TDM_OK) return st;
    int single = 0;   /* a single-file model: its config folder, the file attached to it */
    const char *comps[3] = {p->vae_file, p->text_encoder_file, p->text_encoder_2_file};
    if ((st = tdm_ldm_resolve(p->model, p->config, comps, root, sizeof root, &single)) != TDM_OK) return st;
    tdm_pipe_plan_req_t r = {root, p->only, p->device_map, &mm, p->dtype ? (int)dt : -1, p->variant};
    if ((st = tdm_pipe_plan_make(&r, &plan)) == TDM_OK) {
        st = tdm_pipe_plan_json(&plan, json);
        tdm_pipe_plan_free(&plan);
    }
    if (single) tdm_ldm_detach(root);
    return st;
}

/* The components of model_index.json: entries ["library", "Class"] with a
 * planner builder, those of `only` when given, at most MAX_COMPONENTS. */
static int collect_components(const cJSON *index, const char *only, comp_t *cs) {
    int nc = 0;
    for (const cJSON *it = index->child; it; it = it->next) {
        const cJSON *cl = cJSON_GetArrayItem(it, 1);
        if (!cJSON_IsArray(it) || !cJSON_IsString(cl) || !builder_of(cl->valuestring)) continue;
        if (only && !listed(only, it->string)) continue;
        if (nc == MAX_COMPONENTS) break;
        comp_t *c = &cs[nc++];
        snprintf(c->name, sizeof c->name, "%s", it->string);
        snprintf(c->cls, sizeof c->cls, "%s", cl->valuestring);
        c->strategy = -1;
        c->dev = TDM_PLACE_DISK - 1;
    }
    return nc;
}

/* Each --only item must be a collected component (index_path names the
 * model_index.json in the message). */
static tdm_status check_only(const char *only, const comp_t *cs, int nc, const char *index_path) {
    char nm[128];
    for (const char *q = only; next_item(&q, nm, sizeof nm);) {
        int found = 0;
        for (int i = 0; i < nc; i++) found |= !strcmp(cs[i].name, nm);
        if (!found)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--only %s: %s has no such model component", nm,
                              index_path);
    }
    return TDM_OK;
}

/* The --device-map item `item` (its '=' at eq, or NULL), read up to q: an
 * error when an earlier item gives the same component, or, for a bare
 * STRATEGY, the pipeline's strategy, again. */
static tdm_status device_map_repeated(const char *device_map, const char *q, const char *item,
                                      const char *eq) {
    const size_t kl = eq ? (size_t)(eq - item) : 0;
    char other[128];
    for (const char *r = device_map; next_item(&r, other, sizeof other) && r != q;) {
        const char *oe = strchr(other, '=');
        const size_t ol = oe ? (size_t)(oe - other) : 0;
        if (!eq != !oe || kl != ol || strncmp(item, other, kl) != 0) continue;
        if (eq)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--device-map %s: component %.*s is given twice "
                              "(%s and %s)", device_map, (int)kl, item, other, item);
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--device-map %s: two strategies for the "
                          "pipeline (%s and %s); give one, and COMPONENT=STRATEGY for the others",
                          device_map, other, item);
    }
    return TDM_OK;
}

/* --device-map: STRATEGY (*pipe_strategy) and/or COMPONENT=STRATEGY items
 * (cs[i].strategy); a component of the folder left out by --only is
 * ignored, one not in the folder is an error. */
static tdm_status apply_device_map(const char *device_map, const cJSON *index,
                                   const char *index_path, comp_t *cs, int nc, int *pipe_strategy) {
    tdm_status st;
    char item[128];
    for (const char *q = device_map; next_item(&q, item, sizeof item);) {
        char *eq = strchr(item, '=');
        tdm_place_strategy s;
        /* each component (and the pipeline's STRATEGY) at most once, over all --device-map flags */
        if ((st = device_map_repeated(device_map, q, item, eq)) != TDM_OK) return st;
        if ((st = tdm_place_strategy_parse(eq ? eq + 1 : item, &s)) != TDM_OK)
            return tdm_errorf(st, "--device-map %s: %s", item, tdm_last_error());
        if (!eq) {
            *pipe_strategy = (int)s;
            continue;
        }
        *eq = 0;
        int found = 0;
        for (int i = 0; i < nc; i++)
            if (!strcmp(cs[i].name, item)) { cs[i].strategy = (int)s; found = 1; }
        if (!found && !in_folder(index, item))
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--device-map %s=...: no model component %s "
                              "in %s", item, item, index_path);
        /* a component left out by --only: its item does not apply */
    }
    return TDM_OK;
}

/* Each component's parameter list (from <root>/<name>/config.json in dtype
 * dt) and its weights' bytes. */
static tdm_status build_plists(comp_t *cs, int nc, const char *root, const char *variant,
                               tdm_dtype dt, int keep_dtype) {
    tdm_status st = TDM_OK;
    char path[4096];
    for (int i = 0; i < nc; i++) {
        comp_t *c = &cs[i];
        char sub[128];
        snprintf(sub, sizeof sub, "%s", c->name);
        TDM_TRY(tdm_path_join(path, sizeof path, root, sub, "config.json"));
        TDM_TRY(builder_of(c->cls)(path, dt, &c->pl));
        TDM_TRY(weigh(c, root, variant, keep_dtype));
        c->bytes = c->pl.bytes;
    }
fail:
    return st;
}

/* order[] = the components not planned yet, largest first (stable);
 * returns how many. */
static int unplanned_by_size(const comp_t *cs, int nc, int *order) {
    int no = 0;
    for (int i = 0; i < nc; i++)
        if (!cs[i].planned) order[no++] = i;
    for (int a = 1; a < no; a++)
        for (int b = a; b > 0 && cs[order[b]].bytes > cs[order[b - 1]].bytes; b--) {
            int t = order[b];
            order[b] = order[b - 1];
            order[b - 1] = t;
        }
    return no;
}

/* Pipeline level: each component of order[] whole on a GPU picked by the
 * strategy (or, with no GPU budgets, on the host when it fits), else split
 * block-wise over what is left. */
static tdm_status plan_pipeline_level(comp_t *cs, const int *order, int no, tdm_max_memory_t *rem,
                                      int pipe_strategy) {
    tdm_status st = TDM_OK;
    int k = 0, cyc[2 * TDM_PLACE_MAX_DEVICES];
    int ncyc = gpu_cycle(rem, pipe_strategy, cyc);
    for (int a = 0; a < no; a++) {
        comp_t *c = &cs[order[a]];
        int g = pick_gpu(rem, pipe_strategy, cyc, ncyc, c->bytes, &k);
        int has_gpu = 0;
        for (int i = 0; i < rem->n; i++) has_gpu |= rem->dev[i] >= 0;
        if (g < 0 && !has_gpu) {   /* no GPU budgets: whole on the host if it fits */
            int h = mm_index(rem, TDM_PLACE_CPU);
            if (h >= 0 && rem->bytes[h] >= c->bytes) g = h;
        }
        if (g >= 0) {
            c->dev = rem->dev[g];
            rem->bytes[g] -= c->bytes;
            c->planned = 1;
            continue;
        }
        TDM_TRY(plan_split(c, rem, pipe_strategy == TDM_PLACE_SEQUENTIAL ? TDM_PLACE_SEQUENTIAL
                                                                        : TDM_PLACE_BALANCED));
    }
fail:
    return st;
}

/* The result: each component's name, device, bytes and map (moved out of
 * cs). */
static tdm_status take_result(tdm_pipe_plan_t *out, comp_t *cs, int nc, int pipe_strategy,
                              const tdm_max_memory_t *mm) {
    if (!(out->c = calloc((size_t)(nc ? nc : 1), sizeof *out->c)))
        return tdm_errorf(TDM_ERR_NOMEM, "plan: out of memory");
    out->strategy = pipe_strategy;
    out->mm = *mm;
    out->nc = nc;
    for (int i = 0; i < nc; i++) {
        tdm_pipe_plan_comp_t *oc = &out->c[i];
        snprintf(oc->name, sizeof oc->name, "%s", cs[i].name);
        oc->dev = cs[i].dev;
        oc->bytes = cs[i].bytes;
        oc->map = cs[i].map;
        memset(&cs[i].map, 0, sizeof cs[i].map);
    }
    return TDM_OK;
}

tdm_status tdm_pipe_plan_make(const tdm_pipe_plan_req_t *p, tdm_pipe_plan_t *out) {
    tdm_status st = TDM_OK;
    const char *root = p->root;
    char path[4096];
    tdm_json_t j = {0};
    comp_t *cs = calloc(MAX_COMPONENTS, sizeof *cs);
    int nc = 0, pipe_strategy = TDM_PLACE_BALANCED;
    tdm_max_memory_t rem;
    memset(out, 0, sizeof *out);
    if (!cs) return tdm_errorf(TDM_ERR_NOMEM, "plan: out of memory");
    TDM_TRY(tdm_path_join(path, sizeof path, root, NULL, "model_index.json"));
    TDM_TRY(tdm_json_load(&j, path));
    TDM_TRY(tdm_folder_components_check(j.root, path));   /* no name leaves the folder */
    char pcls[128];
    TDM_TRY(tdm_json_str(&j, "_class_name", "", pcls, sizeof pcls));
    const tdm_dtype dt = p->dtype >= 0 ? (tdm_dtype)p->dtype
                                       : tdm_dtype_default(!strcmp(pcls, "FluxPipeline"), 1);
    nc = collect_components(j.root, p->only, cs);
    TDM_TRY(check_only(p->only, cs, nc, path));
    TDM_TRY(apply_device_map(p->device_map, j.root, path, cs, nc, &pipe_strategy));
    TDM_TRY(build_plists(cs, nc, root, p->variant, dt, p->dtype >= 0));
    rem = *p->mm;
    for (int i = 0; i < nc; i++)   /* model level first, over the full budgets */
        if (cs[i].strategy >= 0) TDM_TRY(plan_split(&cs[i], &rem, cs[i].strategy));
    int order[MAX_COMPONENTS];
    int no = unplanned_by_size(cs, nc, order);
    TDM_TRY(plan_pipeline_level(cs, order, no, &rem, pipe_strategy));
    TDM_TRY(take_result(out, cs, nc, pipe_strategy, p->mm));
fail:
    tdm_json_free(&j);
    for (int i = 0; i < nc; i++) {
        tdm_plist_free(&cs[i].pl);
        if (cs[i].map.e) tdm_place_map_free(&cs[i].map);
    }
    free(cs);
    return st;
}
