/* generate.c — `tandem generate`: this rank's device, the printed plans, the
 * job (prompts × images, seed+i) and this rank's share of it, the denoise
 * pass (latents persisted) and the decode pass, output files, the manifest
 * merge, stats and progress. */
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
    if (a->negative_2) cJSON_AddStringToObject(o, "negative_prompt_2", a->negative_2);
    if (a->guidance_rescale > 0.0f) cJSON_AddNumberToObject(o, "guidance_rescale", a->guidance_rescale);
    if (a->clip_skip > 0) cJSON_AddNumberToObject(o, "clip_skip", a->clip_skip);
    if (info->sdxl) {   /* the micro-conditioning as diffusers takes it: (height, width), (top, left) */
        const int pairs[3][2] = {{a->orig_h ? a->orig_h : H, a->orig_w ? a->orig_w : W},
                                 {a->crop_top, a->crop_left},
                                 {a->target_h ? a->target_h : H, a->target_w ? a->target_w : W}};
        const char *keys[3] = {"original_size", "crops_coords_top_left", "target_size"};
        for (int k = 0; k < 3; k++) cJSON_AddItemToObject(o, keys[k], cJSON_CreateIntArray(pairs[k], 2));
    }
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
    char *s = tdm_parameters_text(prompt, a->negative, steps, info->scheduler, guidance, seed, W, H, a->model);
    if (!s) die(1, "out of memory");
    return s;
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

/* ---- rank → device and the plans ------------------------------------------------ */

/* --print-device-map: the plans the run executes, one per stage, on stdout as
 * `tandem plan` prints them. */
static void print_plans(tdm_pipeline_t *pipe, const args_t *a) {
    if (!a->device_map[0]) die(2, "--print-device-map needs --device-map");
    const char *only[3];
    int n = tdm_pipeline_stage_components(pipe, a->keep_resident, only);
    for (int k = 0; k < n; k++) {
        char *json = NULL;
        if (tdm_pipeline_device_map(pipe, k, &json) != TDM_OK) die_status();
        fputs(json, stdout);
        free(json);
    }
    fflush(stdout);
}

/* ---- the job --------------------------------------------------------------------- */

/* What every image of the job shares, the flags resolved against the
 * pipeline's defaults. */
typedef struct {
    const args_t        *a;
    tdm_pipeline_info_t  info;
    int                  W, H, steps;
    float                guidance;
    int64_t              item;      /* floats in one latent */
    int64_t              nimages;   /* prompts × images per prompt, once the embeddings are known */
} job_t;

/* Resolves size, steps and guidance and checks the flags that need the
 * pipeline (the seed range again once the prompts are counted). */
static void job_resolve(job_t *j, tdm_pipeline_t *pipe, const args_t *a) {
    memset(j, 0, sizeof *j);
    j->a = a;
    tdm_pipeline_info(pipe, &j->info);
    j->W = a->width ? a->width : j->info.default_width;
    j->H = a->height ? a->height : j->info.default_height;
    j->steps = a->steps ? a->steps : j->info.default_steps;
    j->guidance = isnan(a->guidance) ? j->info.default_guidance : a->guidance;
    tdm_parallel_t deg;
    tdm_dist_parallel(g_dist, &deg, NULL);
    check_parallel_guidance(a, &deg, j->guidance);
    int64_t shape[4];
    int nd;
    if (tdm_pipeline_latent_shape(pipe, j->W, j->H, shape, &nd) != TDM_OK) die_status();
    j->item = shape_numel(shape, nd);
    if (j->info.kind == TDM_PIPE_FLUX && a->max_seq > 512)
        die(2, "--max-sequence-length %d: must be at most 512", a->max_seq);
    /* an image whose working memory cannot fit fails now, before any model loads */
    tdm_generate_params_t cp;
    tdm_generate_params_init(&cp);
    cp.width = a->width;
    cp.height = a->height;
    cp.guidance = j->guidance;
    cli_sd_params(a, &j->info, &cp);   /* flags the pipeline does not take fail here */
    if (tdm_pipeline_check_memory(pipe, &cp, j->info.kind == TDM_PIPE_FLUX ? a->max_seq : 0, !a->latent_out) !=
        TDM_OK)
        die_status();
    if (!a->embeddings) check_seed_range(a->seed, (int64_t)a->nprompts * a->per_prompt);
}

