/* cli.h — what the `tandem` command's files share: the error exit, the
 * flags of generate/encode/decode, and the helpers the commands use. Only
 * src/cli/ includes it; it is not part of the library. */
#ifndef TDM_CLI_H
#define TDM_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "tandem.h"

#define MAX_PROMPTS 100000

/* The process group of this run (NULL until joined): errors name the rank
 * and host when there are several, and end the whole job. */
extern tdm_dist_t *g_dist;

/* Prints one line "tandem: error: ..." (with the rank when there are
 * several) and exits with `code`, ending the whole job. */
void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
/* die(1) with tdm_last_error(). */
void die_status(void) __attribute__((noreturn));

/* All flags of all commands; each command rejects the ones it does not take. */
typedef struct {
    const char  *cmd;
    const char  *model;
    const char **prompts;
    int          nprompts, cap_prompts;
    int          first_owned;   /* prompts[first_owned..] were read from --prompts-file */
    const char **prompts_2;
    int          nprompts_2, cap_prompts_2;
    const char  *prompts_file;
    const char  *negative;
    const char  *negative_2;    /* SDXL --negative-prompt-2 */
    float        guidance_rescale;
    int          clip_skip;     /* --clip-skip N (SD, SDXL) */
    /* SDXL micro-conditioning: --original-size, --target-size WxH and
     * --crops-coords-top-left TOP,LEFT (0: not given) */
    int          orig_w, orig_h, target_w, target_h, crop_top, crop_left;
    uint64_t     seed;
    int          steps;
    float        guidance;
    int          width, height;
    int          max_seq;
    const char  *scheduler;
    int          per_prompt;
    int          latent_out;
    const char  *out;
    int          quiet;
    int          threads;
    const char  *variant;
    const char  *config;        /* --config DIR: the configs of a single-file --model */
    const char  *vae_file, *te_file, *te2_file;   /* --vae, --text-encoder, --text-encoder-2 FILE */
    const char  *dtype;         /* --dtype, or NULL: the device's default */
    const char  *device;
    int          report_memory;
    int          keep_resident;
    const char  *embeddings;
    const char  *latents;
    int          dynamic;       /* --schedule dynamic */
    int          print_map;     /* --print-device-map */
    int          reprobe;       /* --reprobe: --parallel auto measures again, ignoring the cache */
    const char  *devices;       /* --devices cpu:0,cpu:1 */
    char         device_map[512];   /* --device-map items, comma-joined */
    const char  *max_memory;
    const char  *only;          /* plan --only COMPONENT,... */
    int          gpus_per_rank; /* --gpus-per-rank K (0: not given) */
    int          resume;
    int          overwrite;     /* --overwrite: replace the outputs of an earlier job in --out */
    const char  *parallel;      /* --parallel ulysses=U,ring=R,tp=T,cfg=C (syntax checked), or NULL */
    const char  *comm;          /* --comm auto|mpi|nccl (checked), or NULL */
    int          ranks, images; /* plan --parallel auto: --ranks N, --images N (0: not given) */
    int          parallel_vae;  /* --parallel-vae: the image's ranks decode it together */
    /* serve */
    const char  *host, *token;  /* --host, --token */
    int          port, queue, max_steps, max_images, keep_mib;   /* -1: not given */
    int64_t      max_pixels;    /* 0: not given */
    double       keep, grace, rank_timeout;   /* seconds; -1: not given */
} args_t;

/* The commands, in the order of main.c's command table. */
typedef enum { CLI_GENERATE, CLI_ENCODE, CLI_DECODE, CLI_LAUNCH, CLI_PLAN, CLI_SERVE, CLI_NCMDS } cli_cmd;

/* ---- main.c: the command table and its usage texts ---- */
/* The overview: every command with its one-line summary. */
void usage(FILE *f);
/* The usage of command `cmd` (a cli_cmd). */
void cli_command_usage(int cmd, FILE *f);

/* ---- args.c: flags, parsed without exiting or printing ---- */
/* cli_parse_* return 0 on success, CLI_PARSE_HELP when --help/-h was
 * given, or the exit code (2: usage error, 1: other) with a one-line
 * message in err (without the "tandem: error: " prefix). */
#define CLI_PARSE_HELP (-1)
/* The cli_cmd of a command name, or -1. */
int cli_cmd_index(const char *name);
/* Parses the flags of generate/encode/decode/plan (`cmd`) into a, reads
 * --prompts-file and checks the prompts. Call args_free(a) after it,
 * whatever it returns. */
int cli_parse_args(args_t *a, const char *cmd, int argc, char **argv, char *err, size_t cap);
/* The steps of cli_parse_args: the flags alone (no file read), then the
 * prompts file (a regular file of UTF-8 lines without NUL bytes; blank
 * lines skipped), then the prompt checks (UTF-8, --prompt-2 count). */
int cli_parse_flags(args_t *a, const char *cmd, int argc, char **argv, char *err, size_t cap);
int cli_read_prompts_file(args_t *a, char *err, size_t cap);
int cli_check_prompts(const args_t *a, char *err, size_t cap);
void args_free(args_t *a);
/* An integer flag value in [lo, hi] written as plain decimal digits. */
int cli_parse_long(const char *flag, const char *v, long lo, long hi, long *out, char *err, size_t cap);
/* --seed: plain decimal digits in 0..2^64-1 (torch's manual_seed range). */
int cli_parse_seed(const char *v, uint64_t *out, char *err, size_t cap);
/* The message for a flag `cmd` does not take, with the nearest valid flag
 * when one is close ("did you mean --prompt?"). */
