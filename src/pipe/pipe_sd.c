/* pipe_sd.c — the Stable Diffusion 1.x/2.x and SDXL stages, reproducing
 * diffusers' StableDiffusionPipeline and StableDiffusionXLPipeline: CLIP
 * prompt encoding (SDXL: two encoders' penultimate states side by side and
 * the pooled embeddings of the second), and the scheduler loop over the UNet
 * with classifier-free guidance (and guidance_rescale; SDXL: the pooled
 * embeddings and time ids as the UNet's added conditions) for one image
 * (batch 1, CFG batch 2), so an image never depends on which other images a
 * process makes.
 * Under --parallel cfg=2 the guidance batch is split over a pair of ranks
 * (pipe->cfg_comm), one UNet half each, predictions exchanged per step. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "pipe/pipe_internal.h"

/* last_hidden_state of one text into host memory: (1, L, D); with skip > 0
 * the final-normalized output of the layer `skip` before the last. */
static tdm_status sd_encode_text(tdm_pipeline_t *pipe, const char *text, int L, int skip, float *emb) {
    const int64_t bytes = (int64_t)L * tdm_clip_text_hidden_size(pipe->comp[TDM_COMP_TEXT].h.clip) * 4;
    int32_t *ids = malloc((size_t)L * sizeof *ids);
    tdm_device_t *dev = pipe->comp[TDM_COMP_TEXT].dev;
    float *d = tdm_dev_alloc(dev, bytes, "prompt embeddings");
    tdm_status st = ids && d ? TDM_OK : tdm_errorf(TDM_ERR_NOMEM, "out of memory for prompt embeddings");
    if (st == TDM_OK) st = tdm_clip_tok_encode(pipe->comp[TDM_COMP_TOK].h.clip_tok, text, ids, L);
    if (st == TDM_OK) st = tdm_clip_text_forward_skip(pipe->comp[TDM_COMP_TEXT].h.clip, ids, 1, L, skip, d, NULL);
    if (st == TDM_OK) st = tdm_dev_download(dev, emb, d, bytes, "prompt embeddings");
    tdm_dev_free(dev, d, bytes);
    free(ids);
    return st;
}

/* hidden_states[-2] of one text through the CLIP encoder of slots (tok,
 * text) into columns [col, col + D) of host rows emb (L, ld); with pooled,
 * also its projected pooled output (text_embeds). */
static tdm_status xl_encode_one(tdm_pipeline_t *pipe, int tok, int text, const char *s, int L, int skip,
                                float *emb, int64_t ld, int64_t col, float *pooled) {
    tdm_clip_text_t *m = pipe->comp[text].h.clip;
    tdm_device_t *dev = pipe->comp[text].dev;
    const int64_t D = tdm_clip_text_hidden_size(m), bytes = (int64_t)L * D * 4;
    const int64_t pb = pooled ? pipe->pooled_dim * 4 : 0;
    int32_t *ids = malloc((size_t)L * sizeof *ids);
    float *h = malloc((size_t)bytes);
    float *d = tdm_dev_alloc(dev, bytes + pb, "prompt embeddings");
    tdm_status st = ids && h && d ? TDM_OK : tdm_errorf(TDM_ERR_NOMEM, "out of memory for prompt embeddings");
    if (st == TDM_OK && tdm_clip_tok_max_length(pipe->comp[tok].h.clip_tok) != L)
        st = tdm_errorf(TDM_ERR_MODEL, "%s: %s and %s have different model_max_length", pipe->root,
                        pipe->comp[TDM_COMP_TOK].name, pipe->comp[TDM_COMP_TOK2].name);
    if (st == TDM_OK) st = tdm_clip_tok_encode(pipe->comp[tok].h.clip_tok, s, ids, L);
    if (st == TDM_OK)
        st = tdm_clip_text_forward_penultimate(m, ids, 1, L, skip, d, pooled ? d + (int64_t)L * D : NULL);
    if (st == TDM_OK) st = tdm_dev_download(dev, h, d, bytes, "prompt embeddings");
    if (st == TDM_OK && pooled) st = tdm_dev_download(dev, pooled, d + (int64_t)L * D, pb, "pooled prompt embeddings");
    for (int64_t t = 0; st == TDM_OK && t < L; t++)
        memcpy(emb + t * ld + col, h + t * D, (size_t)D * sizeof *h);
    tdm_dev_free(dev, d, bytes + pb);
    free(h);
    free(ids);
    return st;
}

