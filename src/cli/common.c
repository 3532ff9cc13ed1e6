/* common.c — the parts of the `tandem` command that its subcommands share:
 * the one-line error exit, flag parsing for generate/encode/decode, the
 * pipeline from those flags, the output folder and memory reports. */
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

#include "cli.h"

tdm_dist_t *g_dist;

void die(int code, const char *fmt, ...) {
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

void die_status(void) { die(1, "%s", tdm_last_error()); }


long parse_int(const char *flag, const char *v, long lo, long hi) {
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

void args_free(args_t *a) {
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

void parse_args(args_t *a, const char *cmd, int argc, char **argv) {
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

tdm_pipeline_t *open_pipeline(const args_t *a) {
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
void prepare_out_dir(const char *dir) {
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

double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}


/* Prints the peak of a stage that has run (with --report-memory). */
void stage_memory(tdm_pipeline_t *pipe, const args_t *a, tdm_stage stage) {
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

int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

int64_t shape_numel(const int64_t *shape, int nd) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    return n;
}

void fill_encode_params(const args_t *a, const tdm_pipeline_info_t *info, tdm_encode_params_t *ep,
                               int with_negative) {
    tdm_encode_params_init(ep);
    ep->prompts = a->prompts;
    ep->n = a->nprompts;
    ep->prompts_2 = a->nprompts_2 ? a->prompts_2 : NULL;
    ep->negative_prompt = a->negative;
    ep->with_negative = info->kind == TDM_PIPE_SD && with_negative;
    ep->max_sequence_length = a->max_seq;
}
