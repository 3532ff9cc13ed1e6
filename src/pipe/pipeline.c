/* pipeline.c — opening a diffusers folder (StableDiffusionPipeline or
 * FluxPipeline) from its configs alone, stage residency (each stage loads
 * only its components; entering a stage frees the others'), the stage entry
 * points of the public API, and embeddings files. The per-family stage
 * arithmetic lives in pipe_sd.c and pipe_flux.c. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/ops.h"
#include "io/config.h"
#include "io/ldm.h"
#include "io/safetensors.h"
#include "pipe/pipe_internal.h"

void tdm_pipeline_params_init(tdm_pipeline_params_t *p) {
    memset(p, 0, sizeof *p);
    p->device = "cpu";
    tdm_backend_params_init(&p->backend);
}

void tdm_generate_params_init(tdm_generate_params_t *p) {
    memset(p, 0, sizeof *p);
    p->guidance = NAN;
}

void tdm_encode_params_init(tdm_encode_params_t *p) { memset(p, 0, sizeof *p); }

/* The component table of each pipeline kind: folder, kind, stage per slot. */
static void comp_table(tdm_pipeline_t *pipe) {
    static const struct {
        const char *name;
        tdm_pipe_kind_t kind;
        int stage;
    } tab[3][TDM_COMP_COUNT] = {
        [TDM_PIPE_SD] = {
            [TDM_COMP_TOK] = {"tokenizer", TDM_KIND_CLIP_TOK, TDM_STAGE_ENCODE},
            [TDM_COMP_TEXT] = {"text_encoder", TDM_KIND_CLIP_TEXT, TDM_STAGE_ENCODE},
            [TDM_COMP_DEN] = {"unet", TDM_KIND_UNET, TDM_STAGE_DENOISE},
            [TDM_COMP_VAE] = {"vae", TDM_KIND_VAE_DECODER, TDM_STAGE_DECODE}},
        [TDM_PIPE_FLUX] = {
            [TDM_COMP_TOK] = {"tokenizer", TDM_KIND_CLIP_TOK, TDM_STAGE_ENCODE},
            [TDM_COMP_TEXT] = {"text_encoder", TDM_KIND_CLIP_TEXT, TDM_STAGE_ENCODE},
            [TDM_COMP_TOK2] = {"tokenizer_2", TDM_KIND_T5_TOK, TDM_STAGE_ENCODE},
            [TDM_COMP_TEXT2] = {"text_encoder_2", TDM_KIND_T5, TDM_STAGE_ENCODE},
            [TDM_COMP_DEN] = {"transformer", TDM_KIND_FLUX, TDM_STAGE_DENOISE},
            [TDM_COMP_VAE] = {"vae", TDM_KIND_VAE_DECODER, TDM_STAGE_DECODE}},
        [2] = {   /* StableDiffusionXLPipeline */
            [TDM_COMP_TOK] = {"tokenizer", TDM_KIND_CLIP_TOK, TDM_STAGE_ENCODE},
            [TDM_COMP_TEXT] = {"text_encoder", TDM_KIND_CLIP_TEXT, TDM_STAGE_ENCODE},
            [TDM_COMP_TOK2] = {"tokenizer_2", TDM_KIND_CLIP_TOK, TDM_STAGE_ENCODE},
            [TDM_COMP_TEXT2] = {"text_encoder_2", TDM_KIND_CLIP_TEXT, TDM_STAGE_ENCODE},
            [TDM_COMP_DEN] = {"unet", TDM_KIND_UNET, TDM_STAGE_DENOISE},
            [TDM_COMP_VAE] = {"vae", TDM_KIND_VAE_DECODER, TDM_STAGE_DECODE}},
    };
    const int t = pipe->info.sdxl ? 2 : (int)pipe->info.kind;
    for (int i = 0; i < TDM_COMP_COUNT; i++) {
        pipe->comp[i].name = tab[t][i].name;
        pipe->comp[i].kind = tab[t][i].kind;
        pipe->comp[i].stage = tab[t][i].stage;
        pipe->comp[i].dev = &pipe->dev;
    }
    if (pipe->no_text_encoder)   /* an SDXL folder with text_encoder null (as the refiner) */
        pipe->comp[TDM_COMP_TOK].name = pipe->comp[TDM_COMP_TEXT].name = NULL;
}

/* Frees component c's handle (not loaded: a no-op). */
static void comp_free(tdm_pipe_comp_t *c) {
    switch (c->kind) {
    case TDM_KIND_CLIP_TOK: tdm_clip_tok_free(c->h.clip_tok); break;
    case TDM_KIND_T5_TOK: tdm_t5_tok_free(c->h.t5_tok); break;
    case TDM_KIND_CLIP_TEXT: tdm_clip_text_free(c->h.clip); break;
    case TDM_KIND_T5: tdm_t5_free(c->h.t5); break;
    case TDM_KIND_UNET: tdm_unet_free(c->h.unet); break;
    case TDM_KIND_FLUX: tdm_flux_free(c->h.flux); break;
    case TDM_KIND_VAE_DECODER: tdm_vae_free(c->h.vae); break;
    }
    c->h.any = NULL;
}

static void free_components(tdm_pipeline_t *pipe) {
    for (int i = 0; i < TDM_COMP_COUNT; i++) comp_free(&pipe->comp[i]);
    pipe->stage = TDM_STAGE_NONE;
    tdm_dev_trim(&pipe->dev);
}

tdm_status tdm_pipeline_load_stage(tdm_pipeline_t *pipe, tdm_stage stage) {
    if ((unsigned)stage > TDM_STAGE_DECODE) return tdm_errorf(TDM_ERR_INVALID_ARG, "no stage %d", (int)stage);
    return tdm_pipe_enter(pipe, (int)stage);
}

void tdm_pipeline_release(tdm_pipeline_t *pipe) {
    if (pipe) free_components(pipe);
}

void tdm_pipeline_close(tdm_pipeline_t *pipe) {
    if (!pipe) return;
    free_components(pipe);
    for (int g = 1; g < pipe->nvdev; g++) tdm_backend_device_close(&pipe->vdev[g]);
    tdm_backend_device_close(&pipe->dev);
    tdm_sched_free(pipe->sched);
    tdm_dist_nn_group_free(&pipe->ulysses_group);
    tdm_dist_nn_group_free(&pipe->ring_group);
    tdm_dist_nn_group_free(&pipe->tp_group);
    tdm_dist_nn_group_free(&pipe->image_group);
    for (int i = 0; i < TDM_COMP_COUNT; i++)
        if (pipe->comp[i].map.e) tdm_place_map_free(&pipe->comp[i].map);
    for (int k = 0; k < pipe->nplans; k++) tdm_pipe_plan_free(&pipe->plans[k]);
    if (pipe->single_file) tdm_ldm_detach(pipe->root);
    free(pipe);
}

/* Loads config `sub`/config.json of the pipeline into j. */
static tdm_status load_config(const tdm_pipeline_t *pipe, const char *sub, tdm_json_t *j) {
    char path[TDM_PATH_MAX];
    tdm_status st = tdm_path_join(path, sizeof path, pipe->root, sub, "config.json");
    if (st != TDM_OK) return st;
    return tdm_json_load(j, path);
}

/* SDXL's facts beside the SD ones (j: the UNet's config, loaded): the
 * micro-conditioning the UNet takes must be what StableDiffusionXLPipeline
 * passes — text_encoder_2's projection_dim pooled values and six time ids
 * (original_size, crops_coords_top_left, target_size) of
 * addition_time_embed_dim each — as diffusers checks in _get_add_time_ids. */
static tdm_status read_sdxl_configs(tdm_pipeline_t *pipe, const tdm_json_t *j) {
    tdm_status st = TDM_OK;
    tdm_json_t t = {0};
    char type[64];
    int64_t atd = 0, pin = 0, proj = 512;
    pipe->info.default_guidance = 5.0f;   /* StableDiffusionXLPipeline.__call__ */
    TDM_TRY(tdm_json_str(j, "addition_embed_type", "", type, sizeof type));
    if (strcmp(type, "text_time") != 0) {
        st = tdm_errorf(TDM_ERR_MODEL, "%s: StableDiffusionXLPipeline needs a UNet with "
                        "addition_embed_type \"text_time\" (found \"%s\")", j->path, type);
        goto fail;
    }
    TDM_TRY(tdm_json_int(j, "addition_time_embed_dim", 0, &atd));
    TDM_TRY(tdm_json_int(j, "projection_class_embeddings_input_dim", 0, &pin));
    TDM_TRY(load_config(pipe, "text_encoder_2", &t));
    TDM_TRY(tdm_json_int_range(&t, "projection_dim", 512, 1, 65536, &proj));
    pipe->pooled_dim = proj;
    if (atd < 1 || pin != proj + 6 * atd) {
        st = tdm_errorf(TDM_ERR_MODEL, "%s: projection_class_embeddings_input_dim %lld is not "
                        "text_encoder_2's projection_dim %lld + 6 time ids x addition_time_embed_dim "
                        "%lld (= %lld), what StableDiffusionXLPipeline passes", j->path, (long long)pin,
                        (long long)proj, (long long)atd, (long long)(proj + 6 * atd));
        goto fail;
    }
fail:
    tdm_json_free(&t);
    return st;
}

/* The numbers of VAE config key `key` (absent or null: *n = 0). */
static tdm_status json_floats(const tdm_json_t *j, const char *key, float *out, int cap, int *n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j->root, key), *e;
    *n = 0;
    if (!v || cJSON_IsNull(v)) return TDM_OK;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > cap)
        return tdm_errorf(TDM_ERR_MODEL, "%s: %s must be a list of at most %d numbers", j->path, key, cap);
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsNumber(e))
            return tdm_errorf(TDM_ERR_MODEL, "%s: %s[%d] is not a number", j->path, key, *n);
        out[(*n)++] = (float)e->valuedouble;
    }
    return TDM_OK;
}

/* SDXL's VAE facts (j: the VAE config, lc latent channels): latents_mean and
 * latents_std (StableDiffusionXLPipeline uses them when both are set, one
 * per latent channel) and force_upcast (AutoencoderKL's default true). */
static tdm_status read_vae_stats(tdm_pipeline_t *pipe, const tdm_json_t *j, int64_t lc) {
    tdm_status st = TDM_OK;
    int nm = 0, ns = 0, up = 1;
    TDM_TRY(json_floats(j, "latents_mean", pipe->vae_mean, TDM_PIPE_MAX_LATENT_CH, &nm));
    TDM_TRY(json_floats(j, "latents_std", pipe->vae_std, TDM_PIPE_MAX_LATENT_CH, &ns));
    TDM_TRY(tdm_json_bool(j, "force_upcast", 1, &up));
    if (nm && ns) {
        if (nm != lc || ns != lc)
            return tdm_errorf(TDM_ERR_MODEL, "%s: latents_mean has %d and latents_std %d values for %lld "
                              "latent channels", j->path, nm, ns, (long long)lc);
        pipe->vae_stats = 1;
    }
    pipe->vae_upcast = up && pipe->dev.gemm_dtype == TDM_F16;   /* bf16 is not upcast */
fail:
    return st;
}