/* Stage 1: the prompt embeddings (text encoders only), or --embeddings read. */
static tdm_embeddings_t *job_embeddings(tdm_pipeline_t *pipe, const job_t *j) {
    const args_t *a = j->a;
    tdm_embeddings_t *emb = NULL;
    if (a->embeddings) {
        if (tdm_embeddings_load(pipe, a->embeddings, &emb) != TDM_OK) die_status();
    } else {
        tdm_encode_params_t ep;
        fill_encode_params(a, &j->info, &ep, j->guidance > 1.0f);
        if (tdm_pipeline_encode(pipe, &ep, &emb) != TDM_OK) die_status();
        stage_memory(pipe, a, TDM_STAGE_ENCODE);
    }
    return emb;
}

/* This rank's share of the job's images: its image group's (DP rank
 * dp_rank of dp_size) contiguous block (accelerate's split) or, with
 * --schedule dynamic, the next index of a shared counter as the group
 * finishes one. Every rank of an image group gets the same indices. */
typedef struct {
    int     dynamic;
    int     grouped;     /* more than one rank per image */
    int64_t next, end;   /* static: the block's next and end indices */
    int64_t nimages;
} share_t;

/* Collective with --schedule dynamic (opens the shared counter). */
static void share_open(share_t *s, int dynamic, int64_t nimages, int dp_rank, int dp_size, int grouped) {
    s->dynamic = dynamic;
    s->grouped = grouped;
    s->nimages = nimages;
    tdm_split_between_processes(nimages, dp_rank, dp_size, &s->next, &s->end);
    if (dynamic && tdm_dist_counter_open(g_dist) != TDM_OK) die_status();
}

/* 1 with the next image index of this rank in *i, 0 when the share is done. */
static int share_next(share_t *s, int64_t *i) {
    if (s->dynamic) {   /* the image's first rank takes it for the group */
        if (tdm_dist_image_rank(g_dist) == 0 && tdm_dist_counter_next(g_dist, i) != TDM_OK) die_status();
        if (s->grouped && tdm_dist_image_broadcast_i64(g_dist, i, 1) != TDM_OK) die_status();
    } else {
        *i = s->next++;
    }
    return *i < (s->dynamic ? s->nimages : s->end);
}

static void share_close(share_t *s) {
    if (s->dynamic && tdm_dist_counter_close(g_dist) != TDM_OK) die_status();
}

/* ---- the passes ------------------------------------------------------------------ */

/* This rank's generation: its buffers, the images waiting for the VAE and
 * its manifest lines. */
typedef struct {
    const job_t      *job;
    tdm_pipeline_t   *pipe;
    tdm_embeddings_t *emb;
    const outdir_t   *od;
    int               rank;
    int               writer;     /* the image's first rank: decodes and writes (with --parallel) */
    int               grouped;    /* more than one rank per image */
    int               pvae;       /* --parallel-vae (PNG output): every rank of the image decodes */
    double            denoise_s;  /* seconds in tdm_pipeline_denoise, over `denoised` images */
    int64_t           denoised;
    uint8_t          *recorded;   /* --resume: 1 for images with a manifest line; else NULL (owned) */
    float            *lat;        /* one latent, job->item floats */
    uint8_t          *rgb;        /* one image, W·H·3 (PNG output only) */
    int64_t          *pending;    /* denoised, waiting for the decode pass ... */
    double           *secs;       /* ... with their denoise seconds */
    int64_t           npending, cappending;
    char            **lines;      /* this rank's manifest lines (cJSON-allocated) */
    int64_t           nlines, caplines;
    progress_t        pr;
} run_t;

