/* tandem.h — the public C API of tandem, a text-to-image diffusion engine
 * that runs Hugging Face diffusers model folders (Stable Diffusion 1.x/2.x,
 * FLUX.1 dev and schnell) natively, on the CPU or a CUDA GPU.
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
    TDM_ERR_INTERNAL,
    TDM_ERR_CANCELLED      /* the caller's cancel callback stopped the work */
} tdm_status;

/* The message of the last failure on this thread ("" if none). */
const char *tdm_last_error(void);
/* A short name for a status code ("ok", "io", ...). */
const char *tdm_status_name(tdm_status st);
/* 1 when the NUL-terminated s is valid UTF-8 (no overlong forms, surrogates
 * or code points above U+10FFFF); else 0 with *bad = the offending byte's
 * offset. Everything tandem stores (PNG text, manifests, metadata) passes it. */
int tdm_utf8_valid(const char *s, size_t *bad);

/* ---- logging -----------------------------------------------------------
 * The library logs to stderr ("tandem: LEVEL: ...") messages at or above
 * the level set here; TDM_LOG_WARN until changed. */
typedef enum { TDM_LOG_ERROR = 0, TDM_LOG_WARN, TDM_LOG_INFO, TDM_LOG_DEBUG } tdm_log_level;

void tdm_log_set_level(tdm_log_level lv);

/* ---- backend switches ----------------------------------------------------
 * Tuning and diagnostic switches of a device's backend, carried on each
 * device a pipeline opens. The defaults (tdm_backend_params_init) are what
 * the engine is tuned for; the CLI maps the TDM_* environment variables
 * named below onto these fields. */
typedef struct {
    /* 1: activations stay float32 on fp16/bf16 CUDA devices (TDM_ACT_F32=1) */
    int act_f32;
    /* 1: cuBLASLt times the candidate algorithms of each new GEMM shape and
     * keeps the fastest, instead of its first heuristic (TDM_LT_TUNE=1) */
    int lt_tune;
    /* 1: the 16-row flash-attention kernel for every head dim (TDM_ATTN_TC=1) */
    int attn_tc_16row;
    /* implicit-GEMM 3x3 convolution on fp16/bf16 CUDA devices: 0 never, 2
     * whenever the shape allows, else (1, the default) when the grid is at
     * least four blocks per SM (TDM_CONV_IGEMM) */
    int conv_igemm;
    /* its K step: 64 (default) where Cin allows, any other value 32
     * (TDM_CONV_IGEMM_BK) */
    int conv_igemm_bk;
    /* 1 (default): models replay captured CUDA graphs (TDM_CUDA_GRAPH=0: off) */
    int cuda_graph;
    /* 1: per-op CUDA timings, reported to stderr (TDM_PROFILE) */
    int profile;
    /* CPU convolution: bytes of one im2col column tile (0: the default,
     * 32 MiB) */
    size_t conv_tile_bytes;
    /* CPU convolution: 1 (default) 3x3 stride-1 convs of at least 64 2x2 output
     * tiles per image run as Winograd F(2x2,3x3); 0 always im2col
     * (TDM_CONV_WINOGRAD=0) */
    int conv_winograd;
    /* host copies of offloaded blocks of at least this many bytes are
     * page-locked for the GPU's DMA (default 1 MiB) */
    int64_t pin_min_bytes;
} tdm_backend_params_t;

void tdm_backend_params_init(tdm_backend_params_t *p);

/* ---- pipelines ---------------------------------------------------------
 *
 * A pipeline is a diffusers folder (StableDiffusionPipeline or FluxPipeline)
 * run in three stages, each loading only its own components:
 *   encode  (tokenizers + text encoders)  prompts → tdm_embeddings_t
 *   denoise (UNet or transformer)         embeddings + seed → latents
 *   decode  (VAE)                         latents → 8-bit RGB
 * Opening reads only config files. A stage loads its components when it
 * first runs and keeps them while it runs again; running another stage
 * frees them first (unless keep_resident is set), so at most one stage's
 * components are in memory. The stages give the same bytes whether run
 * one-shot or one by one. */

typedef struct tdm_pipeline tdm_pipeline_t;
typedef struct tdm_dist tdm_dist_t;   /* a process group ("data-parallel process groups" below) */

