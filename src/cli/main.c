/* main.c — the `tandem` command: argument parsing, job list, the staged
 * encode → denoise → decode flow over the public API, output files,
 * manifest and progress. The only place that prints to stdout and exits. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tandem.h"

#define MAX_PROMPTS 100000

/* The process group of this run (NULL until joined): errors name the rank
 * and host when there are several, and end the whole job. */
static tdm_dist_t *g_dist;

static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("tandem: error: ", stderr);
    if (g_dist && tdm_dist_size(g_dist) > 1)
        fprintf(stderr, "rank %d (%s): ", tdm_dist_rank(g_dist), tdm_dist_host(g_dist));
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    fflush(stderr);
    va_end(ap);
    if (g_dist && tdm_dist_size(g_dist) > 1) tdm_dist_abort(g_dist, code);
    exit(code);
}

static void die_status(void) { die(1, "%s", tdm_last_error()); }

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

static void usage(FILE *f) {
    fputs("usage:\n"
          "  tandem generate --model DIR|ORG/NAME [--prompt TEXT]... [--prompts-file FILE]\n"
          "                  [--prompt-2 TEXT]... [--negative-prompt TEXT] [--seed N] [--steps N]\n"
          "                  [--guidance G] [--width W] [--height H] [--max-sequence-length N]\n"
          "                  [--scheduler CLASSNAME] [--num-images-per-prompt N]\n"
          "                  [--output-type png|latent] [--out DIR] [--embeddings FILE]\n"
          "                  [--dtype fp32|fp16|bf16] [--device cpu|cuda:N] [--variant NAME]\n"
          "                  [--threads N] [--keep-resident] [--report-memory] [--quiet]\n"
          "                  [[--device-map STRATEGY|COMPONENT=STRATEGY]... --max-memory 0=..,1=..,cpu=..\n"
          "                   [--devices cpu:0,cpu:1,...] [--gpus-per-rank K] [--print-device-map]]\n"
          "                   (run a `tandem plan` placement: on the GPUs from --device cuda:N on —\n"
          "                   with --device cuda each rank takes K GPUs of its own — or on virtual\n"
          "                   devices standing for GPUs)\n"
          "  tandem encode   --model DIR [--prompt TEXT]... [--prompts-file FILE] [--prompt-2 TEXT]...\n"
          "                  [--negative-prompt TEXT] [--max-sequence-length N] --out FILE.safetensors\n"
          "  tandem decode   --model DIR --latents FILE.safetensors [--width W] [--height H]\n"
          "                  --out FILE.png\n"
          "  tandem launch   -n N [--gpus LIST] -- generate ... [--schedule static|dynamic] [--resume]\n"
          "  tandem plan     --model DIR --max-memory 0=16GiB,1=16GiB,cpu=64GiB\n"
          "                  [--device-map STRATEGY|COMPONENT=STRATEGY]... [--only COMPONENT,...]\n"
          "                  [--dtype fp32|fp16|bf16] [--variant NAME]   (placement as JSON from\n"
          "                  the configs and, where present, the safetensors headers)\n"
          "  tandem --version\n"
          "Image i of a job (prompts x images per prompt, prompt-major) uses seed+i and is written as\n"
          "OUT/%06d.png (or .safetensors with tensor \"latents\"); OUT/manifest.jsonl lists them.\n"
          "Stages load only their components: text encoders, then the denoiser, then the VAE.\n"
          "--dtype is the GEMM precision (Linear/Conv weights; float32 accumulation): fp32 on cpu;\n"
          "on cuda the default is fp16 for Stable Diffusion and bf16 for FLUX.\n",
          f);
}

static long parse_int(const char *flag, const char *v, long lo, long hi) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        die(2, "%s %s: expected an integer in [%ld, %ld]", flag, v, lo, hi);
    return x;
}

static int utf8_valid(const char *s, size_t *bad) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (p[i]) {
        unsigned c = p[i];
        int n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
        if (n < 0 || (n == 1 && c < 0xc2) || (n == 3 && c > 0xf4)) { *bad = i; return 0; }
        for (int k = 1; k <= n; k++)
            if ((p[i + k] & 0xc0) != 0x80) { *bad = i; return 0; }
        if (n == 2) {
            unsigned cp = ((c & 0xf) << 12) | ((p[i + 1] & 0x3f) << 6);
            if (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff)) { *bad = i; return 0; }
        }
        if (n == 3) {
            unsigned cp = ((c & 7) << 18) | ((p[i + 1] & 0x3f) << 12);
            if (cp < 0x10000 || cp > 0x10ffff) { *bad = i; return 0; }
        }
        i += (size_t)n + 1;
    }
    return 1;
}

static void add_prompt(const char **list, int *n, const char *p, const char *flag) {
    if (*n >= MAX_PROMPTS) die(2, "%s: more than %d prompts", flag, MAX_PROMPTS);
    list[(*n)++] = p;
}

static void read_prompts_file(args_t *a) {
    FILE *f = fopen(a->prompts_file, "r");
    if (!f) die(1, "--prompts-file %s: %s", a->prompts_file, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (n == 0) continue;
        char *copy = strdup(line);
        if (!copy) die(1, "out of memory");
        add_prompt(a->prompts, &a->nprompts, copy, "--prompts-file");
    }
    free(line);
    fclose(f);
}