/* Takes ownership of `recorded`. */
static void run_open(run_t *r, const job_t *j, tdm_pipeline_t *pipe, tdm_embeddings_t *emb, const outdir_t *od,
                     int rank, uint8_t *recorded) {
    const args_t *a = j->a;
    memset(r, 0, sizeof *r);
    r->job = j;
    r->pipe = pipe;
    r->emb = emb;
    r->od = od;
    r->rank = rank;
    r->writer = tdm_dist_image_rank(g_dist) == 0;
    tdm_parallel_t deg;
    tdm_dist_parallel(g_dist, &deg, NULL);
    r->grouped = deg.cfg * deg.ring * deg.ulysses * deg.tp > 1;
    r->pvae = a->parallel_vae && r->grouped && !a->latent_out;
    r->recorded = recorded;
    r->lat = malloc((size_t)j->item * sizeof *r->lat);
    r->rgb = a->latent_out ? NULL : malloc((size_t)j->W * j->H * 3);
    if (!r->lat || (!a->latent_out && !r->rgb)) die(1, "out of memory");
    r->pr = (progress_t){.quiet = a->quiet || rank != 0, .tty = isatty(2), .nimages = (int)j->nimages};
}

static void run_close(run_t *r) {
    for (int64_t i = 0; i < r->nlines; i++) cJSON_free(r->lines[i]);
    free(r->lines);
    free(r->secs);
    free(r->lat);
    free(r->pending);
    free(r->rgb);
    free(r->recorded);
}

/* Image i of the job: its prompt, generation parameters and file names. */
typedef struct {
    int64_t               i;
    int                   row;      /* its prompt's row in the embeddings */
    const char           *prompt;
    tdm_generate_params_t gp;
    char                 *params;   /* the A1111 parameters text */
    char                 *file, *path;
    char                 *hidden;   /* its latent under OUT/.tandem-latents (PNG output only) */
} image_t;

static void image_open(image_t *im, run_t *r, int64_t i) {
    const job_t *j = r->job;
    const args_t *a = j->a;
    im->i = i;
    im->row = (int)(i / a->per_prompt);
    im->prompt = tdm_embeddings_prompt(r->emb, im->row);
    tdm_generate_params_init(&im->gp);
    im->gp.seed = a->seed + (uint64_t)i;
    im->gp.steps = j->steps;
    im->gp.guidance = j->guidance;
    im->gp.width = j->W;
    im->gp.height = j->H;
    cli_sd_params(a, NULL, &im->gp);
    im->gp.on_step = on_step;
    im->gp.user = &r->pr;
    r->pr.image = (int)i;
    im->params = parameters_text(a, &j->info, im->prompt, j->steps, j->guidance, im->gp.seed, j->W, j->H);
    im->file = outdir_file(r->od, i, a->latent_out);
    im->path = outdir_path(r->od, i, a->latent_out);
    im->hidden = a->latent_out ? NULL : outdir_latent_path(r->od, i);
}

static void image_close(image_t *im) {
    free(im->params);
    free(im->file);
    free(im->path);
    free(im->hidden);
}

/* Records a finished image: its manifest line, kept for the merge and
 * appended to this rank's part file; then removes its hidden latent. */
static void write_record(run_t *r, const image_t *im, double secs) {
    const job_t *j = r->job;
    if (r->nlines == r->caplines) {
        r->caplines = r->caplines ? 2 * r->caplines : 16;
        r->lines = realloc(r->lines, (size_t)r->caplines * sizeof *r->lines);
        if (!r->lines) die(1, "out of memory");
    }
    char *line = manifest_line(j->a, &j->info, im->i, im->file, im->prompt, im->row, im->gp.seed, j->steps,
                               j->guidance, j->W, j->H, secs, r->rank);
    r->lines[r->nlines++] = line;
    outdir_append(r->od, line);
    if (im->hidden && unlink(im->hidden) != 0 && errno != ENOENT)
        die(1, "%s: cannot remove: %s", im->hidden, strerror(errno));
}