typedef struct {
    const char *device;        /* "cpu" (default), "cuda" (= "cuda:0") or "cuda:N" */
    int         num_threads;   /* 0 = all cores */
    /* overrides the folder's scheduler class, keeping its config (NULL: the
     * folder's): a diffusers class name in any case, or a short name — euler,
     * euler_a, ddim, pndm, dpmpp_2m (Stable Diffusion), flow_euler (FLUX) */
    const char *scheduler;
    const char *variant;       /* weight variant such as "fp16", or NULL */
    /* With a single-file checkpoint as the model (an original-layout
     * SD 1.x/2.x/XL .safetensors, or a BFL-layout FLUX transformer): the
     * diffusers folder of the same architecture whose configs, tokenizers and
     * scheduler it runs with (its weights only for the components the file
     * lacks); NULL otherwise */
    const char *config;
    /* A component's weights from a file of its own instead of the model's
     * (NULL: none): diffusers'/transformers' names, an original-layout VAE
     * (also FLUX's ae.safetensors) or an OpenCLIP text encoder */
    const char *vae_file, *text_encoder_file, *text_encoder_2_file;
    int         keep_resident; /* 1: keep each stage's components loaded after it ends */
    /* Precision of the GEMMs (Linear and Conv weights, stored in it, with
     * float32 accumulation): "fp32", "fp16" or "bf16"; NULL = the device's
     * default: fp32 on the CPU (the only one it computes in), on CUDA fp16
     * for Stable Diffusion and bf16 for FLUX (one dtype for all components
     * of the pipeline). Everything else (norms, activations, latents,
     * scheduler) stays float32. */
    const char *dtype;
    /* Placement over several devices (model sharding). device_map is
     * what tdm_plan / `tandem plan` takes (a pipeline-level STRATEGY and/or
     * COMPONENT=STRATEGY items; max_memory "0=16GiB,1=16GiB,cpu=64GiB,
     * disk=100GB" is required) and the run executes that plan: whole
     * components on their devices, split ones (any component) block-wise —
     * "cpu" blocks kept in host RAM and "disk" ones in the files, each brought
     * to GPU 0 while it runs (on CUDA: page-locked, copied on a side stream
     * while the previous block computes). On CUDA (device "cuda:0") the map's
     * GPU ids are CUDA devices: a split component runs on GPU 0 with the other
     * GPUs' blocks copied to it over peer access; a whole component left in
     * host RAM or on disk is streamed to GPU 0 the same way. devices
     * "cpu:0,cpu:1,..." instead makes virtual CPU devices stand for GPUs 0,
     * 1, ... (no CUDA needed). Each stage's components are planned on their
     * own (only they are ever loaded together), or all together with
     * keep_resident. The images are identical to a one-device run. All NULL:
     * one device. */
    const char *devices;
    const char *device_map;
    const char *max_memory;
    /* GPUs this process may use for its map (cuda:N .. cuda:N+gpus-1; the
     * CLI's --gpus-per-rank): a map naming more is refused. 0: no limit. */
    int gpus;
    /* The process group whose --parallel groups the stages run over
     * (tdm_dist_params_t.parallel); borrowed, it must outlive the pipeline.
     * With cfg = 2, Stable Diffusion's denoise runs the UNet on one half of
     * the guidance batch per rank (the image group's rank 0 the
     * unconditional, rank 1 the conditional) and the ranks exchange their
     * noise predictions each step. With ulysses = U and/or ring = R,
     * FLUX's transformer runs context-parallel over the image's R × U
     * ranks: each holds its share of the text and image tokens; Ulysses
     * exchanges heads (all-to-all) inside each ring slot, ring attention
     * passes K/V blocks across the slots. Every rank of the image then
     * holds the same latents — bit-identical to one process on the CPU
     * with Ulysses alone, within float tolerance (about 1e-6 relative,
     * not bit-identical) with a ring — and each calls denoise for the same
     * image in the same order. Encoding runs on the image's rank 0 and is
     * broadcast to the others. Refused at open: tp > 1 (not implemented
     * yet), cfg = 2 for FLUX (no guidance batch), ulysses or ring for
     * Stable Diffusion; refused at denoise: cfg = 2 with guidance <= 1.
     * NULL (default): this process alone. */
    tdm_dist_t *dist;
    /* How the ranks of a group exchange device buffers: "auto" (NULL: NCCL
     * when built and every rank of the group has a GPU of its own, else
     * staged through host memory over MPI), "mpi" or "nccl". */
    const char *comm;
    /* With a --parallel image group of more than one rank (dist): 1 makes
     * the VAE decode a collective of the image's ranks (the CLI's
     * --parallel-vae): each decodes a band of the image's rows
     * (tdm_vae_decode_cp), so each holds about its share of the decode's
     * working memory, and the image equals the one-rank decode to float
     * tolerance (PNG bytes within 1). Refused at open without such a group.
     * 0 (default): tdm_pipeline_decode is the one-process decode, called by
     * the image's first rank alone. */
    int parallel_vae;
    /* switches of every device the pipeline opens (tdm_backend_params_init) */
    tdm_backend_params_t backend;
} tdm_pipeline_params_t;