/* Reads the facts the pipeline needs before any weights are loaded. */
static tdm_status read_configs(tdm_pipeline_t *pipe) {
    tdm_json_t j = {0};
    tdm_status st;
    int64_t blocks[16];
    int nb = 0;
    int64_t lc;
    TDM_TRY(load_config(pipe, "vae", &j));
    TDM_TRY(tdm_json_int_array(&j, "block_out_channels", 0, blocks, 16, &nb));
    TDM_TRY(tdm_json_int_range(&j, "latent_channels", 4, 1, 1024, &lc));
    TDM_TRY(tdm_json_float(&j, "scaling_factor", 0.18215, &pipe->vae_scaling_factor));
    TDM_TRY(tdm_json_float(&j, "shift_factor", 0.0, &pipe->vae_shift_factor));
    if (pipe->info.sdxl) TDM_TRY(read_vae_stats(pipe, &j, lc));
    if (nb < 1 || nb > 8) {   /* the VAE's levels (see vae.c) */
        st = tdm_errorf(TDM_ERR_MODEL, "%s: block_out_channels has %d levels, out of range [1, 8]", j.path, nb);
        goto fail;
    }
    tdm_json_free(&j);
    pipe->info.vae_scale_factor = 1 << (nb - 1);
    pipe->info.latent_channels = (int)lc;
    if (pipe->info.kind == TDM_PIPE_SD) {
        int64_t ss = 64, in = 4, cad = 768;
        TDM_TRY(load_config(pipe, "unet", &j));
        TDM_TRY(tdm_json_int_range(&j, "in_channels", 4, 1, 1024, &in));
        TDM_TRY(tdm_json_int_range(&j, "cross_attention_dim", 1280, 1, 65536, &cad));
        int n = 0;
        TDM_TRY(tdm_json_int_array(&j, "sample_size", 1, blocks, 2, &n));
        if (n > 0) ss = blocks[0];
        if (ss < 1 || ss > TDM_MAX_SAMPLE_SIZE) {
            st = tdm_json_range_error(&j, "sample_size", ss, 1, TDM_MAX_SAMPLE_SIZE);
            goto fail;
        }
        /* the default size, in 64 bits: sample_size x the VAE's scale factor */
        const int64_t side = ss * pipe->info.vae_scale_factor;
        if (side > TDM_MAX_IMAGE_SIDE) {
            st = tdm_errorf(TDM_ERR_MODEL, "%s: sample_size %lld x the VAE's scale factor %d = a default image "
                            "side of %lld, out of range [8, %d]", j.path, (long long)ss,
                            pipe->info.vae_scale_factor, (long long)side, TDM_MAX_IMAGE_SIDE);
            goto fail;
        }
        snprintf(pipe->size_src, sizeof pipe->size_src, "%s sample_size %lld", j.path, (long long)ss);
        pipe->denoiser_in_channels = in;
        pipe->ctx_dim = cad;
        pipe->info.default_width = pipe->info.default_height = (int)side;
        pipe->info.size_multiple = 8;
        pipe->info.default_steps = 50;
        pipe->info.default_guidance = 7.5f;
        pipe->info.default_max_sequence_length = 77;
        pipe->info.uses_guidance = 1;
        if (pipe->info.sdxl) TDM_TRY(read_sdxl_configs(pipe, &j));
    } else {
        int64_t in = 64, jad = 4096, ppd = 768;
        int ge = 0;
        TDM_TRY(load_config(pipe, "transformer", &j));
        TDM_TRY(tdm_json_int_range(&j, "in_channels", 64, 1, 4096, &in));
        TDM_TRY(tdm_json_int_range(&j, "joint_attention_dim", 4096, 1, 65536, &jad));
        TDM_TRY(tdm_json_int_range(&j, "pooled_projection_dim", 768, 1, 65536, &ppd));
        TDM_TRY(tdm_json_bool(&j, "guidance_embeds", 0, &ge));
        if (in != 4 * lc) {
            st = tdm_errorf(TDM_ERR_MODEL, "%s: in_channels %lld is not 4 x the VAE's latent_channels %lld",
                            j.path, (long long)in, (long long)lc);
            goto fail;
        }
        pipe->denoiser_in_channels = in;
        pipe->ctx_dim = jad;
        pipe->pooled_dim = ppd;
        /* FluxPipeline: default_sample_size 128 → 128 * vae_scale_factor */
        pipe->info.default_width = pipe->info.default_height = 128 * pipe->info.vae_scale_factor;
        snprintf(pipe->size_src, sizeof pipe->size_src, "FluxPipeline's default_sample_size 128");
        pipe->info.size_multiple = 2 * pipe->info.vae_scale_factor;
        pipe->info.uses_guidance = ge;
        /* dev (guidance-distilled) vs schnell (timestep-distilled) defaults */
        pipe->info.default_steps = ge ? 28 : 4;
        pipe->info.default_guidance = ge ? 3.5f : 0.0f;
        pipe->info.default_max_sequence_length = ge ? 512 : 256;
    }
fail:
    tdm_json_free(&j);
    return st;
}

/* The device standing for whole-component placement `dev` (a GPU id or "cpu"). */
static tdm_device_t *placed_dev(tdm_pipeline_t *pipe, int dev) {
    if (dev >= 0) return dev == 0 ? &pipe->dev : &pipe->vdev[dev];
    return &pipe->host;   /* "cpu": whole in host RAM, run there (virtual devices only) */
}

int tdm_pipeline_stage_components(const tdm_pipeline_t *pipe, int together,
                                  const char **out) {
    int flux = pipe->info.kind == TDM_PIPE_FLUX;
    if (together) {
        out[0] = NULL;   /* all */
        return 1;
    }
    out[0] = flux || (pipe->info.sdxl && !pipe->no_text_encoder) ? "text_encoder,text_encoder_2"
             : pipe->info.sdxl                                     ? "text_encoder_2"
                                                                   : "text_encoder";
    out[1] = flux ? "transformer" : "unet";
    out[2] = "vae";
    return 3;
}

/* Sends component `comp` to its device, or adds entry (name, dev) of its
 * map: `name` is "" for the whole component. */
static tdm_status place_entry(tdm_pipeline_t *pipe, const char *comp, const char *name, int dev) {
    const int cuda = pipe->dev.kind == TDM_DEV_CUDA;
    tdm_pipe_comp_t *c = NULL;
    for (int i = 0; i < TDM_COMP_COUNT && !c; i++)
        if (pipe->comp[i].name && !strcmp(pipe->comp[i].name, comp)) c = &pipe->comp[i];
    if (!c) return TDM_OK;
    /* every component the pipeline loads can run split (its loader takes the map) */
    tdm_place_map_t *sm = &c->map;
    /* with --device cuda a whole component the plan leaves in host RAM or on
     * disk still runs on the GPU, every block streamed to it as it runs (a
     * map with one entry covering all of it), never on the CPU */
    /* a whole component on "disk" streams from its files on any device */
    const int whole = !name[0];
    const int streamed = whole && dev < 0 && (cuda || dev == TDM_PLACE_DISK);
    if (whole && !streamed) {
        c->dev = placed_dev(pipe, dev);
        return TDM_OK;
    }
    /* split: its entries make the map the loader follows */
    tdm_place_entry_t *ne = realloc(sm->e, (size_t)(sm->n + 1) * sizeof *ne);
    char *nm = strdup(name);
    if (!ne || !nm) {
        free(nm);
        if (ne) sm->e = ne;
        return tdm_errorf(TDM_ERR_NOMEM, "out of memory");
    }
    sm->e = ne;
    sm->e[sm->n].name = nm;
    sm->e[sm->n].dev = dev;
    sm->n++;
    return TDM_OK;
}

/* Plans components `only` (NULL: all) as `tandem plan` does (float32: CPU
 * devices hold float32) and sends each to its device; a split component is
 * loaded block-wise at its stage. The plan is kept for
 * tdm_pipeline_device_map. */
static tdm_status apply_plan(tdm_pipeline_t *pipe, const tdm_pipeline_params_t *p,
                             const char *only) {
    tdm_status st = TDM_OK;
    /* sizes as the devices hold them: float32 on virtual CPU devices, the GEMM
     * dtype on a GPU (non-GEMM tensors stay float32 there: a little more) */
    const int cuda = pipe->dev.kind == TDM_DEV_CUDA;
    tdm_pipe_plan_req_t r = {pipe->root, only, p->device_map, &pipe->split_mm,
                             cuda ? (int)(pipe->dev.fp8_linears ? TDM_F8E4M3 : pipe->dev.gemm_dtype)
                                  : (int)TDM_F32,
                             pipe->variant[0] ? pipe->variant : NULL};   /* the files the loaders open */
    tdm_pipe_plan_t *plan = &pipe->plans[pipe->nplans];
    if ((st = tdm_pipe_plan_make(&r, plan)) != TDM_OK) return st;
    pipe->nplans++;
    {   /* host RAM holds "cpu", and on virtual devices the GPUs' parts too */
        tdm_max_memory_t all;
        int64_t used[TDM_PLACE_MAX_DEVICES], need = 0, avail = tdm_host_memory_available();
        int disk_implicit;
        if ((st = tdm_pipe_plan_used(plan, &all, &disk_implicit, used)) != TDM_OK) return st;
        for (int i = 0; i < all.n; i++)
            if (all.dev[i] == TDM_PLACE_CPU || (!cuda && all.dev[i] != TDM_PLACE_DISK))
                need += used[i];
        if (avail >= 0 && need > avail)
            return tdm_errorf(TDM_ERR_NOMEM, "--device-map: the plan%s%s keeps %lld bytes in host "
                              "RAM (the virtual devices and cpu) but %lld are available; lower "
                              "--max-memory (what fits nowhere else streams from disk)",
                              only ? " of " : "", only ? only : "",
                              (long long)need, (long long)avail);
    }
    for (int c = 0; c < plan->nc && st == TDM_OK; c++) {
        const tdm_pipe_plan_comp_t *pc = &plan->c[c];
        if (pc->dev >= TDM_PLACE_DISK) {
            st = place_entry(pipe, pc->name, "", pc->dev);
            continue;
        }
        for (int64_t e = 0; e < pc->map.n && st == TDM_OK; e++)
            st = place_entry(pipe, pc->name, pc->map.e[e].name, pc->map.e[e].dev);
    }
    return st;
}

tdm_status tdm_pipeline_device_map(const tdm_pipeline_t *pipe, int k, char **json) {
    *json = NULL;
    if (k < 0 || k >= pipe->nplans)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "no device map %d (the pipeline has %d)", k,
                          pipe->nplans);
    return tdm_pipe_plan_json(&pipe->plans[k], json);
}

/* --devices / --device-map / --max-memory: checks them, sets up the virtual
 * devices and executes the plan `tandem plan` prints for the same flags
 * (tdm_plan): whole components go to their devices, a split transformer is
 * loaded block-wise at the denoise stage (see tdm_pipeline_params_t). */