/* Whether image im is skipped (made by an earlier run, --resume) and
 * whether it must be denoised (its latent not persisted by an earlier run):
 * the image's first rank decides for its group, so all ranks of an image
 * take the same branch. */
static void denoise_plan(run_t *r, const image_t *im, int *skip, int *redo) {
    const job_t *j = r->job;
    const args_t *a = j->a;
    int64_t d[2] = {0, 1};
    if (r->writer) {
        d[0] = a->resume && r->recorded[im->i] && file_exists(im->path);
        d[1] = !d[0] && (!a->resume || a->latent_out || !latent_ready(r->pipe, im->hidden, j->W, j->H, im->params));
    }
    if (r->grouped && tdm_dist_image_broadcast_i64(g_dist, d, 2) != TDM_OK) die_status();
    *skip = (int)d[0];
    *redo = (int)d[1];
}

/* Image im of the denoise pass: skipped when an earlier run (--resume) made
 * it; denoised unless its latent was persisted by an earlier run; then
 * written (--output-type latent) or left for the decode pass. Only the
 * image's first rank writes; the other ranks of its group denoise with it
 * and, with --parallel-vae, list it for the decode pass too (the same
 * images in the same order: the skip and redo decisions are the group's). */
static void denoise_image(run_t *r, const image_t *im) {
    const job_t *j = r->job;
    const args_t *a = j->a;
    int skip, redo;
    denoise_plan(r, im, &skip, &redo);
    if (skip) {
        if (r->writer && im->hidden) unlink(im->hidden);   /* killed before it removed the latent */
        return;
    }
    double t = 0;
    if (redo) {
        r->pr.t0 = now();
        if (tdm_pipeline_denoise(r->pipe, r->emb, im->row, &im->gp, r->lat) != TDM_OK) die_status();
        t = now() - r->pr.t0;
        r->denoise_s += t;
        r->denoised++;
        if (r->writer && !a->latent_out &&
            tdm_latents_save(r->pipe, im->hidden, r->lat, j->W, j->H, im->params) != TDM_OK)
            die_status();
    }
    if (!r->writer && !r->pvae) return;
    if (!a->latent_out) {
        if (r->npending == r->cappending) {
            r->cappending = r->cappending ? 2 * r->cappending : 16;
            r->pending = realloc(r->pending, (size_t)r->cappending * sizeof *r->pending);
            r->secs = realloc(r->secs, (size_t)r->cappending * sizeof *r->secs);
            if (!r->pending || !r->secs) die(1, "out of memory");
        }
        r->pending[r->npending] = im->i;
        r->secs[r->npending++] = t;
        return;
    }
    if (tdm_latents_save(r->pipe, im->path, r->lat, j->W, j->H, im->params) != TDM_OK) die_status();
    write_record(r, im, t);
}

/* Stage 2 (the denoiser only) over this rank's share, each latent persisted
 * under OUT/.tandem-latents as soon as it is done (PNG output) or written. */
static void denoise_pass(run_t *r, share_t *s) {
    int64_t i;
    while (share_next(s, &i)) {
        image_t im;
        image_open(&im, r, i);
        denoise_image(r, &im);
        image_close(&im);
    }
    stage_memory(r->pipe, r->job->a, TDM_STAGE_DENOISE);
}

/* Stage 3 (the VAE only) for the images the denoise pass left, from their
 * persisted latents; writes the PNGs. With --parallel-vae every rank of the
 * image group runs it over the same list: the first rank reads the latent,
 * the decode is the group's (tdm_pipeline_decode shares the latent), and
 * the first rank writes. */
