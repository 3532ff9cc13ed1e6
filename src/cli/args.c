/* args.c — the flags of the `tandem` commands: one table naming every flag
 * and the commands that take it (used both to accept a flag and to suggest
 * the nearest one for a typo), and the parse of generate/encode/decode/plan
 * argument lists into args_t. Parsing never exits or prints: a bad argument
 * becomes a one-line message and an exit code for the caller, so the parse
 * can be fuzzed (fuzz/fuzz_cli_args.c). Not here: usage texts (main.c) and
 * what the commands do with the flags. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

enum { GEN = 1u << CLI_GENERATE, ENC = 1u << CLI_ENCODE, DEC = 1u << CLI_DECODE, PLAN = 1u << CLI_PLAN,
       LAUNCH = 1u << CLI_LAUNCH, SRV = 1u << CLI_SERVE, ALL = GEN | ENC | DEC | PLAN | LAUNCH | SRV };

typedef struct {
    const char *name;
    int         takes_value;
    unsigned    cmds;   /* bit per cli_cmd */
} cli_flag_t;

/* Every flag of every command. A new flag is one row here and one case in
 * cli_parse_args (or in the command's own loop, for launch). */
static const cli_flag_t k_flags[] = {
    {"--model", 1, GEN | ENC | DEC | PLAN | SRV},
    {"--prompt", 1, GEN | ENC},
    {"--prompts-file", 1, GEN | ENC},
    {"--prompt-2", 1, GEN | ENC},
    {"--negative-prompt", 1, GEN | ENC | SRV},
    {"--negative-prompt-2", 1, GEN | ENC},
    {"--guidance-rescale", 1, GEN},
    {"--clip-skip", 1, GEN | ENC},
    {"--original-size", 1, GEN},
    {"--target-size", 1, GEN},
    {"--crops-coords-top-left", 1, GEN},
    {"--seed", 1, GEN | SRV},
    {"--steps", 1, GEN | SRV},
    {"--guidance", 1, GEN | PLAN | SRV},
    {"--width", 1, GEN | DEC | PLAN | SRV},
    {"--height", 1, GEN | DEC | PLAN | SRV},
    {"--max-sequence-length", 1, GEN | ENC | PLAN},
    {"--scheduler", 1, GEN | SRV},
    {"--num-images-per-prompt", 1, GEN},
    {"--output-type", 1, GEN},
    {"--out", 1, GEN | ENC | DEC},
    {"--threads", 1, GEN | ENC | DEC | SRV},
    {"--variant", 1, GEN | ENC | DEC | PLAN | SRV},
    {"--config", 1, GEN | ENC | DEC | PLAN | SRV},
    {"--vae", 1, GEN | ENC | DEC | PLAN | SRV},
    {"--text-encoder", 1, GEN | ENC | DEC | PLAN | SRV},
    {"--text-encoder-2", 1, GEN | ENC | DEC | PLAN | SRV},
    {"--device", 1, GEN | ENC | DEC | PLAN | SRV},
    {"--dtype", 1, GEN | ENC | DEC | PLAN | SRV},
    {"--embeddings", 1, GEN},
    {"--latents", 1, DEC},
    {"--quiet", 0, GEN | ENC | DEC | SRV},
    {"--report-memory", 0, GEN | ENC | DEC},
    {"--keep-resident", 0, GEN},
    {"--schedule", 1, GEN},
    {"--resume", 0, GEN},
    {"--overwrite", 0, GEN},
    {"--devices", 1, GEN},
    {"--device-map", 1, GEN | PLAN | SRV},
    {"--max-memory", 1, GEN | PLAN | SRV},
    {"--gpus-per-rank", 1, GEN | SRV},
    {"--parallel", 1, GEN | PLAN},
    {"--ranks", 1, PLAN},
    {"--images", 1, PLAN},
    {"--comm", 1, GEN},
    {"--parallel-vae", 0, GEN},
    {"--print-device-map", 0, GEN},
    {"--reprobe", 0, GEN},
    {"--only", 1, PLAN},
    {"--host", 1, SRV},
    {"--port", 1, SRV},
    {"--token", 1, SRV},
    {"--queue", 1, SRV},
    {"--max-steps", 1, SRV},
    {"--max-pixels", 1, SRV},
    {"--max-images", 1, SRV},
    {"--keep", 1, SRV},
    {"--keep-mib", 1, SRV},
    {"--grace", 1, SRV},
    {"--rank-timeout", 1, SRV},
    {"-n", 1, LAUNCH},
    {"--np", 1, LAUNCH},
    {"--gpus", 1, LAUNCH},
    {"--oversubscribe", 0, LAUNCH},
    {"--help", 0, ALL},
    {"-h", 0, ALL},
};
#define NFLAGS ((int)(sizeof k_flags / sizeof k_flags[0]))