static tdm_status split_setup(tdm_pipeline_t *pipe, const tdm_pipeline_params_t *p,
                              int cuda_index) {
    tdm_status st = TDM_OK;
    if (!p->device_map) {
        if (p->devices || p->max_memory)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "%s needs --device-map "
                              "(e.g. --device-map balanced or transformer=auto)",
                              p->devices ? "--devices" : "--max-memory");
        return TDM_OK;
    }
    if (!p->max_memory)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--device-map %s needs --max-memory (e.g. "
                          "0=16GiB,1=16GiB,cpu=64GiB)", p->device_map);
    if ((st = tdm_max_memory_parse(p->max_memory, &pipe->split_mm)) != TDM_OK) return st;
    if (cuda_index >= 0) {   /* GPUs: the map's GPU g is cuda:(N + g) for --device cuda:N */
        if (p->devices)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--devices %s: virtual devices stand for GPUs "
                              "on the CPU; with --device %s the map's GPU ids are CUDA devices",
                              p->devices, p->device);
        int n = 1;
        for (int i = 0; i < pipe->split_mm.n; i++)   /* cpu and disk are negative */
            if (pipe->split_mm.dev[i] + 1 > n) n = pipe->split_mm.dev[i] + 1;
        if (p->gpus > 0 && n > p->gpus)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--max-memory %s: GPU %d, but this rank has "
                              "%d GPU(s) (--gpus-per-rank): its map names GPUs 0..%d",
                              p->max_memory, n - 1, p->gpus, p->gpus - 1);
        if (n > 1) {
            const int count = tdm_backend_device_count("cuda");
            if (cuda_index + n > count || n > TDM_PIPE_MAX_VDEV)
                return tdm_errorf(TDM_ERR_INVALID_ARG, "--max-memory %s: GPU %d is cuda:%d with "
                                  "--device %s; %d CUDA device(s) here", p->max_memory, n - 1,
                                  cuda_index + n - 1, p->device, count);
        }
        pipe->nvdev = 1;
        for (int g = 1; g < n; g++) {
            char name[32];
            snprintf(name, sizeof name, "cuda:%d", cuda_index + g);
            if ((st = tdm_backend_device_open(&pipe->vdev[g], name, &p->backend)) != TDM_OK) return st;
            pipe->vdev[g].gemm_dtype = pipe->dev.gemm_dtype;
            pipe->vdev[g].fp8_linears = pipe->dev.fp8_linears;
            pipe->vdev[g].cache_enabled = 1;
            pipe->nvdev = g + 1;
        }
    } else {
        if (!p->devices)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--device-map %s: give --devices cpu:0,cpu:1,... "
                              "(virtual devices) or --device cuda:N, or see the placement with "
                              "`tandem plan`", p->device_map);
        /* "cpu:0,cpu:1,...": virtual device g stands for GPU g */
        int n = 0;
        for (const char *q = p->devices; q && *q; n++) {
            char *end;
            if (strncmp(q, "cpu:", 4) != 0 || strtol(q + 4, &end, 10) != n || end == q + 4 ||
                (*end && *end != ','))
                return tdm_errorf(TDM_ERR_INVALID_ARG, "--devices %s: expected cpu:0,cpu:1,... (the "
                                  "virtual devices standing for GPUs 0, 1, ... in order)", p->devices);
            if (n == TDM_PIPE_MAX_VDEV)
                return tdm_errorf(TDM_ERR_INVALID_ARG, "--devices %s: at most %d", p->devices,
                                  TDM_PIPE_MAX_VDEV);
            q = *end ? end + 1 : end;
        }
        for (int i = 0; i < pipe->split_mm.n; i++)
            if (pipe->split_mm.dev[i] >= n)
                return tdm_errorf(TDM_ERR_INVALID_ARG, "--max-memory %s: GPU %d has no device "
                                  "(--devices %s)", p->max_memory, pipe->split_mm.dev[i], p->devices);
        pipe->nvdev = n;
        for (int g = 1; g < n; g++) {
            tdm_device_init(&pipe->vdev[g], TDM_DEV_CPU, g);
            pipe->vdev[g].opts = p->backend;
        }
    }
    tdm_device_init(&pipe->host, TDM_DEV_CPU, pipe->nvdev);
    pipe->host.opts = p->backend;
    /* one plan per stage (only that stage's components are ever loaded together), or
     * one for everything with keep_resident; each as `tandem plan --only ...` makes it */
    const char *stages[3];
    int nst = tdm_pipeline_stage_components(pipe, p->keep_resident, stages);
    for (int k = 0; k < nst && st == TDM_OK; k++) st = apply_plan(pipe, p, stages[k]);
    return st;
}

/* --device: NULL, cpu or cpu:N give *cuda_index = -1; cuda gives 0,
 * cuda:N gives N (an error in a CPU-only build). */
static tdm_status parse_device(const tdm_pipeline_params_t *p, int *cuda_index) {
    *cuda_index = -1;
    if (p->device && strcmp(p->device, "cpu") != 0 && strncmp(p->device, "cpu:", 4) != 0) {
        char *end = NULL;
        if (!strcmp(p->device, "cuda")) *cuda_index = 0;
        else if (!strncmp(p->device, "cuda:", 5)) *cuda_index = (int)strtol(p->device + 5, &end, 10);
        if (*cuda_index < 0 || (end && (*end || end == p->device + 5)))
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--device %s: expected cpu or cuda:N", p->device);
        if (!tdm_backend_find("cuda"))
            return tdm_errorf(TDM_ERR_UNSUPPORTED, "--device %s: this build has only the CPU "
                              "backend (rebuild with the CUDA toolkit installed)", p->device);
    }
    return TDM_OK;
}

/* --dtype (left at *dt when not given): fp16/bf16 need a CUDA device; fp8
 * runs on the CPU too (FP8 weights, the float32 reference arithmetic). */
static tdm_status parse_dtype(const tdm_pipeline_params_t *p, int cuda_index, tdm_dtype *dt) {
    tdm_status st;
    if (!p->dtype) return TDM_OK;
    if ((st = tdm_dtype_parse(p->dtype, dt)) != TDM_OK) return st;
    if (*dt != TDM_F32 && *dt != TDM_F8E4M3 && cuda_index < 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--dtype %s: the CPU backend computes in fp32 "
                          "(fp16/bf16 weights are converted at load)", p->dtype);
    return TDM_OK;
}

/* A zeroed pipeline with its main device: the CPU, or cuda:cuda_index when
 * cuda_index >= 0. OUT: *out (freed here on failure). */
static tdm_status pipeline_alloc(const tdm_pipeline_params_t *p, int cuda_index,
                                 tdm_pipeline_t **out) {
    *out = NULL;
    tdm_pipeline_t *pipe = calloc(1, sizeof *pipe);
    if (!pipe) return tdm_errorf(TDM_ERR_NOMEM, "out of memory");
    tdm_device_init(&pipe->dev, TDM_DEV_CPU, 0);
    pipe->dev.opts = p->backend;
    pipe->dev.cache_enabled = 1;
    if (cuda_index >= 0) {
        int n = tdm_backend_device_count("cuda");
        if (cuda_index >= n) {
            free(pipe);
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--device %s: no such CUDA device (%d found)",
                              p->device, n);
        }
        tdm_status st = tdm_backend_device_open(&pipe->dev, p->device, &p->backend);
        if (st != TDM_OK) { free(pipe); return st; }
        pipe->dev.cache_enabled = 1;
    }
    *out = pipe;
    return TDM_OK;
}

/* <root>/model_index.json: its components stay in the folder, and its
 * _class_name (pipe->class_name) sets pipe->info.kind. */
static tdm_status read_model_index(tdm_pipeline_t *pipe) {
    tdm_status st = TDM_OK;
    tdm_json_t j = {0};
    char path[TDM_PATH_MAX];
    TDM_TRY(tdm_path_join(path, sizeof path, pipe->root, NULL, "model_index.json"));
    TDM_TRY(tdm_json_load(&j, path));
    TDM_TRY(tdm_folder_components_check(j.root, path));
    TDM_TRY(tdm_json_str(&j, "_class_name", "", pipe->class_name, sizeof pipe->class_name));
    if (!strcmp(pipe->class_name, "StableDiffusionPipeline")) {
        pipe->info.kind = TDM_PIPE_SD;
    } else if (!strcmp(pipe->class_name, "StableDiffusionXLPipeline")) {
        pipe->info.kind = TDM_PIPE_SD;
        pipe->info.sdxl = 1;
        /* a pipeline config (register_to_config), default True */
        TDM_TRY(tdm_json_bool(&j, "force_zeros_for_empty_prompt", 1, &pipe->force_zeros));
        /* text_encoder / tokenizer: [null, null] or absent when the folder has none */
        const cJSON *te = cJSON_GetObjectItemCaseSensitive(j.root, "text_encoder");
        const cJSON *te2 = cJSON_GetObjectItemCaseSensitive(j.root, "text_encoder_2");
        pipe->no_text_encoder = !cJSON_IsArray(te) || cJSON_IsNull(cJSON_GetArrayItem(te, 0));
        if (!cJSON_IsArray(te2) || cJSON_IsNull(cJSON_GetArrayItem(te2, 0))) {
            st = tdm_errorf(TDM_ERR_MODEL, "%s: StableDiffusionXLPipeline without text_encoder_2 "
                            "(its pooled embeddings condition the UNet)", path);
            goto fail;
        }
    } else if (!strcmp(pipe->class_name, "FluxPipeline")) {
        pipe->info.kind = TDM_PIPE_FLUX;
    } else {
        st = tdm_errorf(TDM_ERR_UNSUPPORTED,
                        "%s: _class_name \"%s\" is not supported (supported: StableDiffusionPipeline, "
                        "StableDiffusionXLPipeline, FluxPipeline)", path, pipe->class_name);
        goto fail;
    }
fail:
    tdm_json_free(&j);
    return st;
}

/* With --variant: a warning for each component whose variant weights are
 * missing (diffusers refuses; the plain weights are loaded). */
static void warn_missing_variants(const tdm_pipeline_t *pipe) {
    if (!pipe->variant[0]) return;
    for (int i = 0; i < TDM_COMP_COUNT; i++) {
        const tdm_pipe_comp_t *c = &pipe->comp[i];
        char wanted[256], used[256];
        if (!c->name || c->kind == TDM_KIND_CLIP_TOK || c->kind == TDM_KIND_T5_TOK) continue;
        if (tdm_folder_variant_fallback(pipe->root, c->name, pipe->variant, wanted, sizeof wanted,
                                        used, sizeof used))
            tdm_log(TDM_LOG_WARN, "%s: no %s; using %s", c->name, wanted, used);
    }
}

/* The scheduler: --scheduler (a name valid for this pipeline, kept as its
 * diffusers class name) or the folder's own class, which must suit the
 * pipeline; configured from scheduler/scheduler_config.json. */
static tdm_status open_scheduler(tdm_pipeline_t *pipe, const tdm_pipeline_params_t *p) {
    tdm_status st = TDM_OK;
    char path[TDM_PATH_MAX];
    TDM_TRY(tdm_path_join(path, sizeof path, pipe->root, "scheduler", "scheduler_config.json"));
    const int flux = pipe->info.kind == TDM_PIPE_FLUX;
    const char *cls = p->scheduler ? tdm_sched_resolve(p->scheduler) : NULL;
    char list[512];
    tdm_sched_list(flux, list, sizeof list);
    if (p->scheduler && (!cls || tdm_sched_class_is_flow(cls) != flux)) {
        if (!cls)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--scheduler %.200s: unknown scheduler; %s takes %s",
                              p->scheduler, pipe->class_name, list);
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--scheduler %.200s: %s does not run %s; it takes %s",
                          p->scheduler, pipe->class_name, cls, list);
    }
    TDM_TRY(tdm_sched_create(&pipe->sched, path, cls));
    if (tdm_sched_is_flow(pipe->sched) != flux)   /* the folder's own class */
        return tdm_errorf(TDM_ERR_MODEL, "%s: %s does not run %s (it takes %s; choose one with "
                          "--scheduler)", path, pipe->class_name, tdm_sched_class(pipe->sched), list);
fail:
    return st;
}

/* --parallel tp=T on FLUX: T must divide the transformer's heads (whole
 * heads a rank), checked at open so the error names the flag. */
static tdm_status tp_heads_check(const tdm_pipeline_t *pipe, int tp) {
    char path[TDM_PATH_MAX];
    tdm_json_t j = {0};
    int64_t H = 0;
    tdm_status st = tdm_path_join(path, sizeof path, pipe->root, "transformer", "config.json");
    if (st == TDM_OK) st = tdm_json_load(&j, path);
    if (st == TDM_OK) st = tdm_json_int(&j, "num_attention_heads", 24, &H);
    tdm_json_free(&j);
    if (st == TDM_OK && (H < 1 || H % tp != 0))
        st = tdm_errorf(TDM_ERR_INVALID_ARG, "--parallel tp=%d: tensor parallelism gives each rank "
                        "whole attention heads, and %s has num_attention_heads=%lld; use a tp that "
                        "divides it", tp, path, (long long)H);
    return st;
}