static void decode_pass(run_t *r) {
    const job_t *j = r->job;
    for (int64_t k = 0; k < r->npending; k++) {
        image_t im;
        image_open(&im, r, r->pending[k]);
        int w = j->W, h = j->H;
        float *dl = NULL;
        if (r->writer && tdm_latents_load(r->pipe, im.hidden, &w, &h, &dl, NULL) != TDM_OK) die_status();
        r->pr.t0 = now();
        if (tdm_pipeline_decode(r->pipe, dl, j->W, j->H, r->rgb) != TDM_OK) die_status();
        const double t = r->secs[k] + now() - r->pr.t0;
        free(dl);
        if (!r->writer) {
            image_close(&im);
            continue;
        }
        if (tdm_image_save_png(im.path, r->rgb, j->W, j->H, im.params) != TDM_OK) die_status();
        write_record(r, &im, t);
        image_close(&im);
    }
    stage_memory(r->pipe, j->a, TDM_STAGE_DECODE);
}

/* ---- manifest and stats ---------------------------------------------------------- */

/* --report-memory: the peaks of the other (virtual) devices of a device map. */
static void report_extra_memory(tdm_pipeline_t *pipe) {
    int nx = tdm_pipeline_extra_devices(pipe);
    for (int i = 0; i < nx; i++) {
        char nm[32];
        int64_t cur, peak;
        tdm_pipeline_extra_memory(pipe, i, nm, sizeof nm, &cur, &peak);
        fprintf(stderr, "tandem: memory: %s peak %lld bytes (%.1f MiB)\n", nm, (long long)peak, peak / 1048576.0);
    }
}

/* Rank 0: each rank's images/s (when there are several) and the job's. */
static void print_stats(char *const *stats, int nstats, int size, double total, double load_s, const char *out) {
    int64_t made = 0;
    for (int j = 0; j < nstats; j++) {
        int r = 0;
        long long cnt = 0;
        double t = 0;
        char host[128] = "";
        int per = 1;   /* ranks of the image group whose first rank this is */
        if (sscanf(stats[j], "%d %127s %lld %lf %d", &r, host, &cnt, &t, &per) == 5) {
            made += cnt;
            char who[64];
            if (per > 1) snprintf(who, sizeof who, "ranks %d-%d", r, r + per - 1);
            else snprintf(who, sizeof who, "rank %d", r);
            if (size > per)
                fprintf(stderr, "tandem: %s (%s): %lld image%s in %.2fs (%.3f images/s)\n", who, host, cnt,
                        cnt == 1 ? "" : "s", t, cnt / (t > 0 ? t : 1e-9));
        }
    }
    fprintf(stderr, "tandem: %lld image%s in %.2fs (%.3f images/s) -> %s (denoiser load %.2fs)\n",
            (long long)made, made == 1 ? "" : "s", total, made / (total > 0 ? total : 1e-9), out, load_s);
}

/* Collective: rank 0 gathers every rank's manifest lines into
 * manifest.jsonl, in index order, and every rank's count and seconds for the
 * stats it prints. */
static void merge_manifests(const run_t *r, int size, double total, double load_s) {
    const args_t *a = r->job->a;
    char **all = NULL;
    int nall = 0;
    if (tdm_dist_gather_strings(g_dist, r->lines, (int)r->nlines, &all, &nall) != TDM_OK) die_status();
    /* one record per image group, from its first rank (the one that writes) */
    tdm_parallel_t deg;
    tdm_dist_parallel(g_dist, &deg, NULL);
    char stat_line[256];
    snprintf(stat_line, sizeof stat_line, "%d %s %lld %.3f %d", r->rank, tdm_dist_host(g_dist), (long long)r->nlines,
             total, deg.cfg * deg.ring * deg.ulysses * deg.tp);
    char *stat_rec[] = {stat_line};
    char **stats = NULL;
    int nstats = 0;
    if (tdm_dist_gather_strings(g_dist, stat_rec, r->writer ? 1 : 0, &stats, &nstats) != TDM_OK) die_status();
    if (r->rank == 0) outdir_merge(r->od, r->job->nimages, a->latent_out, all, nall);
    if (r->rank == 0 && !a->quiet) print_stats(stats, nstats, size, total, load_s, a->out);
    for (int j = 0; j < nall; j++) free(all[j]);
    free(all);
    for (int j = 0; j < nstats; j++) free(stats[j]);
    free(stats);
}