static const char *const k_cmd_names[CLI_NCMDS] = {"generate", "encode", "decode", "launch", "plan",
                                                   "serve"};

/* A duration: seconds as a number, or with a unit s, m, h ("90", "10m").
 * 0 on success, else the one-line message. */
static int parse_seconds(const char *flag, const char *v, double *out, char *err, size_t cap) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    const double unit = !*end ? 1 : !strcmp(end, "s") ? 1 : !strcmp(end, "m") ? 60
                      : !strcmp(end, "h") ? 3600 : 0;
    if (end == v || errno || !unit || !(x >= 0) || x * unit > 1e9) {
        snprintf(err, cap, "%s %.100s: expected a duration such as 90, 30s, 10m or 2h", flag, v);
        return 2;
    }
    *out = x * unit;
    return 0;
}

int cli_cmd_index(const char *name) {
    for (int c = 0; c < CLI_NCMDS; c++)
        if (!strcmp(name, k_cmd_names[c])) return c;
    return -1;
}

/* Optimal-string-alignment distance (Levenshtein plus swaps of neighbours);
 * strings longer than 63 bytes count as far from everything. */
int cli_edit_distance(const char *a, const char *b) {
    const size_t n = strlen(a), m = strlen(b);
    if (n > 63 || m > 63) return 1000;
    int d[64][64];
    for (size_t i = 0; i <= n; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            int cost = a[i - 1] != b[j - 1];
            int v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v) v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[n][m];
}

/* The entry of `name` when command `cmd` takes it, else NULL. */
static const cli_flag_t *find_flag(int cmd, const char *name) {
    for (int k = 0; k < NFLAGS; k++)
        if ((k_flags[k].cmds >> cmd & 1u) && !strcmp(k_flags[k].name, name)) return &k_flags[k];
    return NULL;
}

const char *cli_suggest_flag(int cmd, const char *flag) {
    const char *best = NULL;
    int bd = 1000;
    const size_t fl = strlen(flag);
    for (int k = 0; k < NFLAGS; k++) {
        if (!(k_flags[k].cmds >> cmd & 1u) || strlen(k_flags[k].name) < 3) continue;   /* not -n, -h */
        int d = cli_edit_distance(flag, k_flags[k].name);
        if (d < bd) { bd = d; best = k_flags[k].name; }
    }
    /* close enough to be a typo: up to 2 edits, or a third of the flag */
    return best && (bd <= 2 || (size_t)bd * 3 <= fl) ? best : NULL;
}

void cli_unknown_flag_msg(int cmd, const char *flag, char *err, size_t cap) {
    const char *s = cli_suggest_flag(cmd, flag);
    if (s)
        snprintf(err, cap, "%.200s: unknown flag for tandem %s (did you mean %s?)", flag, k_cmd_names[cmd], s);
    else
        snprintf(err, cap, "%.200s: unknown flag for tandem %s (see tandem %s --help)", flag, k_cmd_names[cmd],
                 k_cmd_names[cmd]);
}

/* Writes the message and returns the exit code `code`. */
static int fail(char *err, size_t cap, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t cap, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return code;
}
#define FAIL(code, ...) return fail(err, cap, code, __VA_ARGS__)