/* SDXL's encode_prompt for one text pair: text1 through text_encoder (when
 * the folder has one) and text2 through text_encoder_2, their
 * hidden_states[-(skip + 2)] concatenated on the feature axis into emb (L,
 * D), the pooled text_embeds of text_encoder_2 into pooled (Dp). */
static tdm_status xl_encode_text(tdm_pipeline_t *pipe, const char *text1, const char *text2, int L, int skip,
                                 float *emb, float *pooled) {
    const tdm_pipe_comp_t *c = pipe->comp;
    int64_t col = 0;
    if (c[TDM_COMP_TEXT].name) {
        tdm_status st = xl_encode_one(pipe, TDM_COMP_TOK, TDM_COMP_TEXT, text1, L, skip, emb, pipe->ctx_dim, 0, NULL);
        if (st != TDM_OK) return st;
        col = tdm_clip_text_hidden_size(c[TDM_COMP_TEXT].h.clip);
    }
    return xl_encode_one(pipe, TDM_COMP_TOK2, TDM_COMP_TEXT2, text2, L, skip, emb, pipe->ctx_dim, col, pooled);
}

/* diffusers' `a or b` for prompts: NULL and "" give b */
static const char *or_else(const char *a, const char *b) { return a && *a ? a : b; }

static tdm_status xl_encode(tdm_pipeline_t *pipe, const tdm_encode_params_t *p, tdm_embeddings_t *e) {
    tdm_status st = TDM_OK;
    const int L = (int)e->L;
    const int64_t row = e->L * e->D, Dp = e->Dp;
    for (int i = 0; i < p->n; i++) {
        const char *p2 = or_else(p->prompts_2 ? p->prompts_2[i] : NULL, p->prompts[i]);
        if ((st = xl_encode_text(pipe, p->prompts[i], p2, L, p->clip_skip, e->pos + i * row, e->pooled + i * Dp)) !=
            TDM_OK)
            return st;
    }
    /* no negative prompt with force_zeros_for_empty_prompt: zeros (as allocated) */
    if (e->neg && !(p->negative_prompt == NULL && pipe->force_zeros)) {
        const char *n1 = p->negative_prompt ? p->negative_prompt : "";
        if ((st = xl_encode_text(pipe, n1, or_else(p->negative_prompt_2, n1), L, 0, e->neg, e->neg_pooled)) != TDM_OK)
            return st;
        for (int i = 1; i < p->n; i++) {
            memcpy(e->neg + i * row, e->neg, (size_t)row * sizeof *e->neg);
            memcpy(e->neg_pooled + i * Dp, e->neg_pooled, (size_t)Dp * sizeof *e->neg_pooled);
        }
    }
    return TDM_OK;
}

tdm_status tdm_sd_encode(tdm_pipeline_t *pipe, const tdm_encode_params_t *p, tdm_embeddings_t *e) {
    tdm_status st = TDM_OK;
    if (pipe->info.sdxl) return xl_encode(pipe, p, e);
    const int L = (int)e->L;
    if (L > tdm_clip_text_max_positions(pipe->comp[TDM_COMP_TEXT].h.clip))
        return tdm_errorf(TDM_ERR_MODEL, "%s: tokenizer model_max_length %d exceeds the text encoder's %lld positions",
                          pipe->root, L, (long long)tdm_clip_text_max_positions(pipe->comp[TDM_COMP_TEXT].h.clip));
    const int64_t row = e->L * e->D;
    for (int i = 0; i < p->n; i++) {
        if ((st = sd_encode_text(pipe, p->prompts[i], L, p->clip_skip, e->pos + i * row)) != TDM_OK) return st;
    }
    if (e->neg) {   /* one negative prompt for every row, as diffusers repeats it */
        if ((st = sd_encode_text(pipe, p->negative_prompt ? p->negative_prompt : "", L, 0, e->neg)) != TDM_OK)
            return st;
        for (int i = 1; i < p->n; i++) memcpy(e->neg + i * row, e->neg, (size_t)row * sizeof *e->neg);
    }
    return TDM_OK;
}

/* The UNet's context for prompt row `index`: the guidance batch
 * [negative, positive] (as torch.cat([neg, pos])), its half `half` alone
 * (0 negative, 1 positive) under cfg = 2, or the positive prompt without
 * guidance. */
