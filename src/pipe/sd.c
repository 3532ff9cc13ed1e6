/* sd.c — the Stable Diffusion 1.x/2.x text-to-image pipeline over loaded
 * components: tokenize → CLIP text encoder → scheduler loop over the UNet
 * with classifier-free guidance → VAE decode → 8-bit RGB, reproducing
 * diffusers' StableDiffusionPipeline.__call__ step for step.
 * One image per call (batch 1, CFG batch 2), so an image never depends on
 * which other images a process makes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "core/rng.h"
#include "io/config.h"
#include "io/folder.h"
#include "models/clip_text.h"
#include "models/unet2d.h"
#include "models/vae.h"
#include "sched/sched.h"
#include "text/clip_tokenizer.h"

struct tdm_pipeline {
    char              root[TDM_PATH_MAX];
    char              class_name[128];
    tdm_device_t      dev;
    tdm_clip_tok_t   *tok;
    tdm_clip_text_t  *text;
    tdm_unet_t       *unet;
    tdm_vae_t        *vae;
    tdm_sched_t      *sched;
};

void tdm_pipeline_params_init(tdm_pipeline_params_t *p) {
    memset(p, 0, sizeof *p);
    p->device = "cpu";
}

void tdm_generate_params_init(tdm_generate_params_t *p) {
    memset(p, 0, sizeof *p);
    p->guidance = NAN;
}

void tdm_pipeline_close(tdm_pipeline_t *pipe) {
    if (!pipe) return;
    tdm_clip_tok_free(pipe->tok);
    tdm_clip_text_free(pipe->text);
    tdm_unet_free(pipe->unet);
    tdm_vae_free(pipe->vae);
    tdm_sched_free(pipe->sched);
    free(pipe);
}

/* Checks model_index.json: a pipeline class we run, and the components it
 * names present as folders. */
static tdm_status check_model_index(tdm_pipeline_t *pipe) {
    char path[TDM_PATH_MAX];
    tdm_json_t j = {0};
    tdm_status st;
    TDM_TRY(tdm_path_join(path, sizeof path, pipe->root, NULL, "model_index.json"));
    TDM_TRY(tdm_json_load(&j, path));
    TDM_TRY(tdm_json_str(&j, "_class_name", "", pipe->class_name, sizeof pipe->class_name));
    if (strcmp(pipe->class_name, "StableDiffusionPipeline") != 0) {
        st = tdm_errorf(TDM_ERR_UNSUPPORTED,
                        "%s: _class_name \"%s\" is not supported (supported: StableDiffusionPipeline)",
                        path, pipe->class_name);
        goto fail;
    }
    static const char *need[] = {"tokenizer", "text_encoder", "unet", "vae", "scheduler"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        if (!cJSON_GetObjectItemCaseSensitive(j.root, need[i])) {
            st = tdm_errorf(TDM_ERR_MODEL, "%s: component \"%s\" is not listed", path, need[i]);
            goto fail;
        }
    }
fail:
    tdm_json_free(&j);
    return st;
}