static void args_free(args_t *a) {
    for (int i = a->first_owned; i < a->nprompts; i++) free((char *)a->prompts[i]);
    free(a->prompts);
    free(a->prompts_2);
}

/* Flags each command takes (space-separated, with spaces around). */
static const char *GEN_FLAGS = " --model --prompt --prompts-file --prompt-2 --negative-prompt --seed --steps "
                               "--guidance --width --height --max-sequence-length --scheduler "
                               "--num-images-per-prompt --output-type --out --threads --variant --device "
                               "--dtype --embeddings --quiet --report-memory --keep-resident --schedule --resume "
                               "--devices --device-map --max-memory --gpus-per-rank --print-device-map ";
static const char *ENC_FLAGS = " --model --prompt --prompts-file --prompt-2 --negative-prompt "
                               "--max-sequence-length --out --threads --variant --device --dtype --quiet "
                               "--report-memory ";
static const char *DEC_FLAGS = " --model --latents --width --height --out --threads --variant --device "
                               "--dtype --quiet --report-memory ";

static void parse_args(args_t *a, const char *cmd, int argc, char **argv) {
    const char *allowed = !strcmp(cmd, "generate") ? GEN_FLAGS : !strcmp(cmd, "encode") ? ENC_FLAGS : DEC_FLAGS;
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    a->prompts = calloc(MAX_PROMPTS, sizeof *a->prompts);
    a->prompts_2 = calloc(MAX_PROMPTS, sizeof *a->prompts_2);
    if (!a->prompts || !a->prompts_2) die(1, "out of memory");
    a->guidance = NAN;
    a->per_prompt = 1;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { usage(stdout); exit(0); }
        if (strncmp(f, "--", 2) != 0) die(2, "unexpected argument \"%s\" (see tandem --help)", f);
        char key[64];
        snprintf(key, sizeof key, " %.60s ", f);
        if (!strstr(allowed, key)) die(2, "%s: unknown flag for tandem %s (see tandem --help)", f, cmd);
        if (!strcmp(f, "--quiet")) { a->quiet = 1; continue; }
        if (!strcmp(f, "--report-memory")) { a->report_memory = 1; continue; }
        if (!strcmp(f, "--keep-resident")) { a->keep_resident = 1; continue; }
        if (!strcmp(f, "--resume")) { a->resume = 1; continue; }
        if (!strcmp(f, "--print-device-map")) { a->print_map = 1; continue; }
        if (i + 1 >= argc) die(2, "%s: missing value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--model")) a->model = v;
        else if (!strcmp(f, "--prompt")) add_prompt(a->prompts, &a->nprompts, v, f);
        else if (!strcmp(f, "--prompt-2")) add_prompt(a->prompts_2, &a->nprompts_2, v, f);
        else if (!strcmp(f, "--prompts-file")) a->prompts_file = v;
        else if (!strcmp(f, "--negative-prompt")) a->negative = v;
        else if (!strcmp(f, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') die(2, "--seed %s: expected a non-negative integer", v);
            a->seed = s;
        } else if (!strcmp(f, "--steps")) a->steps = (int)parse_int(f, v, 1, 1000);
        else if (!strcmp(f, "--guidance")) {
            char *end;
            a->guidance = strtof(v, &end);
            if (end == v || *end || !isfinite(a->guidance)) die(2, "--guidance %s: expected a number", v);
        } else if (!strcmp(f, "--width")) a->width = (int)parse_int(f, v, 8, 16384);
        else if (!strcmp(f, "--height")) a->height = (int)parse_int(f, v, 8, 16384);
        else if (!strcmp(f, "--max-sequence-length")) a->max_seq = (int)parse_int(f, v, 1, 512);
        else if (!strcmp(f, "--scheduler")) a->scheduler = v;
        else if (!strcmp(f, "--num-images-per-prompt")) a->per_prompt = (int)parse_int(f, v, 1, 10000);
        else if (!strcmp(f, "--output-type")) {
            if (!strcmp(v, "png")) a->latent_out = 0;
            else if (!strcmp(v, "latent")) a->latent_out = 1;
            else die(2, "--output-type %s: expected png or latent", v);
        } else if (!strcmp(f, "--out")) a->out = v;
        else if (!strcmp(f, "--threads")) a->threads = (int)parse_int(f, v, 1, 4096);
        else if (!strcmp(f, "--variant")) a->variant = v;
        else if (!strcmp(f, "--device")) a->device = v;
        else if (!strcmp(f, "--embeddings")) a->embeddings = v;
        else if (!strcmp(f, "--devices")) a->devices = v;
        else if (!strcmp(f, "--max-memory")) a->max_memory = v;
        else if (!strcmp(f, "--gpus-per-rank")) a->gpus_per_rank = (int)parse_int(f, v, 1, 64);
        else if (!strcmp(f, "--device-map")) {
            size_t n = strlen(a->device_map);
            if (n + strlen(v) + 2 > sizeof a->device_map) die(2, "--device-map: too long");
            snprintf(a->device_map + n, sizeof a->device_map - n, "%s%s", n ? "," : "", v);
        }
        else if (!strcmp(f, "--latents")) a->latents = v;
        else if (!strcmp(f, "--schedule")) {
            if (!strcmp(v, "static")) a->dynamic = 0;
            else if (!strcmp(v, "dynamic")) a->dynamic = 1;
            else die(2, "--schedule %s: expected static or dynamic", v);
        }
        else if (!strcmp(f, "--dtype")) {
            if (strcmp(v, "fp32") != 0 && strcmp(v, "fp16") != 0 && strcmp(v, "bf16") != 0)
                die(2, "--dtype %s: expected fp32, fp16 or bf16", v);
            a->dtype = v;
        }
    }
    if (!a->model) die(2, "--model: required");
    a->first_owned = a->nprompts;
    if (a->prompts_file) read_prompts_file(a);
    if (a->width % 8) die(2, "--width %d: must be a multiple of 8", a->width);
    if (a->height % 8) die(2, "--height %d: must be a multiple of 8", a->height);
    size_t bad;
    for (int i = 0; i < a->nprompts; i++)
        if (!utf8_valid(a->prompts[i], &bad)) die(2, "--prompt %d: invalid UTF-8 at byte %zu", i + 1, bad);
    for (int i = 0; i < a->nprompts_2; i++)
        if (!utf8_valid(a->prompts_2[i], &bad)) die(2, "--prompt-2 %d: invalid UTF-8 at byte %zu", i + 1, bad);
    if (a->negative && !utf8_valid(a->negative, &bad)) die(2, "--negative-prompt: invalid UTF-8 at byte %zu", bad);
    if (a->nprompts_2 && a->nprompts_2 != a->nprompts)
        die(2, "--prompt-2: given %d times for %d prompts (give it once per --prompt)", a->nprompts_2, a->nprompts);
}