int cli_parse_long(const char *flag, const char *v, long lo, long hi, long *out, char *err, size_t cap) {
    /* plain decimal digits (a '-' for a negative lower bound): no spaces, '+' or 0x */
    const char *d = v[0] == '-' && lo < 0 ? v + 1 : v;
    int ok = *d != 0 && strlen(d) <= 18;
    for (const char *c = d; ok && *c; c++) ok = *c >= '0' && *c <= '9';
    long x = ok ? strtol(v, NULL, 10) : 0;
    if (!ok || x < lo || x > hi)
        return fail(err, cap, 2, "%s %.100s: expected an integer in [%ld, %ld]", flag, v, lo, hi);
    *out = x;
    return 0;
}

int cli_parse_seed(const char *v, uint64_t *out, char *err, size_t cap) {
    /* torch's manual_seed range, as plain decimal digits: no sign, space or prefix */
    static const char *max = "18446744073709551615";
    size_t n = strlen(v);
    int ok = n >= 1 && n <= 20;
    for (size_t i = 0; ok && i < n; i++) ok = v[i] >= '0' && v[i] <= '9';
    if (ok && n == 20) ok = strcmp(v, max) <= 0;
    if (!ok)
        return fail(err, cap, 2, "--seed \"%.100s\": expected an integer in 0..%s (decimal digits only)", v, max);
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++) s = s * 10 + (uint64_t)(v[i] - '0');
    *out = s;
    return 0;
}

/* Appends p to a growing list (at most MAX_PROMPTS). */
static int add_prompt(const char ***list, int *n, int *capn, const char *p, const char *flag, char *err,
                      size_t cap) {
    if (*n >= MAX_PROMPTS) FAIL(2, "%s: more than %d prompts", flag, MAX_PROMPTS);
    if (*n == *capn) {
        int nc = *capn ? 2 * *capn : 16;
        const char **nl = realloc(*list, (size_t)nc * sizeof *nl);
        if (!nl) FAIL(1, "out of memory");
        *list = nl;
        *capn = nc;
    }
    (*list)[(*n)++] = p;
    return 0;
}

int cli_read_prompts_file(args_t *a, char *err, size_t cap) {
    const char *path = a->prompts_file;
    /* O_NONBLOCK: a FIFO without a writer must not hang the open */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) FAIL(1, "--prompts-file %.1000s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int dir = S_ISDIR(sb.st_mode);
        close(fd);
        FAIL(1, "--prompts-file %.1000s: %s", path,
             dir ? "is a directory, not a file of prompts" : "is not a regular file (a FIFO, device or socket)");
    }
    FILE *f = fdopen(fd, "r");
    if (!f) {
        close(fd);
        FAIL(1, "--prompts-file %.1000s: %s", path, strerror(errno));
    }
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    long lineno = 0;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        if (memchr(line, 0, (size_t)n)) {
            rc = fail(err, cap, 2, "--prompts-file %.1000s: line %ld contains a NUL byte", path, lineno);
            break;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (n == 0) continue;
        size_t bad;
        if (!tdm_utf8_valid(line, &bad)) {
            rc = fail(err, cap, 2, "--prompts-file %.1000s: line %ld: invalid UTF-8 at byte %zu", path, lineno,
                      bad);
            break;
        }
        char *copy = strdup(line);
        if (!copy) { rc = fail(err, cap, 1, "out of memory"); break; }
        if ((rc = add_prompt(&a->prompts, &a->nprompts, &a->cap_prompts, copy, "--prompts-file", err, cap)))
            free(copy);
    }
    if (rc == 0 && ferror(f)) rc = fail(err, cap, 1, "--prompts-file %.1000s: %s", path, strerror(errno));
    free(line);
    fclose(f);
    return rc;
}

void args_free(args_t *a) {
    for (int i = a->first_owned; i < a->nprompts; i++) free((char *)a->prompts[i]);
    free(a->prompts);
    free(a->prompts_2);
    a->prompts = a->prompts_2 = NULL;
    a->nprompts = a->nprompts_2 = a->first_owned = 0;
}

