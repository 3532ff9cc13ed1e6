/* pipe_flux.c — the FLUX.1 stages, reproducing diffusers' FluxPipeline:
 * CLIP pooled + T5 prompt embeddings, 2x2 latent packing with img_ids, the
 * flow-matching loop with dynamic or static shift, and unpacking for the
 * VAE. One image per call. Under --parallel ulysses=U and/or ring=R the
 * transformer runs context-parallel over pipe->cp (tdm_flux_forward_cp),
 * under tp=T tensor-parallel (loaded as pipe->tp's shard, tdm_flux_load_tp):
 * every rank of the image group denoises the same image and holds the
 * whole latents. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "pipe/pipe_internal.h"

tdm_status tdm_flux_encode(tdm_pipeline_t *pipe, const tdm_encode_params_t *p, int L,
                           tdm_embeddings_t *e) {
    tdm_status st = TDM_OK;
    tdm_device_t *dev = pipe->comp[TDM_COMP_TEXT].dev, *dev2 = pipe->comp[TDM_COMP_TEXT2].dev;   /* CLIP, T5 */
    const int Lc = tdm_clip_tok_max_length(pipe->comp[TDM_COMP_TOK].h.clip_tok);
    const int64_t Dc = tdm_clip_text_hidden_size(pipe->comp[TDM_COMP_TEXT].h.clip);
    const int64_t hid_b = (int64_t)Lc * Dc * 4, pool_b = e->Dp * 4, t5_b = (int64_t)L * e->D * 4;
    int32_t *ids = malloc((size_t)(Lc > L ? Lc : L) * sizeof *ids);
    float *d_hid = tdm_dev_alloc(dev, hid_b, "CLIP hidden states");
    float *d_pool = tdm_dev_alloc(dev, pool_b, "pooled prompt embeddings");
    float *d_t5 = tdm_dev_alloc(dev2, t5_b, "T5 prompt embeddings");
    if (!ids) { st = tdm_errorf(TDM_ERR_NOMEM, "out of memory"); goto fail; }
    if (!d_hid || !d_pool || !d_t5) { st = TDM_ERR_NOMEM; goto fail; }
    if (Lc > tdm_clip_text_max_positions(pipe->comp[TDM_COMP_TEXT].h.clip)) {
        st = tdm_errorf(TDM_ERR_MODEL, "%s: tokenizer model_max_length %d exceeds the text encoder's %lld positions",
                        pipe->root, Lc, (long long)tdm_clip_text_max_positions(pipe->comp[TDM_COMP_TEXT].h.clip));
        goto fail;
    }
    for (int i = 0; i < p->n; i++) {
        /* pooled_prompt_embeds: CLIP pooler_output of `prompt` */
        TDM_TRY(tdm_clip_tok_encode(pipe->comp[TDM_COMP_TOK].h.clip_tok, p->prompts[i], ids, Lc));
        TDM_TRY(tdm_clip_text_forward(pipe->comp[TDM_COMP_TEXT].h.clip, ids, 1, Lc, d_hid, d_pool));
        TDM_TRY(tdm_dev_download(dev, e->pooled + i * e->Dp, d_pool, pool_b, "pooled prompt embeddings"));
        /* prompt_embeds: T5 last_hidden_state of `prompt_2` (default: prompt) */
        const char *t5p = p->prompts_2 ? p->prompts_2[i] : p->prompts[i];
        TDM_TRY(tdm_t5_tok_encode(pipe->comp[TDM_COMP_TOK2].h.t5_tok, t5p, ids, L));
        TDM_TRY(tdm_t5_forward(pipe->comp[TDM_COMP_TEXT2].h.t5, ids, 1, L, d_t5));
        TDM_TRY(tdm_dev_download(dev2, e->pos + (int64_t)i * L * e->D, d_t5, t5_b, "T5 prompt embeddings"));
    }
    /* text_ids: zeros (L, 3) — already zeroed by tdm_pipe_emb_alloc */
fail:
    tdm_dev_free(dev2, d_t5, t5_b);
    tdm_dev_free(dev, d_pool, pool_b);
    tdm_dev_free(dev, d_hid, hid_b);
    free(ids);
    return st;
}

/* (1, C, h, w) → (1, (h/2)(w/2), 4C): view(C, h/2, 2, w/2, 2).permute(1, 3, 0, 2, 4). */
static void flux_pack(const float *lat, int64_t C, int64_t h, int64_t w, float *out) {
    const int64_t h2 = h / 2, w2 = w / 2;
    for (int64_t r = 0; r < h2; r++)
        for (int64_t c = 0; c < w2; c++) {
            float *o = out + (r * w2 + c) * 4 * C;
            for (int64_t ch = 0; ch < C; ch++)
                for (int dy = 0; dy < 2; dy++)
                    for (int dx = 0; dx < 2; dx++)
                        o[ch * 4 + dy * 2 + dx] = lat[(ch * h + 2 * r + dy) * w + 2 * c + dx];
        }
}

void tdm_flux_unpack(const float *packed, int64_t C, int64_t h, int64_t w, float *out) {
    const int64_t h2 = h / 2, w2 = w / 2;
    for (int64_t r = 0; r < h2; r++)
        for (int64_t c = 0; c < w2; c++) {
            const float *p = packed + (r * w2 + c) * 4 * C;
            for (int64_t ch = 0; ch < C; ch++)
                for (int dy = 0; dy < 2; dy++)
                    for (int dx = 0; dx < 2; dx++)
                        out[(ch * h + 2 * r + dy) * w + 2 * c + dx] = p[ch * 4 + dy * 2 + dx];
        }
}