tdm_status tdm_pipeline_open(tdm_pipeline_t **out, const char *model,
                             const tdm_pipeline_params_t *p) {
    tdm_pipeline_params_t defaults;
    tdm_status st;
    char path[TDM_PATH_MAX];
    *out = NULL;
    if (!p) { tdm_pipeline_params_init(&defaults); p = &defaults; }
    if (p->device && strcmp(p->device, "cpu") != 0 && strncmp(p->device, "cpu:", 4) != 0)
        return tdm_errorf(TDM_ERR_UNSUPPORTED,
                          "--device %s: this build has only the CPU backend", p->device);
    tdm_pipeline_t *pipe = calloc(1, sizeof *pipe);
    if (!pipe) return tdm_errorf(TDM_ERR_NOMEM, "out of memory");
    tdm_device_init(&pipe->dev, TDM_DEV_CPU, 0);
    if (p->num_threads > 0) tdm_set_num_threads(p->num_threads);
    TDM_TRY(tdm_folder_resolve(model, pipe->root, sizeof pipe->root));
    TDM_TRY(check_model_index(pipe));
    TDM_TRY(tdm_path_join(path, sizeof path, pipe->root, "tokenizer", NULL));
    TDM_TRY(tdm_clip_tok_load(&pipe->tok, path));
    TDM_TRY(tdm_clip_text_load(&pipe->text, pipe->root, "text_encoder", p->variant, &pipe->dev));
    TDM_TRY(tdm_unet_load(&pipe->unet, pipe->root, "unet", p->variant, &pipe->dev));
    TDM_TRY(tdm_vae_load(&pipe->vae, pipe->root, "vae", p->variant, &pipe->dev));
    TDM_TRY(tdm_path_join(path, sizeof path, pipe->root, "scheduler", "scheduler_config.json"));
    TDM_TRY(tdm_sched_create(&pipe->sched, path, p->scheduler));
    if (tdm_unet_info(pipe->unet)->cross_attention_dim != tdm_clip_text_hidden_size(pipe->text)) {
        st = tdm_errorf(TDM_ERR_MODEL,
                        "%s: unet cross_attention_dim %lld does not match text_encoder hidden_size %lld",
                        pipe->root, (long long)tdm_unet_info(pipe->unet)->cross_attention_dim,
                        (long long)tdm_clip_text_hidden_size(pipe->text));
        goto fail;
    }
    if (tdm_unet_info(pipe->unet)->in_channels != tdm_vae_info(pipe->vae)->latent_channels) {
        st = tdm_errorf(TDM_ERR_MODEL, "%s: unet in_channels %lld does not match vae latent_channels %lld",
                        pipe->root, (long long)tdm_unet_info(pipe->unet)->in_channels,
                        (long long)tdm_vae_info(pipe->vae)->latent_channels);
        goto fail;
    }
    *out = pipe;
    return TDM_OK;
fail:
    tdm_pipeline_close(pipe);
    return st;
}

void tdm_pipeline_info(const tdm_pipeline_t *pipe, tdm_pipeline_info_t *info) {
    const tdm_vae_info_t *vi = tdm_vae_info(pipe->vae);
    const tdm_unet_info_t *ui = tdm_unet_info(pipe->unet);
    memset(info, 0, sizeof *info);
    info->class_name = pipe->class_name;
    info->scheduler = tdm_sched_class(pipe->sched);
    info->vae_scale_factor = (int)vi->scale_factor;
    info->latent_channels = (int)vi->latent_channels;
    info->default_width = info->default_height = (int)(ui->sample_size * vi->scale_factor);
    info->default_steps = 50;
    info->default_guidance = 7.5f;
}

void tdm_pipeline_memory(const tdm_pipeline_t *pipe, int64_t *current, int64_t *peak) {
    if (current) *current = pipe->dev.cur_bytes;
    if (peak) *peak = pipe->dev.peak_bytes;
}

/* prompt_embeds for one text: (1, L, D). */
static tdm_status encode_text(tdm_pipeline_t *pipe, const char *text, float *emb, int L) {
    int32_t *ids = malloc((size_t)L * sizeof *ids);
    if (!ids) return tdm_errorf(TDM_ERR_NOMEM, "out of memory");
    tdm_status st = tdm_clip_tok_encode(pipe->tok, text, ids, L);
    if (st == TDM_OK) st = tdm_clip_text_forward(pipe->text, ids, 1, L, emb, NULL);
    free(ids);
    return st;
}