void tdm_pipeline_params_init(tdm_pipeline_params_t *p);

/* Opens a diffusers folder (or ORG/NAME resolved in the Hugging Face cache):
 * reads model_index.json and the component configs, loads no weights.
 * OUT: *pipe, freed with tdm_pipeline_close. */
tdm_status tdm_pipeline_open(tdm_pipeline_t **pipe, const char *model,
                             const tdm_pipeline_params_t *p);
void       tdm_pipeline_close(tdm_pipeline_t *pipe);

typedef enum { TDM_PIPE_SD = 0, TDM_PIPE_FLUX = 1 } tdm_pipeline_kind;

/* Facts about an opened pipeline, for defaults and output naming. */
typedef struct {
    tdm_pipeline_kind kind;
    const char *class_name;       /* model_index.json _class_name */
    int         sdxl;             /* StableDiffusionXLPipeline (kind TDM_PIPE_SD) */
    const char *scheduler;        /* scheduler class in use */
    int         default_width;    /* SD: unet sample_size * vae scale; FLUX: 1024 */
    int         default_height;
    int         size_multiple;    /* width/height must be multiples of this (SD 8, FLUX 16) */
    int         vae_scale_factor; /* 2^(len(vae.block_out_channels)-1) */
    int         latent_channels;
    int         default_steps;    /* SD 50; FLUX dev 28, schnell 4 */
    float       default_guidance; /* SD 7.5, SDXL 5; FLUX dev 3.5, schnell 0 */
    int         default_max_sequence_length; /* FLUX dev 512, schnell 256; SD 77 */
    int         uses_guidance;    /* SD: CFG when guidance > 1; FLUX: guidance embedding present */
    /* the GEMM dtype in use, "fp32", "fp16", "bf16" or "fp8": tdm_pipeline_params_t.dtype,
     * or its default for the device and pipeline kind */
    const char *dtype;
} tdm_pipeline_info_t;

void tdm_pipeline_info(const tdm_pipeline_t *pipe, tdm_pipeline_info_t *info);

typedef enum { TDM_STAGE_ENCODE = 0, TDM_STAGE_DENOISE = 1, TDM_STAGE_DECODE = 2 } tdm_stage;

/* Bytes allocated now and the peak since open, over the pipeline's device. */
void tdm_pipeline_memory(const tdm_pipeline_t *pipe, int64_t *current, int64_t *peak);
/* Peak bytes while `stage` ran (its components plus its work memory, after
 * the previous stage's components were freed); 0 if it has not run. */
int64_t tdm_pipeline_stage_peak(const tdm_pipeline_t *pipe, tdm_stage stage);
/* With a device map: the number of extra devices (the map's GPUs 1.., virtual
 * or CUDA, then host RAM), else 0; and for extra device i its name ("cpu:1"
 * or "cuda:1", ..., "host"), bytes now and peak since open. */
int  tdm_pipeline_extra_devices(const tdm_pipeline_t *pipe);
/* Peak bytes on extra device i (a GPU of the map, not host RAM) while
 * `stage` ran; 0 otherwise. */
int64_t tdm_pipeline_stage_peak_extra(const tdm_pipeline_t *pipe, tdm_stage stage, int i);
void tdm_pipeline_extra_memory(const tdm_pipeline_t *pipe, int i, char *name, size_t cap,
                               int64_t *current, int64_t *peak);

/* ---- stage 1: encode ------------------------------------------------------ */

typedef struct tdm_embeddings tdm_embeddings_t;

typedef struct {
    const char *const *prompts;    /* n UTF-8 prompts (CLIP prompt for FLUX) */
    int                n;
    const char *const *prompts_2;  /* FLUX: n T5 prompts; SDXL: n prompts for text_encoder_2
                                    * (NULL or "": the prompt) */
    const char        *negative_prompt; /* SD: NULL = ""; SDXL: NULL = zeros when the
                                         * pipeline has force_zeros_for_empty_prompt, else "" */
    const char        *negative_prompt_2; /* SDXL: text_encoder_2's (NULL or "": negative_prompt) */
    int                with_negative;   /* SD: also encode the negative prompt (needed for CFG) */
    int                max_sequence_length; /* FLUX T5 tokens, 0 = pipeline default; <= 512 */
    /* SD, SDXL: diffusers' clip_skip — the prompts' embeddings from that many
     * text-encoder layers before the last (SD: final-normalized
     * hidden_states[-(clip_skip + 1)]; SDXL: hidden_states[-(clip_skip + 2)]);
     * the negative prompts are encoded without it, as diffusers does. 0 = none */
    int                clip_skip;
} tdm_encode_params_t;