/* The --parallel groups of d that this pipeline runs: cfg = 2 on Stable
 * Diffusion, ulysses = U and ring = R on FLUX (the nn groups over the
 * Ulysses and ring communicators: the transformer's context-parallel grid),
 * tp = T on FLUX (the nn group over the TP communicator the transformer is
 * loaded sharded over; with Ulysses, not yet with ring), and with
 * parallel_vae the nn group over the image group; refused: the other
 * modes, tp with a device map of the transformer, and parallel_vae without
 * an image group of 2+ ranks. `comm` chooses how the groups move device
 * buffers (tdm_nn_comm_mode). */
static tdm_status attach_groups(tdm_pipeline_t *pipe, tdm_dist_t *d, const char *comm, int parallel_vae) {
    tdm_groups_t *g = tdm_dist_groups(d);
    tdm_nn_comm_mode cm;
    tdm_status st = tdm_nn_comm_mode_parse(comm, &cm);
    if (st != TDM_OK) return st;
    if (parallel_vae && (!g || tdm_comm_size(g->comm[TDM_GROUP_IMAGE]) < 2))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--parallel-vae: each image has one rank, so there "
                          "is no group to share its VAE decode (give --parallel cfg=2, ulysses=U or "
                          "ring=R under tandem launch)");
    if (!g) return TDM_OK;
    const tdm_parallel_t *k = &g->deg;
    if (k->tp > 1 && pipe->info.kind != TDM_PIPE_FLUX)
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "--parallel tp=%d: tensor parallelism is for transformer "
                          "pipelines (FLUX); %s runs a UNet", k->tp, pipe->class_name);
    if (k->tp > 1 && k->ring > 1)
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "--parallel tp=%d,ring=%d: tensor parallelism with ring "
                          "attention is not implemented yet (tp with ulysses is)", k->tp, k->ring);
    if (k->tp > 1 && pipe->comp[TDM_COMP_DEN].map.n > 0)
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "--parallel tp=%d: the transformer's tensor-parallel "
                          "shards cannot also be split by --device-map; drop one of them", k->tp);
    if (k->tp > 1 && (st = tp_heads_check(pipe, k->tp)) != TDM_OK) return st;
    if (k->ulysses > 1 && pipe->info.kind != TDM_PIPE_FLUX)
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "--parallel ulysses=%d: Ulysses (context) parallelism is "
                          "for transformer pipelines (FLUX); %s runs a UNet", k->ulysses, pipe->class_name);
    if (k->ring > 1 && pipe->info.kind != TDM_PIPE_FLUX)
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "--parallel ring=%d: ring (context) parallelism is for "
                          "transformer pipelines (FLUX); %s runs a UNet", k->ring, pipe->class_name);
    if (k->cfg == 2 && pipe->info.kind != TDM_PIPE_SD)
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "--parallel cfg=2: %s has no classifier-free guidance "
                          "batch to split (its guidance is an embedding); use cfg=1", pipe->class_name);
    if (k->cfg == 2) pipe->cfg_comm = g->comm[TDM_GROUP_CFG];
    if (tdm_comm_size(g->comm[TDM_GROUP_IMAGE]) > 1) pipe->image_comm = g->comm[TDM_GROUP_IMAGE];
    if (k->ulysses > 1) {
        st = tdm_dist_nn_group_create_on(g->comm[TDM_GROUP_ULYSSES], &pipe->dev, cm, &pipe->ulysses_group);
        if (st != TDM_OK) return st;
        pipe->cp.ulysses = &pipe->ulysses_group;
    }
    if (k->ring > 1) {
        st = tdm_dist_nn_group_create_on(g->comm[TDM_GROUP_RING], &pipe->dev, cm, &pipe->ring_group);
        if (st != TDM_OK) return st;
        pipe->cp.ring = &pipe->ring_group;
    }
    pipe->cp_ranks = k->ulysses * k->ring;
    if (k->tp > 1) {
        st = tdm_dist_nn_group_create_on(g->comm[TDM_GROUP_TP], &pipe->dev, cm, &pipe->tp_group);
        if (st != TDM_OK) return st;
        pipe->tp = &pipe->tp_group;
    }
    if (parallel_vae) {
        st = tdm_dist_nn_group_create_on(g->comm[TDM_GROUP_IMAGE], &pipe->dev, cm, &pipe->image_group);
        if (st != TDM_OK) return st;
        pipe->vae_group = &pipe->image_group;
    }
    return TDM_OK;
}

tdm_status tdm_pipeline_open(tdm_pipeline_t **out, const char *model,
                             const tdm_pipeline_params_t *p) {
    tdm_pipeline_params_t defaults;
    tdm_status st;
    tdm_pipeline_t *pipe = NULL;
    int cuda_index;
    tdm_dtype dt = TDM_F32;
    *out = NULL;
    if (!p) { tdm_pipeline_params_init(&defaults); p = &defaults; }
    if ((st = parse_device(p, &cuda_index)) != TDM_OK) return st;
    if ((st = parse_dtype(p, cuda_index, &dt)) != TDM_OK) return st;
    if (p->variant && strlen(p->variant) >= 64)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--variant %s: too long", p->variant);
    if ((st = pipeline_alloc(p, cuda_index, &pipe)) != TDM_OK) return st;
    pipe->stage = TDM_STAGE_NONE;
    pipe->keep_resident = p->keep_resident;
    if (p->variant) snprintf(pipe->variant, sizeof pipe->variant, "%s", p->variant);
    if (p->num_threads > 0) tdm_set_num_threads(p->num_threads);
    {
        const char *comps[3] = {p->vae_file, p->text_encoder_file, p->text_encoder_2_file};
        TDM_TRY(tdm_ldm_resolve(model, p->config, comps, pipe->root, sizeof pipe->root, &pipe->single_file));
    }
    TDM_TRY(read_model_index(pipe));
    comp_table(pipe);
    /* set before any weight loads and plans: GEMM weights are stored in this dtype */
    if (!p->dtype) dt = tdm_dtype_default(pipe->info.kind == TDM_PIPE_FLUX, cuda_index >= 0);
    if (dt == TDM_F8E4M3 && pipe->info.kind != TDM_PIPE_FLUX) {
        st = tdm_errorf(TDM_ERR_UNSUPPORTED, "--dtype fp8: only FLUX pipelines have FP8 Linears "
                        "so far (this is %s); use fp16 or bf16", pipe->class_name);
        goto fail;
    }
    if (pipe->dev.kind == TDM_DEV_CUDA) pipe->dev.gemm_dtype = tdm_dtype_gemm(dt, 1);
    pipe->dev.fp8_linears = dt == TDM_F8E4M3;
    pipe->info.dtype = tdm_dtype_flag(dt);
    TDM_TRY(split_setup(pipe, p, cuda_index));
    pipe->info.class_name = pipe->class_name;
    TDM_TRY(read_configs(pipe));
    TDM_TRY(attach_groups(pipe, p->dist, p->comm, p->parallel_vae));
    warn_missing_variants(pipe);
    TDM_TRY(open_scheduler(pipe, p));
    pipe->info.scheduler = tdm_sched_class(pipe->sched);
    *out = pipe;
    return TDM_OK;
fail:
    tdm_pipeline_close(pipe);
    return st;
}

void tdm_pipeline_info(const tdm_pipeline_t *pipe, tdm_pipeline_info_t *info) { *info = pipe->info; }

void tdm_pipeline_memory(const tdm_pipeline_t *pipe, int64_t *current, int64_t *peak) {
    if (current) *current = pipe->dev.cur_bytes;
    if (peak) *peak = pipe->total_peak > pipe->dev.peak_bytes ? pipe->total_peak : pipe->dev.peak_bytes;
}

int64_t tdm_pipeline_stage_peak(const tdm_pipeline_t *pipe, tdm_stage stage) {
    return (unsigned)stage < 3 ? pipe->stage_peak[stage] : 0;
}

int tdm_pipeline_extra_devices(const tdm_pipeline_t *pipe) {
    return pipe->nvdev > 0 ? pipe->nvdev : 0;   /* GPUs 1..nvdev-1, then host */
}

void tdm_pipeline_extra_memory(const tdm_pipeline_t *pipe, int i, char *name, size_t cap,
                               int64_t *current, int64_t *peak) {
    const tdm_device_t *d = i + 1 < pipe->nvdev ? &pipe->vdev[i + 1] : &pipe->host;
    if (i + 1 < pipe->nvdev)
        snprintf(name, cap, "%s:%d", d->kind == TDM_DEV_CUDA ? "cuda" : "cpu", d->index);
    else
        snprintf(name, cap, "host");
    *current = d->cur_bytes;
    *peak = d->peak_bytes;
    if (i + 1 < pipe->nvdev && pipe->vtotal_peak[i + 1] > *peak) *peak = pipe->vtotal_peak[i + 1];
}

void tdm_pipe_stage_done(tdm_pipeline_t *pipe, int stage) {
    if (pipe->dev.peak_bytes > pipe->stage_peak[stage]) pipe->stage_peak[stage] = pipe->dev.peak_bytes;
    for (int g = 1; g < pipe->nvdev; g++)
        if (pipe->vdev[g].peak_bytes > pipe->vstage_peak[g][stage])
            pipe->vstage_peak[g][stage] = pipe->vdev[g].peak_bytes;
}

int64_t tdm_pipeline_stage_peak_extra(const tdm_pipeline_t *pipe, tdm_stage stage, int i) {
    return (unsigned)stage < 3 && i >= 0 && i + 1 < pipe->nvdev ? pipe->vstage_peak[i + 1][stage]
                                                                 : 0;
}

/* The placement of a split component: its map from the plan, the virtual
 * devices standing for the GPUs, host RAM, GPU 0 running offloaded blocks. */
static tdm_placement_t placement(tdm_pipeline_t *pipe, const tdm_place_map_t *map,
                                 tdm_device_t **gpu) {
    gpu[0] = &pipe->dev;
    for (int g = 1; g < pipe->nvdev; g++) gpu[g] = &pipe->vdev[g];
    tdm_placement_t p = {map, gpu, pipe->nvdev, &pipe->host, &pipe->dev};
    return p;
}

/* ---- stage residency ------------------------------------------------------ */

static tdm_status need_component(const tdm_pipeline_t *pipe, const char *sub, const char *stage) {
    char path[TDM_PATH_MAX];
    struct stat sb;
    tdm_status st = tdm_path_join(path, sizeof path, pipe->root, sub, NULL);
    if (st != TDM_OK) return st;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return tdm_errorf(TDM_ERR_MODEL, "%s: component folder \"%s\" is missing (the %s stage needs it)",
                          pipe->root, sub, stage);
    return TDM_OK;
}

/* SDXL's force_upcast in an fp16 run: the VAE's device (and the main one,
 * where a split VAE runs) take float32 GEMM weights while the VAE loads and
 * decodes, as diffusers moves the VAE to float32. Returns the dtype to
 * restore with vae_upcast_end. */
static tdm_dtype vae_upcast_begin(tdm_pipeline_t *pipe, tdm_pipe_comp_t *c) {
    const tdm_dtype keep = pipe->dev.gemm_dtype;
    if (pipe->vae_upcast) c->dev->gemm_dtype = pipe->dev.gemm_dtype = TDM_F32;
    return keep;
}

static void vae_upcast_end(tdm_pipeline_t *pipe, tdm_pipe_comp_t *c, tdm_dtype keep) {
    if (pipe->vae_upcast) c->dev->gemm_dtype = pipe->dev.gemm_dtype = keep;
}