void cli_unknown_flag_msg(int cmd, const char *flag, char *err, size_t cap);
/* The flag of `cmd` nearest to `flag` when it is close enough to be a typo, else NULL. */
const char *cli_suggest_flag(int cmd, const char *flag);
/* Damerau (optimal string alignment) edit distance. */
int cli_edit_distance(const char *a, const char *b);

/* This rank's threads and device (several ranks: a share of the host's
 * cores, GPU local_rank mod the visible ones; --gpus-per-rank K: GPUs
 * r·K .. r·K + K - 1). a->device may end up pointing into devbuf. */
void map_rank_device(args_t *a, int rank, int size, char *devbuf, size_t cap);

/* ---- common.c: the exiting forms ---- */
/* An integer flag value in [lo, hi], else a usage error naming the flag. */
long parse_int(const char *flag, const char *v, long lo, long hi);
/* cli_parse_args for the command `cmd`: prints its usage and exits 0 on
 * --help, exits with the one-line error on bad input. */
void parse_args(args_t *a, const char *cmd, int argc, char **argv);
/* Exits with the unknown-flag error of `cmd` (a cli_cmd). */
void die_unknown_flag(int cmd, const char *flag) __attribute__((noreturn));
/* Opens the pipeline of --model with the device/placement flags (and the
 * --parallel groups of g_dist, when joined). */
tdm_pipeline_t *open_pipeline(const args_t *a);
/* --parallel against the pipeline and `guidance` (resolved): cfg=2 needs
 * classifier-free guidance (> 1); exits with the one-line error. */
void check_parallel_guidance(const args_t *a, const tdm_parallel_t *deg, float guidance);
/* --guidance-rescale and SDXL's micro-conditioning flags into p; exits with
 * the one-line error when `info`'s pipeline takes them not (info NULL: no
 * check). */
void cli_sd_params(const args_t *a, const tdm_pipeline_info_t *info, tdm_generate_params_t *p);
/* --parallel-vae needs images of more than one rank (deg); exits with the
 * one-line error (the pipeline refuses it too, for API callers). */
void check_parallel_vae(const args_t *a, const tdm_parallel_t *deg);
/* env.c: TANDEM_LOG → tdm_log_set_level; the TDM_* switches → *b (fields
 * whose variable is unset keep their value); an MPI launcher's variables →
 * d->mpi_launched = 1 (unset: d keeps its value). */
void cli_env_log_level(void);
void cli_env_backend(tdm_backend_params_t *b);
void cli_env_dist(tdm_dist_params_t *d);
/* Creates `dir` (and parents) and checks a file can be created in it. */
void prepare_out_dir(const char *dir);
/* Creates the missing folders above the file `path` (of flag `flag`). */
void prepare_out_parent(const char *flag, const char *path);
/* Seconds on the monotonic clock. */
double now(void);
/* Prints the peak of a stage that has run (with --report-memory). */
void stage_memory(tdm_pipeline_t *pipe, const args_t *a, tdm_stage stage);
int file_exists(const char *path);
int64_t shape_numel(const int64_t *shape, int nd);
/* The encode parameters of the prompts in a (the negative prompt only for SD with guidance). */
void fill_encode_params(const args_t *a, const tdm_pipeline_info_t *info, tdm_encode_params_t *ep,
                        int with_negative);

/* ---- the --out folder of generate (outdir.c) ---- */

/* Hidden entries of --out: the lock file of the job writing there, and the
 * folder of denoised latents waiting for the VAE (NNNNNN.safetensors). */
#define OUT_LOCK_NAME   ".tandem.lock"
#define OUT_LATENTS_DIR ".tandem-latents"

typedef struct {
    const char *dir;           /* --out */
    int         rank;
    int         lock_fd;       /* rank 0: holds the folder's lock; -1 elsewhere */
    char       *latents_dir;   /* OUT/.tandem-latents */
    char       *part;          /* OUT/manifest.rank<R>.jsonl: this rank's lines */
} outdir_t;

/* A malloc'd formatted string (exits on out of memory). */
char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Collective. Rank 0 creates --out, takes its lock (a second job fails with
 * one line naming the folder), refuses outputs of an earlier job unless
 * --overwrite (removes them) or --resume (keeps them), and makes the hidden
 * latents folder; every rank returns after that (barrier). */
void outdir_open(outdir_t *o, const args_t *a, tdm_dist_t *dist);
void outdir_close(outdir_t *o);
/* Output names of image `index` (malloc'd): "NNNNNN.png|safetensors", the
 * same under --out, and the hidden latents file. */
char *outdir_file(const outdir_t *o, int64_t index, int latent);
char *outdir_path(const outdir_t *o, int64_t index, int latent);
char *outdir_latent_path(const outdir_t *o, int64_t index);
/* Appends one manifest line (no newline) to this rank's part file, fsync'd. */
void outdir_append(const outdir_t *o, const char *line);
/* rec[i] = 1 when manifest.jsonl or a part file has a line for image i < n
 * (malloc'd, n bytes). */
uint8_t *outdir_recorded(const outdir_t *o, int64_t n);
/* Rank 0, once at the end: manifest.jsonl = the lines of manifest.jsonl,
 * the part files and `lines` (a later source replaces an earlier one), one
 * per image whose output exists, in index order; then removes the part
 * files and the hidden latents folder when it is empty. */
void outdir_merge(const outdir_t *o, int64_t n, int latent, char *const *lines, int nlines);

int cmd_generate(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_decode(int argc, char **argv);
int cmd_launch(int argc, char **argv);
int cmd_plan(int argc, char **argv);
/* tandem launch -- serve: the serve flags checked once before any rank
 * starts (exit 2 on a bad one; the build without a server says so). */
void serve_preflight(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif
