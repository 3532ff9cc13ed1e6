/* common.c — the parts of the `tandem` command that its subcommands share:
 * the one-line error exit, the exiting forms of the flag parse (args.c),
 * the pipeline from those flags, the output folder and memory reports. */
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
    /* the line goes out in one write, so the lines of ranks failing at once
     * (merged by mpirun) do not interleave */
    char head[320];
    head[0] = 0;
    if (g_dist && tdm_dist_size(g_dist) > 1)
        snprintf(head, sizeof head, "rank %d (%s): ", tdm_dist_rank(g_dist), tdm_dist_host(g_dist));
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    size_t hl = strlen(head), cap = 15 + hl + (n > 0 ? (size_t)n : 0) + 2;
    char *line = malloc(cap);
    fflush(stdout);
    if (line) {
        memcpy(line, "tandem: error: ", 15);
        memcpy(line + 15, head, hl);
        vsnprintf(line + 15 + hl, cap - 15 - hl, fmt, ap2);
        size_t len = strlen(line);
        line[len++] = '\n';
        for (size_t off = 0; off < len;) {
            ssize_t w = write(STDERR_FILENO, line + off, len - off);
            if (w <= 0 && errno == EINTR) continue;
            if (w <= 0) break;
            off += (size_t)w;
        }
        free(line);
    } else {
        fputs("tandem: error: out of memory\n", stderr);
    }
    va_end(ap2);
    va_end(ap);
    if (g_dist && tdm_dist_size(g_dist) > 1) tdm_dist_abort(g_dist, code);
    exit(code);
}

void die_status(void) { die(1, "%s", tdm_last_error()); }


long parse_int(const char *flag, const char *v, long lo, long hi) {
    char err[256];
    long x = 0;
    int rc = cli_parse_long(flag, v, lo, hi, &x, err, sizeof err);
    if (rc) die(rc, "%s", err);
    return x;
}

void parse_args(args_t *a, const char *cmd, int argc, char **argv) {
    char err[1400];
    int rc = cli_parse_args(a, cmd, argc, argv, err, sizeof err);
    if (rc == CLI_PARSE_HELP) {
        cli_command_usage(cli_cmd_index(cmd), stdout);
        args_free(a);
        exit(0);
    }
    if (rc) {
        args_free(a);
        die(rc, "%s", err);
    }
}

void die_unknown_flag(int cmd, const char *flag) {
    char err[512];
    cli_unknown_flag_msg(cmd, flag, err, sizeof err);
    die(2, "%s", err);
}

tdm_pipeline_t *open_pipeline(const args_t *a) {
    tdm_pipeline_params_t pp;
    tdm_pipeline_params_init(&pp);
    if (a->device) pp.device = a->device;
    pp.gpus = a->gpus_per_rank;
    pp.num_threads = a->threads;
    pp.scheduler = a->scheduler;
    pp.variant = a->variant;
    pp.config = a->config;
    pp.vae_file = a->vae_file;
    pp.text_encoder_file = a->te_file;
    pp.text_encoder_2_file = a->te2_file;
    pp.dtype = a->dtype;
    pp.keep_resident = a->keep_resident;
    pp.devices = a->devices;
    pp.device_map = a->device_map[0] ? a->device_map : NULL;
    pp.max_memory = a->max_memory;
    pp.dist = g_dist;
    pp.comm = a->comm;
    pp.parallel_vae = a->parallel_vae;
    cli_env_backend(&pp.backend);
    tdm_pipeline_t *pipe = NULL;
    if (tdm_pipeline_open(&pipe, a->model, &pp) != TDM_OK) die_status();
    return pipe;
}

/* This rank's threads and device. With several ranks each takes its share of
 * this host's cores (unless --threads) and, with --device cuda, GPU
 * local_rank mod the visible GPUs; --gpus-per-rank K gives rank r the GPUs
 * r·K .. r·K + K - 1 of this host, its map's 0 .. K-1. a->device may end up
 * pointing into devbuf. */
