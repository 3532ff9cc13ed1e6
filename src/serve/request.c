/* request.c — a request body to a job (request.h): each API's field names,
 * the server's defaults and limits, one message per refusal. */
#include "serve/request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

#define PROMPT_MAX (64 * 1024)

void tdm_serve_params_init(tdm_serve_params_t *p) {
    memset(p, 0, sizeof *p);
    p->host = "127.0.0.1";
    p->port = 7860;
    p->queue = 16;
    p->max_steps = 150;
    p->max_pixels = 2048 * 2048;
    p->max_images = 16;
    p->keep = 600;
    p->keep_bytes = (int64_t)1 << 30;
    p->max_body = 1 << 20;
    p->grace = 30;
    p->rank_timeout = 600;
    p->guidance = NAN;
}

/* A request's fields: the names its API uses for each job parameter. */
typedef struct {
    const char *prompt, *negative, *seed, *steps, *guidance, *width, *height, *n;
} fields_t;

static const fields_t F_NATIVE = {"prompt", "negative_prompt", "seed", "steps", "guidance",
                                  "width", "height", "n"};
static const fields_t F_A1111 = {"prompt", "negative_prompt", "seed", "steps", "cfg_scale",
                                 "width", "height", NULL};
static const fields_t F_OPENAI = {"prompt", NULL, NULL, NULL, NULL, NULL, NULL, "n"};

/* Integer field `name` of o into *v (absent: unchanged). Returns 0, or -1
 * with msg set (wrong type, not an integer, outside [lo, hi]). */
static int get_int(const cJSON *o, const char *name, double lo, double hi, double *v, char *msg,
                   size_t cap) {
    const cJSON *x = name ? cJSON_GetObjectItemCaseSensitive(o, name) : NULL;
    if (!x || cJSON_IsNull(x)) return 0;
    if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble)) {
        snprintf(msg, cap, "\"%s\" must be an integer", name);
        return -1;
    }
    if (!(x->valuedouble >= lo && x->valuedouble <= hi)) {
        snprintf(msg, cap, "\"%s\" is %.17g: must be from %.17g to %.17g", name, x->valuedouble, lo,
                 hi);
        return -1;
    }
    *v = x->valuedouble;
    return 0;
}

static int get_str(const cJSON *o, const char *name, const char **v, char *msg, size_t cap) {
    const cJSON *x = name ? cJSON_GetObjectItemCaseSensitive(o, name) : NULL;
    if (!x || cJSON_IsNull(x)) return 0;
    if (!cJSON_IsString(x)) {
        snprintf(msg, cap, "\"%s\" must be a string", name);
        return -1;
    }
    if (strlen(x->valuestring) > PROMPT_MAX) {
        snprintf(msg, cap, "\"%s\" is longer than %d bytes", name, PROMPT_MAX);
        return -1;
    }
    size_t bad = 0;
    if (!tdm_utf8_valid(x->valuestring, &bad)) {   /* raw bytes cJSON passes through */
        snprintf(msg, cap, "\"%s\": invalid UTF-8 at byte %zu", name, bad);
        return -1;
    }
    *v = x->valuestring;
    return 0;
}

/* A [first, second] pair of integers in [lo, 16384] (field `name`; absent or
 * null: unchanged). 0, or -1 with msg. */
static int get_pair(const cJSON *o, const char *name, int lo, int *a, int *b, char *msg, size_t cap) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!x || cJSON_IsNull(x)) return 0;
    const cJSON *p = cJSON_IsArray(x) && cJSON_GetArraySize(x) == 2 ? cJSON_GetArrayItem(x, 0) : NULL;
    const cJSON *q = p ? cJSON_GetArrayItem(x, 1) : NULL;
    if (!p || !q || !cJSON_IsNumber(p) || !cJSON_IsNumber(q) || p->valuedouble != floor(p->valuedouble) ||
        q->valuedouble != floor(q->valuedouble) || !(p->valuedouble >= lo && p->valuedouble <= 16384) ||
        !(q->valuedouble >= lo && q->valuedouble <= 16384)) {
        snprintf(msg, cap, "\"%s\" must be a list of two integers from %d to 16384", name, lo);
        return -1;
    }
    *a = (int)p->valuedouble;
    *b = (int)q->valuedouble;
    return 0;
}