static tdm_status upload_context(tdm_device_t *dev, const tdm_embeddings_t *e, int index, int cfg,
                                 int half, float *d_ctx) {
    const int64_t LD = e->L * e->D;
    tdm_status st;
    if (cfg && half < 0) {
        if ((st = tdm_dev_upload(dev, d_ctx, e->neg + index * LD, LD * 4, "prompt embeddings")) != TDM_OK)
            return st;
        return tdm_dev_upload(dev, d_ctx + LD, e->pos + index * LD, LD * 4, "prompt embeddings");
    }
    const float *src = cfg && half == 0 ? e->neg : e->pos;
    return tdm_dev_upload(dev, d_ctx, src + index * LD, LD * 4, "prompt embeddings");
}

/* The unbiased standard deviation of x[0..n) (torch.std's default). */
static double std_unbiased(const float *x, int64_t n) {
    double s = 0, q = 0;
    for (int64_t k = 0; k < n; k++) s += x[k];
    const double mean = s / (double)n;
    for (int64_t k = 0; k < n; k++) q += ((double)x[k] - mean) * ((double)x[k] - mean);
    return n > 1 ? sqrt(q / (double)(n - 1)) : 0.0;
}

/* diffusers' rescale_noise_cfg on one image: the guided prediction cfg[0..n)
 * scaled to the conditional prediction's standard deviation, mixed back by
 * factor r: cfg = r · cfg · (std(text) / std(cfg)) + (1 - r) · cfg. */
static void rescale_noise_cfg(float *cfg, const float *text, int64_t n, float r) {
    const float ratio = (float)(std_unbiased(text, n) / std_unbiased(cfg, n));
    const float keep = (float)(1.0 - (double)r);
    for (int64_t k = 0; k < n; k++) cfg[k] = r * (cfg[k] * ratio) + keep * cfg[k];
}