/* ---- tandem generate --------------------------------------------------------------- */

/* --parallel auto's probe cache: $XDG_CACHE_HOME/tandem (else
 * ~/.cache/tandem)/probe-HOST-DEVICE-DTYPE-COMM-nRANKS.json, or "" when no
 * home is known. */
static void probe_cache_path(const args_t *a, char *path, size_t cap) {
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char dir[1024];
    path[0] = 0;
    if (xdg && *xdg) snprintf(dir, sizeof dir, "%s/tandem", xdg);
    else if (home && *home) snprintf(dir, sizeof dir, "%s/.cache/tandem", home);
    else return;
    snprintf(path, cap, "%s/probe-%s-%s-%s-%s-n%d.json", dir, tdm_dist_host(g_dist),
             a->device && !strncmp(a->device, "cuda", 4) ? "cuda" : "cpu", a->dtype ? a->dtype : "default",
             a->comm ? a->comm : "auto", tdm_dist_size(g_dist));
    for (char *c = path + strlen(dir) + 1; *c; c++)
        if (*c == '/') *c = '_';
}

/* Rank 0: the cached numbers into m; 1 when there were. */
static int probe_cache_read(const char *path, tdm_parallel_machine_t *m) {
    FILE *f = path[0] ? fopen(path, "rb") : NULL;
    char buf[1024];
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    cJSON *j = n ? cJSON_Parse(buf) : NULL;
    double *dst[4] = {&m->gemm_flop_s, &m->attn_flop_s, &m->link_bytes_s, &m->latency_s};
    const char *key[4] = {"gemm_flop_s", "attn_flop_s", "link_bytes_s", "latency_s"};
    int ok = j != NULL;
    for (int i = 0; i < 4 && ok; i++) {
        const cJSON *v = cJSON_GetObjectItem(j, key[i]);
        ok = cJSON_IsNumber(v) && v->valuedouble >= 0 && isfinite(v->valuedouble);
        if (ok) *dst[i] = v->valuedouble;
    }
    cJSON_Delete(j);
    return ok && m->gemm_flop_s > 0 && m->attn_flop_s > 0;
}

/* Rank 0: the numbers to the cache (a failure only warns: the run goes on). */
static void probe_cache_write(const char *path, const tdm_parallel_machine_t *m) {
    char dir[2048], text[512];   /* dir: as large as the caller's path */
    if (!path[0] || strlen(path) >= sizeof dir) return;
    memcpy(dir, path, strlen(path) + 1);
    char *slash = strrchr(dir, '/');
    if (!slash) return;
    *slash = 0;
    slash = strrchr(dir, '/');
    if (slash) { *slash = 0; mkdir(dir, 0700); *slash = '/'; }   /* ~/.cache, then tandem */
    mkdir(dir, 0700);
    snprintf(text, sizeof text, "{\"gemm_flop_s\": %.6g, \"attn_flop_s\": %.6g, \"link_bytes_s\": %.6g, "
             "\"latency_s\": %.6g}\n", m->gemm_flop_s, m->attn_flop_s, m->link_bytes_s, m->latency_s);
    if (tdm_file_write_atomic(path, text, strlen(text)) != TDM_OK)
        fprintf(stderr, "tandem: warning: --parallel auto: %s\n", tdm_last_error());
}