static tdm_pipeline_t *open_pipeline(const args_t *a) {
    tdm_pipeline_params_t pp;
    tdm_pipeline_params_init(&pp);
    if (a->device) pp.device = a->device;
    pp.gpus = a->gpus_per_rank;
    pp.num_threads = a->threads;
    pp.scheduler = a->scheduler;
    pp.variant = a->variant;
    pp.dtype = a->dtype;
    pp.keep_resident = a->keep_resident;
    pp.devices = a->devices;
    pp.device_map = a->device_map[0] ? a->device_map : NULL;
    pp.max_memory = a->max_memory;
    tdm_pipeline_t *pipe = NULL;
    if (tdm_pipeline_open(&pipe, a->model, &pp) != TDM_OK) die_status();
    return pipe;
}

/* The output folder this run created, removed at exit if still empty (a
 * run that fails before writing anything leaves no trace). */
static char created_dir[4096];

static void remove_created_dir(void) {
    if (created_dir[0]) rmdir(created_dir);
}

/* Creates `dir` (and parents) and checks a file can be created in it. */
static void prepare_out_dir(const char *dir) {
    struct stat sb0;
    if (stat(dir, &sb0) != 0 && strlen(dir) < sizeof created_dir) {
        strcpy(created_dir, dir);
        atexit(remove_created_dir);
    }
    char buf[4096];
    if (strlen(dir) >= sizeof buf - 40) die(2, "--out %s: path too long", dir);
    strcpy(buf, dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) die(1, "--out %s: cannot create %s: %s", dir, buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) die(1, "--out %s: cannot create: %s", dir, strerror(errno));
    struct stat sb;
    if (stat(buf, &sb) != 0 || !S_ISDIR(sb.st_mode)) die(1, "--out %s: not a directory", dir);
    snprintf(buf, sizeof buf, "%s/.tandem-write-test-XXXXXX", dir);
    int fd = mkstemp(buf);
    if (fd < 0) die(1, "--out %s: cannot write there: %s", dir, strerror(errno));
    close(fd);
    unlink(buf);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    int    quiet, tty;
    int    image, nimages;
    double t0;
} progress_t;

static void on_step(void *user, int step, int total) {
    progress_t *pr = user;
    if (pr->quiet || !pr->tty) return;
    double el = now() - pr->t0, rate = step / (el > 0 ? el : 1e-9);
    fprintf(stderr, "\rimage %d/%d  step %d/%d  %.2f it/s  ETA %.0fs   ", pr->image + 1, pr->nimages,
            step, total, rate, (total - step) / rate);
    if (step == total) fputc('\n', stderr);
    fflush(stderr);
}

/* Prints the peak of a stage that has run (with --report-memory). */
static void stage_memory(tdm_pipeline_t *pipe, const args_t *a, tdm_stage stage) {
    static const char *names[] = {"encode", "denoise", "decode"};
    int64_t peak = tdm_pipeline_stage_peak(pipe, stage);
    if (!a->report_memory) return;
    fprintf(stderr, "tandem: memory: %s stage peak %lld bytes (%.1f MiB)\n", names[stage], (long long)peak,
            peak / 1048576.0);
    const int nx = tdm_pipeline_extra_devices(pipe);
    for (int i = 0; i + 1 < nx; i++) {   /* the map's other GPUs (the last extra is host RAM) */
        char nm[32];
        int64_t cur, all;
        tdm_pipeline_extra_memory(pipe, i, nm, sizeof nm, &cur, &all);
        int64_t p = tdm_pipeline_stage_peak_extra(pipe, stage, i);
        fprintf(stderr, "tandem: memory: %s stage peak on %s %lld bytes (%.1f MiB)\n", names[stage], nm,
                (long long)p, p / 1048576.0);
    }
}