int cli_parse_flags(args_t *a, const char *cmd, int argc, char **argv, char *err, size_t cap) {
    const int c = cli_cmd_index(cmd);
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    a->guidance = NAN;
    a->per_prompt = 1;
    a->port = a->queue = a->max_steps = a->max_images = -1;
    a->keep = a->grace = a->rank_timeout = -1;
    a->keep_mib = -1;
    if (c < 0 || c == CLI_LAUNCH) FAIL(2, "internal: no flag parse for command %.60s", cmd);
    long x;
    int rc;
#define INT_FLAG(dst, lo, hi)                                                      \
    do {                                                                           \
        if ((rc = cli_parse_long(f, v, lo, hi, &x, err, cap)) != 0) return rc;     \
        dst = (int)x;                                                              \
    } while (0)
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) return CLI_PARSE_HELP;
        if (f[0] != '-')
            FAIL(2, "unexpected argument \"%.200s\" (see tandem %s --help)", f, cmd);
        const cli_flag_t *fl = find_flag(c, f);
        if (!fl) {
            cli_unknown_flag_msg(c, f, err, cap);
            return 2;
        }
        if (!strcmp(f, "--quiet")) { a->quiet = 1; continue; }
        if (!strcmp(f, "--report-memory")) { a->report_memory = 1; continue; }
        if (!strcmp(f, "--keep-resident")) { a->keep_resident = 1; continue; }
        if (!strcmp(f, "--overwrite")) { a->overwrite = 1; continue; }
        if (!strcmp(f, "--resume")) { a->resume = 1; continue; }
        if (!strcmp(f, "--print-device-map")) { a->print_map = 1; continue; }
        if (!strcmp(f, "--parallel-vae")) { a->parallel_vae = 1; continue; }
        if (!strcmp(f, "--reprobe")) { a->reprobe = 1; continue; }
        if (i + 1 >= argc) FAIL(2, "%s: missing value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--model")) a->model = v;
        else if (!strcmp(f, "--prompt")) {
            if ((rc = add_prompt(&a->prompts, &a->nprompts, &a->cap_prompts, v, f, err, cap))) return rc;
            a->first_owned = a->nprompts;   /* argv's: not freed */
        } else if (!strcmp(f, "--prompt-2")) {
            if ((rc = add_prompt(&a->prompts_2, &a->nprompts_2, &a->cap_prompts_2, v, f, err, cap))) return rc;
        } else if (!strcmp(f, "--prompts-file")) a->prompts_file = v;
        else if (!strcmp(f, "--negative-prompt")) a->negative = v;
        else if (!strcmp(f, "--negative-prompt-2")) a->negative_2 = v;
        else if (!strcmp(f, "--config")) a->config = v;
        else if (!strcmp(f, "--vae")) a->vae_file = v;
        else if (!strcmp(f, "--text-encoder")) a->te_file = v;
        else if (!strcmp(f, "--text-encoder-2")) a->te2_file = v;
        else if (!strcmp(f, "--clip-skip")) INT_FLAG(a->clip_skip, 0, 64);
        else if (!strcmp(f, "--guidance-rescale")) {
            char *end;
            a->guidance_rescale = strtof(v, &end);
            if (end == v || *end || !(a->guidance_rescale >= 0.0f && a->guidance_rescale <= 1.0f))
                FAIL(2, "--guidance-rescale %.100s: expected a number in [0, 1]", v);
        } else if (!strcmp(f, "--original-size") || !strcmp(f, "--target-size") ||
                   !strcmp(f, "--crops-coords-top-left")) {
            const int crop = f[2] == 'c';
            long p = 0, q = 0;
            int n = 0;
            /* WxH (sizes) or TOP,LEFT (the crop), plain decimal numbers */
            if (sscanf(v, crop ? "%6ld,%6ld%n" : "%6ldx%6ld%n", &p, &q, &n) != 2 || v[n] ||
                !isdigit((unsigned char)v[0]) || p < (crop ? 0 : 1) || q < (crop ? 0 : 1) ||
                p > 65536 || q > 65536)
                FAIL(2, "%s %.100s: expected %s", f, v,
                     crop ? "TOP,LEFT in pixels (e.g. 0,0)" : "WIDTHxHEIGHT in pixels (e.g. 1024x1024)");
            if (crop) { a->crop_top = (int)p; a->crop_left = (int)q; }
            else if (f[2] == 'o') { a->orig_w = (int)p; a->orig_h = (int)q; }
            else { a->target_w = (int)p; a->target_h = (int)q; }
        }
        else if (!strcmp(f, "--seed")) {
            if ((rc = cli_parse_seed(v, &a->seed, err, cap))) return rc;
        } else if (!strcmp(f, "--steps")) INT_FLAG(a->steps, 1, 1000);
        else if (!strcmp(f, "--guidance")) {
            char *end;
            a->guidance = strtof(v, &end);
            if (end == v || *end || !isfinite(a->guidance)) FAIL(2, "--guidance %.100s: expected a number", v);
        } else if (!strcmp(f, "--width")) INT_FLAG(a->width, 8, 16384);
        else if (!strcmp(f, "--height")) INT_FLAG(a->height, 8, 16384);
        else if (!strcmp(f, "--max-sequence-length")) INT_FLAG(a->max_seq, 1, 512);
        else if (!strcmp(f, "--scheduler")) a->scheduler = v;
        else if (!strcmp(f, "--num-images-per-prompt")) INT_FLAG(a->per_prompt, 1, 10000);
        else if (!strcmp(f, "--output-type")) {
            if (!strcmp(v, "png")) a->latent_out = 0;
            else if (!strcmp(v, "latent")) a->latent_out = 1;
            else FAIL(2, "--output-type %.100s: expected png or latent", v);
        } else if (!strcmp(f, "--out")) a->out = v;
        else if (!strcmp(f, "--threads")) INT_FLAG(a->threads, 1, 4096);
        else if (!strcmp(f, "--variant")) a->variant = v;
        else if (!strcmp(f, "--device")) a->device = v;
        else if (!strcmp(f, "--embeddings")) a->embeddings = v;
        else if (!strcmp(f, "--latents")) a->latents = v;
        else if (!strcmp(f, "--devices")) a->devices = v;
        else if (!strcmp(f, "--max-memory")) a->max_memory = v;
        else if (!strcmp(f, "--only")) a->only = v;
        else if (!strcmp(f, "--host")) a->host = v;
        else if (!strcmp(f, "--token")) a->token = v;
        else if (!strcmp(f, "--port")) INT_FLAG(a->port, 0, 65535);
        else if (!strcmp(f, "--queue")) INT_FLAG(a->queue, 1, 100000);
        else if (!strcmp(f, "--max-steps")) INT_FLAG(a->max_steps, 1, 1000);
        else if (!strcmp(f, "--max-images")) INT_FLAG(a->max_images, 1, 1000);
        else if (!strcmp(f, "--max-pixels")) {
            if ((rc = cli_parse_long(f, v, 64, 1L << 40, &x, err, cap)) != 0) return rc;
            a->max_pixels = x;
        } else if (!strcmp(f, "--keep-mib")) {
            INT_FLAG(a->keep_mib, 0, 1 << 30);
        } else if (!strcmp(f, "--keep")) {
            if ((rc = parse_seconds(f, v, &a->keep, err, cap)) != 0) return rc;
        } else if (!strcmp(f, "--grace")) {
            if ((rc = parse_seconds(f, v, &a->grace, err, cap)) != 0) return rc;
        } else if (!strcmp(f, "--rank-timeout")) {
            if ((rc = parse_seconds(f, v, &a->rank_timeout, err, cap)) != 0) return rc;
        }
        else if (!strcmp(f, "--gpus-per-rank")) INT_FLAG(a->gpus_per_rank, 1, 64);
        else if (!strcmp(f, "--comm")) {
            if (strcmp(v, "auto") && strcmp(v, "mpi") && strcmp(v, "nccl"))
                FAIL(2, "--comm %.100s: expected auto, mpi or nccl", v);
            a->comm = v;
        } else if (!strcmp(f, "--parallel")) {   /* the syntax here; the world size at launch / init */
            tdm_parallel_t deg;
            if (c == CLI_PLAN && strcmp(v, "auto"))
                FAIL(2, "--parallel %.100s: tandem plan takes --parallel auto (it predicts every layout)", v);
            if (c != CLI_PLAN && strcmp(v, "auto") && tdm_parallel_parse(v, 0, &deg) != TDM_OK)
                FAIL(2, "%s", tdm_last_error());
            a->parallel = v;
        } else if (!strcmp(f, "--ranks")) INT_FLAG(a->ranks, 1, 65536);
        else if (!strcmp(f, "--images")) INT_FLAG(a->images, 1, 100000000);
        else if (!strcmp(f, "--device-map")) {   /* repeatable: items joined with commas */
            size_t n = strlen(a->device_map);
            if (n + strlen(v) + 2 > sizeof a->device_map) FAIL(2, "--device-map: too long");
            snprintf(a->device_map + n, sizeof a->device_map - n, "%s%s", n ? "," : "", v);
        } else if (!strcmp(f, "--schedule")) {
            if (!strcmp(v, "static")) a->dynamic = 0;
            else if (!strcmp(v, "dynamic")) a->dynamic = 1;
            else FAIL(2, "--schedule %.100s: expected static or dynamic", v);
        } else if (!strcmp(f, "--dtype")) {
            if (strcmp(v, "fp32") != 0 && strcmp(v, "fp16") != 0 && strcmp(v, "bf16") != 0 &&
                strcmp(v, "fp8") != 0)
                FAIL(2, "--dtype %.100s: expected fp32, fp16, bf16 or fp8", v);
            a->dtype = v;
        } else {
            FAIL(2, "internal: flag %s has no parse", f);
        }
    }