void tdm_encode_params_init(tdm_encode_params_t *p);

/* Encodes prompts with the text encoders only. OUT: *emb (free with
 * tdm_embeddings_free). SD: prompt_embeds [n, 77, D] (+ negative_prompt_embeds);
 * SDXL: the same with D the two encoders' penultimate widths side by side,
 * and pooled_prompt_embeds [n, Dp] (+ negative_pooled_prompt_embeds);
 * FLUX: prompt_embeds [n, L, D] (T5), pooled_prompt_embeds [n, Dp] (CLIP),
 * text_ids [L, 3]. */
tdm_status tdm_pipeline_encode(tdm_pipeline_t *pipe, const tdm_encode_params_t *p,
                               tdm_embeddings_t **emb);
void       tdm_embeddings_free(tdm_embeddings_t *emb);
int        tdm_embeddings_count(const tdm_embeddings_t *emb);
/* Writes the embeddings as safetensors (atomically), with the prompts and
 * parameters in the metadata plus `nmeta` extra key/value pairs. */
tdm_status tdm_embeddings_save(const tdm_embeddings_t *emb, const char *path, int nmeta,
                               const char *const *meta_kv);
/* Reads embeddings written by tdm_embeddings_save (or by diffusers tensors
 * of the same names) and checks they fit the pipeline's denoiser. */
tdm_status tdm_embeddings_load(tdm_pipeline_t *pipe, const char *path, tdm_embeddings_t **emb);
/* Prompt i as stored (NULL if unknown). */
const char *tdm_embeddings_prompt(const tdm_embeddings_t *emb, int i);

/* ---- stage 2: denoise ----------------------------------------------------- */

typedef struct {
    uint64_t    seed;             /* torch.Generator("cpu").manual_seed(seed) */
    int         steps;            /* 0 = pipeline default */
    float       guidance;         /* NAN = pipeline default; SD: <= 1 disables CFG */
    int         width, height;    /* 0 = pipeline default */
    /* SD/SDXL: guidance_rescale (0 = off), the rescale of the guided noise
     * prediction to the conditional one's standard deviation (diffusers'
     * rescale_noise_cfg) */
    float       guidance_rescale;
    /* SDXL micro-conditioning (the UNet's add_time_ids), in pixels:
     * original_size and target_size (0 = the image's width/height), and
     * crops_coords_top_left (default 0, 0) */
    int         original_width, original_height, target_width, target_height;
    int         crop_top, crop_left;
    /* Called after each denoising step (may be NULL). */
    void      (*on_step)(void *user, int step, int total);
    /* Called before each denoising step (may be NULL): nonzero stops the
     * image there with TDM_ERR_CANCELLED (a server's cancelled job). One
     * process per image only: the ranks of a --parallel group would have to
     * stop at the same step, which this callback does not arrange. */
    int       (*cancel)(void *user);
    void       *user;
} tdm_generate_params_t;

void tdm_generate_params_init(tdm_generate_params_t *p);

/* The shape of one image's latents as diffusers returns them for
 * output_type="latent": SD [1, C, h, w]; FLUX packed [1, h/2*w/2, 4C].
 * Returns the number of dims (4 or 3); errors for sizes the pipeline
 * cannot make (not multiples of info.size_multiple). */
tdm_status tdm_pipeline_latent_shape(const tdm_pipeline_t *pipe, int width, int height,
                                     int64_t shape[4], int *ndim);

/* Denoises one image for prompt row `index` of `emb` with the denoiser only;
 * latents receives the latent_shape floats. */
tdm_status tdm_pipeline_denoise(tdm_pipeline_t *pipe, const tdm_embeddings_t *emb, int index,
                                const tdm_generate_params_t *p, float *latents);

/* Loads `stage`'s components now (freeing the other stages' unless
 * keep_resident), so that timing of the stage's work excludes loading. */
tdm_status tdm_pipeline_load_stage(tdm_pipeline_t *pipe, tdm_stage stage);