/* Rewrites OUT/<name> atomically from the lines so far (NULL lines skipped). */
static void write_manifest_named(const char *out, const char *name, char **lines, int64_t n) {
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", out, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) die(1, "%s: cannot write: %s", tmp, strerror(errno));
    int ok = 1;
    for (int64_t i = 0; i < n && ok; i++) ok = !lines[i] || (fputs(lines[i], f) >= 0 && fputc('\n', f) != EOF);
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        die(1, "%s: cannot write: %s", path, strerror(errno));
    }
}

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int64_t shape_numel(const int64_t *shape, int nd) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    return n;
}

/* ---- tandem encode ---------------------------------------------------------- */

static void fill_encode_params(const args_t *a, const tdm_pipeline_info_t *info, tdm_encode_params_t *ep,
                               int with_negative) {
    tdm_encode_params_init(ep);
    ep->prompts = a->prompts;
    ep->n = a->nprompts;
    ep->prompts_2 = a->nprompts_2 ? a->prompts_2 : NULL;
    ep->negative_prompt = a->negative;
    ep->with_negative = info->kind == TDM_PIPE_SD && with_negative;
    ep->max_sequence_length = a->max_seq;
}

static int cmd_encode(int argc, char **argv) {
    args_t a;
    parse_args(&a, "encode", argc, argv);
    if (!a.out) die(2, "--out: required (a .safetensors file)");
    if (a.nprompts == 0) die(2, "--prompt: at least one prompt is required (or --prompts-file)");
    tdm_pipeline_t *pipe = open_pipeline(&a);
    tdm_pipeline_info_t info;
    tdm_pipeline_info(pipe, &info);
    tdm_encode_params_t ep;
    fill_encode_params(&a, &info, &ep, 1);   /* SD: always keep the negative, for any later guidance */
    tdm_embeddings_t *emb = NULL;
    if (tdm_pipeline_encode(pipe, &ep, &emb) != TDM_OK) die_status();
    stage_memory(pipe, &a, TDM_STAGE_ENCODE);
    const char *meta[] = {"model", a.model, "pipeline", info.class_name};
    if (tdm_embeddings_save(emb, a.out, 2, meta) != TDM_OK) die_status();
    if (!a.quiet) fprintf(stderr, "tandem: %d prompt embedding%s -> %s\n", a.nprompts, a.nprompts == 1 ? "" : "s", a.out);
    tdm_embeddings_free(emb);
    tdm_pipeline_close(pipe);
    args_free(&a);
    return 0;
}

/* ---- tandem decode ------------------------------------------------------------- */

static int cmd_decode(int argc, char **argv) {
    args_t a;
    parse_args(&a, "decode", argc, argv);
    if (!a.latents) die(2, "--latents: required");
    if (!a.out) die(2, "--out: required (a .png file)");
    tdm_pipeline_t *pipe = open_pipeline(&a);
    int W = a.width, H = a.height;
    float *lat = NULL;
    char *params = NULL;
    if (tdm_latents_load(pipe, a.latents, &W, &H, &lat, &params) != TDM_OK) die_status();
    uint8_t *rgb = malloc((size_t)W * H * 3);
    if (!rgb) die(1, "out of memory");
    if (tdm_pipeline_decode(pipe, lat, W, H, rgb) != TDM_OK) die_status();
    stage_memory(pipe, &a, TDM_STAGE_DECODE);
    if (tdm_image_save_png(a.out, rgb, W, H, params) != TDM_OK) die_status();
    if (!a.quiet) fprintf(stderr, "tandem: decoded %s -> %s (%dx%d)\n", a.latents, a.out, W, H);
    free(lat);
    free(params);
    free(rgb);
    tdm_pipeline_close(pipe);
    args_free(&a);
    return 0;
}

/* ---- tandem generate ------------------------------------------------------------- */

/* One image's manifest record. */
static char *manifest_line(const args_t *a, const tdm_pipeline_info_t *info, int64_t i, const char *file,
                           const char *prompt, int row, uint64_t seed, int steps, float guidance, int W,
                           int H, double secs, int rank) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", (double)i);
    cJSON_AddStringToObject(o, "file", file);
    cJSON_AddStringToObject(o, "prompt", prompt ? prompt : "");
    if (a->nprompts_2) cJSON_AddStringToObject(o, "prompt_2", a->prompts_2[row]);
    cJSON_AddStringToObject(o, "negative_prompt", a->negative ? a->negative : "");
    cJSON_AddNumberToObject(o, "seed", (double)seed);
    cJSON_AddNumberToObject(o, "steps", steps);
    cJSON_AddNumberToObject(o, "guidance", guidance);
    cJSON_AddNumberToObject(o, "width", W);
    cJSON_AddNumberToObject(o, "height", H);
    if (info->kind == TDM_PIPE_FLUX)
        cJSON_AddNumberToObject(o, "max_sequence_length", a->max_seq ? a->max_seq : info->default_max_sequence_length);
    cJSON_AddStringToObject(o, "scheduler", info->scheduler);
    cJSON_AddStringToObject(o, "model", a->model);
    cJSON_AddStringToObject(o, "output_type", a->latent_out ? "latent" : "png");
    cJSON_AddNumberToObject(o, "seconds", round(secs * 1000) / 1000);
    cJSON_AddNumberToObject(o, "rank", rank);
    char *line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!line) die(1, "out of memory");
    return line;
}

