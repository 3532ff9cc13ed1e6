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
    int          nprompts;
    int          first_owned;   /* prompts[first_owned..] were read from --prompts-file */
    const char **prompts_2;
    int          nprompts_2;
    const char  *prompts_file;
    const char  *negative;
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
    const char  *dtype;         /* --dtype, or NULL: the device's default */
    const char  *device;
    int          report_memory;
    int          keep_resident;
    const char  *embeddings;
    const char  *latents;
    int          dynamic;       /* --schedule dynamic */
    int          print_map;     /* --print-device-map */
    const char  *devices;       /* --devices cpu:0,cpu:1 */
    char         device_map[512];   /* --device-map items, comma-joined */
    const char  *max_memory;
    int          gpus_per_rank; /* --gpus-per-rank K (0: not given) */
    int          resume;
} args_t;

/* The usage text of all commands (main.c). */
void usage(FILE *f);

/* An integer flag value in [lo, hi], else a usage error naming the flag. */
long parse_int(const char *flag, const char *v, long lo, long hi);
/* Parses the flags of generate/encode/decode (`cmd`) into a; exits on bad input. */
void parse_args(args_t *a, const char *cmd, int argc, char **argv);
void args_free(args_t *a);
/* Opens the pipeline of --model with the device/placement flags. */
tdm_pipeline_t *open_pipeline(const args_t *a);
/* Creates `dir` (and parents) and checks a file can be created in it. */
void prepare_out_dir(const char *dir);
/* Seconds on the monotonic clock. */
double now(void);
/* Prints the peak of a stage that has run (with --report-memory). */
void stage_memory(tdm_pipeline_t *pipe, const args_t *a, tdm_stage stage);
int file_exists(const char *path);
int64_t shape_numel(const int64_t *shape, int nd);
/* The encode parameters of the prompts in a (the negative prompt only for SD with guidance). */
void fill_encode_params(const args_t *a, const tdm_pipeline_info_t *info, tdm_encode_params_t *ep,
                        int with_negative);

int cmd_generate(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_decode(int argc, char **argv);
int cmd_launch(int argc, char **argv);
int cmd_plan(int argc, char **argv);

#endif