/* Loads component c (whole on c->dev, or split by c->map). */
static tdm_status comp_load(tdm_pipeline_t *pipe, tdm_pipe_comp_t *c) {
    char path[TDM_PATH_MAX];
    tdm_device_t *gpu[TDM_PIPE_MAX_VDEV];
    const char *var = pipe->variant[0] ? pipe->variant : NULL, *root = pipe->root;
    const tdm_placement_t pl = placement(pipe, &c->map, gpu);
    const tdm_placement_t *split = c->map.n ? &pl : NULL;
    tdm_status st = TDM_OK;
    switch (c->kind) {
    case TDM_KIND_CLIP_TOK:
    case TDM_KIND_T5_TOK:
        if ((st = tdm_path_join(path, sizeof path, root, c->name, NULL)) != TDM_OK) return st;
        return c->kind == TDM_KIND_CLIP_TOK ? tdm_clip_tok_load(&c->h.clip_tok, path)
                                            : tdm_t5_tok_load(&c->h.t5_tok, path);
    case TDM_KIND_CLIP_TEXT:
        return split ? tdm_clip_text_load_placed(&c->h.clip, root, c->name, var, split)
                     : tdm_clip_text_load(&c->h.clip, root, c->name, var, c->dev);
    case TDM_KIND_T5:
        return split ? tdm_t5_load_placed(&c->h.t5, root, c->name, var, split)
                     : tdm_t5_load(&c->h.t5, root, c->name, var, c->dev);
    case TDM_KIND_UNET:
        return split ? tdm_unet_load_placed(&c->h.unet, root, c->name, var, split)
                     : tdm_unet_load(&c->h.unet, root, c->name, var, c->dev);
    case TDM_KIND_FLUX:   /* pipe->tp: this rank's shard (attach_groups refuses tp with a map) */
        if (pipe->tp) return tdm_flux_load_tp(&c->h.flux, root, c->name, var, c->dev, pipe->tp);
        return split ? tdm_flux_load_placed(&c->h.flux, root, c->name, var, split)
                     : tdm_flux_load(&c->h.flux, root, c->name, var, c->dev);
    case TDM_KIND_VAE_DECODER: {   /* the decode path only: the encoder is never run (or planned) */
        const tdm_dtype keep = vae_upcast_begin(pipe, c);
        st = tdm_vae_load_decoder(&c->h.vae, root, c->name, var, split ? NULL : c->dev, split);
        vae_upcast_end(pipe, c, keep);
        return st;
    }
    }
    return st;
}

/* The components of `stage` agree with the configs read at open. */
static tdm_status check_loaded(const tdm_pipeline_t *pipe, int stage) {
    const tdm_pipe_comp_t *cp = pipe->comp;
    if (stage == TDM_STAGE_ENCODE && pipe->info.kind == TDM_PIPE_FLUX) {
        if (tdm_t5_d_model(cp[TDM_COMP_TEXT2].h.t5) != pipe->ctx_dim)
            return tdm_errorf(TDM_ERR_MODEL, "%s: text_encoder_2 d_model %lld does not match the "
                              "transformer's joint_attention_dim %lld", pipe->root,
                              (long long)tdm_t5_d_model(cp[TDM_COMP_TEXT2].h.t5), (long long)pipe->ctx_dim);
        if (tdm_clip_text_hidden_size(cp[TDM_COMP_TEXT].h.clip) != pipe->pooled_dim)
            return tdm_errorf(TDM_ERR_MODEL, "%s: text_encoder hidden_size %lld does not match the "
                              "transformer's pooled_projection_dim %lld", pipe->root,
                              (long long)tdm_clip_text_hidden_size(cp[TDM_COMP_TEXT].h.clip),
                              (long long)pipe->pooled_dim);
    } else if (stage == TDM_STAGE_ENCODE && pipe->info.sdxl) {
        /* the penultimate states of both encoders side by side are the context */
        const tdm_clip_text_t *t1 = cp[TDM_COMP_TEXT].h.clip, *t2 = cp[TDM_COMP_TEXT2].h.clip;
        const int64_t d1 = t1 ? tdm_clip_text_hidden_size(t1) : 0, d2 = tdm_clip_text_hidden_size(t2);
        if (d1 + d2 != pipe->ctx_dim)
            return tdm_errorf(TDM_ERR_MODEL, "%s: the text encoders' hidden sizes %lld + %lld do not "
                              "add up to the unet's cross_attention_dim %lld", pipe->root,
                              (long long)d1, (long long)d2, (long long)pipe->ctx_dim);
        if (tdm_clip_text_projection_dim(t2) != pipe->pooled_dim)
            return tdm_errorf(TDM_ERR_MODEL, "%s: text_encoder_2 is not a CLIPTextModelWithProjection "
                              "(its config's architectures); SDXL needs its pooled text_embeds",
                              pipe->root);
        if (tdm_clip_text_num_hidden_layers(t2) < 2 || (t1 && tdm_clip_text_num_hidden_layers(t1) < 2))
            return tdm_errorf(TDM_ERR_MODEL, "%s: SDXL takes the text encoders' penultimate layers; "
                              "an encoder has fewer than 2 layers", pipe->root);
    } else if (stage == TDM_STAGE_ENCODE) {
        if (tdm_clip_text_hidden_size(cp[TDM_COMP_TEXT].h.clip) != pipe->ctx_dim)
            return tdm_errorf(TDM_ERR_MODEL, "%s: text_encoder hidden_size %lld does not match the "
                              "unet's cross_attention_dim %lld", pipe->root,
                              (long long)tdm_clip_text_hidden_size(cp[TDM_COMP_TEXT].h.clip),
                              (long long)pipe->ctx_dim);
    } else if (stage == TDM_STAGE_DENOISE && pipe->info.kind == TDM_PIPE_SD) {
        const tdm_unet_info_t *ui = tdm_unet_info(cp[TDM_COMP_DEN].h.unet);
        if (ui->in_channels != pipe->info.latent_channels)
            return tdm_errorf(TDM_ERR_MODEL, "%s: unet in_channels %lld does not match vae "
                              "latent_channels %d", pipe->root, (long long)ui->in_channels,
                              pipe->info.latent_channels);
    }
    return TDM_OK;
}

tdm_status tdm_pipe_enter(tdm_pipeline_t *pipe, int stage) {
    static const char *const stage_name[] = {"encode", "denoise", "decode"};
    tdm_status st = TDM_OK;
    if (pipe->stage == stage) return TDM_OK;
    if (!pipe->keep_resident) free_components(pipe);
    /* a new stage's peak starts from what is left after the switch */
    if (pipe->dev.peak_bytes > pipe->total_peak) pipe->total_peak = pipe->dev.peak_bytes;
    pipe->dev.peak_bytes = pipe->dev.cur_bytes;
    for (int g = 1; g < pipe->nvdev; g++) {
        tdm_device_t *v = &pipe->vdev[g];
        if (v->peak_bytes > pipe->vtotal_peak[g]) pipe->vtotal_peak[g] = v->peak_bytes;
        v->peak_bytes = v->cur_bytes;
    }
    pipe->stage = TDM_STAGE_NONE;
    /* the stage's folders first: a missing one fails before anything loads */
    for (int i = 0; i < TDM_COMP_COUNT; i++)
        if (pipe->comp[i].name && pipe->comp[i].stage == stage)
            TDM_TRY(need_component(pipe, pipe->comp[i].name, stage_name[stage]));
    for (int i = 0; i < TDM_COMP_COUNT; i++) {
        tdm_pipe_comp_t *c = &pipe->comp[i];
        if (c->name && c->stage == stage && !c->h.any) TDM_TRY(comp_load(pipe, c));
    }
    TDM_TRY(check_loaded(pipe, stage));
    pipe->stage = stage;
    return TDM_OK;
fail:
    free_components(pipe);
    return st;
}

/* ---- embeddings ------------------------------------------------------------- */

void tdm_embeddings_free(tdm_embeddings_t *e) {
    if (!e) return;
    for (int i = 0; i < e->n; i++) {
        if (e->prompts) free(e->prompts[i]);
        if (e->prompts_2) free(e->prompts_2[i]);
    }
    free(e->prompts);
    free(e->prompts_2);
    free(e->negative);
    free(e->negative_2);
    free(e->pos);
    free(e->neg);
    free(e->pooled);
    free(e->neg_pooled);
    free(e->text_ids);
    free(e);
}

int tdm_embeddings_count(const tdm_embeddings_t *e) { return e ? e->n : 0; }

const char *tdm_embeddings_prompt(const tdm_embeddings_t *e, int i) {
    return (e && e->prompts && i >= 0 && i < e->n) ? e->prompts[i] : NULL;
}

tdm_status tdm_pipe_emb_alloc(tdm_embeddings_t **out, tdm_pipeline_kind kind, int n, int64_t L,
                              int64_t D, int64_t Dp, int with_neg) {
    *out = NULL;
    int64_t nld;
    if (n < 1 || L < 1 || D < 1 || !tdm_mul_ok((int64_t)n * L, D, &nld) || nld > ((int64_t)1 << 40))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "embeddings of %d x %lld x %lld: invalid size", n,
                          (long long)L, (long long)D);
    tdm_embeddings_t *e = calloc(1, sizeof *e);
    if (!e) return tdm_errorf(TDM_ERR_NOMEM, "out of memory");
    e->kind = kind;
    e->n = n;
    e->L = L;
    e->D = D;
    e->Dp = Dp;
    e->prompts = calloc((size_t)n, sizeof *e->prompts);
    e->pos = calloc((size_t)nld, sizeof *e->pos);
    int ok = e->prompts && e->pos;
    if (with_neg) ok = ok && (e->neg = calloc((size_t)nld, sizeof *e->neg));
    if (Dp > 0) {   /* FLUX, SDXL: pooled embeddings and second prompts */
        e->prompts_2 = calloc((size_t)n, sizeof *e->prompts_2);
        e->pooled = calloc((size_t)(n * Dp), sizeof *e->pooled);
        ok = ok && e->prompts_2 && e->pooled;
        if (with_neg) ok = ok && (e->neg_pooled = calloc((size_t)(n * Dp), sizeof *e->neg_pooled));
    }
    if (kind == TDM_PIPE_FLUX)
        ok = ok && (e->text_ids = calloc((size_t)(L * 3), sizeof *e->text_ids));
    if (!ok) {
        tdm_embeddings_free(e);
        return tdm_errorf(TDM_ERR_NOMEM, "out of memory for %d prompt embeddings", n);
    }
    *out = e;
    return TDM_OK;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

/* The embeddings of p made here with the text encoders (L: FLUX's T5
 * tokens). OUT: *out. */
static tdm_status encode_here(tdm_pipeline_t *pipe, const tdm_encode_params_t *p, int L,
                              tdm_embeddings_t **out) {
    tdm_status st;
    tdm_embeddings_t *e = NULL;
    TDM_TRY(tdm_pipe_enter(pipe, TDM_STAGE_ENCODE));
    if (pipe->info.kind == TDM_PIPE_FLUX) {
        TDM_TRY(tdm_pipe_emb_alloc(&e, TDM_PIPE_FLUX, p->n, L, pipe->ctx_dim, pipe->pooled_dim, 0));
        TDM_TRY(tdm_flux_encode(pipe, p, L, e));
    } else {
        /* SDXL without text_encoder: its second tokenizer's length */
        const tdm_clip_tok_t *tok = pipe->comp[TDM_COMP_TOK].h.clip_tok
                                        ? pipe->comp[TDM_COMP_TOK].h.clip_tok
                                        : pipe->comp[TDM_COMP_TOK2].h.clip_tok;
        L = tdm_clip_tok_max_length(tok);
        TDM_TRY(tdm_pipe_emb_alloc(&e, TDM_PIPE_SD, p->n, L, pipe->ctx_dim,
                                   pipe->info.sdxl ? pipe->pooled_dim : 0, p->with_negative));
        TDM_TRY(tdm_sd_encode(pipe, p, e));
    }
    tdm_pipe_stage_done(pipe, TDM_STAGE_ENCODE);
    *out = e;
    return TDM_OK;
fail:
    tdm_embeddings_free(e);
    return st;
}

