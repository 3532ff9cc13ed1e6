/* main.c — the `tandem` command: argument table, job list, output files,
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
#include "io/png.h"
#include "io/safetensors.h"

#define MAX_PROMPTS 100000

static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("tandem: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

static void die_status(void) { die(1, "%s", tdm_last_error()); }

typedef struct {
    const char  *model;
    const char **prompts;
    int          nprompts;
    const char  *prompts_file;
    const char  *negative;
    uint64_t     seed;
    int          steps;
    float        guidance;
    int          width, height;
    const char  *scheduler;
    int          per_prompt;
    int          latent_out;
    const char  *out;
    int          quiet;
    int          threads;
    const char  *variant;
    const char  *device;
    int          report_memory;
    int          first_owned;   /* prompts[first_owned..] were read from --prompts-file */
} gen_args_t;

static void usage(FILE *f) {
    fputs("usage: tandem generate --model DIR|ORG/NAME [--prompt TEXT]... [--prompts-file FILE]\n"
          "                       [--negative-prompt TEXT] [--seed N] [--steps N] [--guidance G]\n"
          "                       [--width W] [--height H] [--scheduler CLASSNAME]\n"
          "                       [--num-images-per-prompt N] [--output-type png|latent] [--out DIR]\n"
          "                       [--dtype fp32] [--device cpu] [--variant NAME] [--threads N]\n"
          "                       [--report-memory] [--quiet]\n"
          "       tandem --version\n"
          "Image i of the job (prompts x images per prompt) uses seed+i and is written as\n"
          "OUT/%06d.png (or .safetensors with tensor \"latents\"); OUT/manifest.jsonl lists them.\n",
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

static void add_prompt(gen_args_t *a, const char *p) {
    if (a->nprompts >= MAX_PROMPTS) die(2, "--prompt: more than %d prompts", MAX_PROMPTS);
    a->prompts[a->nprompts++] = p;
}

static void read_prompts_file(gen_args_t *a) {
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
        add_prompt(a, copy);
    }
    free(line);
    fclose(f);
}

static void parse_generate(gen_args_t *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->prompts = calloc(MAX_PROMPTS, sizeof *a->prompts);
    if (!a->prompts) die(1, "out of memory");
    a->guidance = NAN;
    a->per_prompt = 1;
    a->out = "out";
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--quiet")) { a->quiet = 1; continue; }
        if (!strcmp(f, "--report-memory")) { a->report_memory = 1; continue; }
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { usage(stdout); exit(0); }
        if (strncmp(f, "--", 2) != 0) die(2, "unexpected argument \"%s\" (see tandem generate --help)", f);
        if (i + 1 >= argc) die(2, "%s: missing value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--model")) a->model = v;
        else if (!strcmp(f, "--prompt")) add_prompt(a, v);
        else if (!strcmp(f, "--prompts-file")) a->prompts_file = v;
        else if (!strcmp(f, "--negative-prompt")) a->negative = v;
        else if (!strcmp(f, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') die(2, "--seed %s: expected a non-negative integer", v);
            a->seed = s;
        } else if (!strcmp(f, "--steps")) a->steps = (int)parse_int(f, v, 1, 10000);
        else if (!strcmp(f, "--guidance")) {
            char *end;
            a->guidance = strtof(v, &end);
            if (end == v || *end || !isfinite(a->guidance)) die(2, "--guidance %s: expected a number", v);
        } else if (!strcmp(f, "--width")) a->width = (int)parse_int(f, v, 8, 16384);
        else if (!strcmp(f, "--height")) a->height = (int)parse_int(f, v, 8, 16384);
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
        else if (!strcmp(f, "--dtype")) {
            if (strcmp(v, "fp32") != 0)
                die(2, "--dtype %s: the CPU backend computes in fp32 (fp16/bf16 weights are converted at load)", v);
        } else die(2, "unknown flag %s (see tandem generate --help)", f);
    }
    if (!a->model) die(2, "--model: required");
    a->first_owned = a->nprompts;
    if (a->prompts_file) read_prompts_file(a);
    if (a->nprompts == 0) die(2, "--prompt: at least one prompt is required (or --prompts-file)");
    if (a->width % 8) die(2, "--width %d: must be a multiple of 8", a->width);
    if (a->height % 8) die(2, "--height %d: must be a multiple of 8", a->height);
    size_t bad;
    for (int i = 0; i < a->nprompts; i++)
        if (!utf8_valid(a->prompts[i], &bad))
            die(2, "--prompt %d: invalid UTF-8 at byte %zu", i + 1, bad);
    if (a->negative && !utf8_valid(a->negative, &bad))
        die(2, "--negative-prompt: invalid UTF-8 at byte %zu", bad);
}

