/* par_plan.c — the `--parallel auto` cost model and choice (par_plan.h). */
#include "place/par_plan.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/config.h"
#include "io/folder.h"
#include "models/flux.h"
#include "models/unet2d.h"
#include "nn/ptree.h"
#include "place/pipe_plan.h"
#include "place/place.h"

/* ---- the model ---------------------------------------------------------- */

static int log2_idx(int k) {
    int i = 0;
    while ((1 << (i + 1)) <= k && i < 4) i++;
    return i;
}

/* The workspace with the rows shared k ways: the model's estimate at the
 * nearest tabulated share at or below k (an upper bound). */
static int64_t act_at(const tdm_par_model_t *m, int k) { return m->act_bytes[log2_idx(k)]; }

/* FLUX: per token, a double block's stream runs q, k, v, out (4 D²) and its
 * MLP (8 D²) and a single block its fused q, k, v + MLP-in (7 D²) and
 * out (5 D²): 12 D² multiply-adds either way; attention 2 · 2 · S² · D a
 * layer. The per-image modulation linears are left out. */
static tdm_status model_flux(const char *root, int width, int height, int64_t T, tdm_dtype dt,
                             tdm_par_model_t *out) {
    char cfg[4200];
    tdm_json_t j;
    tdm_plist_t pl;
    tdm_status st;
    int64_t L2 = 0, L1 = 0, H = 0, hd = 0;
    snprintf(cfg, sizeof cfg, "%s/transformer/config.json", root);
    if ((st = tdm_json_load(&j, cfg)) != TDM_OK) return st;
    if ((st = tdm_json_int(&j, "num_layers", 19, &L2)) == TDM_OK &&
        (st = tdm_json_int(&j, "num_single_layers", 38, &L1)) == TDM_OK &&
        (st = tdm_json_int(&j, "num_attention_heads", 24, &H)) == TDM_OK)
        st = tdm_json_int(&j, "attention_head_dim", 128, &hd);
    tdm_json_free(&j);
    if (st != TDM_OK) return st;
    const int64_t N = (int64_t)(height / 16) * (width / 16), S = N + T, D = H * hd;
    out->name = "FluxTransformer2DModel";
    out->gemm_flop = 2.0 * 12.0 * (double)D * D * (double)S * (double)(L2 + L1);
    out->attn_flop = 4.0 * (double)S * S * D * (double)(L2 + L1);
    out->seq = S, out->width = D, out->heads = (int)H;
    out->attn_layers = (int)(L2 + L1), out->blocks = (int)(L2 + L1);
    out->act_size = dt == TDM_F32 ? 4 : 2;
    out->modes = TDM_PAR_ULYSSES | TDM_PAR_TP;
    tdm_plist_init(&pl, dt);
    if ((st = tdm_flux_plist(cfg, dt, &pl)) != TDM_OK) return st;
    out->weight_bytes = pl.bytes;
    tdm_plist_free(&pl);
    if (H > 1) {   /* rank 0 of H ranks (H divides itself) holds the rest + split / H */
        if ((st = tdm_flux_plist_tp(cfg, dt, (int)H, 0, &pl)) != TDM_OK) return st;
        out->tp_bytes = (out->weight_bytes - pl.bytes) / (H - 1) * H;
        tdm_plist_free(&pl);
    }
    tdm_device_t host;
    tdm_device_init(&host, TDM_DEV_CPU, 0);
    for (int i = 0; i < 5 && st == TDM_OK; i++) {
        const int64_t u = (int64_t)1 << i < N ? (int64_t)1 << i : N;
        st = tdm_flux_work_bytes_cp(cfg, &host, 1, N, T, u, 1, &out->act_bytes[i]);
    }
    return st;
}

/* Stable Diffusion: only the CFG split applies. Its compute is taken as two
 * flops a weight per latent pixel at the UNet's first level over 4 (the
 * levels below see fewer): a rough figure, and only relative costs matter
 * (no layout of a UNet moves activations between ranks but CFG's one
 * prediction a step). */
