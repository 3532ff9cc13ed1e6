/* pipe_internal.h — the pipeline object shared by pipeline.c (open, stage
 * residency, embeddings files) and the per-family stage code in pipe_sd.c
 * and pipe_flux.c. Not public API. */
#ifndef TDM_PIPE_INTERNAL_H
#define TDM_PIPE_INTERNAL_H

#include "core/core.h"
#include "dist/dist.h"
#include "dist/nn_group.h"
#include "io/folder.h"
#include "models/clip_text.h"
#include "models/flux.h"
#include "models/t5.h"
#include "models/unet2d.h"
#include "models/vae.h"
#include "nn/offload.h"
#include "place/pipe_plan.h"
#include "place/place.h"
#include "sched/sched.h"
#include "text/clip_tokenizer.h"
#include "text/t5_tokenizer.h"

enum { TDM_STAGE_NONE = -1 };

#define TDM_PIPE_MAX_VDEV 16   /* virtual devices of --devices */
#define TDM_PIPE_MAX_LATENT_CH 64   /* latents_mean / latents_std entries read */

/* The slots of the component table (tdm_pipeline_t.comp), in load order. */
typedef enum {
    TDM_COMP_TOK = 0,   /* CLIP tokenizer */
    TDM_COMP_TEXT,      /* CLIP text encoder */
    TDM_COMP_TOK2,      /* FLUX: T5 tokenizer; SDXL: CLIP tokenizer_2 */
    TDM_COMP_TEXT2,     /* FLUX: T5 encoder; SDXL: CLIPTextModelWithProjection */
    TDM_COMP_DEN,       /* denoiser: UNet (SD) or transformer (FLUX) */
    TDM_COMP_VAE,       /* VAE decoder */
    TDM_COMP_COUNT
} tdm_pipe_slot;

/* What a component is, which says how it loads and frees. */
typedef enum {
    TDM_KIND_CLIP_TOK, TDM_KIND_T5_TOK, TDM_KIND_CLIP_TEXT, TDM_KIND_T5, TDM_KIND_UNET,
    TDM_KIND_FLUX, TDM_KIND_VAE_DECODER
} tdm_pipe_kind_t;

/* One component of the pipeline: its folder, kind and stage, its handle
 * while loaded, and where it runs: whole on `dev`, or split by `map` (n > 0,
 * names without the component prefix) over the devices of the plan. */
typedef struct {
    const char     *name;    /* folder in the pipeline, e.g. "text_encoder"; NULL: slot unused */
    tdm_pipe_kind_t kind;
    int             stage;   /* TDM_STAGE_ENCODE, _DENOISE or _DECODE */
    union {
        void            *any;
        tdm_clip_tok_t  *clip_tok;
        tdm_t5_tok_t    *t5_tok;
        tdm_clip_text_t *clip;
        tdm_t5_t        *t5;
        tdm_unet_t      *unet;
        tdm_flux_t      *flux;
        tdm_vae_t       *vae;
    } h;                     /* NULL while not loaded */
    tdm_place_map_t map;
    tdm_device_t   *dev;
} tdm_pipe_comp_t;