/* Collective over the image group (pipe->image_comm): its rank 0 encodes
 * (the text encoders load there only) and broadcasts the embeddings, so
 * every rank of the image holds the same bytes. A failure on any rank fails
 * the call on all of them. OUT: *out. */
static tdm_status encode_shared(tdm_pipeline_t *pipe, const tdm_encode_params_t *p, int L,
                                tdm_embeddings_t **out) {
    tdm_comm_t *c = pipe->image_comm;
    const int root = tdm_comm_rank(c) == 0, flux = pipe->info.kind == TDM_PIPE_FLUX;
    tdm_embeddings_t *e = NULL;
    tdm_status st = root ? encode_here(pipe, p, L, &e) : TDM_OK;
    /* rank 0's outcome and token count, then whether every rank could
     * allocate its copy */
    int64_t head[2] = {st != TDM_OK, e ? e->L : 0}, bad = 0;
    TDM_TRY(tdm_comm_broadcast(c, head, 2, TDM_I64, 0, NULL));
    if (head[0]) {
        if (root) return st;
        return tdm_errorf(TDM_ERR_INTERNAL, "rank %d: the first rank of this image failed to encode "
                          "the prompts", c->world_rank);
    }
    if (!root) {
        st = tdm_pipe_emb_alloc(&e, pipe->info.kind, p->n, head[1], pipe->ctx_dim,
                                flux || pipe->info.sdxl ? pipe->pooled_dim : 0,
                                !flux && p->with_negative);
        bad = st != TDM_OK;
    }
    TDM_TRY(tdm_comm_allreduce(c, &bad, &bad, 1, TDM_I64, TDM_REDUCE_MAX, NULL));
    if (bad) {
        if (st == TDM_OK)
            st = tdm_errorf(TDM_ERR_NOMEM, "rank %d: another rank of this image could not allocate "
                            "the prompt embeddings", c->world_rank);
        goto fail;
    }
    const int64_t row = e->n * e->L * e->D;
    TDM_TRY(tdm_comm_broadcast(c, e->pos, row, TDM_F32, 0, NULL));
    if (e->neg) TDM_TRY(tdm_comm_broadcast(c, e->neg, row, TDM_F32, 0, NULL));
    if (e->pooled) TDM_TRY(tdm_comm_broadcast(c, e->pooled, e->n * e->Dp, TDM_F32, 0, NULL));
    if (e->neg_pooled) TDM_TRY(tdm_comm_broadcast(c, e->neg_pooled, e->n * e->Dp, TDM_F32, 0, NULL));
    if (e->text_ids) TDM_TRY(tdm_comm_broadcast(c, e->text_ids, e->L * 3, TDM_F32, 0, NULL));
    if (root)
        tdm_log(TDM_LOG_INFO, "encode: rank %d encoded %d prompt(s) for the %d ranks of its image",
                c->world_rank, p->n, tdm_comm_size(c));
    *out = e;
    return TDM_OK;
fail:
    tdm_embeddings_free(e);
    return st;
}

tdm_status tdm_pipeline_encode(tdm_pipeline_t *pipe, const tdm_encode_params_t *p,
                               tdm_embeddings_t **out) {
    tdm_status st;
    tdm_embeddings_t *e = NULL;
    *out = NULL;
    if (!p || p->n < 1 || !p->prompts) return tdm_errorf(TDM_ERR_INVALID_ARG, "--prompt: no prompts to encode");
    const int flux = pipe->info.kind == TDM_PIPE_FLUX;
    int L = 0;
    if (flux) {
        L = p->max_sequence_length > 0 ? p->max_sequence_length : pipe->info.default_max_sequence_length;
        if (L > 512)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--max-sequence-length %d: must be at most 512", L);
        if (p->negative_prompt && *p->negative_prompt)
            return tdm_errorf(TDM_ERR_UNSUPPORTED, "--negative-prompt: FluxPipeline uses no negative prompt "
                              "(true CFG is not supported)");
    } else if (!pipe->info.sdxl && p->prompts_2) {
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--prompt-2: only FLUX and SDXL pipelines take a second "
                          "prompt");
    }
    if (p->clip_skip < 0 || (flux && p->clip_skip > 0))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--clip-skip %d: %s", p->clip_skip,
                          flux ? "FluxPipeline takes no clip_skip" : "must not be negative");
    if (!pipe->info.sdxl && p->negative_prompt_2)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--negative-prompt-2: only SDXL pipelines take a second "
                          "negative prompt");
    TDM_TRY(pipe->image_comm ? encode_shared(pipe, p, L, &e) : encode_here(pipe, p, L, &e));
    /* the negative prompts as encoded; SDXL keeps "none given" (zeros with
     * force_zeros_for_empty_prompt) apart from "" */
    if (!flux && p->with_negative &&
        ((pipe->info.sdxl ? (p->negative_prompt && !(e->negative = strdup(p->negative_prompt)))
                          : !(e->negative = strdup(p->negative_prompt ? p->negative_prompt : ""))) ||
         (p->negative_prompt_2 && !(e->negative_2 = strdup(p->negative_prompt_2))))) {
        st = tdm_errorf(TDM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < p->n; i++) {
        e->prompts[i] = dup_or_null(p->prompts[i]);
        if (e->prompts_2) e->prompts_2[i] = dup_or_null(p->prompts_2 ? p->prompts_2[i] : p->prompts[i]);
    }
    *out = e;
    return TDM_OK;
fail:
    tdm_embeddings_free(e);
    return st;
}

static char *json_strings(char *const *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(v[i] ? v[i] : ""));
    char *s = a ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    return s;
}

tdm_status tdm_embeddings_save(const tdm_embeddings_t *e, const char *path, int nmeta,
                               const char *const *meta_kv) {
    const char *names[5];
    int nd[5];
    int64_t s0[3] = {e->n, e->L, e->D}, s1[3] = {e->n, e->L, e->D}, s2[2] = {e->n, e->Dp},
            s3[2] = {e->L, 3};
    const int64_t *shapes[5];
    const float *data[5];
    int n = 0;
    names[n] = "prompt_embeds"; nd[n] = 3; shapes[n] = s0; data[n++] = e->pos;
    if (e->neg) { names[n] = "negative_prompt_embeds"; nd[n] = 3; shapes[n] = s1; data[n++] = e->neg; }
    if (e->pooled) { names[n] = "pooled_prompt_embeds"; nd[n] = 2; shapes[n] = s2; data[n++] = e->pooled; }
    if (e->neg_pooled) {
        names[n] = "negative_pooled_prompt_embeds"; nd[n] = 2; shapes[n] = s2; data[n++] = e->neg_pooled;
    }
    if (e->text_ids) { names[n] = "text_ids"; nd[n] = 2; shapes[n] = s3; data[n++] = e->text_ids; }
    char *prompts = json_strings(e->prompts, e->n);
    char *prompts2 = e->prompts_2 ? json_strings(e->prompts_2, e->n) : NULL;
    char lbuf[32];
    snprintf(lbuf, sizeof lbuf, "%lld", (long long)e->L);
    int m = 0;
    const char **kv = calloc((size_t)(2 * nmeta + 12), sizeof *kv);   /* the 6 pairs below */
    tdm_status st;
    if (!prompts || (e->prompts_2 && !prompts2) || !kv) {
        st = tdm_errorf(TDM_ERR_NOMEM, "out of memory");
        goto done;
    }
    kv[m++] = "format"; kv[m++] = "tandem-embeddings";
    kv[m++] = "prompts"; kv[m++] = prompts;
    if (prompts2) { kv[m++] = "prompts_2"; kv[m++] = prompts2; }
    if (e->negative) { kv[m++] = "negative_prompt"; kv[m++] = e->negative; }
    if (e->negative_2) { kv[m++] = "negative_prompt_2"; kv[m++] = e->negative_2; }
    kv[m++] = "max_sequence_length"; kv[m++] = lbuf;
    for (int i = 0; i < 2 * nmeta; i++) kv[m++] = meta_kv[i];
    st = tdm_safetensors_write_f32(path, n, names, nd, shapes, data, m / 2, kv);
done:
    free(kv);
    cJSON_free(prompts);
    cJSON_free(prompts2);
    return st;
}

/* Reads a JSON string array from metadata into out[0..n) (missing → NULLs). */
/* In the JSON text s of an array of strings: the index of the first string
 * holding the escape \u0000 (a NUL, which ends the decoded string early),
 * or -1. */
static int json_nul_string(const char *s) {
    int idx = -1, in = 0;
    for (const char *p = s; *p; p++) {
        if (!in) {
            if (*p == '"') { in = 1; idx++; }
        } else if (*p == '\\') {
            if (!strncmp(p + 1, "u0000", 5)) return idx;
            if (p[1]) p++;   /* the escaped character */
        } else if (*p == '"') {
            in = 0;
        }
    }
    return -1;
}

/* Metadata `key` of embeddings file `path`: when present, a JSON array of n
 * strings (the prompts, in order), each valid UTF-8 without NUL, copied to
 * out[0..n); absent: out untouched (prompts unknown). Anything else is an
 * error naming the file, the key and, for a bad string, its index. */
static tdm_status meta_strings(const tdm_safetensors_t *f, const char *path, const char *key,
                               char **out, int n) {
    tdm_status st = TDM_OK;
    const char *s = tdm_safetensors_meta(f, key);
    size_t bad;
    if (!s) return TDM_OK;
    cJSON *a = cJSON_Parse(s);
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n) {
        st = tdm_errorf(TDM_ERR_FORMAT, "%s: metadata \"%s\" is not a JSON array of %d strings "
                        "(one per prompt, valid UTF-8)", path, key, n);
        goto fail;
    }
    const int nul = json_nul_string(s);
    if (nul >= 0) {
        st = tdm_errorf(TDM_ERR_FORMAT, "%s: metadata \"%s\" prompt %d holds a NUL character (\\u0000)",
                        path, key, nul);
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsString(v)) {
            st = tdm_errorf(TDM_ERR_FORMAT, "%s: metadata \"%s\" prompt %d is not a string", path,
                            key, i);
            goto fail;
        }
        if (!tdm_utf8_valid(v->valuestring, &bad)) {
            st = tdm_errorf(TDM_ERR_FORMAT, "%s: metadata \"%s\" prompt %d is not valid UTF-8 (byte "
                            "%zu)", path, key, i, bad);
            goto fail;
        }
        if (!(out[i] = strdup(v->valuestring))) { st = tdm_errorf(TDM_ERR_NOMEM, "out of memory"); goto fail; }
    }
fail:
    cJSON_Delete(a);
    return st;
}

static tdm_status read_tensor(const tdm_safetensors_t *f, const char *path, const char *name, int ndim,
                              const int64_t *shape, float *dst) {
    const tdm_st_tensor_t *t = tdm_safetensors_find(f, name);
    if (!t) return tdm_errorf(TDM_ERR_MODEL, "%s: missing tensor \"%s\"", path, name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same)
        return tdm_errorf(TDM_ERR_MODEL, "%s: tensor \"%s\" has %d dims [%lld, ...], expected [%lld, %lld%s",
                          path, name, t->ndim, t->ndim ? (long long)t->shape[0] : 0LL, (long long)shape[0],
                          (long long)shape[1], ndim == 3 ? ", ...]" : "]");
    return tdm_convert_to_f32(dst, t->data, t->dtype, t->nbytes / (int64_t)tdm_dtype_size(t->dtype));
}