static tdm_status model_sd(const char *root, int width, int height, int guidance_batch, tdm_dtype dt,
                           tdm_par_model_t *out) {
    char cfg[4200];
    tdm_plist_t pl;
    tdm_status st;
    snprintf(cfg, sizeof cfg, "%s/unet/config.json", root);
    tdm_plist_init(&pl, dt);
    if ((st = tdm_unet_plist(cfg, dt, &pl)) != TDM_OK) return st;
    const int64_t px = (int64_t)(height / 8) * (width / 8), elem = dt == TDM_F32 ? 4 : 2;
    out->name = "UNet2DConditionModel";
    out->weight_bytes = pl.bytes;
    out->gemm_flop = 2.0 * (double)(pl.bytes / elem) * (double)px / 4.0 * guidance_batch;
    tdm_plist_free(&pl);
    out->attn_flop = 0, out->seq = px, out->width = 4, out->heads = 1;
    out->act_size = (int)elem, out->attn_layers = 0, out->blocks = 1;
    out->modes = guidance_batch == 2 ? TDM_PAR_CFG : 0;
    tdm_device_t host;
    tdm_device_init(&host, TDM_DEV_CPU, 0);
    st = tdm_unet_work_bytes(cfg, &host, guidance_batch, height / 8, width / 8, 77, &out->act_bytes[0]);
    for (int i = 1; i < 5; i++) out->act_bytes[i] = out->act_bytes[0];   /* rows are never split */
    return st;
}

tdm_status tdm_par_model_read(const char *root, int width, int height, int64_t T, int guidance_batch,
                              tdm_dtype dtype, tdm_par_model_t *out) {
    char path[4200], cls[128];
    tdm_json_t j;
    tdm_status st;
    memset(out, 0, sizeof *out);
    if (width < 16 || height < 16)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--parallel auto: a %dx%d image is too small", width, height);
    snprintf(path, sizeof path, "%s/model_index.json", root);
    if ((st = tdm_json_load(&j, path)) != TDM_OK) return st;
    st = tdm_json_str(&j, "_class_name", "", cls, sizeof cls);
    tdm_json_free(&j);
    if (st != TDM_OK) return st;
    if (!strcmp(cls, "FluxPipeline")) return model_flux(root, width, height, T > 0 ? T : 512, dtype, out);
    if (!strcmp(cls, "StableDiffusionPipeline"))
        return model_sd(root, width, height, guidance_batch >= 2 ? 2 : 1, dtype, out);
    return tdm_errorf(TDM_ERR_UNSUPPORTED, "--parallel auto: %s: %s is not supported", path, cls);
}

void tdm_par_machine_defaults(const char *device, int ranks, int ranks_per_host, int64_t images,
                              tdm_par_machine_t *out) {
    memset(out, 0, sizeof *out);
    out->ranks = ranks, out->ranks_per_host = ranks_per_host > 0 ? ranks_per_host : ranks;
    out->images = images > 0 ? images : 1;
    if (device && !strncmp(device, "cuda", 4)) {
        /* measured on an H100 (bench/RESULTS.md): FLUX.1-dev's GEMMs at ~450
         * TFLOP/s, attention ~250; NCCL all-to-all over NVLink ~100 GB/s a rank */
        out->gemm_flop_s = 450e12, out->attn_flop_s = 250e12;
        out->link_bytes_s = 100e9, out->latency_s = 30e-6;
        out->mem_bytes = (int64_t)80 << 30;
        out->source = "defaults for an H100-class GPU";
    } else {
        /* the host's cores are shared by its ranks: ~20 GFLOP/s a core */
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        const double total = 20e9 * (double)(cores > 0 ? cores : 1);
        out->gemm_flop_s = out->attn_flop_s = total / out->ranks_per_host;
        out->link_bytes_s = 5e9, out->latency_s = 10e-6;
        out->source = "defaults for the CPU";
    }
}

/* ---- candidates --------------------------------------------------------- */

static const char *mode_missing(const tdm_par_model_t *model, const tdm_parallel_t *d) {
    if (d->cfg > 1 && !(model->modes & TDM_PAR_CFG)) return "cfg=2 needs a classifier-free guidance batch";
    if (d->ulysses > 1 && !(model->modes & TDM_PAR_ULYSSES)) return "ulysses: not available for this model";
    /* ring runs wherever Ulysses does (FLUX) but is not offered here yet: its
     * GPU block kernel (attention_lse) is a plain one, not a tuned one */
    if (d->ring > 1 && !(model->modes & TDM_PAR_RING))
        return model->modes & TDM_PAR_ULYSSES ? "ring: runs, but not planned yet (untuned GPU kernel)"
                                              : "ring: not available for this model";
    if (d->tp > 1 && !(model->modes & TDM_PAR_TP)) return "tp: not available for this model";
    if (d->tp > 1 && d->ring > 1) return "tp with ring: not implemented yet";
    if (d->tp > 1 && model->heads % d->tp) return "tp must divide the attention heads";
    if ((int64_t)d->ulysses * d->ring > model->seq) return "fewer tokens than ranks";
    return NULL;
}

