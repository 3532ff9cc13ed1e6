/* generate.c — `tandem generate`: the job list (prompts × images, seed+i),
 * this rank's share, the staged denoise → decode loop, output files, the
 * manifest and progress. */
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



/* ---- tandem generate ------------------------------------------------------------- */

/* Version of the manifest line schema (README "Manifest"). */
#define MANIFEST_VERSION 1

/* One image's manifest record (schema version MANIFEST_VERSION): integers
 * that may pass 2^53 (seed, index) are written as exact decimal tokens. */
static char *manifest_line(const args_t *a, const tdm_pipeline_info_t *info, int64_t i, const char *file,
                           const char *prompt, int row, uint64_t seed, int steps, float guidance, int W,
                           int H, double secs, int rank) {
    char num[32];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "version", MANIFEST_VERSION);
    snprintf(num, sizeof num, "%lld", (long long)i);
    cJSON_AddRawToObject(o, "index", num);
    cJSON_AddStringToObject(o, "file", file);
    cJSON_AddStringToObject(o, "prompt", prompt ? prompt : "");
    if (a->nprompts_2) cJSON_AddStringToObject(o, "prompt_2", a->prompts_2[row]);
    cJSON_AddStringToObject(o, "negative_prompt", a->negative ? a->negative : "");
    snprintf(num, sizeof num, "%llu", (unsigned long long)seed);
    cJSON_AddRawToObject(o, "seed", num);
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

/* The A1111 "parameters" text of one image (malloc'd, whole: no length
 * limit). The "Negative prompt:" line only when there is one, as A1111. */
static char *parameters_text(const args_t *a, const tdm_pipeline_info_t *info, const char *prompt, int steps,
                             float guidance, uint64_t seed, int W, int H) {
    const int neg = a->negative && a->negative[0];
    return str_printf("%s\n%s%s%sSteps: %d, Sampler: %s, CFG scale: %g, Seed: %llu, Size: %dx%d, Model: %s, "
                      "Version: tandem %s",
                      prompt ? prompt : "", neg ? "Negative prompt: " : "", neg ? a->negative : "", neg ? "\n" : "",
                      steps, info->scheduler, guidance, (unsigned long long)seed, W, H, a->model, TANDEM_VERSION);
}

/* Image i uses seed+i: the job's last seed must not pass 2^64-1. */
static void check_seed_range(uint64_t seed, int64_t nimages) {
    if (nimages > 0 && (uint64_t)(nimages - 1) > UINT64_MAX - seed)
        die(2, "--seed %llu: %lld images need seeds up to --seed + %lld, past 2^64-1 (the largest --seed for "
            "%lld images is %llu)", (unsigned long long)seed, (long long)nimages, (long long)(nimages - 1),
            (long long)nimages, (unsigned long long)(UINT64_MAX - (uint64_t)(nimages - 1)));
}

/* 1 when the hidden latents file `path` holds this image (readable, the
 * right shape, and made with the same parameters text). */
static int latent_ready(tdm_pipeline_t *pipe, const char *path, int W, int H, const char *params) {
    if (!file_exists(path)) return 0;
    int w = W, h = H;
    float *lat = NULL;
    char *stored = NULL;
    int ok = tdm_latents_load(pipe, path, &w, &h, &lat, &stored) == TDM_OK && stored && !strcmp(stored, params);
    free(lat);
    free(stored);
    return ok;
}