/* Creates `dir` (and parents) and checks a file can be created in it. */
static void prepare_out_dir(const char *dir) {
    char buf[4096];
    if (strlen(dir) >= sizeof buf) die(2, "--out %s: path too long", dir);
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

typedef struct {
    int    quiet, tty;
    int    image, nimages;
    double t0;
} progress_t;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void on_step(void *user, int step, int total) {
    progress_t *pr = user;
    if (pr->quiet || !pr->tty) return;
    double el = now() - pr->t0, rate = step / (el > 0 ? el : 1e-9);
    fprintf(stderr, "\rimage %d/%d  step %d/%d  %.2f it/s  ETA %.0fs   ", pr->image + 1, pr->nimages,
            step, total, rate, (total - step) / rate);
    if (step == total) fputc('\n', stderr);
    fflush(stderr);
}

/* Rewrites OUT/manifest.jsonl atomically from the lines so far. */
static void write_manifest(const char *out, char **lines, int n) {
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/manifest.jsonl", out);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) die(1, "%s: cannot write: %s", tmp, strerror(errno));
    int ok = 1;
    for (int i = 0; i < n && ok; i++) ok = fputs(lines[i], f) >= 0 && fputc('\n', f) != EOF;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        die(1, "%s: cannot write: %s", path, strerror(errno));
    }
}