static void predict(const tdm_par_model_t *model, const tdm_par_machine_t *m, tdm_par_candidate_t *c) {
    const tdm_parallel_t *d = &c->deg;
    const double P = (double)d->cfg * d->ring * d->ulysses * d->tp;
    const int hs = d->ulysses * d->tp, hpad = (model->heads + hs - 1) / hs * hs;
    const double attn = model->attn_flop * hpad / model->heads / m->attn_flop_s / P;
    const double rows = (double)model->seq / ((double)d->ulysses * d->ring);
    const double row_bytes = (double)model->width * model->act_size, L = model->attn_layers;
    double comm = 0;
    c->compute_s = model->gemm_flop / m->gemm_flop_s / P + attn;
    if (d->ulysses > 1)
        comm += L * (4.0 * rows * row_bytes * (d->ulysses - 1) / d->ulysses / m->link_bytes_s + 4 * m->latency_s);
    if (d->ring > 1) {
        const double kv = 2.0 * rows * row_bytes / d->tp;   /* a K/V shard of the rank's heads */
        const double ring = L * ((d->ring - 1) * (kv / m->link_bytes_s + m->latency_s));
        comm += ring > attn ? ring - attn : 0;
    }
    if (d->tp > 1)
        comm += 2.0 * model->blocks *
                (2.0 * (d->tp - 1) / d->tp * rows * row_bytes / m->link_bytes_s + m->latency_s);
    if (d->cfg > 1) comm += m->latency_s;
    c->comm_s = comm;
    c->step_s = c->compute_s + comm;
    c->job_s = (double)((m->images + d->dp - 1) / d->dp) * c->step_s;
    c->bytes = model->weight_bytes - model->tp_bytes + model->tp_bytes / d->tp +
               act_at(model, d->ulysses * d->ring) / d->cfg;   /* cfg: half the batch */
    c->why_not = mode_missing(model, d);
    if (!c->why_not && m->mem_bytes > 0 && c->bytes > m->mem_bytes) c->why_not = "does not fit a rank's memory";
}

/* How much slower a layout that gives one device's bits may be and still be
 * chosen over a faster ring or tp one (those are within float tolerance). */
#define EXACT_MARGIN 0.10

/* usable first, then job time, step time, fewer ranks per image */
static int cand_cmp(const void *pa, const void *pb) {
    const tdm_par_candidate_t *a = pa, *b = pb;
    if (!a->why_not != !b->why_not) return a->why_not ? 1 : -1;
    if (a->job_s != b->job_s) return a->job_s < b->job_s ? -1 : 1;
    if (a->step_s != b->step_s) return a->step_s < b->step_s ? -1 : 1;
    return a->deg.cfg * a->deg.ring * a->deg.ulysses * a->deg.tp - b->deg.cfg * b->deg.ring * b->deg.ulysses * b->deg.tp;
}

int tdm_par_candidates(const tdm_par_model_t *model, const tdm_par_machine_t *m, tdm_par_candidate_t *out,
                       int *n) {
    const int N = m->ranks;
    *n = 0;
    for (int cfg = 1; cfg <= 2; cfg++)
        for (int r = 1; r <= N; r++)
            for (int u = 1; u <= N; u++)
                for (int t = 1; t <= N; t++) {
                    const int64_t per = (int64_t)cfg * r * u * t;
                    if (per > N || N % per || *n == TDM_PAR_MAX_CANDIDATES) continue;
                    tdm_par_candidate_t *c = &out[(*n)++];
                    memset(c, 0, sizeof *c);
                    c->deg = (tdm_parallel_t){.dp = (int)(N / per), .cfg = cfg, .ring = r, .ulysses = u, .tp = t};
                    predict(model, m, c);
                }
    qsort(out, (size_t)*n, sizeof *out, cand_cmp);
    if (*n == 0 || out[0].why_not) return -1;
    /* the same bits as one device (dp, cfg, ulysses) unless ring or tp is
     * more than EXACT_MARGIN faster, or nothing exact fits */
    if (out[0].deg.ring > 1 || out[0].deg.tp > 1)
        for (int i = 1; i < *n && !out[i].why_not; i++)
            if (out[i].deg.ring == 1 && out[i].deg.tp == 1)
                return out[i].job_s <= out[0].job_s * (1.0 + EXACT_MARGIN) ? i : 0;
    return 0;
}

/* ---- report ------------------------------------------------------------- */