/* Working memory, in bytes, that `stage` (TDM_STAGE_DENOISE or
 * TDM_STAGE_DECODE) needs on its device for one image of p's width x height
 * (0: the pipeline default) with p's guidance (SD: CFG batch 2 when > 1) and
 * `tokens` prompt tokens (0: default_max_sequence_length): the model's
 * activations, attention and convolution scratch as its forward allocates
 * them, plus the stage's latents / image buffers — not the weights. Reads
 * configs only; no weights are loaded. OUT: *bytes (INT64_MAX: too large to
 * count). */
tdm_status tdm_pipeline_work_bytes(tdm_pipeline_t *pipe, tdm_stage stage,
                                   const tdm_generate_params_t *p, int tokens, int64_t *bytes);
/* Refuses an image whose denoise stage (and, when decode != 0, decode stage)
 * needs more working memory (tdm_pipeline_work_bytes) than its device has
 * available now: host devices the host's available RAM (MemAvailable), CUDA
 * devices the GPU's free memory, capped devices what is left under the cap.
 * No margin: refused only when the estimate exceeds what is available.
 * TDM_ERR_NOMEM with one line naming the --width/--height flags (or the
 * config key of the default size), the component, GiB needed and available.
 * tdm_pipeline_denoise makes the same check for its stage once the
 * denoiser's weights are resident; call this first to fail before loading. */
tdm_status tdm_pipeline_check_memory(tdm_pipeline_t *pipe, const tdm_generate_params_t *p,
                                     int tokens, int decode);

/* Frees every loaded component now (the next stage loads what it needs). */
void tdm_pipeline_release(tdm_pipeline_t *pipe);

/* ---- stage 3: decode ------------------------------------------------------ */

/* Decodes one image's latents (latent_shape for width × height) with the VAE
 * only into width*height*3 bytes of RGB. With parallel_vae (params above)
 * a collective of the image's ranks: every rank calls it for the same image,
 * the latents of the image's first rank are used (the others' are not read
 * and may be NULL), and every rank gets the RGB. */
tdm_status tdm_pipeline_decode(tdm_pipeline_t *pipe, const float *latents, int width, int height,
                               uint8_t *rgb);

/* ---- output files ------------------------------------------------------------ */

/* Writes width*height*3 bytes of 8-bit RGB as a PNG, atomically (temporary
 * name, then rename), with `parameters` (may be NULL) in a text chunk of
 * that name (the A1111 convention). */
tdm_status tdm_image_save_png(const char *path, const uint8_t *rgb, int width, int height,
                              const char *parameters);
/* The same PNG in memory: *png (malloc'd, *len bytes; free it). */
tdm_status tdm_image_png(const uint8_t *rgb, int width, int height, const char *parameters,
                         uint8_t **png, size_t *len);
/* The A1111 "parameters" text of one image (malloc'd; NULL when out of
 * memory): the prompt, a "Negative prompt:" line when `negative` is not
 * empty, then "Steps: S, Sampler: SCHEDULER, CFG scale: G, Seed: N, Size:
 * WxH, Model: MODEL, Version: tandem VERSION". */
char *tdm_parameters_text(const char *prompt, const char *negative, int steps,
                          const char *scheduler, float guidance, uint64_t seed, int width,
                          int height, const char *model);

/* Writes one image's latents (tdm_pipeline_latent_shape for width × height)
 * as a safetensors file holding tensor "latents", atomically, with the size
 * and `parameters` (may be NULL) in its metadata. */
tdm_status tdm_latents_save(const tdm_pipeline_t *pipe, const char *path, const float *latents,
                            int width, int height, const char *parameters);

/* Reads latents written by tdm_latents_save (or a diffusers "latents"
 * tensor of batch 1). width and height: 0 on input = take them from the
 * file (its size metadata, or an SD latent's shape); the latents must fit
 * the size. OUT: *latents (free()), *parameters (free(); NULL if none;
 * may be passed as NULL). */
tdm_status tdm_latents_load(const tdm_pipeline_t *pipe, const char *path, int *width, int *height,
                            float **latents, char **parameters);

/* Writes `len` bytes as the whole new content of `path` atomically: a
 * temporary file with a unique name in path's folder, created exclusively
 * (never through an existing file or symlink), fsync'd, then renamed over
 * `path`. On failure `path` is untouched and nothing is left behind. The
 * PNG, latents and embeddings writers above work the same way. */
tdm_status tdm_file_write_atomic(const char *path, const void *data, size_t len);

/* Appends `len` bytes to `path` in one write and fsyncs it; creates the file
 * when missing, refuses a symlink or non-regular file at `path`. */