void map_rank_device(args_t *a, int rank, int size, char *devbuf, size_t cap) {
    if (size > 1) {
        if (!a->threads) {
            long cores = sysconf(_SC_NPROCESSORS_ONLN);
            a->threads = (int)(cores / tdm_dist_local_size(g_dist));
            if (a->threads < 1) a->threads = 1;
        }
        if (a->device && !strcmp(a->device, "cuda") && !a->gpus_per_rank) {
            int n = tdm_cuda_devices();
            snprintf(devbuf, cap, "cuda:%d", n > 0 ? tdm_dist_local_rank(g_dist) % n : 0);
            a->device = devbuf;
        }
    }
    if (a->gpus_per_rank) {
        const int k = a->gpus_per_rank, lr = size > 1 ? tdm_dist_local_rank(g_dist) : 0;
        const int n = tdm_cuda_devices();
        if (!a->device || strcmp(a->device, "cuda") != 0)
            die(2, "--gpus-per-rank %d needs --device cuda (each rank picks its own GPUs)", k);
        if ((lr + 1) * k > n)
            die(2, "rank %d: --gpus-per-rank %d needs GPUs %d..%d, %d visible", rank, k, lr * k,
                (lr + 1) * k - 1, n);
        snprintf(devbuf, cap, "cuda:%d", lr * k);
        a->device = devbuf;
    }
}

void cli_sd_params(const args_t *a, const tdm_pipeline_info_t *info, tdm_generate_params_t *p) {
    const int micro = a->orig_w || a->target_w || a->crop_top || a->crop_left;
    if (info && micro && !info->sdxl)
        die(2, "--original-size / --target-size / --crops-coords-top-left: only SDXL pipelines take "
            "micro-conditioning (this is %s)", info->class_name);
    if (info && a->guidance_rescale > 0.0f && info->kind != TDM_PIPE_SD)
        die(2, "--guidance-rescale: %s has no classifier-free guidance to rescale", info->class_name);
    if (info && a->negative_2 && !info->sdxl)
        die(2, "--negative-prompt-2: only SDXL pipelines take a second negative prompt (this is %s)",
            info->class_name);
    p->guidance_rescale = a->guidance_rescale;
    p->original_width = a->orig_w;
    p->original_height = a->orig_h;
    p->target_width = a->target_w;
    p->target_height = a->target_h;
    p->crop_top = a->crop_top;
    p->crop_left = a->crop_left;
}

void check_parallel_guidance(const args_t *a, const tdm_parallel_t *deg, float guidance) {
    if (deg->cfg == 2 && !(guidance > 1.0f))
        die(2, "--parallel %s: cfg=2 needs classifier-free guidance, but --guidance %g is <= 1 (give "
            "--guidance > 1, or drop cfg=2)", a->parallel, guidance);
}

void check_parallel_vae(const args_t *a, const tdm_parallel_t *deg) {
    if (a->parallel_vae && deg->cfg * deg->ring * deg->ulysses * deg->tp < 2)
        die(2, "--parallel-vae: each image has one rank, so there is no group to share its VAE "
            "decode (give --parallel cfg=2 or ulysses=U under tandem launch)");
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

void prepare_out_parent(const char *flag, const char *path) {
    char buf[4096];
    if (strlen(path) >= sizeof buf) die(2, "%s %s: path too long", flag, path);
    strcpy(buf, path);
    char *slash = strrchr(buf, '/');
    if (!slash || slash == buf) return;   /* in the current folder, or in / */
    *slash = 0;
    for (char *p = buf + 1;; p++) {
        const int end = *p == 0;
        if (*p != '/' && !end) continue;
        *p = 0;
        struct stat sb;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            die(1, "%s %s: cannot create %s: %s", flag, path, buf, strerror(errno));
        if (stat(buf, &sb) != 0 || !S_ISDIR(sb.st_mode)) die(1, "%s %s: %s is not a directory", flag, path, buf);
        if (end) break;
        *p = '/';
    }
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
    ep->negative_prompt_2 = a->negative_2;
    ep->clip_skip = a->clip_skip;
    ep->with_negative = info->kind == TDM_PIPE_SD && with_negative;
    ep->max_sequence_length = a->max_seq;
}