/* Adds every line of `path` (a JSONL manifest) whose image file exists to
 * by_index (index → line, owned). */
static void merge_manifest_file(const char *out, const char *path, char **by_index, int64_t n) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        cJSON *o = cJSON_Parse(line);
        const cJSON *ix = o ? cJSON_GetObjectItem(o, "index") : NULL;
        const cJSON *fl = o ? cJSON_GetObjectItem(o, "file") : NULL;
        char fp[4200];
        struct stat sb;
        if (cJSON_IsNumber(ix) && cJSON_IsString(fl) && ix->valuedouble >= 0 && ix->valuedouble < (double)n &&
            (size_t)snprintf(fp, sizeof fp, "%s/%s", out, fl->valuestring) < sizeof fp && stat(fp, &sb) == 0) {
            int64_t i = (int64_t)ix->valuedouble;
            free(by_index[i]);
            by_index[i] = strdup(line);
        }
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
}

static int cmd_generate(int argc, char **argv) {
    args_t a;
    parse_args(&a, "generate", argc, argv);
    if (!a.out) a.out = "out";
    if (a.embeddings && (a.nprompts || a.nprompts_2 || a.negative))
        die(2, "--embeddings: give either prompts or an embeddings file, not both");
    if (!a.embeddings && a.nprompts == 0) die(2, "--prompt: at least one prompt is required (or --prompts-file)");

    /* the process group: one process, or a rank of mpirun / srun / tandem launch */
    if (tdm_dist_init(&g_dist) != TDM_OK) die_status();
    const int rank = tdm_dist_rank(g_dist), size = tdm_dist_size(g_dist);
    char devbuf[32];
    if (size > 1) {
        if (!a.threads) {   /* each rank gets its share of this host's cores */
            long cores = sysconf(_SC_NPROCESSORS_ONLN);
            a.threads = (int)(cores / tdm_dist_local_size(g_dist));
            if (a.threads < 1) a.threads = 1;
        }
        if (a.device && !strcmp(a.device, "cuda") && !a.gpus_per_rank) {
            /* rank r uses GPU local_rank mod visible GPUs */
            int n = tdm_cuda_devices();
            snprintf(devbuf, sizeof devbuf, "cuda:%d", n > 0 ? tdm_dist_local_rank(g_dist) % n : 0);
            a.device = devbuf;
        }
    }
    if (a.gpus_per_rank) {   /* rank r: GPUs r·K .. r·K + K - 1 of this host, its map's 0 .. K-1 */
        const int k = a.gpus_per_rank, lr = size > 1 ? tdm_dist_local_rank(g_dist) : 0;
        const int n = tdm_cuda_devices();
        if (!a.device || strcmp(a.device, "cuda") != 0)
            die(2, "--gpus-per-rank %d needs --device cuda (each rank picks its own GPUs)", k);
        if ((lr + 1) * k > n)
            die(2, "rank %d: --gpus-per-rank %d needs GPUs %d..%d, %d visible", rank, k, lr * k,
                (lr + 1) * k - 1, n);
        snprintf(devbuf, sizeof devbuf, "cuda:%d", lr * k);
        a.device = devbuf;
    }
    tdm_pipeline_t *pipe = open_pipeline(&a);
    if (a.print_map && rank == 0) {   /* the plans the run executes, one per stage, as tandem plan prints them */
        if (!a.device_map[0]) die(2, "--print-device-map needs --device-map");
        const char *only[3];
        int n = tdm_pipeline_stage_components(pipe, a.keep_resident, only);
        for (int k = 0; k < n; k++) {
            tdm_plan_params_t pp;
            tdm_plan_params_init(&pp);
            pp.model = a.model;
            pp.only = only[k];
            pp.device_map = a.device_map;
            pp.max_memory = a.max_memory;
            /* what the devices hold: float32 on virtual CPU devices, the GEMM dtype on a GPU */
            tdm_pipeline_info_t pi;
            tdm_pipeline_info(pipe, &pi);
            pp.dtype = !a.device || strncmp(a.device, "cuda", 4) ? "fp32"
                     : a.dtype ? a.dtype : pi.kind == TDM_PIPE_FLUX ? "bf16" : "fp16";
            pp.variant = a.variant;
            char *json = NULL;
            if (tdm_plan(&pp, &json) != TDM_OK) die_status();
            fputs(json, stdout);
            free(json);
        }
        fflush(stdout);
    }
    tdm_pipeline_info_t info;
    tdm_pipeline_info(pipe, &info);
    const int W = a.width ? a.width : info.default_width, H = a.height ? a.height : info.default_height;
    const int steps = a.steps ? a.steps : info.default_steps;
    const float guidance = isnan(a.guidance) ? info.default_guidance : a.guidance;
    int64_t shape[4];
    int nd;
    if (tdm_pipeline_latent_shape(pipe, W, H, shape, &nd) != TDM_OK) die_status();
    if (info.kind == TDM_PIPE_FLUX && a.max_seq > 512) die(2, "--max-sequence-length %d: must be at most 512", a.max_seq);
    prepare_out_dir(a.out);

    /* stage 1: prompt embeddings (text encoders only), or read them */
    tdm_embeddings_t *emb = NULL;
    if (a.embeddings) {
        if (tdm_embeddings_load(pipe, a.embeddings, &emb) != TDM_OK) die_status();
    } else {
        tdm_encode_params_t ep;
        fill_encode_params(&a, &info, &ep, guidance > 1.0f);
        if (tdm_pipeline_encode(pipe, &ep, &emb) != TDM_OK) die_status();
        stage_memory(pipe, &a, TDM_STAGE_ENCODE);
    }
    const int nprompts = tdm_embeddings_count(emb);
    const int64_t nimages = (int64_t)nprompts * a.per_prompt, item = shape_numel(shape, nd);

    /* this rank's share: a contiguous block (accelerate's split) or, with
     * --schedule dynamic, the next index of a shared counter as it finishes */
    int64_t begin = 0, end = 0;
    tdm_split_between_processes(nimages, rank, size, &begin, &end);
    if (a.dynamic && tdm_dist_counter_open(g_dist) != TDM_OK) die_status();
    int64_t *mine = NULL, nmine = 0, capmine = 0;
    float *lat = NULL;
    double *secs = NULL;
    char **lines = NULL;
    int64_t nlines = 0;
    uint8_t *rgb = a.latent_out ? NULL : malloc((size_t)W * H * 3);
    if (!a.latent_out && !rgb) die(1, "out of memory");
    char params[8192], partname[64];
    /* records go to a per-rank part file (merged by rank 0 at the end) when
     * several ranks write or an earlier run is resumed */
    const int parts = size > 1 || a.resume;
    snprintf(partname, sizeof partname, parts ? "manifest.rank%d.jsonl" : "manifest.jsonl", rank);
    progress_t pr = {.quiet = a.quiet || rank != 0, .tty = isatty(2), .nimages = (int)nimages};
    /* load the denoiser before the clock starts: images/s and per-image
     * seconds measure generation, not model loading */
    double load_t0 = now();
    if (tdm_pipeline_load_stage(pipe, TDM_STAGE_DENOISE) != TDM_OK) die_status();
    const double load_s = now() - load_t0;
    double job_t0 = now();
    int64_t cursor = begin;
    for (int pass = 0; pass < (a.latent_out ? 1 : 2); pass++) {
        /* pass 0: stage 2 (denoiser only) for every image of this rank; pass 1: stage 3 (VAE only) */
        for (int64_t k = 0;; k++) {
            int64_t i;
            if (pass == 1) {
                if (k >= nmine) break;
                i = mine[k];
            } else {
                if (a.dynamic) {
                    if (tdm_dist_counter_next(g_dist, &i) != TDM_OK) die_status();
                } else {
                    i = cursor++;
                }
                if (i >= (a.dynamic ? nimages : end)) break;
                char fp[4200];
                snprintf(fp, sizeof fp, "%s/%06lld.%s", a.out, (long long)i, a.latent_out ? "safetensors" : "png");
                if (a.resume && file_exists(fp)) continue;   /* made by an earlier run */
                if (nmine == capmine) {
                    capmine = capmine ? 2 * capmine : 16;
                    mine = realloc(mine, (size_t)capmine * sizeof *mine);
                    lat = realloc(lat, (size_t)(capmine * item) * sizeof *lat);
                    secs = realloc(secs, (size_t)capmine * sizeof *secs);
                    lines = realloc(lines, (size_t)capmine * sizeof *lines);
                    if (!mine || !lat || !secs || !lines) die(1, "out of memory");
                }
                mine[nmine] = i;
                secs[nmine] = 0;
                k = nmine++;
            }
            const int row = (int)(i / a.per_prompt);
            const char *prompt = tdm_embeddings_prompt(emb, row);
            tdm_generate_params_t gp;
            tdm_generate_params_init(&gp);
            gp.seed = a.seed + (uint64_t)i;
            gp.steps = steps;
            gp.guidance = guidance;
            gp.width = W;
            gp.height = H;
            gp.on_step = on_step;
            gp.user = &pr;
            pr.image = (int)i;
            pr.t0 = now();
            float *li = lat + k * item;
            if (pass == 0 && tdm_pipeline_denoise(pipe, emb, row, &gp, li) != TDM_OK) die_status();
            if (pass == 1 && tdm_pipeline_decode(pipe, li, W, H, rgb) != TDM_OK) die_status();
            secs[k] += now() - pr.t0;
            if (pass == 0 && !a.latent_out) continue;   /* written after decoding */
            char file[64], path[4200];
            snprintf(file, sizeof file, "%06lld.%s", (long long)i, a.latent_out ? "safetensors" : "png");
            snprintf(path, sizeof path, "%s/%s", a.out, file);
            snprintf(params, sizeof params,
                     "%s\nNegative prompt: %s\nSteps: %d, Sampler: %s, CFG scale: %g, Seed: %llu, "
                     "Size: %dx%d, Model: %s, Version: tandem %s",
                     prompt ? prompt : "", a.negative ? a.negative : "", steps, info.scheduler, guidance,
                     (unsigned long long)gp.seed, W, H, a.model, TANDEM_VERSION);
            tdm_status wst = a.latent_out ? tdm_latents_save(pipe, path, li, W, H, params)
                                          : tdm_image_save_png(path, rgb, W, H, params);
            if (wst != TDM_OK) die_status();
            lines[nlines++] = manifest_line(&a, &info, i, file, prompt, row, gp.seed, steps, guidance, W, H,
                                            secs[k], rank);
            write_manifest_named(a.out, partname, lines, nlines);
        }
        stage_memory(pipe, &a, pass == 0 ? TDM_STAGE_DENOISE : TDM_STAGE_DECODE);
    }
    if (a.dynamic && tdm_dist_counter_close(g_dist) != TDM_OK) die_status();
    if (a.report_memory) {   /* the other (virtual) devices of a device map */
        int nx = tdm_pipeline_extra_devices(pipe);
        for (int i = 0; i < nx; i++) {
            char nm[32];
            int64_t cur, peak;
            tdm_pipeline_extra_memory(pipe, i, nm, sizeof nm, &cur, &peak);
            fprintf(stderr, "tandem: memory: %s peak %lld bytes (%.1f MiB)\n", nm, (long long)peak,
                    peak / 1048576.0);
        }
    }
    double total = now() - job_t0;

    /* rank 0 gathers every rank's records into manifest.jsonl, in index order */
    char **all = NULL;
    int nall = 0;
    if (tdm_dist_gather_strings(g_dist, lines, (int)nlines, &all, &nall) != TDM_OK) die_status();
    char stat_line[256];
    snprintf(stat_line, sizeof stat_line, "%d %s %lld %.3f", rank, tdm_dist_host(g_dist), (long long)nlines, total);
    char *stat_rec[] = {stat_line};
    char **stats = NULL;
    int nstats = 0;
    if (tdm_dist_gather_strings(g_dist, stat_rec, 1, &stats, &nstats) != TDM_OK) die_status();
    if (rank == 0 && parts) {
        char **by_index = calloc((size_t)nimages + 1, sizeof *by_index);
        char path[4200];
        if (!by_index) die(1, "out of memory");
        if (a.resume) {   /* keep what earlier runs made */
            snprintf(path, sizeof path, "%s/manifest.jsonl", a.out);
            merge_manifest_file(a.out, path, by_index, nimages);
            for (int r = 0; r < 4096; r++) {
                snprintf(path, sizeof path, "%s/manifest.rank%d.jsonl", a.out, r);
                merge_manifest_file(a.out, path, by_index, nimages);
            }
        }
        for (int j = 0; j < nall; j++) {
            cJSON *o = cJSON_Parse(all[j]);
            const cJSON *ix = o ? cJSON_GetObjectItem(o, "index") : NULL;
            if (cJSON_IsNumber(ix) && ix->valuedouble >= 0 && ix->valuedouble < (double)nimages) {
                int64_t i = (int64_t)ix->valuedouble;
                free(by_index[i]);
                by_index[i] = strdup(all[j]);
            }
            cJSON_Delete(o);
        }
        write_manifest_named(a.out, "manifest.jsonl", by_index, nimages);
        for (int r = 0; r < size || r < 4096; r++) {   /* part files are merged now */
            snprintf(path, sizeof path, "%s/manifest.rank%d.jsonl", a.out, r);
            if (unlink(path) != 0 && r >= size) break;
        }
        for (int64_t i = 0; i < nimages; i++) free(by_index[i]);
        free(by_index);
    }
    if (rank == 0 && !a.quiet) {
        int64_t made = 0;
        for (int j = 0; j < nstats; j++) {
            int r = 0;
            long long cnt = 0;
            double t = 0;
            char host[128] = "";
            if (sscanf(stats[j], "%d %127s %lld %lf", &r, host, &cnt, &t) == 4) {
                made += cnt;
                if (size > 1)
                    fprintf(stderr, "tandem: rank %d (%s): %lld image%s in %.2fs (%.3f images/s)\n", r, host, cnt,
                            cnt == 1 ? "" : "s", t, cnt / (t > 0 ? t : 1e-9));
            }
        }
        fprintf(stderr, "tandem: %lld image%s in %.2fs (%.3f images/s) -> %s (denoiser load %.2fs)\n",
                (long long)made, made == 1 ? "" : "s", total, made / (total > 0 ? total : 1e-9), a.out, load_s);
    }
    for (int j = 0; j < nall; j++) free(all[j]);
    free(all);
    for (int j = 0; j < nstats; j++) free(stats[j]);
    free(stats);
    for (int64_t i = 0; i < nlines; i++) cJSON_free(lines[i]);
    free(lines);
    free(secs);
    free(lat);
    free(mine);
    free(rgb);
    tdm_embeddings_free(emb);
    tdm_pipeline_close(pipe);
    args_free(&a);
    tdm_dist_free(g_dist);
    g_dist = NULL;
    return 0;
}