tdm_status tdm_file_append_sync(const char *path, const void *data, size_t len);

/* ---- one-shot --------------------------------------------------------------- */

/* encode → denoise → decode for one prompt. latents and rgb may be NULL
 * (rgb NULL: the VAE is not run). */
tdm_status tdm_pipeline_generate(tdm_pipeline_t *pipe, const char *prompt,
                                 const char *negative_prompt, const tdm_generate_params_t *p,
                                 float *latents, uint8_t *rgb);

/* ---- data-parallel process groups ----------------------------------------
 * One process per GPU (or per CPU share), started by `tandem launch`, mpirun
 * or srun. Image i of a job always uses seed+i, so outputs do not depend on
 * how many processes made them. */

/* tdm_dist_t is declared with tdm_pipeline_t above. */

/* How the process group is formed. The library reads no environment: the
 * caller says how this process was started (the CLI fills these fields from
 * the launcher's variables, cli_env_dist in src/cli/env.c). */
typedef struct {
    /* 1: an MPI launcher (mpirun, srun, tandem launch) started this process
     * (the CLI: OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK or
     * MV2_COMM_WORLD_SIZE set and non-empty). 0 (default): not launched. */
    int mpi_launched;
    /* Single-image parallelism, "ulysses=U,ring=R,tp=T,cfg=C" (any subset,
     * any order; tdm_parallel_parse): the ranks split into groups of
     * cfg·ring·ulysses·tp ranks, each group making one image at a time, and
     * the world size divided by that is the data-parallel degree. NULL or
     * "" (default): every rank makes its own images. */
    const char *parallel;
} tdm_dist_params_t;

void tdm_dist_params_init(tdm_dist_params_t *p);

/* Joins the process group: MPI when p->mpi_launched is set (or MPI is
 * already initialized by the program) and the build has MPI, else a
 * single-process group (rank 0 of 1). A launched process in a build without
 * MPI logs a warning and runs as rank 0 of 1. Then splits the ranks as
 * p->parallel says (collective; an invalid spec or one whose degrees do not
 * divide the world size fails on every rank). p NULL: the defaults.
 * OUT: *d. */
tdm_status tdm_dist_init(tdm_dist_t **d, const tdm_dist_params_t *p);
/* Leaves the group (MPI_Finalize when MPI was started); NULL is a no-op. */
void tdm_dist_free(tdm_dist_t *d);

int         tdm_dist_rank(const tdm_dist_t *d);
int         tdm_dist_size(const tdm_dist_t *d);
int         tdm_dist_local_rank(const tdm_dist_t *d);   /* rank among the ranks of this host */
int         tdm_dist_local_size(const tdm_dist_t *d);
const char *tdm_dist_host(const tdm_dist_t *d);          /* this rank's host name */

/* Degrees of parallelism over the ranks of a job. The world is the grid
 * DP × CFG × ring × Ulysses × TP, laid out with TP innermost and DP
 * outermost (xDiT's order):
 *   rank = (((dp·cfg_degree + cfg)·ring_degree + ring)·ulysses_degree + ulysses)·tp_degree + tp
 * so one image's ranks are consecutive. */
typedef struct {
    int dp;        /* images made at once: world size / (cfg·ring·ulysses·tp) */
    int cfg;       /* 1, or 2: the two halves of classifier-free guidance on two ranks */
    int ring;      /* ring attention (context parallelism over K/V shards) */
    int ulysses;   /* Ulysses attention (context parallelism over heads) */
    int tp;        /* tensor parallelism */
} tdm_parallel_t;

/* Parses "ulysses=U,ring=R,tp=T,cfg=C" (any subset, any order, each at most
 * once; omitted degrees are 1; NULL or "" = all 1). world_size > 0: the
 * degrees must divide it and out->dp = world_size / (cfg·ring·ulysses·tp);
 * world_size <= 0: only the syntax is checked and out->dp = 1. "auto" is
 * refused (TDM_ERR_UNSUPPORTED: not available yet). Errors name "--parallel",
 * the degree and why. OUT: *out. */
tdm_status tdm_parallel_parse(const char *spec, int world_size, tdm_parallel_t *out);

/* The degrees this group was split into (*deg) and this rank's coordinates
 * in the grid (*at: each field its index along that dimension); either may
 * be NULL. Without a --parallel spec: dp = size, every other degree 1. */