tdm_status tdm_flux_denoise(tdm_pipeline_t *pipe, const tdm_embeddings_t *e, int index,
                            const tdm_generate_params_t *p, int width, int height, float *latents) {
    const tdm_pipeline_info_t *info = &pipe->info;
    const tdm_flux_info_t *fi = tdm_flux_info(pipe->comp[TDM_COMP_DEN].h.flux);
    const int steps = p->steps > 0 ? p->steps : info->default_steps;
    const float g = isnan(p->guidance) ? info->default_guidance : p->guidance;
    const int64_t C = fi->in_channels / 4;
    const int64_t h = height / info->vae_scale_factor, w = width / info->vae_scale_factor;
    const int64_t N = (h / 2) * (w / 2), item = N * 4 * C;
    const int64_t L = e->L;
    if (e->Dp != fi->pooled_projection_dim || e->D != fi->joint_attention_dim)
        return tdm_errorf(TDM_ERR_MODEL, "embeddings of width %lld / pooled %lld do not fit the transformer "
                          "(joint_attention_dim %lld, pooled_projection_dim %lld)", (long long)e->D,
                          (long long)e->Dp, (long long)fi->joint_attention_dim,
                          (long long)fi->pooled_projection_dim);
    if (pipe->cp_ranks > 1 && N < pipe->cp_ranks)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--parallel ulysses=%d,ring=%d: a %dx%d image has %lld "
                          "latent tokens, fewer than the ranks that split them (one each at least); use "
                          "a larger image or a smaller degree",
                          pipe->cp.ulysses ? pipe->cp.ulysses->size : 1,
                          pipe->cp.ring ? pipe->cp.ring->size : 1, width, height, (long long)N);
    tdm_device_t *dev = pipe->comp[TDM_COMP_DEN].dev;
    tdm_status st = TDM_OK;
    /* host: noise, img_ids, the transformer output (the scheduler runs on the
     * host); device: latents, text states, pooled, output */
    float *noise = NULL, *ids = NULL, *pred = NULL, *d_lat = NULL, *d_txt = NULL, *d_pool = NULL,
          *d_pred = NULL;
    const int64_t nb = C * h * w * 4, pb = item * 4, txt_b = L * e->D * 4, pool_b = e->Dp * 4;
    noise = malloc((size_t)nb);
    ids = malloc((size_t)(N * 3 * 4));
    pred = malloc((size_t)pb);
    d_lat = tdm_dev_alloc(dev, pb, "latents");
    d_pred = tdm_dev_alloc(dev, pb, "transformer output");
    d_txt = tdm_dev_alloc(dev, txt_b, "prompt embeddings");
    d_pool = tdm_dev_alloc(dev, pool_b, "pooled prompt embeddings");
    if (!noise || !ids || !pred) { st = tdm_errorf(TDM_ERR_NOMEM, "out of memory"); goto fail; }
    if (!d_lat || !d_pred || !d_txt || !d_pool) { st = TDM_ERR_NOMEM; goto fail; }
    TDM_TRY(tdm_dev_upload(dev, d_txt, e->pos + (int64_t)index * L * e->D, txt_b, "prompt embeddings"));
    TDM_TRY(tdm_dev_upload(dev, d_pool, e->pooled + (int64_t)index * e->Dp, pool_b, "pooled prompt embeddings"));

    /* randn_tensor((1, C, h, w), generator), then _pack_latents */
    tdm_rng_t rng;
    tdm_rng_seed(&rng, p->seed);
    tdm_rng_randn(&rng, noise, C * h * w);
    flux_pack(noise, C, h, w, latents);
    /* _prepare_latent_image_ids: [0, row, col] over the packed grid */
    for (int64_t r = 0; r < h / 2; r++)
        for (int64_t c = 0; c < w / 2; c++) {
            float *o = ids + (r * (w / 2) + c) * 3;
            o[0] = 0.0f;
            o[1] = (float)r;
            o[2] = (float)c;
        }
    /* sigmas = linspace(1, 1/steps, steps); mu = calculate_shift(N, ...) */
    TDM_TRY(tdm_sched_set_timesteps_flow(pipe->sched, steps, NULL, tdm_sched_flux_mu(pipe->sched, N)));
    const float gv = g;
    const int n = tdm_sched_len(pipe->sched);
    for (int i = 0; i < n; i++) {
        if (p->cancel && p->cancel(p->user)) {
            st = tdm_errorf(TDM_ERR_CANCELLED, "cancelled before denoising step %d of %d", i + 1, n);
            goto fail;
        }
        const float t = tdm_sched_timestep(pipe->sched, i) / 1000.0f;
        TDM_TRY(tdm_dev_upload(dev, d_lat, latents, pb, "latents"));
        /* every rank of the image's context-parallel grid makes this call
         * with the same inputs and gets the whole prediction (no groups:
         * tdm_flux_forward; a TP shard sums its blocks over pipe->tp) */
        TDM_TRY(tdm_flux_forward_cp(pipe->comp[TDM_COMP_DEN].h.flux, &pipe->cp, d_lat, 1, N, d_txt,
                                    L, d_pool, &t, fi->guidance_embeds ? &gv : NULL, ids, e->text_ids,
                                    d_pred));
        TDM_TRY(tdm_dev_download(dev, pred, d_pred, pb, "transformer output"));
        TDM_TRY(tdm_sched_step(pipe->sched, i, pred, latents, 1, item, NULL));
        if (p->on_step) p->on_step(p->user, i + 1, n);
    }
fail:
    tdm_dev_free(dev, d_pool, pool_b);
    tdm_dev_free(dev, d_txt, txt_b);
    tdm_dev_free(dev, d_pred, pb);
    tdm_dev_free(dev, d_lat, pb);
    free(pred);
    free(ids);
    free(noise);
    return st;
}