tdm_status tdm_embeddings_load(tdm_pipeline_t *pipe, const char *path, tdm_embeddings_t **out) {
    tdm_safetensors_t *f = NULL;
    tdm_embeddings_t *e = NULL;
    tdm_status st;
    *out = NULL;
    const int flux = pipe->info.kind == TDM_PIPE_FLUX;
    TDM_TRY(tdm_safetensors_open(&f, path));
    const int xl = pipe->info.sdxl;
    {   /* made for this pipeline class? tandem encode names it; diffusers tensors tell by
         * pooled_prompt_embeds (FLUX and SDXL) and text_ids (FLUX) */
        const char *made = tdm_safetensors_meta(f, "pipeline");
        const int pooled = tdm_safetensors_find(f, "pooled_prompt_embeds") != NULL;
        const int ids = tdm_safetensors_find(f, "text_ids") != NULL;
        if (made && strcmp(made, pipe->class_name) != 0) {
            st = tdm_errorf(TDM_ERR_INVALID_ARG, "%s: embeddings were made for %.100s, this model is %s", path,
                            made, pipe->class_name);
            goto fail;
        }
        if (!made && (pooled != (flux || xl) || ids != flux)) {
            const char *cls = ids ? "FluxPipeline" : pooled ? "StableDiffusionXLPipeline"
                                                            : "StableDiffusionPipeline";
            st = tdm_errorf(TDM_ERR_INVALID_ARG, "%s: embeddings %s pooled_prompt_embeds%s, so were made "
                            "for %s; this model is %s", path, pooled ? "have" : "lack",
                            ids ? " and text_ids" : "", cls, pipe->class_name);
            goto fail;
        }
    }
    const tdm_st_tensor_t *pe = tdm_safetensors_find(f, "prompt_embeds");
    if (!pe) { st = tdm_errorf(TDM_ERR_MODEL, "%s: missing tensor \"prompt_embeds\"", path); goto fail; }
    if (pe->ndim != 3 || pe->shape[0] < 1 || pe->shape[1] < 1 || pe->shape[0] > 1000000) {
        st = tdm_errorf(TDM_ERR_MODEL, "%s: prompt_embeds must be [prompts, tokens, width]", path);
        goto fail;
    }
    if (pe->shape[2] != pipe->ctx_dim) {
        st = tdm_errorf(TDM_ERR_MODEL, "%s: prompt_embeds width %lld does not fit the %s (%s %lld)", path,
                        (long long)pe->shape[2], flux ? "transformer" : "unet",
                        flux ? "joint_attention_dim" : "cross_attention_dim", (long long)pipe->ctx_dim);
        goto fail;
    }
    if (flux && pe->shape[1] > 512) {
        st = tdm_errorf(TDM_ERR_MODEL, "%s: prompt_embeds has %lld tokens, FLUX takes at most 512", path,
                        (long long)pe->shape[1]);
        goto fail;
    }
    int n = (int)pe->shape[0];
    int64_t L = pe->shape[1];
    int has_neg = !flux && tdm_safetensors_find(f, "negative_prompt_embeds") != NULL;
    TDM_TRY(tdm_pipe_emb_alloc(&e, pipe->info.kind, n, L, pipe->ctx_dim,
                               flux || xl ? pipe->pooled_dim : 0, has_neg));
    int64_t s3[3] = {n, L, pipe->ctx_dim};
    TDM_TRY(read_tensor(f, path, "prompt_embeds", 3, s3, e->pos));
    if (has_neg) TDM_TRY(read_tensor(f, path, "negative_prompt_embeds", 3, s3, e->neg));
    if (flux || xl) {
        int64_t sp[2] = {n, pipe->pooled_dim}, si[2] = {L, 3};
        TDM_TRY(read_tensor(f, path, "pooled_prompt_embeds", 2, sp, e->pooled));
        if (e->neg_pooled)
            TDM_TRY(read_tensor(f, path, "negative_pooled_prompt_embeds", 2, sp, e->neg_pooled));
        if (flux) TDM_TRY(read_tensor(f, path, "text_ids", 2, si, e->text_ids));
        TDM_TRY(meta_strings(f, path, "prompts_2", e->prompts_2, n));
    }
    TDM_TRY(meta_strings(f, path, "prompts", e->prompts, n));
    const char *neg = tdm_safetensors_meta(f, "negative_prompt");
    const char *neg2 = tdm_safetensors_meta(f, "negative_prompt_2");
    if ((neg && !(e->negative = strdup(neg))) || (neg2 && !(e->negative_2 = strdup(neg2)))) {
        st = tdm_errorf(TDM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    tdm_safetensors_close(f);
    *out = e;
    return TDM_OK;
fail:
    tdm_embeddings_free(e);
    tdm_safetensors_close(f);
    return st;
}

/* ---- denoise / decode / one-shot ------------------------------------------- */

tdm_status tdm_pipeline_latent_shape(const tdm_pipeline_t *pipe, int width, int height,
                                     int64_t shape[4], int *ndim) {
    const tdm_pipeline_info_t *in = &pipe->info;
    const int f = in->vae_scale_factor, m = in->size_multiple > f ? in->size_multiple : f;
    if (width <= 0 || height <= 0 || width % m || height % m)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--width %d / --height %d: must be positive multiples of %d",
                          width, height, m);
    const int64_t h = height / f, w = width / f, C = in->latent_channels;
    if (in->kind == TDM_PIPE_FLUX) {
        shape[0] = 1;
        shape[1] = (h / 2) * (w / 2);
        shape[2] = 4 * C;
        shape[3] = 0;
        *ndim = 3;
    } else {
        shape[0] = 1;
        shape[1] = C;
        shape[2] = h;
        shape[3] = w;
        *ndim = 4;
    }
    return TDM_OK;
}

/* Resolves 0 width/height to the defaults and checks them. */
static tdm_status resolve_size(const tdm_pipeline_t *pipe, const tdm_generate_params_t *p, int *w, int *h) {
    int64_t shape[4];
    int nd;
    *w = p->width > 0 ? p->width : pipe->info.default_width;
    *h = p->height > 0 ? p->height : pipe->info.default_height;
    tdm_status st = tdm_pipeline_latent_shape(pipe, *w, *h, shape, &nd);
    if (st != TDM_OK && (p->width <= 0 || p->height <= 0)) {   /* a default is at fault: name its source */
        const int f = pipe->info.vae_scale_factor, m = pipe->info.size_multiple > f ? pipe->info.size_multiple : f;
        return tdm_errorf(TDM_ERR_MODEL, "the default size %dx%d (%s x the VAE's scale factor %d) is not a "
                          "positive multiple of %d; pass --width and --height", *w, *h, pipe->size_src, f, m);
    }
    return st;
}

/* ---- working memory ---------------------------------------------------------- */

static int64_t sat_add(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }

static int64_t sat_mul(int64_t a, int64_t b) {
    int64_t r;
    return tdm_mul_ok(a, b, &r) ? r : INT64_MAX;
}

/* Working memory of one image of w x h at `stage` on its device, T prompt
 * tokens, CFG batch nb (SD): the model's forward (tdm_unet_work_bytes,
 * tdm_flux_work_bytes, tdm_vae_decode_work_bytes) plus the stage's own
 * buffers as tdm_sd_denoise / tdm_flux_denoise / tdm_pipeline_decode
 * allocate them (on a host device also their host copies and the caller's
 * latents or image). */
static tdm_status work_bytes(tdm_pipeline_t *pipe, tdm_stage stage, int w, int h, int nb,
                             int64_t T, tdm_device_t **devp, int64_t *out) {
    tdm_status st;
    char cfg[TDM_PATH_MAX];
    const tdm_pipeline_info_t *in = &pipe->info;
    const int64_t f = in->vae_scale_factor, C = in->latent_channels, hl = h / f, wl = w / f;
    const int64_t item = C * hl * wl;   /* latent floats, bounded by the size checks */
    tdm_device_t *dev = stage == TDM_STAGE_DECODE ? pipe->comp[TDM_COMP_VAE].dev : pipe->comp[TDM_COMP_DEN].dev;
    const int host = tdm_dev_is_host(dev);
    int64_t model = 0, own = 0, hostside = 0;
    *devp = dev;
    *out = 0;
    if (stage == TDM_STAGE_DECODE) {
        TDM_TRY(tdm_path_join(cfg, sizeof cfg, pipe->root, "vae", "config.json"));
        TDM_TRY(tdm_vae_decode_work_bytes_cp(cfg, dev, 1, hl, wl,
                                             pipe->vae_group ? pipe->vae_group->size : 1, &model));
        const int64_t ib = sat_mul(3 * (int64_t)w, 4 * (int64_t)h);   /* RGB float32 */
        own = sat_add(item * 4, ib);                                  /* dz, dimg */
        hostside = sat_add(sat_add(item * 4, ib), sat_mul(3 * (int64_t)w, h));   /* z, img, rgb */
    } else if (in->kind == TDM_PIPE_FLUX) {
        const int64_t N = (hl / 2) * (wl / 2);
        TDM_TRY(tdm_path_join(cfg, sizeof cfg, pipe->root, "transformer", "config.json"));
        if (pipe->tp)
            TDM_TRY(tdm_flux_work_bytes_tp(cfg, dev, 1, N, T, pipe->cp.ulysses ? pipe->cp.ulysses->size : 1,
                                           pipe->tp->size, &model));
        else
            TDM_TRY(tdm_flux_work_bytes_cp(cfg, dev, 1, N, T,
                                           pipe->cp.ulysses ? pipe->cp.ulysses->size : 1,
                                           pipe->cp.ring ? pipe->cp.ring->size : 1, &model));
        own = sat_add(2 * item * 4, (T * pipe->ctx_dim + pipe->pooled_dim) * 4);   /* lat, pred, txt, pool */
        hostside = sat_add(4 * item * 4, N * 3 * 4);   /* noise, pred, latents, ids */
    } else {
        TDM_TRY(tdm_path_join(cfg, sizeof cfg, pipe->root, "unet", "config.json"));
        TDM_TRY(tdm_unet_work_bytes(cfg, dev, nb, hl, wl, T, &model));
        own = sat_add(2 * nb * item * 4, nb * T * pipe->ctx_dim * 4);   /* in, pred, ctx */
        hostside = (2 * nb + 1) * item * 4;                              /* in, pred, latents */
    }
    *out = sat_add(model, own);
    if (host) *out = sat_add(*out, hostside);
fail:
    return st;
}

/* Prompt tokens the denoiser sees when the embeddings are not known yet. */
static int64_t default_tokens(const tdm_pipeline_t *pipe) {
    return pipe->info.default_max_sequence_length > 0 ? pipe->info.default_max_sequence_length : 77;
}

tdm_status tdm_pipeline_work_bytes(tdm_pipeline_t *pipe, tdm_stage stage,
                                   const tdm_generate_params_t *p, int tokens, int64_t *bytes) {
    tdm_status st;
    tdm_device_t *dev;
    int w, h;
    if (!pipe || !p || !bytes || (stage != TDM_STAGE_DENOISE && stage != TDM_STAGE_DECODE))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_pipeline_work_bytes: pipeline, params and the "
                          "denoise or decode stage are required");
    if ((st = resolve_size(pipe, p, &w, &h)) != TDM_OK) return st;
    const float g = isnan(p->guidance) ? pipe->info.default_guidance : p->guidance;
    /* with cfg = 2 each rank runs one half of the guidance batch */
    const int nb = pipe->info.kind == TDM_PIPE_SD && g > 1.0f && !pipe->cfg_comm ? 2 : 1;
    return work_bytes(pipe, stage, w, h, nb, tokens > 0 ? tokens : default_tokens(pipe), &dev,
                      bytes);
}

/* The device as the user names it. */
static void dev_name(const tdm_device_t *d, char *buf, size_t cap) {
    if (!tdm_dev_is_host(d)) snprintf(buf, cap, "cuda:%d", d->index);
    else if (d->cap_bytes > 0) snprintf(buf, cap, "cpu:%d (under its --max-memory cap)", d->index);
    else snprintf(buf, cap, "cpu");
}

/* Refuses `stage` of one w x h image when its working memory exceeds what
 * its device has available now (tdm_op_mem_available; unknown: no check).
 * The rule has no margin: an estimate above the available memory is refused,
 * anything at or below it runs. */
