/* files.c — the public output-file helpers: PNG images and latents files
 * (safetensors with tensor "latents" and size/parameters metadata), each
 * written atomically and, for latents, checked against the pipeline's shape
 * for the image size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/atomic.h"
#include "io/config.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "pipe/pipe_internal.h"

tdm_status tdm_image_save_png(const char *path, const uint8_t *rgb, int width, int height,
                              const char *parameters) {
    const char *kv[] = {"parameters", parameters ? parameters : ""};
    return tdm_png_write(path, rgb, width, height, parameters ? 1 : 0, kv);
}

tdm_status tdm_image_png(const uint8_t *rgb, int width, int height, const char *parameters,
                         uint8_t **png, size_t *len) {
    const char *kv[] = {"parameters", parameters ? parameters : ""};
    return tdm_png_encode(rgb, width, height, parameters ? 1 : 0, kv, png, len);
}

char *tdm_parameters_text(const char *prompt, const char *negative, int steps,
                          const char *scheduler, float guidance, uint64_t seed, int width,
                          int height, const char *model) {
    const int neg = negative && negative[0];
    char *s = NULL;
    for (int pass = 0, n = 0; pass < 2; pass++) {   /* measure, then write */
        n = snprintf(s, s ? (size_t)n + 1 : 0, "%s\n%s%s%sSteps: %d, Sampler: %s, CFG scale: %g, "
                     "Seed: %llu, Size: %dx%d, Model: %s, Version: tandem %s", prompt ? prompt : "",
                     neg ? "Negative prompt: " : "", neg ? negative : "", neg ? "\n" : "", steps,
                     scheduler ? scheduler : "", guidance, (unsigned long long)seed, width, height,
                     model ? model : "", TANDEM_VERSION);
        if (n < 0 || (!s && !(s = malloc((size_t)n + 1)))) {
            free(s);
            return NULL;
        }
    }
    return s;
}

tdm_status tdm_file_write_atomic(const char *path, const void *data, size_t len) {
    return tdm_atomic_write(path, data, len);
}

tdm_status tdm_file_append_sync(const char *path, const void *data, size_t len) {
    return tdm_append_sync(path, data, len);
}

tdm_status tdm_latents_save(const tdm_pipeline_t *pipe, const char *path, const float *latents,
                            int width, int height, const char *parameters) {
    int64_t shape[4];
    int nd;
    tdm_status st = tdm_pipeline_latent_shape(pipe, width, height, shape, &nd);
    if (st != TDM_OK) return st;
    char size[32];
    snprintf(size, sizeof size, "%dx%d", width, height);
    const char *names[] = {"latents"};
    int nds[] = {nd};
    const int64_t *shapes[] = {shape};
    const float *data[] = {latents};
    const char *meta[] = {"size", size, "parameters", parameters ? parameters : ""};
    return tdm_safetensors_write_f32(path, 1, names, nds, shapes, data, parameters ? 2 : 1, meta);
}

static void dims_str(char *buf, size_t cap, int nd, const int64_t *sh) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < nd && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)sh[i]);
}

tdm_status tdm_latents_load(const tdm_pipeline_t *pipe, const char *path, int *width, int *height,
                            float **latents, char **parameters) {
    tdm_safetensors_t *f = NULL;
    tdm_status st;
    float *lat = NULL;
    *latents = NULL;
    if (parameters) *parameters = NULL;
    TDM_TRY(tdm_safetensors_open(&f, path));
    const tdm_st_tensor_t *t = tdm_safetensors_find(f, "latents");
    if (!t) { st = tdm_errorf(TDM_ERR_MODEL, "%s: missing tensor \"latents\"", path); goto fail; }
    int W = *width, H = *height, mw = 0, mh = 0;
    const char *size = tdm_safetensors_meta(f, "size");
    if (size && sscanf(size, "%dx%d", &mw, &mh) == 2) {
        if (!W) W = mw;
        if (!H) H = mh;
    }
    if (pipe->info.kind == TDM_PIPE_SD && t->ndim == 4 && (!W || !H)) {   /* SD latents carry the size */
        const int64_t f = pipe->info.vae_scale_factor, lim = TDM_MAX_IMAGE_SIDE / f;
        if (t->shape[2] < 1 || t->shape[3] < 1 || t->shape[2] > lim || t->shape[3] > lim) {
            st = tdm_errorf(TDM_ERR_INVALID_ARG, "%s: latents of %lldx%lld make a %lldx%lld image (x the VAE's "
                            "scale factor %lld); each side must be in [1, %lld]", path, (long long)t->shape[3],
                            (long long)t->shape[2], (long long)(t->shape[3] * f), (long long)(t->shape[2] * f),
                            (long long)f, (long long)lim);
            goto fail;
        }
        if (!W) W = (int)(t->shape[3] * f);
        if (!H) H = (int)(t->shape[2] * f);
    }
    if (mw < 0 || mh < 0 || mw > TDM_MAX_IMAGE_SIDE || mh > TDM_MAX_IMAGE_SIDE) {
        st = tdm_errorf(TDM_ERR_INVALID_ARG, "%s: metadata size \"%s\" is out of range [1, %d] per side", path,
                        size, TDM_MAX_IMAGE_SIDE);
        goto fail;
    }
    if (W <= 0 || H <= 0) {
        st = tdm_errorf(TDM_ERR_INVALID_ARG, "%s: --width/--height are required (the file has no size metadata)", path);
        goto fail;
    }
    int64_t shape[4];
    int nd;
    if (tdm_pipeline_latent_shape(pipe, W, H, shape, &nd) != TDM_OK) {
        if (*width && *height) {   /* both given as flags: the flags' message */
            st = tdm_pipeline_latent_shape(pipe, W, H, shape, &nd);
            goto fail;
        }
        const int f = pipe->info.vae_scale_factor, m = pipe->info.size_multiple > f ? pipe->info.size_multiple : f;
        st = tdm_errorf(TDM_ERR_INVALID_ARG, "%s: the image size %dx%d read from the file is not a positive "
                        "multiple of %d", path, W, H, m);
        goto fail;
    }
    int same = t->ndim == nd;
    for (int i = 0; same && i < nd; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char got[128], want[128];
        dims_str(got, sizeof got, t->ndim, t->shape);
        dims_str(want, sizeof want, nd, shape);
        st = tdm_errorf(TDM_ERR_INVALID_ARG, "%s: latents [%s] do not fit %s %d %s %d (expected [%s])", path, got,
                        *width ? "--width" : "a width of", W, *height ? "--height" : "a height of", H, want);
        goto fail;
    }
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    lat = malloc((size_t)n * sizeof *lat);
    if (!lat) { st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", path); goto fail; }
    TDM_TRY(tdm_convert_to_f32(lat, t->data, t->dtype, n));
    const char *params = tdm_safetensors_meta(f, "parameters");
    if (parameters && params && !(*parameters = strdup(params))) {
        st = tdm_errorf(TDM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    *width = W;
    *height = H;
    *latents = lat;
    tdm_safetensors_close(f);
    return TDM_OK;
fail:
    free(lat);
    tdm_safetensors_close(f);
    return st;
}