/* tandem launch -n N [--gpus LIST] -- generate ...: runs N ranks of this
 * binary through Open MPI's mpirun (the process engine), forwarding the
 * environment tandem reads. */
static int cmd_launch(int argc, char **argv) {
    long n = 0;
    const char *gpus = NULL;
    int i = 0;
    for (; i < argc && strcmp(argv[i], "--"); i++) {
        if (!strcmp(argv[i], "-n") || !strcmp(argv[i], "--np")) {
            if (i + 1 >= argc) die(2, "%s: missing value", argv[i]);
            n = parse_int("-n", argv[++i], 1, 100000);
        } else if (!strcmp(argv[i], "--gpus")) {
            if (i + 1 >= argc) die(2, "--gpus: missing value");
            gpus = argv[++i];
            for (const char *c = gpus; *c; c++)
                if (!(*c >= '0' && *c <= '9') && *c != ',') die(2, "--gpus %s: expected a list like 0,1,2", gpus);
        } else {
            die(2, "launch: unknown flag %s (usage: tandem launch -n N [--gpus LIST] -- generate ...)", argv[i]);
        }
    }
    if (n < 1) die(2, "launch: -n N is required");
    if (i >= argc - 1 || strcmp(argv[i + 1], "generate"))
        die(2, "launch: expected -- generate ... after the launch flags");
    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) die(1, "launch: cannot find this program's path");
    self[sl] = 0;
    char np[32], gpu_env[512];
    snprintf(np, sizeof np, "%ld", n);
    const char **mv = calloc((size_t)(argc + 64), sizeof *mv);
    if (!mv) die(1, "out of memory");
    int k = 0;
    mv[k++] = "mpirun";
    mv[k++] = "-n";
    mv[k++] = np;
    mv[k++] = "--oversubscribe";          /* more ranks than cores is fine on small CPU boxes */
    mv[k++] = "--bind-to";
    mv[k++] = "none";                      /* ranks share cores/GPUs as tandem assigns them */
    if (geteuid() == 0) mv[k++] = "--allow-run-as-root";
    static const char *fwd[] = {"HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME", "TANDEM_LOG", "OMP_WAIT_POLICY",
                                "OPENBLAS_CORETYPE", "LD_LIBRARY_PATH", "PATH"};
    for (size_t f = 0; f < sizeof fwd / sizeof fwd[0]; f++)
        if (getenv(fwd[f])) { mv[k++] = "-x"; mv[k++] = fwd[f]; }
    if (gpus) {
        snprintf(gpu_env, sizeof gpu_env, "CUDA_VISIBLE_DEVICES=%s", gpus);
        mv[k++] = "-x";
        mv[k++] = gpu_env;
    }
    mv[k++] = self;
    for (int j = i + 1; j < argc; j++) mv[k++] = argv[j];
    mv[k] = NULL;
    execvp("mpirun", (char *const *)mv);
    die(1, "launch: cannot run mpirun: %s (install Open MPI: apt-get install openmpi-bin)", strerror(errno));
}