static tdm_status check_stage(tdm_pipeline_t *pipe, tdm_stage stage, const tdm_generate_params_t *p,
                              int w, int h, int64_t T) {
    tdm_status st;
    tdm_device_t *dev;
    int64_t need, have;
    const float g = isnan(p->guidance) ? pipe->info.default_guidance : p->guidance;
    /* with cfg = 2 each rank runs one half of the guidance batch */
    const int nb = pipe->info.kind == TDM_PIPE_SD && g > 1.0f && !pipe->cfg_comm ? 2 : 1;
    if ((st = work_bytes(pipe, stage, w, h, nb, T, &dev, &need)) != TDM_OK) return st;
    if ((have = tdm_op_mem_available(dev)) < 0 || need <= have) return TDM_OK;
    char size[1300], dn[64];
    const int f = pipe->info.vae_scale_factor;
    if (p->width > 0 && p->height > 0)
        snprintf(size, sizeof size, "--width %d --height %d", w, h);
    else if (p->width > 0 || p->height > 0)
        snprintf(size, sizeof size, "--%s %d with the default %s %d (%s x the VAE's scale factor %d)",
                 p->width > 0 ? "width" : "height", p->width > 0 ? w : h,
                 p->width > 0 ? "height" : "width", p->width > 0 ? h : w, pipe->size_src, f);
    else
        snprintf(size, sizeof size, "the default size %dx%d (%s x the VAE's scale factor %d)", w, h,
                 pipe->size_src, f);
    dev_name(dev, dn, sizeof dn);
    const char *who = stage == TDM_STAGE_DECODE ? "the VAE decoder"
                    : pipe->info.kind == TDM_PIPE_FLUX ? "the transformer" : "the UNet";
    if (need == INT64_MAX)
        return tdm_errorf(TDM_ERR_NOMEM, "%s: %s needs more working memory for this image than "
                          "can be counted (%s has %.1f GiB available); use a smaller size", size,
                          who, dn, (double)have / (1 << 30));
    return tdm_errorf(TDM_ERR_NOMEM, "%s: %s needs %.1f GiB of working memory for this image (%s "
                      "has %.1f GiB available); use a smaller size", size, who,
                      (double)need / (1 << 30), dn, (double)have / (1 << 30));
}

tdm_status tdm_pipeline_check_memory(tdm_pipeline_t *pipe, const tdm_generate_params_t *p,
                                     int tokens, int decode) {
    tdm_status st;
    int w, h;
    if (!pipe || !p) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_pipeline_check_memory: NULL argument");
    if ((st = resolve_size(pipe, p, &w, &h)) != TDM_OK) return st;
    const int64_t T = tokens > 0 ? tokens : default_tokens(pipe);
    if ((st = check_stage(pipe, TDM_STAGE_DENOISE, p, w, h, T)) != TDM_OK) return st;
    return decode ? check_stage(pipe, TDM_STAGE_DECODE, p, w, h, T) : TDM_OK;
}

tdm_status tdm_pipeline_denoise(tdm_pipeline_t *pipe, const tdm_embeddings_t *emb, int index,
                                const tdm_generate_params_t *p, float *latents) {
    tdm_status st;
    int w, h;
    if (!emb || index < 0 || index >= emb->n)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "prompt index %d outside the %d embeddings", index,
                          emb ? emb->n : 0);
    if (emb->kind != pipe->info.kind)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "embeddings were made for another pipeline family");
    if (p->steps < 0) return tdm_errorf(TDM_ERR_INVALID_ARG, "--steps %d: must be at least 1", p->steps);
    if (!(p->guidance_rescale >= 0.0f && p->guidance_rescale <= 1.0f))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--guidance-rescale %g: must be in [0, 1]",
                          p->guidance_rescale);
    if (p->guidance_rescale > 0.0f && pipe->info.kind != TDM_PIPE_SD)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--guidance-rescale: %s has no classifier-free guidance "
                          "to rescale", pipe->class_name);
    if (!pipe->info.sdxl && (p->original_width || p->original_height || p->target_width ||
                             p->target_height || p->crop_top || p->crop_left))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--original-size / --target-size / "
                          "--crops-coords-top-left: only SDXL pipelines take micro-conditioning (this "
                          "is %s)", pipe->class_name);
    if (p->original_width < 0 || p->original_height < 0 || p->target_width < 0 ||
        p->target_height < 0 || p->crop_top < 0 || p->crop_left < 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--original-size / --target-size / "
                          "--crops-coords-top-left: sizes and offsets must not be negative");
    if ((st = resolve_size(pipe, p, &w, &h)) != TDM_OK) return st;
    if ((st = tdm_pipe_enter(pipe, TDM_STAGE_DENOISE)) != TDM_OK) return st;
    /* the weights are resident now: what is left must hold the working set */
    if ((st = check_stage(pipe, TDM_STAGE_DENOISE, p, w, h, emb->L)) != TDM_OK) return st;
    st = pipe->info.kind == TDM_PIPE_FLUX ? tdm_flux_denoise(pipe, emb, index, p, w, h, latents)
                                          : tdm_sd_denoise(pipe, emb, index, p, w, h, latents);
    tdm_pipe_stage_done(pipe, TDM_STAGE_DENOISE);
    return st;
}

/* parallel_vae: the image's first rank's latents (item floats) into `own`
 * on every rank of the image group (collective). A failure to allocate on
 * any rank fails the call on all of them. OUT: *own (malloc'd). */
static tdm_status share_latents(tdm_pipeline_t *pipe, const float *latents, int64_t item,
                                float **own) {
    tdm_status st = TDM_OK;
    tdm_comm_t *c = pipe->image_comm;
    const int root = tdm_comm_rank(c) == 0;
    int64_t bad;
    *own = malloc((size_t)item * sizeof(float));
    bad = !*own || (root && !latents);
    TDM_TRY(tdm_comm_allreduce(c, &bad, &bad, 1, TDM_I64, TDM_REDUCE_MAX, NULL));
    if (bad) {
        st = tdm_errorf(TDM_ERR_NOMEM, "rank %d: --parallel-vae: a rank of this image could not "
                        "allocate the latents (or the first rank has none)", c->world_rank);
        goto fail;
    }
    if (root) memcpy(*own, latents, (size_t)item * sizeof(float));
    TDM_TRY(tdm_comm_broadcast(c, *own, item, TDM_F32, 0, NULL));
    return TDM_OK;
fail:
    free(*own);
    *own = NULL;
    return st;
}

tdm_status tdm_pipeline_decode(tdm_pipeline_t *pipe, const float *latents, int width, int height,
                               uint8_t *rgb) {
    tdm_status st;
    int64_t shape[4];
    int nd;
    float *z = NULL, *img = NULL, *dz = NULL, *dimg = NULL, *shared = NULL;
    int64_t zb = 0, ib = 0;
    TDM_TRY(tdm_pipeline_latent_shape(pipe, width, height, shape, &nd));
    TDM_TRY(tdm_pipe_enter(pipe, TDM_STAGE_DECODE));
    const tdm_vae_info_t *vi = tdm_vae_info(pipe->comp[TDM_COMP_VAE].h.vae);
    const int64_t f = pipe->info.vae_scale_factor, C = pipe->info.latent_channels;
    const int64_t h = height / f, w = width / f, item = C * h * w;
    if (pipe->vae_group) {
        TDM_TRY(share_latents(pipe, latents, item, &shared));
        latents = shared;
    }
    zb = item * 4;
    ib = vi->out_channels * (int64_t)height * width * 4;
    z = malloc((size_t)zb);
    img = malloc((size_t)ib);
    dz = tdm_dev_alloc(pipe->comp[TDM_COMP_VAE].dev, zb, "vae input");
    dimg = tdm_dev_alloc(pipe->comp[TDM_COMP_VAE].dev, ib, "decoded image");
    if (!z || !img || !dz || !dimg) { st = z && img ? TDM_ERR_NOMEM : tdm_errorf(TDM_ERR_NOMEM, "out of memory"); goto fail; }
    if (pipe->info.kind == TDM_PIPE_FLUX) tdm_flux_unpack(latents, C, h, w, z);
    else memcpy(z, latents, (size_t)zb);
    /* latents / scaling_factor + shift_factor, in float32 as torch; SDXL with
     * latents_mean / latents_std: latents · std / scaling_factor + mean */
    const float sf = (float)vi->scaling_factor, sh = (float)vi->shift_factor;
    if (pipe->vae_stats) {
        for (int64_t k = 0; k < item; k++) {
            const int64_t c = k / (h * w);
            z[k] = z[k] * pipe->vae_std[c] / sf + pipe->vae_mean[c];
        }
    } else {
        for (int64_t k = 0; k < item; k++) z[k] = z[k] / sf + sh;
    }
    TDM_TRY(tdm_dev_upload(pipe->comp[TDM_COMP_VAE].dev, dz, z, zb, "vae input"));
    {
        const tdm_dtype keep = vae_upcast_begin(pipe, &pipe->comp[TDM_COMP_VAE]);
        st = tdm_vae_decode_cp(pipe->comp[TDM_COMP_VAE].h.vae, pipe->vae_group, dz, 1, h, w, dimg);
        vae_upcast_end(pipe, &pipe->comp[TDM_COMP_VAE], keep);
        if (st != TDM_OK) goto fail;
    }
    if (pipe->vae_group)
        tdm_log(TDM_LOG_INFO, "decode: rank %d decoded its band of the image with the %d ranks of "
                "its image", pipe->image_comm->world_rank, pipe->vae_group->size);
    TDM_TRY(tdm_dev_download(pipe->comp[TDM_COMP_VAE].dev, img, dimg, ib, "decoded image"));
    tdm_vae_to_rgb8(img, 1, height, width, rgb);
    tdm_pipe_stage_done(pipe, TDM_STAGE_DECODE);
fail:
    tdm_dev_free(pipe->comp[TDM_COMP_VAE].dev, dimg, ib);
    tdm_dev_free(pipe->comp[TDM_COMP_VAE].dev, dz, zb);
    free(img);
    free(z);
    free(shared);
    return st;
}

tdm_status tdm_pipeline_generate(tdm_pipeline_t *pipe, const char *prompt, const char *negative,
                                 const tdm_generate_params_t *p, float *latents, uint8_t *rgb) {
    tdm_status st;
    tdm_embeddings_t *emb = NULL;
    float *lat = latents;
    int64_t shape[4] = {0, 0, 0, 0};
    int nd = 0, w, h;
    TDM_TRY(resolve_size(pipe, p, &w, &h));
    TDM_TRY(tdm_pipeline_latent_shape(pipe, w, h, shape, &nd));
    const float g = isnan(p->guidance) ? pipe->info.default_guidance : p->guidance;
    tdm_encode_params_t ep;
    tdm_encode_params_init(&ep);
    ep.prompts = &prompt;
    ep.n = 1;
    ep.negative_prompt = negative;
    ep.with_negative = pipe->info.kind == TDM_PIPE_SD && g > 1.0f;
    TDM_TRY(tdm_pipeline_encode(pipe, &ep, &emb));
    if (!lat) {
        lat = malloc((size_t)(shape[0] * shape[1] * shape[2] * (nd == 4 ? shape[3] : 1)) * sizeof *lat + 1);
        if (!lat) { st = tdm_errorf(TDM_ERR_NOMEM, "out of memory"); goto fail; }
    }
    TDM_TRY(tdm_pipeline_denoise(pipe, emb, 0, p, lat));
    if (rgb) TDM_TRY(tdm_pipeline_decode(pipe, lat, w, h, rgb));
fail:
    if (lat != latents) free(lat);
    tdm_embeddings_free(emb);
    return st;
}

int tdm_cuda_devices(void) { return tdm_backend_device_count("cuda"); }