/* The machine numbers for --parallel auto: rank 0's cache for this host,
 * device, dtype, exchange and world size, else (or with --reprobe) a probe
 * of every rank (collective either way). */
static void probe_machine(const args_t *a, tdm_parallel_machine_t *m) {
    char path[2048];
    double v[5] = {0};
    memset(m, 0, sizeof *m);
    if (tdm_dist_rank(g_dist) == 0) {
        probe_cache_path(a, path, sizeof path);
        if (!a->reprobe && probe_cache_read(path, m))
            v[0] = 1, v[1] = m->gemm_flop_s, v[2] = m->attn_flop_s, v[3] = m->link_bytes_s, v[4] = m->latency_s;
    }
    if (tdm_dist_allreduce_sum(g_dist, v, 5) != TDM_OK) die_status();   /* rank 0's values */
    if (v[0] > 0) {
        m->gemm_flop_s = v[1], m->attn_flop_s = v[2], m->link_bytes_s = v[3], m->latency_s = v[4];
        return;
    }
    if (tdm_parallel_probe(g_dist, a->device ? a->device : "cpu", a->dtype, a->comm, a->threads, m) != TDM_OK) die_status();
    if (tdm_dist_rank(g_dist) == 0) probe_cache_write(path, m);
}

/* --parallel auto: the machine measured (probe_machine), rank 0 chooses the
 * layout of the world's ranks for this job (tdm_parallel_choose: the cost
 * model), every rank takes it from rank 0 and the world is split into its
 * groups. Returns the predicted seconds a step; spec holds the layout. */
static double choose_parallel(args_t *a, char *spec, size_t cap) {
    double v[5] = {0}, step_s = 0;
    tdm_parallel_machine_t mach;
    probe_machine(a, &mach);
    if (tdm_dist_rank(g_dist) == 0) {
        tdm_parallel_plan_params_t p;
        tdm_parallel_plan_params_init(&p);
        p.model = a->model;
        p.machine = &mach;
        p.device = a->device && !strncmp(a->device, "cuda", 4) ? "cuda" : "cpu";
        p.dtype = a->dtype;
        p.max_memory = a->max_memory;
        p.ranks = tdm_dist_size(g_dist);
        p.images = a->embeddings ? 1 : (int64_t)a->nprompts * a->per_prompt;
        p.width = a->width, p.height = a->height;
        p.max_sequence_length = a->max_seq;
        p.guidance = a->guidance;
        tdm_parallel_t d;
        if (tdm_parallel_choose(&p, spec, cap, &step_s) != TDM_OK ||
            tdm_parallel_parse(spec, p.ranks, &d) != TDM_OK)
            die_status();
        v[0] = d.cfg, v[1] = d.ring, v[2] = d.ulysses, v[3] = d.tp, v[4] = step_s;
    }
    if (tdm_dist_allreduce_sum(g_dist, v, 5) != TDM_OK) die_status();   /* rank 0's values */
    snprintf(spec, cap, "cfg=%d,ring=%d,ulysses=%d,tp=%d", (int)v[0], (int)v[1], (int)v[2], (int)v[3]);
    if (tdm_dist_set_parallel(g_dist, spec) != TDM_OK) die_status();
    if (tdm_dist_rank(g_dist) == 0 && !a->quiet)
        fprintf(stderr, "tandem: --parallel auto: %d rank%s as %s (predicted %.1f ms a step; measured "
                "%.3g GFLOP/s GEMM, %.3g GFLOP/s attention, %.3g GB/s all-to-all a rank; `tandem plan "
                "--parallel auto --ranks %d` lists every layout)\n", tdm_dist_size(g_dist),
                tdm_dist_size(g_dist) == 1 ? "" : "s", spec, v[4] * 1e3,
                mach.gemm_flop_s / 1e9, mach.attn_flop_s / 1e9, mach.link_bytes_s / 1e9, tdm_dist_size(g_dist));
    a->parallel = spec;
    return v[4];
}