static void layout_name(const tdm_parallel_t *d, char *buf, size_t cap) {
    snprintf(buf, cap, "dp=%d", d->dp);
    const char *k[4] = {"cfg", "ring", "ulysses", "tp"};
    const int v[4] = {d->cfg, d->ring, d->ulysses, d->tp};
    for (int i = 0; i < 4; i++)
        if (v[i] > 1) snprintf(buf + strlen(buf), cap - strlen(buf), ",%s=%d", k[i], v[i]);
}

tdm_status tdm_par_plan_json(const tdm_par_model_t *model, const tdm_par_machine_t *m,
                             const tdm_par_candidate_t *c, int n, int chosen, char **json) {
    char name[96];
    cJSON *o = cJSON_CreateObject(), *mach = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    if (!o || !mach || !arr) goto nomem;
    cJSON_AddNumberToObject(o, "ranks", m->ranks);
    cJSON_AddNumberToObject(o, "images", (double)m->images);
    cJSON_AddStringToObject(o, "model", model->name);
    cJSON_AddNumberToObject(mach, "gemm_tflop_s", m->gemm_flop_s / 1e12);
    cJSON_AddNumberToObject(mach, "attention_tflop_s", m->attn_flop_s / 1e12);
    cJSON_AddNumberToObject(mach, "link_gb_s", m->link_bytes_s / 1e9);
    cJSON_AddNumberToObject(mach, "latency_us", m->latency_s * 1e6);
    cJSON_AddNumberToObject(mach, "memory_bytes_per_rank", (double)m->mem_bytes);
    cJSON_AddStringToObject(mach, "source", m->source ? m->source : "given");
    cJSON_AddItemToObject(o, "machine", mach);
    mach = NULL;
    if (chosen >= 0) layout_name(&c[chosen].deg, name, sizeof name);
    if (chosen >= 0) cJSON_AddStringToObject(o, "chosen", name);
    else cJSON_AddNullToObject(o, "chosen");
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_CreateObject();
        if (!e) goto nomem;
        layout_name(&c[i].deg, name, sizeof name);
        cJSON_AddStringToObject(e, "layout", name);
        cJSON_AddNumberToObject(e, "step_ms", round(c[i].step_s * 1e5) / 100);
        cJSON_AddNumberToObject(e, "compute_ms", round(c[i].compute_s * 1e5) / 100);
        cJSON_AddNumberToObject(e, "comm_ms", round(c[i].comm_s * 1e5) / 100);
        cJSON_AddNumberToObject(e, "job_step_ms", round(c[i].job_s * 1e5) / 100);
        cJSON_AddNumberToObject(e, "bytes_per_rank", (double)c[i].bytes);
        cJSON_AddBoolToObject(e, "usable", !c[i].why_not);
        if (c[i].why_not) cJSON_AddStringToObject(e, "why_not", c[i].why_not);
        cJSON_AddItemToArray(arr, e);
    }
    cJSON_AddItemToObject(o, "candidates", arr);
    arr = NULL;
    *json = cJSON_Print(o);
    cJSON_Delete(o);
    return *json ? TDM_OK : tdm_errorf(TDM_ERR_NOMEM, "--parallel auto: out of memory");
nomem:
    cJSON_Delete(o), cJSON_Delete(mach), cJSON_Delete(arr);
    return tdm_errorf(TDM_ERR_NOMEM, "--parallel auto: out of memory");
}

/* ---- the public call ---------------------------------------------------- */

void tdm_parallel_plan_params_init(tdm_parallel_plan_params_t *p) {
    memset(p, 0, sizeof *p);
    p->guidance = NAN;
}

/* The pipeline's class and default size (sample_size · scale, as diffusers). */
static tdm_status pipe_kind(const char *root, int *flux, int *size) {
    char path[4200], cls[128];
    tdm_json_t j;
    tdm_status st;
    int64_t ss = 0;
    snprintf(path, sizeof path, "%s/model_index.json", root);
    if ((st = tdm_json_load(&j, path)) != TDM_OK) return st;
    st = tdm_json_str(&j, "_class_name", "", cls, sizeof cls);
    tdm_json_free(&j);
    if (st != TDM_OK) return st;
    *flux = !strcmp(cls, "FluxPipeline");
    snprintf(path, sizeof path, "%s/%s/config.json", root, *flux ? "transformer" : "unet");
    if ((st = tdm_json_load(&j, path)) != TDM_OK) return st;
    st = tdm_json_int(&j, "sample_size", *flux ? 128 : 64, &ss);
    tdm_json_free(&j);
    *size = (int)(ss * 8);
    return st;
}