void tdm_dist_parallel(const tdm_dist_t *d, tdm_parallel_t *deg, tdm_parallel_t *at);
/* This rank's rank among the ranks of its image (0 .. cfg·ring·ulysses·tp - 1);
 * rank 0 of an image writes it. */
int tdm_dist_image_rank(const tdm_dist_t *d);
/* Collective over the ranks of this rank's image: rank 0 of the image's n
 * values replace the others'. */
tdm_status tdm_dist_image_broadcast_i64(tdm_dist_t *d, int64_t *v, int n);
/* Collective over the world: replaces d's --parallel grid by the one of
 * `spec` (as tdm_parallel_parse with the world size; the same on every
 * rank), e.g. after choosing it with tdm_parallel_choose. Call before any
 * pipeline uses d's groups. */
tdm_status tdm_dist_set_parallel(tdm_dist_t *d, const char *spec);

/* accelerate's PartialState.split_between_processes for n items:
 * contiguous blocks, the first n % size ranks one more, empty for ranks
 * beyond n. OUT: [*begin, *end). */
void tdm_split_between_processes(int64_t n, int rank, int size, int64_t *begin, int64_t *end);
/* The apply_padding=True variant: the same block, and *padded_len = the
 * length every rank has after padding (ceil(n / size); 0 when n == 0),
 * padded with the last item of the whole input. */
void tdm_split_between_processes_padded(int64_t n, int rank, int size, int64_t *begin,
                                        int64_t *end, int64_t *padded_len);

/* Dynamic schedule: a counter shared by all ranks (MPI one-sided atomic
 * fetch-and-add on rank 0's window; a plain counter for one process).
 * Collective: every rank calls tdm_dist_counter_open and _close. */
tdm_status tdm_dist_counter_open(tdm_dist_t *d);
/* Returns the next value (0, 1, 2, ... across all ranks) in *next. */
tdm_status tdm_dist_counter_next(tdm_dist_t *d, int64_t *next);
tdm_status tdm_dist_counter_close(tdm_dist_t *d);

/* Collective: every rank contributes `n` NUL-terminated records; rank 0
 * receives all ranks' records (its own first, then rank 1's, ...) in
 * *all (array of *nall malloc'd strings, free each and the array);
 * other ranks get *all = NULL, *nall = 0. */
tdm_status tdm_dist_gather_strings(tdm_dist_t *d, char *const *recs, int n, char ***all, int *nall);
/* Collective: sum of v over ranks, on every rank. */
tdm_status tdm_dist_allreduce_sum(tdm_dist_t *d, double *v, int n);

tdm_status tdm_dist_barrier(tdm_dist_t *d);
/* Under MPI: ends every rank of the job now with `code` (MPI_Abort) and does
 * not return. Single process: returns, and the caller (the CLI) exits. */
void tdm_dist_abort(tdm_dist_t *d, int code);


/* Number of CUDA devices visible to this process (0 without CUDA). */
int tdm_cuda_devices(void);

/* ---- placement plan ---------------------------------------------------
 * Where each model component (or each block of a split component) of a
 * folder would go under per-device memory budgets: `tandem plan`. Sizes come
 * from the config files; where a component's folder also holds its
 * safetensors weights (the files the loaders open, `variant` as for
 * tdm_pipeline_params_t), their headers are read (never the tensor data):
 * every parameter must be there with the config's shape (else an error
 * naming the component, tensor and file), and with dtype NULL each floating
 * tensor counts in its file's dtype. device_map is a comma list
 * of a pipeline-level STRATEGY (whole components over the GPUs; default
 * "balanced") and/or COMPONENT=STRATEGY items (that component split
 * block-wise, like from_pretrained(device_map=...)); strategies are "auto"
 * (= "balanced"), "balanced_low_0", "sequential". max_memory is required,
 * e.g. "0=16GiB,1=16GiB,cpu=64GiB,disk=200GB". dtype "fp32"|"fp16"|"bf16"
 * for every floating tensor (NULL: the weight files' dtypes, or without
 * weights fp16 for Stable Diffusion, bf16 for FLUX); only = comma list of
 * components (NULL: all). As accelerate, budgets without "disk" get an
 * unlimited disk (weights streamed from the mmapped safetensors, nothing
 * written), shown in the JSON as "max_memory": {..., "disk": "unlimited"};
 * a plan fails for room only against an explicit disk= cap. The
 * AutoencoderKL is planned as the decode stage runs it: decoder and
 * post_quant_conv (no tandem command runs its encoder). OUT: *json, one JSON
 * object {"strategy", "max_memory", "device_map", "bytes"} (free() it). */