struct tdm_pipeline {
    char                root[TDM_PATH_MAX];
    char                class_name[128];
    char                variant[64];
    int                 keep_resident;
    tdm_pipeline_info_t info;
    tdm_device_t        dev;
    int                 stage;             /* stage whose components are loaded */
    int64_t             stage_peak[3];     /* per-stage peak bytes */
    int64_t             total_peak;        /* peak since open */
    /* the same for the map's other devices (vdev[g], g >= 1) */
    int64_t             vstage_peak[TDM_PIPE_MAX_VDEV][3];
    int64_t             vtotal_peak[TDM_PIPE_MAX_VDEV];
    /* facts read from configs at open (no weights) */
    double              vae_scaling_factor, vae_shift_factor;
    int64_t             denoiser_in_channels;  /* unet in_channels / flux in_channels */
    int64_t             ctx_dim;               /* cross_attention_dim / joint_attention_dim */
    int64_t             pooled_dim;            /* FLUX pooled_projection_dim; SDXL
                                                * text_encoder_2 projection_dim */
    int                 force_zeros;           /* SDXL force_zeros_for_empty_prompt */
    int                 no_text_encoder;       /* SDXL without text_encoder (refiner-like) */
    int                 single_file;           /* a single file attached to root (io/ldm.h) */
    /* SDXL: the VAE's latents_mean / latents_std (both given: decode takes
     * latents · std / scaling_factor + mean per channel), and force_upcast
     * (an fp16 run decodes with float32 weights, as diffusers upcasts) */
    int                 vae_stats, vae_upcast;
    float               vae_mean[TDM_PIPE_MAX_LATENT_CH], vae_std[TDM_PIPE_MAX_LATENT_CH];
    char                size_src[1100];        /* where the default width/height come from */
    /* components, loaded per stage */
    tdm_pipe_comp_t     comp[TDM_COMP_COUNT];
    tdm_sched_t        *sched;             /* small: loaded at open, kept */
    /* --parallel groups (tdm_pipeline_params_t.dist; borrowed): the CFG pair
     * when cfg = 2, the ranks of one image when more than one; else NULL */
    tdm_comm_t         *cfg_comm;
    tdm_comm_t         *image_comm;
    /* --parallel ulysses=U, ring=R (FLUX): the nn groups over the Ulysses
     * and ring communicators that tdm_flux_forward_cp runs on (owned, freed
     * at close); cp.ulysses / cp.ring point at them where the degree is
     * above 1, else are NULL; cp_ranks = U·R */
    tdm_nn_group_t      ulysses_group, ring_group;
    tdm_flux_cp_groups_t cp;
    int                 cp_ranks;
    /* --parallel tp=T > 1 (FLUX): the nn group over the TP communicator
     * that the transformer is loaded sharded over (tdm_flux_load_tp; tp
     * points at tp_group; owned, freed at close); else tp is NULL */
    tdm_nn_group_t      tp_group;
    const tdm_nn_group_t *tp;
    /* parallel_vae: the nn group over the image communicator that
     * tdm_vae_decode_cp runs on (vae_group points at it; owned); else NULL */
    tdm_nn_group_t      image_group;
    const tdm_nn_group_t *vae_group;
    /* split execution of the transformer (tdm_pipeline_params_t.device_map):
     * `dev` stands for GPU 0, vdev[g] for GPU g >= 1, `host` holds the
     * weights offloaded to "cpu" */
    tdm_max_memory_t    split_mm;
    int                 nvdev;             /* GPUs stood for, incl. GPU 0 */
    tdm_device_t        vdev[TDM_PIPE_MAX_VDEV];
    tdm_device_t        host;
    /* the plans executed, one per stage (one with keep_resident) */
    tdm_pipe_plan_t     plans[3];
    int                 nplans;
};

struct tdm_embeddings {
    tdm_pipeline_kind kind;
    int      n;            /* prompts */
    int64_t  L, D;         /* tokens and width of prompt_embeds */
    int64_t  Dp;           /* FLUX pooled width */
    float   *pos;          /* (n, L, D) */
    float   *neg;          /* SD: (n, L, D) or NULL */
    float   *pooled;       /* FLUX, SDXL: (n, Dp) */
    float   *neg_pooled;   /* SDXL: (n, Dp) with neg, else NULL */
    float   *text_ids;     /* FLUX: (L, 3) */
    char   **prompts;      /* n strings (may hold NULLs) */
    char   **prompts_2;    /* FLUX, SDXL: n strings or NULL */
    char    *negative;     /* SD negative prompt or NULL */
    char    *negative_2;   /* SDXL negative_prompt_2 or NULL */
};

/* Makes `stage` the loaded one: frees the other stages' components (unless
 * keep_resident) and loads this stage's. */
tdm_status tdm_pipe_enter(tdm_pipeline_t *pipe, int stage);

/* Records the device peak as `stage`'s (call at the end of each stage call). */
void tdm_pipe_stage_done(tdm_pipeline_t *pipe, int stage);

/* Allocates an embeddings object with room for n prompts (data zeroed). */
tdm_status tdm_pipe_emb_alloc(tdm_embeddings_t **out, tdm_pipeline_kind kind, int n, int64_t L,
                              int64_t D, int64_t Dp, int with_neg);

/* Family stages. */
tdm_status tdm_sd_encode(tdm_pipeline_t *pipe, const tdm_encode_params_t *p, tdm_embeddings_t *emb);
tdm_status tdm_sd_denoise(tdm_pipeline_t *pipe, const tdm_embeddings_t *emb, int index,
                          const tdm_generate_params_t *p, int width, int height, float *latents);
tdm_status tdm_flux_encode(tdm_pipeline_t *pipe, const tdm_encode_params_t *p, int L,
                           tdm_embeddings_t *emb);
tdm_status tdm_flux_denoise(tdm_pipeline_t *pipe, const tdm_embeddings_t *emb, int index,
                            const tdm_generate_params_t *p, int width, int height, float *latents);
/* FLUX latents (1, N, 4C) packed → (1, C, h, w) unpacked, as FluxPipeline._unpack_latents. */
void tdm_flux_unpack(const float *packed, int64_t C, int64_t h, int64_t w, float *out);

#endif
