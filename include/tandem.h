/* tandem.h — the public C API of tandem, a text-to-image diffusion engine
 * that runs Hugging Face diffusers model folders (Stable Diffusion 1.x/2.x)
 * natively.
 *
 * Conventions: opaque handles; `*_params_init()` fills defaults; every
 * fallible call returns tdm_status and keeps a message for tdm_last_error()
 * (per thread). Constructors are `_open`/`_create`, destructors `_close`/
 * `_free`; passing NULL to a destructor is a no-op. The library never exits
 * and never prints to stdout. */
#ifndef TANDEM_H
#define TANDEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TANDEM_VERSION "0.1.0"

typedef enum {
    TDM_OK = 0,
    TDM_ERR_INVALID_ARG,   /* a flag or parameter is out of range */
    TDM_ERR_IO,            /* a file could not be read or written */
    TDM_ERR_FORMAT,        /* a file's content is malformed (safetensors, JSON, vocab) */
    TDM_ERR_MODEL,         /* a model folder/config/tensor disagrees with what is expected */
    TDM_ERR_UNSUPPORTED,   /* a valid but unsupported configuration (e.g. unknown _class_name) */
    TDM_ERR_NOMEM,         /* an allocation failed or a memory cap was hit */
    TDM_ERR_INTERNAL
} tdm_status;

/* The message of the last failure on this thread ("" if none). */
const char *tdm_last_error(void);
/* A short name for a status code ("ok", "io", ...). */
const char *tdm_status_name(tdm_status st);

/* ---- pipelines --------------------------------------------------------- */

typedef struct tdm_pipeline tdm_pipeline_t;

typedef struct {
    const char *device;      /* "cpu" (default) */
    int         num_threads; /* 0 = all cores */
    const char *scheduler;   /* diffusers class name overriding the folder's, or NULL */
    const char *variant;     /* weight variant such as "fp16", or NULL */
} tdm_pipeline_params_t;

void tdm_pipeline_params_init(tdm_pipeline_params_t *p);

/* Opens a diffusers folder (or ORG/NAME resolved in the Hugging Face cache)
 * and loads its components. OUT: *pipe, freed with tdm_pipeline_close. */
tdm_status tdm_pipeline_open(tdm_pipeline_t **pipe, const char *model,
                             const tdm_pipeline_params_t *p);
void       tdm_pipeline_close(tdm_pipeline_t *pipe);

/* Facts about an opened pipeline, for defaults and output naming. */
typedef struct {
    const char *class_name;       /* model_index.json _class_name */
    const char *scheduler;        /* scheduler class in use */
    int         default_width;    /* unet sample_size * vae scale factor */
    int         default_height;
    int         vae_scale_factor; /* 2^(len(vae.block_out_channels)-1) */
    int         latent_channels;
    int         default_steps;    /* 50 */
    float       default_guidance; /* 7.5 */
} tdm_pipeline_info_t;

void tdm_pipeline_info(const tdm_pipeline_t *pipe, tdm_pipeline_info_t *info);

/* Peak and current bytes allocated by the pipeline's device(s). */
void tdm_pipeline_memory(const tdm_pipeline_t *pipe, int64_t *current, int64_t *peak);

/* One image: image i of a job uses its own generator seeded with seed+i,
 * exactly as diffusers with generator=torch.Generator("cpu").manual_seed(seed+i). */
typedef struct {
    const char *prompt;           /* UTF-8 */
    const char *negative_prompt;  /* NULL = "" */
    uint64_t    seed;
    int         steps;            /* 0 = pipeline default */
    float       guidance;         /* NAN = pipeline default; <= 1 disables CFG (as diffusers) */
    int         width, height;    /* 0 = pipeline default; multiples of 8 */
    /* Called after each denoising step (may be NULL). */
    void      (*on_step)(void *user, int step, int total);
    void       *user;
} tdm_generate_params_t;

void tdm_generate_params_init(tdm_generate_params_t *p);

/* Generates one image. latents (may be NULL) receives the final latents
 * [1, latent_channels, height/f, width/f] float32 exactly as diffusers
 * returns them for output_type="latent" (before VAE scaling); rgb (may be
 * NULL; then the VAE is not run) receives height*width*3 bytes of 8-bit RGB,
 * row-major. Buffers are the caller's. */
tdm_status tdm_pipeline_generate(tdm_pipeline_t *pipe, const tdm_generate_params_t *p,
                                 float *latents, uint8_t *rgb);

#ifdef __cplusplus
}
#endif
#endif
