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

typedef enum { TDM_OUTPUT_PNG = 0, TDM_OUTPUT_LATENT = 1 } tdm_output_type;

typedef struct {
    const char *prompt;           /* UTF-8 */
    const char *negative_prompt;  /* NULL = "" */
    uint64_t    seed;             /* torch.Generator("cpu").manual_seed(seed) */
    int         steps;            /* 0 = pipeline default (50) */
    float       guidance;         /* < 0 = pipeline default (7.5); <= 1 disables CFG */
    int         width, height;    /* 0 = unet sample_size * vae scale */
    int         num_images;       /* images drawn from one generator, default 1 */
    /* Called after each denoising step (may be NULL). */
    void      (*on_step)(void *user, int step, int total);
    void       *user;
} tdm_generate_params_t;

void tdm_generate_params_init(tdm_generate_params_t *p);

/* Runs text-to-image. On success *latents_out (if not NULL) receives the
 * final latents [num_images, C, h, w] float32 (caller frees with free()),
 * and *rgb_out (if not NULL) the images as uint8 HWC RGB, num_images * h * w * 3
 * bytes (caller frees with free()). */
tdm_status tdm_pipeline_generate(tdm_pipeline_t *pipe, const tdm_generate_params_t *p,
                                 float **latents_out, int64_t latent_shape[4],
                                 uint8_t **rgb_out);

#ifdef __cplusplus
}
#endif
#endif