/* The native API's Stable Diffusion extras into r: "guidance_rescale"
 * (0..1, SD and SDXL) and SDXL's micro-conditioning as diffusers takes it,
 * "original_size" and "target_size" [height, width] and
 * "crops_coords_top_left" [top, left]. 0, or -1 with msg. */
static int parse_sd_extras(const cJSON *o, const tdm_pipeline_info_t *info, job_req_t *r, char *msg,
                           size_t cap) {
    const cJSON *gr = cJSON_GetObjectItemCaseSensitive(o, "guidance_rescale");
    if (gr && !cJSON_IsNull(gr)) {
        if (!cJSON_IsNumber(gr) || !(gr->valuedouble >= 0 && gr->valuedouble <= 1)) {
            snprintf(msg, cap, "\"guidance_rescale\" must be a number from 0 to 1");
            return -1;
        }
        if (info->kind != TDM_PIPE_SD && gr->valuedouble > 0) {
            snprintf(msg, cap, "\"guidance_rescale\": %s has no classifier-free guidance to rescale",
                     info->class_name);
            return -1;
        }
        r->guidance_rescale = (float)gr->valuedouble;
    }
    static const char *const micro[3] = {"original_size", "target_size", "crops_coords_top_left"};
    for (int i = 0; i < 3; i++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, micro[i]);
        if (x && !cJSON_IsNull(x) && !info->sdxl) {
            snprintf(msg, cap, "\"%s\": only SDXL pipelines take micro-conditioning (this is %s)", micro[i],
                     info->class_name);
            return -1;
        }
    }
    return get_pair(o, micro[0], 1, &r->orig_h, &r->orig_w, msg, cap) ||
           get_pair(o, micro[1], 1, &r->tgt_h, &r->tgt_w, msg, cap) ||
           get_pair(o, micro[2], 0, &r->crop_top, &r->crop_left, msg, cap);
}

/* The job request of body o under the field names f, with the server's
 * defaults and limits; `images` (> 0) overrides the count field (A1111's
 * batch_size × n_iter). 0, or -1 with msg (a 400 answer). */