int cmd_generate(int argc, char **argv) {
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
    {   /* an image whose working memory cannot fit fails now, before any model loads */
        tdm_generate_params_t cp;
        tdm_generate_params_init(&cp);
        cp.width = a.width;
        cp.height = a.height;
        cp.guidance = guidance;
        if (tdm_pipeline_check_memory(pipe, &cp, info.kind == TDM_PIPE_FLUX ? a.max_seq : 0,
                                      !a.latent_out) != TDM_OK)
            die_status();
    }
    if (!a.embeddings) check_seed_range(a.seed, (int64_t)a.nprompts * a.per_prompt);
    outdir_t od;
    outdir_open(&od, &a, g_dist);

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
    check_seed_range(a.seed, nimages);
    /* --resume: the images that have a manifest line; an output on disk
     * without one is made again (same seed, same bytes) and gets its line */
    uint8_t *recorded = a.resume ? outdir_recorded(&od, nimages) : NULL;

    /* this rank's share: a contiguous block (accelerate's split) or, with
     * --schedule dynamic, the next index of a shared counter as it finishes */
    int64_t begin = 0, end = 0;
    tdm_split_between_processes(nimages, rank, size, &begin, &end);
    if (a.dynamic && tdm_dist_counter_open(g_dist) != TDM_OK) die_status();
    int64_t *mine = NULL, nmine = 0, capmine = 0;
    double *secs = NULL;
    char **lines = NULL;
    int64_t nlines = 0, caplines = 0;
    float *lat = malloc((size_t)item * sizeof *lat);
    uint8_t *rgb = a.latent_out ? NULL : malloc((size_t)W * H * 3);
    if (!lat || (!a.latent_out && !rgb)) die(1, "out of memory");
    progress_t pr = {.quiet = a.quiet || rank != 0, .tty = isatty(2), .nimages = (int)nimages};
    /* load the denoiser before the clock starts: images/s and per-image
     * seconds measure generation, not model loading */
    double load_t0 = now();
    if (tdm_pipeline_load_stage(pipe, TDM_STAGE_DENOISE) != TDM_OK) die_status();
    const double load_s = now() - load_t0;
    double job_t0 = now();
    int64_t cursor = begin;
    for (int pass = 0; pass < (a.latent_out ? 1 : 2); pass++) {
        /* pass 0: stage 2 (denoiser only) for every image of this rank, each
         * latent persisted under OUT/.tandem-latents as soon as it is done;
         * pass 1: stage 3 (VAE only) from those files */
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
            char *params = parameters_text(&a, &info, prompt, steps, guidance, gp.seed, W, H);
            char *file = outdir_file(&od, i, a.latent_out), *path = outdir_path(&od, i, a.latent_out);
            char *hidden = a.latent_out ? NULL : outdir_latent_path(&od, i);
            double t = 0;
            if (pass == 0) {
                if (a.resume && recorded[i] && file_exists(path)) {   /* made by an earlier run */
                    if (hidden) unlink(hidden);   /* killed before it removed the latent */
                    goto next;
                }
                if (!a.resume || a.latent_out || !latent_ready(pipe, hidden, W, H, params)) {
                    pr.t0 = now();
                    if (tdm_pipeline_denoise(pipe, emb, row, &gp, lat) != TDM_OK) die_status();
                    t = now() - pr.t0;
                    if (!a.latent_out && tdm_latents_save(pipe, hidden, lat, W, H, params) != TDM_OK) die_status();
                }   /* else denoised by an earlier run: only the VAE is left */
                if (!a.latent_out) {   /* decoded and written in pass 1 */
                    if (nmine == capmine) {
                        capmine = capmine ? 2 * capmine : 16;
                        mine = realloc(mine, (size_t)capmine * sizeof *mine);
                        secs = realloc(secs, (size_t)capmine * sizeof *secs);
                        if (!mine || !secs) die(1, "out of memory");
                    }
                    mine[nmine] = i;
                    secs[nmine++] = t;
                    goto next;
                }
                if (tdm_latents_save(pipe, path, lat, W, H, params) != TDM_OK) die_status();
            } else {
                int w = W, h = H;
                float *dl = NULL;
                if (tdm_latents_load(pipe, hidden, &w, &h, &dl, NULL) != TDM_OK) die_status();
                pr.t0 = now();
                if (tdm_pipeline_decode(pipe, dl, W, H, rgb) != TDM_OK) die_status();
                t = secs[k] + now() - pr.t0;
                free(dl);
                if (tdm_image_save_png(path, rgb, W, H, params) != TDM_OK) die_status();
            }
            if (nlines == caplines) {
                caplines = caplines ? 2 * caplines : 16;
                lines = realloc(lines, (size_t)caplines * sizeof *lines);
                if (!lines) die(1, "out of memory");
            }
            lines[nlines] = manifest_line(&a, &info, i, file, prompt, row, gp.seed, steps, guidance, W, H, t, rank);
            outdir_append(&od, lines[nlines++]);
            if (hidden && unlink(hidden) != 0 && errno != ENOENT)
                die(1, "%s: cannot remove: %s", hidden, strerror(errno));
        next:
            free(params);
            free(file);
            free(path);
            free(hidden);
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
    if (rank == 0) outdir_merge(&od, nimages, a.latent_out, all, nall);
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
    free(recorded);
    outdir_close(&od);
    tdm_embeddings_free(emb);
    tdm_pipeline_close(pipe);
    args_free(&a);
    tdm_dist_free(g_dist);
    g_dist = NULL;
    return 0;
}