tdm_status tdm_sd_denoise(tdm_pipeline_t *pipe, const tdm_embeddings_t *e, int index,
                          const tdm_generate_params_t *p, int width, int height, float *latents) {
    const tdm_pipeline_info_t *info = &pipe->info;
    const int steps = p->steps > 0 ? p->steps : info->default_steps;
    const float g = isnan(p->guidance) ? info->default_guidance : p->guidance;
    const int cfg = g > 1.0f;   /* diffusers: do_classifier_free_guidance = guidance_scale > 1 */
    if (cfg && !e->neg)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--guidance %g needs negative_prompt_embeds, which the "
                          "embeddings lack (encode them with guidance > 1)", g);
    /* --parallel cfg=2: this rank runs half `half` of the guidance batch
     * (0 unconditional, 1 conditional); the pair swaps noise predictions */
    tdm_comm_t *pair = pipe->cfg_comm;
    if (pair && !cfg)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--parallel cfg=2 needs classifier-free guidance, but "
                          "--guidance %g is <= 1 (give --guidance > 1, or drop cfg=2)", g);
    const int half = pair ? tdm_comm_rank(pair) : -1;
    const int xl = info->sdxl;
    if (xl && (!e->pooled || (cfg && !e->neg_pooled)))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "SDXL needs %spooled_prompt_embeds, which the embeddings "
                          "lack", cfg && e->pooled ? "negative_" : "");
    const int64_t L = e->L, D = e->D, C = info->latent_channels;
    const int64_t h = height / info->vae_scale_factor, w = width / info->vae_scale_factor;
    const int64_t item = C * h * w;
    const int nb = cfg ? 2 : 1, nrun = pair ? 1 : nb;   /* guidance batch; the part run here */
    tdm_device_t *dev = pipe->comp[TDM_COMP_DEN].dev;
    tdm_status st = TDM_OK;
    /* host: latents, the UNet input and its output (scheduler and CFG run
     * on the host; under cfg = 2 `in` also takes this rank's prediction
     * before the exchange); device: the same UNet input/output and the
     * context */
    float *in = NULL, *pred = NULL, *d_ctx = NULL, *d_in = NULL, *d_pred = NULL, tt[2];
    float *add_text = NULL;   /* SDXL: the pooled embeddings of the UNet batch (host) */
    const int64_t ctx_b = nrun * L * D * 4, in_b = nrun * item * 4;
    in = malloc((size_t)in_b);
    pred = malloc((size_t)(nb * item * 4));
    d_ctx = tdm_dev_alloc(dev, ctx_b, "prompt embeddings");
    d_in = tdm_dev_alloc(dev, in_b, "unet input");
    d_pred = tdm_dev_alloc(dev, in_b, "unet output");
    if (!in || !pred) { st = tdm_errorf(TDM_ERR_NOMEM, "out of memory"); goto fail; }
    if (!d_ctx || !d_in || !d_pred) { st = TDM_ERR_NOMEM; goto fail; }
    TDM_TRY(upload_context(dev, e, index, cfg, half, d_ctx));
    /* SDXL's added conditions, per row of the UNet batch as the context:
     * the pooled embeddings and add_time_ids = original_size (h, w) +
     * crops_coords_top_left (top, left) + target_size (h, w), the same for
     * both halves (no negative_original_size) */
    float add_ids[12];
    tdm_unet_added_t add = {NULL, e->Dp, add_ids, 6};
    if (xl) {
        if (!(add_text = malloc((size_t)(nrun * e->Dp) * sizeof *add_text))) {
            st = tdm_errorf(TDM_ERR_NOMEM, "out of memory");
            goto fail;
        }
        add.text_embeds = add_text;
        const float ids[6] = {(float)(p->original_height ? p->original_height : height),
                              (float)(p->original_width ? p->original_width : width),
                              (float)p->crop_top, (float)p->crop_left,
                              (float)(p->target_height ? p->target_height : height),
                              (float)(p->target_width ? p->target_width : width)};
        for (int b = 0; b < nrun; b++) {
            const float *src = cfg && (half == 0 || (half < 0 && b == 0)) ? e->neg_pooled : e->pooled;
            memcpy(add_text + b * e->Dp, src + index * e->Dp, (size_t)e->Dp * sizeof(float));
            memcpy(add_ids + b * 6, ids, sizeof ids);
        }
    }

    /* initial noise: randn_tensor((1, C, h, w), generator) * init_noise_sigma */
    tdm_rng_t rng;
    tdm_rng_seed(&rng, p->seed);
    tdm_rng_randn(&rng, latents, item);
    TDM_TRY(tdm_sched_set_timesteps(pipe->sched, steps));
    const float sigma0 = tdm_sched_init_noise_sigma(pipe->sched);
    for (int64_t k = 0; k < item; k++) latents[k] *= sigma0;

    const int n = tdm_sched_len(pipe->sched);
    for (int i = 0; i < n; i++) {
        if (p->cancel && p->cancel(p->user)) {
            st = tdm_errorf(TDM_ERR_CANCELLED, "cancelled before denoising step %d of %d", i + 1, n);
            goto fail;
        }
        const float t = tdm_sched_timestep(pipe->sched, i);
        for (int b = 0; b < nrun; b++) {
            memcpy(in + b * item, latents, (size_t)item * 4);
            tt[b] = t;
        }
        tdm_sched_scale_model_input(pipe->sched, in, nrun * item, i);
        TDM_TRY(tdm_dev_upload(dev, d_in, in, in_b, "unet input"));
        TDM_TRY(tdm_unet_forward_added(pipe->comp[TDM_COMP_DEN].h.unet, d_in, nrun, h, w, tt, d_ctx, L,
                                       xl ? &add : NULL, d_pred));
        if (pair) {   /* pred = [uncond, text], rank 0's half first */
            TDM_TRY(tdm_dev_download(dev, in, d_pred, in_b, "unet output"));
            TDM_TRY(tdm_comm_allgather(pair, in, pred, item, TDM_F32, NULL));
        } else {
            TDM_TRY(tdm_dev_download(dev, pred, d_pred, in_b, "unet output"));
        }
        if (cfg) {   /* uncond + g * (text - uncond) */
            for (int64_t k = 0; k < item; k++) pred[k] = pred[k] + g * (pred[item + k] - pred[k]);
            if (p->guidance_rescale > 0.0f) rescale_noise_cfg(pred, pred + item, item, p->guidance_rescale);
        }
        TDM_TRY(tdm_sched_step(pipe->sched, i, pred, latents, 1, item, &rng));
        if (p->on_step) p->on_step(p->user, i + 1, n);
    }
fail:
    tdm_dev_free(dev, d_pred, in_b);
    tdm_dev_free(dev, d_in, in_b);
    tdm_dev_free(dev, d_ctx, ctx_b);
    free(add_text);
    free(pred);
    free(in);
    return st;
}