static int parse_req(const tdm_serve_params_t *p, const tdm_pipeline_info_t *info, const cJSON *o,
                     const fields_t *f, int images, job_req_t *r, char *msg, size_t cap) {
    double prio = 0;
    const char *prompt = NULL, *neg = p->negative;
    double seed = (double)p->seed, steps = p->steps > 0 ? p->steps : info->default_steps;
    double w = p->width > 0 ? p->width : info->default_width;
    double h = p->height > 0 ? p->height : info->default_height, n = 1;
    double g = isnan(p->guidance) ? info->default_guidance : p->guidance;
    memset(r, 0, sizeof *r);
    if (!cJSON_IsObject(o)) {
        snprintf(msg, cap, "the body must be a JSON object");
        return -1;
    }
    for (const cJSON *x = o->child; x; x = x->next) {   /* ignored, as A1111 does; logged */
        const char *k = x->string;
        if (k && strcmp(k, "prompt") && (!f->negative || strcmp(k, f->negative)) &&
            (!f->seed || strcmp(k, f->seed)) && (!f->steps || strcmp(k, f->steps)) &&
            (!f->guidance || strcmp(k, f->guidance)) && (!f->width || strcmp(k, f->width)) &&
            (!f->height || strcmp(k, f->height)) && (!f->n || strcmp(k, f->n)) &&
            strcmp(k, "priority") && strcmp(k, "guidance_rescale") && strcmp(k, "original_size") &&
            strcmp(k, "target_size") && strcmp(k, "crops_coords_top_left"))
            tdm_log(TDM_LOG_DEBUG, "serve: field \"%.64s\" ignored", k);
    }
    if (get_str(o, f->prompt, &prompt, msg, cap) || get_str(o, f->negative, &neg, msg, cap))
        return -1;
    if (!prompt) {
        snprintf(msg, cap, "\"prompt\" (a string) is required");
        return -1;
    }
    const cJSON *gx = f->guidance ? cJSON_GetObjectItemCaseSensitive(o, f->guidance) : NULL;
    if (gx && !cJSON_IsNull(gx)) {
        if (!cJSON_IsNumber(gx) || !(gx->valuedouble >= 0 && gx->valuedouble <= 100)) {
            snprintf(msg, cap, "\"%s\" must be a number from 0 to 100", f->guidance);
            return -1;
        }
        g = gx->valuedouble;
    }
    const cJSON *sx = f->seed ? cJSON_GetObjectItemCaseSensitive(o, f->seed) : NULL;
    if (sx && cJSON_IsNumber(sx) && sx->valuedouble == -1) {   /* A1111: -1 = random */
        uint32_t r32 = 0;
        if (jobs_random(&r32, sizeof r32)) r32 = 0;
        seed = (double)r32;
    } else if (get_int(o, f->seed, 0, 9007199254740991.0, &seed, msg, cap)) {
        return -1;
    }
    if (get_int(o, f->steps, 1, p->max_steps, &steps, msg, cap) ||
        get_int(o, f->width, 8, 16384, &w, msg, cap) || get_int(o, f->height, 8, 16384, &h, msg, cap) ||
        get_int(o, f->n, 1, p->max_images, &n, msg, cap) ||
        get_int(o, "priority", -1000, 1000, &prio, msg, cap))
        return -1;
    if (images > 0) n = images;
    if (f == &F_OPENAI) {   /* "size": "WxH" */
        const cJSON *z = cJSON_GetObjectItemCaseSensitive(o, "size");
        if (z && !cJSON_IsNull(z)) {
            int a = 0, b = 0, end = 0;
            if (!cJSON_IsString(z) || sscanf(z->valuestring, "%5dx%5d%n", &a, &b, &end) != 2 ||
                z->valuestring[end] || a < 8 || b < 8) {
                snprintf(msg, cap, "\"size\" must be \"WIDTHxHEIGHT\", e.g. \"512x512\"");
                return -1;
            }
            w = a;
            h = b;
        }
    }
    const int m = info->size_multiple > 0 ? info->size_multiple : 8;
    if ((int)w % m || (int)h % m) {
        snprintf(msg, cap, "width %d and height %d must be multiples of %d for %s", (int)w, (int)h,
                 m, info->class_name);
        return -1;
    }
    if (w * h > (double)p->max_pixels) {
        snprintf(msg, cap, "%dx%d is %.0f pixels, above this server's --max-pixels %lld", (int)w,
                 (int)h, w * h, (long long)p->max_pixels);
        return -1;
    }
    if (f == &F_NATIVE && parse_sd_extras(o, info, r, msg, cap)) return -1;
    if (seed + n - 1 > 18446744073709551615.0) {
        snprintf(msg, cap, "seed + n - 1 passes 2^64-1");
        return -1;
    }
    r->prompt = strdup(prompt);
    r->negative = neg ? strdup(neg) : NULL;
    if (!r->prompt || (neg && !r->negative)) {
        free(r->prompt);
        free(r->negative);
        snprintf(msg, cap, "out of memory");
        return -1;
    }
    r->seed = (uint64_t)seed;
    r->steps = (int)steps;
    r->width = (int)w;
    r->height = (int)h;
    r->n = (int)n;
    r->guidance = (float)g;
    r->priority = (int)prio;
    return 0;
}