tdm_status tdm_pipeline_generate(tdm_pipeline_t *pipe, const tdm_generate_params_t *p,
                                 float *latents_out, uint8_t *rgb) {
    tdm_pipeline_info_t info;
    tdm_pipeline_info(pipe, &info);
    const int steps = p->steps > 0 ? p->steps : info.default_steps;
    const float g = isnan(p->guidance) ? info.default_guidance : p->guidance;
    const int width = p->width > 0 ? p->width : info.default_width;
    const int height = p->height > 0 ? p->height : info.default_height;
    const int cfg = g > 1.0f;
    if (p->steps < 0) return tdm_errorf(TDM_ERR_INVALID_ARG, "--steps %d: must be at least 1", p->steps);
    if (width % 8 || height % 8)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--width %d / --height %d: must be multiples of 8",
                          width, height);
    if (width % info.vae_scale_factor || height % info.vae_scale_factor)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--width %d / --height %d: must be multiples of %d",
                          width, height, info.vae_scale_factor);
    if (!p->prompt) return tdm_errorf(TDM_ERR_INVALID_ARG, "no prompt");

    const int L = tdm_clip_tok_max_length(pipe->tok);
    const int64_t D = tdm_clip_text_hidden_size(pipe->text);
    const int64_t C = info.latent_channels;
    const int64_t h = height / info.vae_scale_factor, w = width / info.vae_scale_factor;
    const int64_t item = C * h * w;
    const int nb = cfg ? 2 : 1;
    if (L > tdm_clip_text_max_positions(pipe->text))
        return tdm_errorf(TDM_ERR_MODEL, "%s: tokenizer model_max_length %d exceeds the text encoder's %lld positions",
                          pipe->root, L, (long long)tdm_clip_text_max_positions(pipe->text));

    tdm_status st = TDM_OK;
    float *emb = NULL, *lat = NULL, *in = NULL, *pred = NULL, *tt = NULL, *img = NULL;
    tdm_device_t *dev = &pipe->dev;
    int64_t emb_b = (int64_t)nb * L * D * 4, lat_b = item * 4, in_b = nb * item * 4, img_b = 0;
    emb = tdm_dev_alloc(dev, emb_b, "prompt embeddings");
    lat = tdm_dev_alloc(dev, lat_b, "latents");
    in = tdm_dev_alloc(dev, in_b, "unet input");
    pred = tdm_dev_alloc(dev, in_b, "unet output");
    tt = tdm_dev_alloc(dev, nb * 4, "timesteps");
    if (!emb || !lat || !in || !pred || !tt) { st = TDM_ERR_NOMEM; goto fail; }

    /* encode: CFG batch is [negative, positive], as torch.cat([neg, pos]) */
    if (cfg) {
        TDM_TRY(encode_text(pipe, p->negative_prompt ? p->negative_prompt : "", emb, L));
        TDM_TRY(encode_text(pipe, p->prompt, emb + L * D, L));
    } else {
        TDM_TRY(encode_text(pipe, p->prompt, emb, L));
    }

    /* initial noise: randn_tensor((1, C, h, w), generator) * init_noise_sigma */
    tdm_rng_t rng;
    tdm_rng_seed(&rng, p->seed);
    tdm_rng_randn(&rng, lat, item);
    TDM_TRY(tdm_sched_set_timesteps(pipe->sched, steps));
    const float sigma0 = tdm_sched_init_noise_sigma(pipe->sched);
    for (int64_t k = 0; k < item; k++) lat[k] *= sigma0;

    const int n = tdm_sched_len(pipe->sched);
    for (int i = 0; i < n; i++) {
        const float t = tdm_sched_timestep(pipe->sched, i);
        for (int b = 0; b < nb; b++) {
            memcpy(in + b * item, lat, (size_t)item * 4);
            tt[b] = t;
        }
        tdm_sched_scale_model_input(pipe->sched, in, nb * item, i);
        TDM_TRY(tdm_unet_forward(pipe->unet, in, nb, h, w, tt, emb, L, pred));
        if (cfg) {   /* uncond + g * (text - uncond) */
            for (int64_t k = 0; k < item; k++)
                pred[k] = pred[k] + g * (pred[item + k] - pred[k]);
        }
        TDM_TRY(tdm_sched_step(pipe->sched, i, pred, lat, 1, item, &rng));
        if (p->on_step) p->on_step(p->user, i + 1, n);
    }
    if (latents_out) memcpy(latents_out, lat, (size_t)item * 4);

    if (rgb) {
        const tdm_vae_info_t *vi = tdm_vae_info(pipe->vae);
        /* latents / scaling_factor (+ shift_factor when the VAE has one) */
        for (int64_t k = 0; k < item; k++)
            in[k] = lat[k] / (float)vi->scaling_factor + (float)vi->shift_factor;
        img_b = (int64_t)vi->out_channels * height * width * 4;
        img = tdm_dev_alloc(dev, img_b, "decoded image");
        if (!img) { st = TDM_ERR_NOMEM; goto fail; }
        TDM_TRY(tdm_vae_decode(pipe->vae, in, 1, h, w, img));
        tdm_vae_to_rgb8(img, 1, height, width, rgb);
    }
fail:
    tdm_dev_free(dev, img, img_b);
    tdm_dev_free(dev, tt, nb * 4);
    tdm_dev_free(dev, pred, in_b);
    tdm_dev_free(dev, in, in_b);
    tdm_dev_free(dev, lat, lat_b);
    tdm_dev_free(dev, emb, emb_b);
    return st;
}