int cmd_generate(int argc, char **argv) {
    args_t a;
    parse_args(&a, "generate", argc, argv);
    if (!a.out) a.out = "out";
    if (a.embeddings && (a.nprompts || a.nprompts_2 || a.negative))
        die(2, "--embeddings: give either prompts or an embeddings file, not both");
    if (a.embeddings && (a.negative_2 || a.clip_skip))
        die(2, "--embeddings: %s shapes the prompt embeddings; give it to tandem encode",
            a.clip_skip ? "--clip-skip" : "--negative-prompt-2");
    if (!a.embeddings && a.nprompts == 0) die(2, "--prompt: at least one prompt is required (or --prompts-file)");

    /* the process group: one process, or a rank of mpirun / srun / tandem launch */
    tdm_dist_params_t dp;
    tdm_dist_params_init(&dp);
    cli_env_dist(&dp);
    const int autopar = a.parallel && !strcmp(a.parallel, "auto");
    dp.parallel = autopar ? NULL : a.parallel;
    if (tdm_dist_init(&g_dist, &dp) != TDM_OK) die_status();
    const int rank = tdm_dist_rank(g_dist), size = tdm_dist_size(g_dist);
    char devbuf[32];
    map_rank_device(&a, rank, size, devbuf, sizeof devbuf);   /* before the probe: each rank on its own device */
    static char autospec[96];
    const double predicted_s = autopar ? choose_parallel(&a, autospec, sizeof autospec) : 0;
    /* --parallel: image groups of cfg·ring·ulysses·tp ranks split the job
     * as data-parallel ranks (deg.dp of them) */
    tdm_parallel_t deg, at;
    tdm_dist_parallel(g_dist, &deg, &at);
    check_parallel_vae(&a, &deg);
    tdm_pipeline_t *pipe = open_pipeline(&a);
    if (a.print_map && rank == 0) print_plans(pipe, &a);
    job_t job;
    job_resolve(&job, pipe, &a);
    outdir_t od;
    outdir_open(&od, &a, g_dist);

    tdm_embeddings_t *emb = job_embeddings(pipe, &job);
    job.nimages = (int64_t)tdm_embeddings_count(emb) * a.per_prompt;
    check_seed_range(a.seed, job.nimages);
    /* --resume: the images that have a manifest line; an output on disk
     * without one is made again (same seed, same bytes) and gets its line */
    uint8_t *recorded = a.resume ? outdir_recorded(&od, job.nimages) : NULL;
    share_t share;
    share_open(&share, a.dynamic, job.nimages, at.dp, deg.dp, deg.dp != size);
    run_t run;
    run_open(&run, &job, pipe, emb, &od, rank, recorded);

    /* load the denoiser before the clock starts: images/s and per-image
     * seconds measure generation, not model loading */
    const double load_t0 = now();
    if (tdm_pipeline_load_stage(pipe, TDM_STAGE_DENOISE) != TDM_OK) die_status();
    const double load_s = now() - load_t0, job_t0 = now();
    denoise_pass(&run, &share);
    if (!a.latent_out) decode_pass(&run);
    share_close(&share);
    if (a.report_memory) report_extra_memory(pipe);
    const double total = now() - job_t0;
    if (autopar && rank == 0 && run.denoised > 0 && !a.quiet)
        fprintf(stderr, "tandem: --parallel auto: %s predicted %.1f ms a step, measured %.1f ms (rank 0, "
                "%lld image(s))\n", a.parallel, predicted_s * 1e3,
                run.denoise_s / (double)run.denoised / job.steps * 1e3, (long long)run.denoised);
    merge_manifests(&run, size, total, load_s);

    run_close(&run);
    outdir_close(&od);
    tdm_embeddings_free(emb);
    tdm_pipeline_close(pipe);
    args_free(&a);
    tdm_dist_free(g_dist);
    g_dist = NULL;
    return 0;
}