typedef struct {
    const char *model;
    const char *only;
    const char *device_map;
    const char *max_memory;
    const char *dtype;
    const char *variant;       /* weight variant such as "fp16", or NULL */
    const char *config;        /* a single-file model's diffusers folder (tdm_pipeline_params_t.config) */
    const char *vae_file, *text_encoder_file, *text_encoder_2_file;   /* as tdm_pipeline_params_t's */
} tdm_plan_params_t;

void       tdm_plan_params_init(tdm_plan_params_t *p);

/* `tandem plan --parallel auto`: every layout of `ranks` ranks (DP × CFG ×
 * ring × Ulysses × TP) for the job's images of width × height on the
 * model's denoiser, with the predicted time of a denoising step, the
 * job's time a step and the memory of a rank (a cost model: see
 * src/place/par_plan.h), the machine numbers (defaults for `device`:
 * "cuda" an H100-class GPU with NCCL, "cpu" this host's cores), and the
 * layout `generate --parallel` would be given: the one that finishes the
 * job first within max_memory's GPU 0 budget (each rank's; NULL: the
 * device default), among the modes the pipeline implements. width, height
 * 0: the model's default size; images 0: 1; guidance > 1 (NAN: the
 * pipeline's default) gives Stable Diffusion its CFG batch. OUT: *json (free() it). */
/* A machine's numbers for the --parallel cost model (tdm_parallel_probe). */
typedef struct {
    double gemm_flop_s, attn_flop_s;  /* a rank's sustained GEMM and attention throughput */
    double link_bytes_s, latency_s;   /* a rank's all-to-all bandwidth, one call's latency (0: unknown) */
} tdm_parallel_machine_t;

typedef struct {
    const char *model;
    const tdm_parallel_machine_t *machine;   /* measured numbers (NULL or 0 fields: the device's defaults) */
    const char *device;       /* "cuda" (NULL) or "cpu" */
    const char *dtype;        /* NULL: the device's default for the pipeline */
    const char *max_memory;   /* "0=16GiB": a rank's budget, or NULL */
    int ranks;
    int64_t images;
    int width, height;
    int max_sequence_length;  /* FLUX text tokens (0: 512) */
    float guidance;
} tdm_parallel_plan_params_t;

void       tdm_parallel_plan_params_init(tdm_parallel_plan_params_t *p);
tdm_status tdm_parallel_plan(const tdm_parallel_plan_params_t *p, char **json);
/* The layout tdm_parallel_plan names, as a --parallel spec
 * ("cfg=C,ring=R,ulysses=U,tp=T", for tdm_parallel_parse) in spec (cap
 * bytes), and its predicted seconds a denoising step in *step_s (may be
 * NULL). TDM_ERR_INVALID_ARG naming --parallel auto when no layout tandem
 * runs fits. */
tdm_status tdm_parallel_choose(const tdm_parallel_plan_params_t *p, char *spec, size_t cap, double *step_s);
/* Collective over d's world: every rank opens `device` ("cpu", "cuda:N")
 * with `dtype` (NULL: fp32 on cpu, bf16 on cuda) and times a GEMM and an
 * attention call on it (all ranks at once, as they will run; `threads` > 0:
 * the CPU threads a rank will use), then an all-to-all over the world
 * through the exchange `comm` ("auto" | "mpi" | "nccl", as --comm) picks;
 * *out: the ranks' averages. Well under a second. */
tdm_status tdm_parallel_probe(tdm_dist_t *d, const char *device, const char *dtype, const char *comm,
                              int threads, tdm_parallel_machine_t *out);
/* The components the stages of an opened pipeline load, as comma lists for
 * tdm_plan_params_t.only: 3 lists (encode, denoise, decode), or with
 * `together` (keep_resident: everything stays loaded) 1 list, NULL = all.
 * A run with a device map plans each list separately. Returns the count. */
int        tdm_pipeline_stage_components(const tdm_pipeline_t *pipe, int together,
                                         const char **out);
tdm_status tdm_plan(const tdm_plan_params_t *p, char **json);
/* The plan an opened pipeline executes for list k of
 * tdm_pipeline_stage_components (k in [0, count)), as tdm_plan prints it for
 * the same flags, the components' folder and the pipeline's dtype
 * (tdm_pipeline_info_t.dtype). Without a device map: an error.
 * OUT: *json (free() it). */
tdm_status tdm_pipeline_device_map(const tdm_pipeline_t *pipe, int k, char **json);

#ifdef __cplusplus
}
#endif
#endif