/* tandem plan: the placement of a folder's components under memory budgets,
 * as one JSON object on stdout; reads config files and safetensors headers. */
static int cmd_plan(int argc, char **argv) {
    tdm_plan_params_t p;
    tdm_plan_params_init(&p);
    char dmap[1024] = "";
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { usage(stdout); exit(0); }
        if (strcmp(f, "--model") && strcmp(f, "--only") && strcmp(f, "--device-map") &&
            strcmp(f, "--max-memory") && strcmp(f, "--dtype") && strcmp(f, "--variant"))
            die(2, "%s: unknown flag for tandem plan (see tandem --help)", f);
        if (i + 1 >= argc) die(2, "%s: missing value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--model")) p.model = v;
        else if (!strcmp(f, "--only")) p.only = v;
        else if (!strcmp(f, "--max-memory")) p.max_memory = v;
        else if (!strcmp(f, "--variant")) p.variant = v;
        else if (!strcmp(f, "--dtype")) {
            if (strcmp(v, "fp32") != 0 && strcmp(v, "fp16") != 0 && strcmp(v, "bf16") != 0)
                die(2, "--dtype %s: expected fp32, fp16 or bf16", v);
            p.dtype = v;
        } else {   /* --device-map, repeatable: joined with commas */
            size_t n = strlen(dmap);
            if (n + strlen(v) + 2 > sizeof dmap) die(2, "--device-map: too long");
            snprintf(dmap + n, sizeof dmap - n, "%s%s", n ? "," : "", v);
        }
    }
    if (!p.model) die(2, "--model: required");
    p.device_map = dmap[0] ? dmap : NULL;
    char *json = NULL;
    if (tdm_plan(&p, &json) != TDM_OK) die_status();
    fputs(json, stdout);
    free(json);
    return 0;
}

int main(int argc, char **argv) {
    /* OpenMP and OpenBLAS run separate thread pools; idle OpenMP workers
     * spinning steal the cores OpenBLAS needs (measured ~10% of a UNet
     * step). libgomp reads OMP_WAIT_POLICY before main, so set it and
     * re-execute once when the user has not chosen a policy. */
    if (!getenv("OMP_WAIT_POLICY") && setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0)
        execv("/proc/self/exe", argv);   /* returns only on failure: go on as is */
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "--version")) { printf("tandem %s\n", TANDEM_VERSION); return 0; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) { usage(stdout); return 0; }
    if (!strcmp(argv[1], "generate")) return cmd_generate(argc - 2, argv + 2);
    if (!strcmp(argv[1], "encode")) return cmd_encode(argc - 2, argv + 2);
    if (!strcmp(argv[1], "decode")) return cmd_decode(argc - 2, argv + 2);
    if (!strcmp(argv[1], "launch")) return cmd_launch(argc - 2, argv + 2);
    if (!strcmp(argv[1], "plan")) return cmd_plan(argc - 2, argv + 2);
    die(2, "unknown command \"%s\" (commands: generate, encode, decode, launch)", argv[1]);
}