/* The candidates of p (best first) into *c (malloc'd, *n of them); returns
 * the chosen index or -1 in *chosen. */
static tdm_status plan_candidates(const tdm_parallel_plan_params_t *p, tdm_par_model_t *model,
                                  tdm_par_machine_t *m, tdm_par_candidate_t **c, int *n, int *chosen) {
    char root[4096];
    tdm_status st;
    tdm_dtype dt;
    int flux = 0, size = 0;
    *c = NULL;
    if (!p->model) return tdm_errorf(TDM_ERR_INVALID_ARG, "plan: --model is required");
    if (p->ranks < 1) return tdm_errorf(TDM_ERR_INVALID_ARG, "--parallel auto: --ranks N (the world size) is required");
    const int gpu = !p->device || !strncmp(p->device, "cuda", 4);
    if (!gpu && strcmp(p->device, "cpu"))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--device %.100s: expected cpu or cuda", p->device);
    if ((st = tdm_folder_resolve(p->model, root, sizeof root)) != TDM_OK) return st;
    if ((st = pipe_kind(root, &flux, &size)) != TDM_OK) return st;
    dt = tdm_dtype_default(flux, gpu);
    if (p->dtype && (st = tdm_dtype_parse(p->dtype, &dt)) != TDM_OK) return st;
    const int cfg_batch = !flux && (isnan(p->guidance) || p->guidance > 1.0f) ? 2 : 1;
    if ((st = tdm_par_model_read(root, p->width ? p->width : size, p->height ? p->height : size,
                                 p->max_sequence_length, cfg_batch, dt, model)) != TDM_OK)
        return st;
    tdm_par_machine_defaults(gpu ? "cuda" : "cpu", p->ranks, gpu ? 1 : p->ranks, p->images, m);
    if (p->machine) {   /* measured: each number that was */
        const tdm_parallel_machine_t *x = p->machine;
        if (x->gemm_flop_s > 0) m->gemm_flop_s = x->gemm_flop_s;
        if (x->attn_flop_s > 0) m->attn_flop_s = x->attn_flop_s;
        if (x->link_bytes_s > 0) m->link_bytes_s = x->link_bytes_s;
        if (x->latency_s > 0) m->latency_s = x->latency_s;
        m->source = "measured (probe)";
    }
    if (p->max_memory) {
        tdm_max_memory_t mm;
        if ((st = tdm_max_memory_parse(p->max_memory, &mm)) != TDM_OK) return st;
        for (int i = 0; i < mm.n; i++)
            if (mm.dev[i] == 0) m->mem_bytes = mm.bytes[i];
    }
    *c = malloc(TDM_PAR_MAX_CANDIDATES * sizeof **c);
    if (!*c) return tdm_errorf(TDM_ERR_NOMEM, "--parallel auto: out of memory");
    *chosen = tdm_par_candidates(model, m, *c, n);
    return TDM_OK;
}

tdm_status tdm_parallel_plan(const tdm_parallel_plan_params_t *p, char **json) {
    tdm_par_model_t model;
    tdm_par_machine_t m;
    tdm_par_candidate_t *c = NULL;
    int n = 0, chosen = -1;
    *json = NULL;
    tdm_status st = plan_candidates(p, &model, &m, &c, &n, &chosen);
    if (st == TDM_OK) st = tdm_par_plan_json(&model, &m, c, n, chosen, json);
    free(c);
    return st;
}

tdm_status tdm_parallel_choose(const tdm_parallel_plan_params_t *p, char *spec, size_t cap, double *step_s) {
    tdm_par_model_t model;
    tdm_par_machine_t m;
    tdm_par_candidate_t *c = NULL;
    int n = 0, chosen = -1;
    tdm_status st = plan_candidates(p, &model, &m, &c, &n, &chosen);
    if (st == TDM_OK && chosen < 0)
        st = tdm_errorf(TDM_ERR_INVALID_ARG, "--parallel auto: no layout of %d ranks that tandem runs fits "
                        "(first reason: %s); see tandem plan --parallel auto --ranks %d", p->ranks,
                        n > 0 && c[0].why_not ? c[0].why_not : "none", p->ranks);
    if (st == TDM_OK) {
        const tdm_parallel_t *d = &c[chosen].deg;
        snprintf(spec, cap, "cfg=%d,ring=%d,ulysses=%d,tp=%d", d->cfg, d->ring, d->ulysses, d->tp);
        if (step_s) *step_s = c[chosen].step_s;
    }
    free(c);
    return st;
}