static int cmd_generate(int argc, char **argv) {
    gen_args_t a;
    parse_generate(&a, argc, argv);
    tdm_pipeline_params_t pp;
    tdm_pipeline_params_init(&pp);
    if (a.device) pp.device = a.device;
    pp.num_threads = a.threads;
    pp.scheduler = a.scheduler;
    pp.variant = a.variant;
    tdm_pipeline_t *pipe = NULL;
    if (tdm_pipeline_open(&pipe, a.model, &pp) != TDM_OK) die_status();
    tdm_pipeline_info_t info;
    tdm_pipeline_info(pipe, &info);
    int width = a.width ? a.width : info.default_width;
    int height = a.height ? a.height : info.default_height;
    int steps = a.steps ? a.steps : info.default_steps;
    float guidance = isnan(a.guidance) ? info.default_guidance : a.guidance;
    if (width % info.vae_scale_factor || height % info.vae_scale_factor)
        die(2, "--width %d / --height %d: must be multiples of the VAE scale factor %d", width, height,
            info.vae_scale_factor);
    prepare_out_dir(a.out);

    int64_t nimages = (int64_t)a.nprompts * a.per_prompt;
    int64_t h = height / info.vae_scale_factor, w = width / info.vae_scale_factor;
    int64_t item = info.latent_channels * h * w;
    float *lat = malloc((size_t)item * sizeof *lat);
    uint8_t *rgb = a.latent_out ? NULL : malloc((size_t)width * height * 3);
    char **lines = calloc((size_t)nimages + 1, sizeof *lines);
    if (!lat || (!a.latent_out && !rgb) || !lines) die(1, "out of memory");
    progress_t pr = {.quiet = a.quiet, .tty = isatty(2), .nimages = (int)nimages};
    double job_t0 = now();
    for (int64_t i = 0; i < nimages; i++) {
        const char *prompt = a.prompts[i / a.per_prompt];
        tdm_generate_params_t gp;
        tdm_generate_params_init(&gp);
        gp.prompt = prompt;
        gp.negative_prompt = a.negative;
        gp.seed = a.seed + (uint64_t)i;
        gp.steps = steps;
        gp.guidance = guidance;
        gp.width = width;
        gp.height = height;
        gp.on_step = on_step;
        gp.user = &pr;
        pr.image = (int)i;
        pr.t0 = now();
        if (tdm_pipeline_generate(pipe, &gp, lat, rgb) != TDM_OK) die_status();
        double secs = now() - pr.t0;
        char file[64], path[4200];
        snprintf(file, sizeof file, "%06lld.%s", (long long)i, a.latent_out ? "safetensors" : "png");
        snprintf(path, sizeof path, "%s/%s", a.out, file);
        char seedbuf[32], sizebuf[64], stepbuf[32], gbuf[32];
        snprintf(seedbuf, sizeof seedbuf, "%llu", (unsigned long long)gp.seed);
        snprintf(sizebuf, sizeof sizebuf, "%dx%d", width, height);
        snprintf(stepbuf, sizeof stepbuf, "%d", steps);
        snprintf(gbuf, sizeof gbuf, "%g", guidance);
        if (a.latent_out) {
            const char *names[] = {"latents"};
            int nd[] = {4};
            int64_t shape[] = {1, info.latent_channels, h, w};
            const int64_t *shapes[] = {shape};
            const float *data[] = {lat};
            const char *meta[] = {"prompt", prompt, "negative_prompt", a.negative ? a.negative : "",
                                  "seed", seedbuf, "steps", stepbuf, "guidance", gbuf,
                                  "size", sizebuf, "scheduler", info.scheduler};
            if (tdm_safetensors_write_f32(path, 1, names, nd, shapes, data, 7, meta) != TDM_OK) die_status();
        } else {
            char params[8192];
            snprintf(params, sizeof params,
                     "%s\nNegative prompt: %s\nSteps: %d, Sampler: %s, CFG scale: %g, Seed: %llu, "
                     "Size: %dx%d, Model: %s, Version: tandem %s",
                     prompt, a.negative ? a.negative : "", steps, info.scheduler, guidance,
                     (unsigned long long)gp.seed, width, height, a.model, TANDEM_VERSION);
            const char *kv[] = {"parameters", params};
            if (tdm_png_write(path, rgb, width, height, 1, kv) != TDM_OK) die_status();
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", (double)i);
        cJSON_AddStringToObject(o, "file", file);
        cJSON_AddStringToObject(o, "prompt", prompt);
        cJSON_AddStringToObject(o, "negative_prompt", a.negative ? a.negative : "");
        cJSON_AddNumberToObject(o, "seed", (double)gp.seed);
        cJSON_AddNumberToObject(o, "steps", steps);
        cJSON_AddNumberToObject(o, "guidance", guidance);
        cJSON_AddNumberToObject(o, "width", width);
        cJSON_AddNumberToObject(o, "height", height);
        cJSON_AddStringToObject(o, "scheduler", info.scheduler);
        cJSON_AddStringToObject(o, "model", a.model);
        cJSON_AddStringToObject(o, "output_type", a.latent_out ? "latent" : "png");
        cJSON_AddNumberToObject(o, "seconds", round(secs * 1000) / 1000);
        cJSON_AddNumberToObject(o, "rank", 0);
        lines[i] = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!lines[i]) die(1, "out of memory");
        write_manifest(a.out, lines, (int)i + 1);
    }
    double total = now() - job_t0;
    if (!a.quiet)
        fprintf(stderr, "tandem: %lld image%s in %.2fs (%.3f images/s) -> %s\n", (long long)nimages,
                nimages == 1 ? "" : "s", total, nimages / (total > 0 ? total : 1e-9), a.out);
    if (a.report_memory) {
        int64_t cur, peak;
        tdm_pipeline_memory(pipe, &cur, &peak);
        fprintf(stderr, "tandem: memory: cpu peak %lld bytes (%.1f MiB), resident %lld bytes\n",
                (long long)peak, peak / 1048576.0, (long long)cur);
    }
    for (int64_t i = 0; i < nimages; i++) cJSON_free(lines[i]);
    for (int i = a.first_owned; i < a.nprompts; i++) free((char *)a.prompts[i]);
    free(a.prompts);
    free(lines);
    free(lat);
    free(rgb);
    tdm_pipeline_close(pipe);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "--version")) { printf("tandem %s\n", TANDEM_VERSION); return 0; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) { usage(stdout); return 0; }
    if (!strcmp(argv[1], "generate")) return cmd_generate(argc - 2, argv + 2);
    die(2, "unknown command \"%s\" (commands: generate)", argv[1]);
}