int serve_parse_request(const tdm_serve_params_t *p, const tdm_pipeline_info_t *info, int api,
                        const cJSON *body, job_req_t *r, int *url, char *msg, size_t cap) {
    memset(r, 0, sizeof *r);
    if (url) *url = 0;
    if (api == SERVE_API_OPENAI) {
        const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(body, "response_format");
        if (fmt && !cJSON_IsNull(fmt) &&
            (!cJSON_IsString(fmt) ||
             (strcmp(fmt->valuestring, "b64_json") && strcmp(fmt->valuestring, "url")))) {
            snprintf(msg, cap, "\"response_format\" must be \"b64_json\" or \"url\"");
            return -1;
        }
        if (url) *url = fmt && cJSON_IsString(fmt) && !strcmp(fmt->valuestring, "url");
        return parse_req(p, info, body, &F_OPENAI, 0, r, msg, cap);
    }
    if (api == SERVE_API_A1111) {
        double bs = 1, ni = 1;
        if (cJSON_IsObject(body) &&
            (get_int(body, "batch_size", 1, p->max_images, &bs, msg, cap) ||
             get_int(body, "n_iter", 1, p->max_images, &ni, msg, cap)))
            return -1;
        if (bs * ni > p->max_images) {
            snprintf(msg, cap, "batch_size x n_iter = %.0f images, above this server's limit of %d",
                     bs * ni, p->max_images);
            return -1;
        }
        if (parse_req(p, info, body, &F_A1111, (int)(bs * ni), r, msg, cap)) return -1;
        const cJSON *sm = cJSON_GetObjectItemCaseSensitive(body, "sampler_name");
        if (sm && cJSON_IsString(sm))
            tdm_log(TDM_LOG_INFO, "serve: sampler_name \"%.64s\" ignored: the model's scheduler (%s) "
                    "runs", sm->valuestring, info->scheduler ? info->scheduler : "");
        return 0;
    }
    return parse_req(p, info, body, &F_NATIVE, 0, r, msg, cap);
}

void serve_generate_params(const job_req_t *r, int k, tdm_generate_params_t *gp) {
    tdm_generate_params_init(gp);
    gp->seed = r->seed + (uint64_t)k;
    gp->steps = r->steps;
    gp->guidance = r->guidance;
    gp->width = r->width;
    gp->height = r->height;
    gp->guidance_rescale = r->guidance_rescale;
    gp->original_width = r->orig_w;
    gp->original_height = r->orig_h;
    gp->target_width = r->tgt_w;
    gp->target_height = r->tgt_h;
    gp->crop_top = r->crop_top;
    gp->crop_left = r->crop_left;
}

char *serve_parameters_text(const job_req_t *r, int k, const char *scheduler, const char *model) {
    return tdm_parameters_text(r->prompt, r->negative, r->steps, scheduler, r->guidance,
                               r->seed + (uint64_t)k, r->width, r->height, model);
}

tdm_status serve_make_image(tdm_pipeline_t *pipe, const job_req_t *r, int k, const char *scheduler,
                            const char *model, void (*on_step)(void *, int, int), int (*cancel)(void *),
                            void *user, uint8_t **png, size_t *len, char **params, const char **err) {
    uint8_t *rgb = malloc((size_t)r->width * (size_t)r->height * 3);
    tdm_status st = TDM_ERR_NOMEM;
    *png = NULL;
    *len = 0;
    *params = NULL;
    *err = "out of memory";
    if (rgb) {
        tdm_generate_params_t gp;
        serve_generate_params(r, k, &gp);
        gp.on_step = on_step;
        gp.cancel = cancel;
        gp.user = user;
        st = tdm_pipeline_generate(pipe, r->prompt, r->negative, &gp, NULL, rgb);
        if (st != TDM_OK) *err = tdm_last_error();
        else if (!(*params = serve_parameters_text(r, k, scheduler, model))) st = TDM_ERR_NOMEM;
        else if ((st = tdm_image_png(rgb, r->width, r->height, *params, png, len)) != TDM_OK)
            *err = tdm_last_error();
    }
    free(rgb);
    if (st != TDM_OK) {
        free(*png);
        free(*params);
        *png = NULL;
        *params = NULL;
    }
    return st;
}