#undef INT_FLAG
    if (!a->model) FAIL(2, "--model: required");
    if (a->width % 8) FAIL(2, "--width %d: must be a multiple of 8", a->width);
    if (a->height % 8) FAIL(2, "--height %d: must be a multiple of 8", a->height);
    return 0;
}

int cli_check_prompts(const args_t *a, char *err, size_t cap) {
    size_t bad;
    for (int i = 0; i < a->first_owned; i++)
        if (!tdm_utf8_valid(a->prompts[i], &bad)) FAIL(2, "--prompt %d: invalid UTF-8 at byte %zu", i + 1, bad);
    for (int i = 0; i < a->nprompts_2; i++)
        if (!tdm_utf8_valid(a->prompts_2[i], &bad)) FAIL(2, "--prompt-2 %d: invalid UTF-8 at byte %zu", i + 1, bad);
    if (a->negative && !tdm_utf8_valid(a->negative, &bad)) FAIL(2, "--negative-prompt: invalid UTF-8 at byte %zu", bad);
    if (a->negative_2 && !tdm_utf8_valid(a->negative_2, &bad))
        FAIL(2, "--negative-prompt-2: invalid UTF-8 at byte %zu", bad);
    if (a->nprompts_2 && a->nprompts_2 != a->nprompts)
        FAIL(2, "--prompt-2: given %d times for %d prompts (give it once per --prompt)", a->nprompts_2,
             a->nprompts);
    return 0;
}

int cli_parse_args(args_t *a, const char *cmd, int argc, char **argv, char *err, size_t cap) {
    int rc = cli_parse_flags(a, cmd, argc, argv, err, cap);
    if (rc == 0 && a->prompts_file) rc = cli_read_prompts_file(a, err, cap);
    if (rc == 0) rc = cli_check_prompts(a, err, cap);
    return rc;
}
