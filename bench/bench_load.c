/* bench_load.c — times loading one component of a diffusers folder: first a
 * plain read() of its safetensors files, twice (what the disk, then the page
 * cache, delivers; nothing is dropped), then tandem's own loader putting the
 * component on the device (tdm_unet_load / tdm_flux_load / tdm_vae_load /
 * tdm_clip_text_load / tdm_t5_load, chosen by config.json's _class_name or
 * architectures),
 * REPEATS times, each until the device has finished. Prints JSON lines with
 * seconds and GB/s of file bytes. --load-only skips the reads (to time a
 * load from a cold page cache after `echo 3 > /proc/sys/vm/drop_caches`).
 * Not a test.
 * usage: bench_load [--load-only] ROOT COMPONENT [cpu|cuda:N [fp32|fp16|bf16 [REPEATS [VARIANT]]]]
 * DTYPE (CUDA only): the device's GEMM precision, so fp16/bf16 store the
 * GEMM weights in that type. Host threads: OMP_NUM_THREADS (default all). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend/ops.h"
#include "bench_env.h"
#include "core/core.h"
#include "io/config.h"
#include "io/folder.h"
#include "models/clip_text.h"
#include "models/flux.h"
#include "models/t5.h"
#include "models/unet2d.h"
#include "models/vae.h"

#define MAX_FILES 256

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The weight files of the component: the one file, or every shard named in
 * the index's weight_map (each once). */
static tdm_status weight_files(const char *path, char files[][TDM_PATH_MAX], int *nfiles) {
    size_t len = strlen(path);
    *nfiles = 0;
    if (len < 5 || strcmp(path + len - 5, ".json") != 0) {
        snprintf(files[0], TDM_PATH_MAX, "%s", path);
        *nfiles = 1;
        return TDM_OK;
    }
    tdm_json_t j;
    tdm_status st = tdm_json_load(&j, path);
    if (st != TDM_OK) return st;
    char dir[TDM_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(j.root, "weight_map"), *e;
    if (!cJSON_IsObject(wm)) {
        tdm_json_free(&j);
        return tdm_errorf(TDM_ERR_FORMAT, "%s: no weight_map object", path);
    }
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e)) continue;
        char f[TDM_PATH_MAX];
        if ((size_t)snprintf(f, sizeof f, "%s/%s", dir, e->valuestring) >= sizeof f) continue;
        int seen = 0;
        for (int i = 0; i < *nfiles && !seen; i++) seen = !strcmp(files[i], f);
        if (seen) continue;
        if (*nfiles == MAX_FILES) {
            tdm_json_free(&j);
            return tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: more than %d shards", path, MAX_FILES);
        }
        memcpy(files[(*nfiles)++], f, sizeof f);
    }
    tdm_json_free(&j);
    return TDM_OK;
}

/* read()s every file once through one buffer; OUT: *bytes. */
static tdm_status read_all(char files[][TDM_PATH_MAX], int nfiles, int64_t *bytes) {
    enum { BUF = 64 << 20 };
    char *buf = malloc(BUF);
    if (!buf) return tdm_errorf(TDM_ERR_NOMEM, "out of memory");
    *bytes = 0;
    for (int i = 0; i < nfiles; i++) {
        int fd = open(files[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            free(buf);
            return tdm_errorf(TDM_ERR_IO, "%s: cannot open: %s", files[i], strerror(errno));
        }
        for (;;) {
            ssize_t r = read(fd, buf, BUF);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) {
                close(fd);
                free(buf);
                return tdm_errorf(TDM_ERR_IO, "%s: read failed: %s", files[i], strerror(errno));
            }
            if (r == 0) break;
            *bytes += r;
        }
        close(fd);
    }
    free(buf);
    return TDM_OK;
}

/* Loads the component with the loader of its class, then frees it. */
static tdm_status load_once(const char *cls, const char *root, const char *sub,
                            const char *variant, tdm_device_t *dev) {
    tdm_status st;
    if (!strcmp(cls, "UNet2DConditionModel")) {
        tdm_unet_t *m = NULL;
        st = tdm_unet_load(&m, root, sub, variant, dev);
        tdm_unet_free(m);
    } else if (!strcmp(cls, "FluxTransformer2DModel")) {
        tdm_flux_t *m = NULL;
        st = tdm_flux_load(&m, root, sub, variant, dev);
        tdm_flux_free(m);
    } else if (!strcmp(cls, "AutoencoderKL")) {
        tdm_vae_t *m = NULL;
        st = tdm_vae_load(&m, root, sub, variant, dev);
        tdm_vae_free(m);
    } else if (!strcmp(cls, "CLIPTextModel") || !strcmp(cls, "CLIPTextModelWithProjection")) {
        tdm_clip_text_t *m = NULL;
        st = tdm_clip_text_load(&m, root, sub, variant, dev);
        tdm_clip_text_free(m);
    } else if (!strcmp(cls, "T5EncoderModel")) {
        tdm_t5_t *m = NULL;
        st = tdm_t5_load(&m, root, sub, variant, dev);
        tdm_t5_free(m);
    } else {
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "%s/%s: _class_name \"%s\" has no loader here", root,
                          sub, cls);
    }
    return st;
}

int main(int argc, char **argv) {
    const int load_only = argc > 1 && !strcmp(argv[1], "--load-only");
    if (load_only) {
        argv++;
        argc--;
    }
    if (argc < 3 || argc > 7) {
        fprintf(stderr, "usage: bench_load [--load-only] ROOT COMPONENT "
                "[cpu|cuda:N [fp32|fp16|bf16 [REPEATS [VARIANT]]]]\n");
        return 2;
    }
    const char *root = argv[1], *sub = argv[2], *devname = argc > 3 ? argv[3] : "cpu";
    const char *dtname = argc > 4 ? argv[4] : "fp32";
    const int repeats = argc > 5 ? atoi(argv[5]) : 2;
    const char *variant = argc > 6 ? argv[6] : NULL;
    tdm_dtype gemm_dtype = !strcmp(dtname, "fp16") ? TDM_F16 : !strcmp(dtname, "bf16") ? TDM_BF16 : TDM_F32;
    if (gemm_dtype == TDM_F32 && strcmp(dtname, "fp32") != 0) {
        fprintf(stderr, "bench_load: dtype %s: expected fp32, fp16 or bf16\n", dtname);
        return 2;
    }

    static char files[MAX_FILES][TDM_PATH_MAX];
    char wpath[TDM_PATH_MAX], cfg[TDM_PATH_MAX], cls[128];
    int nfiles = 0;
    tdm_json_t j = {0};
    if (tdm_folder_weights(root, sub, variant, wpath, sizeof wpath) != TDM_OK ||
        weight_files(wpath, files, &nfiles) != TDM_OK ||
        tdm_path_join(cfg, sizeof cfg, root, sub, "config.json") != TDM_OK ||
        tdm_json_load(&j, cfg) != TDM_OK ||
        tdm_json_str(&j, "_class_name", "", cls, sizeof cls) != TDM_OK) {
        fprintf(stderr, "bench_load: %s\n", tdm_last_error());
        tdm_json_free(&j);
        return 1;
    }
    if (!cls[0]) {   /* transformers configs name the class in "architectures" */
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j.root, "architectures");
        const cJSON *a0 = cJSON_IsArray(a) ? cJSON_GetArrayItem(a, 0) : NULL;
        if (cJSON_IsString(a0)) snprintf(cls, sizeof cls, "%s", a0->valuestring);
    }
    tdm_json_free(&j);

    /* (a) plain reads: the first from wherever the bytes are, the second from the page cache */
    int64_t file_bytes = 0;
    for (int i = 0; load_only && i < nfiles; i++) {
        struct stat sb;
        if (stat(files[i], &sb) != 0) {
            fprintf(stderr, "bench_load: %s: cannot stat: %s\n", files[i], strerror(errno));
            return 1;
        }
        file_bytes += sb.st_size;
    }
    for (int pass = 1; pass <= 2 && !load_only; pass++) {
        double t0 = now();
        if (read_all(files, nfiles, &file_bytes) != TDM_OK) {
            fprintf(stderr, "bench_load: %s\n", tdm_last_error());
            return 1;
        }
        double dt = now() - t0;
        printf("{\"bench\": \"load\", \"what\": \"read\", \"component\": \"%s\", \"files\": %d, "
               "\"pass\": %d, \"bytes\": %lld, \"s\": %.3f, \"GBps\": %.2f}\n",
               sub, nfiles, pass, (long long)file_bytes, dt, file_bytes / dt / 1e9);
        fflush(stdout);
    }

    /* (b) tandem's loader onto the device */
    tdm_device_t dev;
    tdm_backend_params_t opts;
    tdm_backend_params_init(&opts);
    cli_env_log_level();
    cli_env_backend(&opts);
    if (strcmp(devname, "cpu") != 0 && strncmp(devname, "cuda", 4) != 0) {
        fprintf(stderr, "bench_load: device %s: expected cpu or cuda:N\n", devname);
        return 2;
    }
    if (tdm_backend_device_open(&dev, devname, &opts) != TDM_OK) {
        fprintf(stderr, "bench_load: %s\n", tdm_last_error());
        return 1;
    }
    dev.cache_enabled = 1;
    if (dev.kind == TDM_DEV_CUDA) dev.gemm_dtype = gemm_dtype;   /* before loading: GEMM weights */
    if (dev.kind != TDM_DEV_CUDA && gemm_dtype != TDM_F32) {
        fprintf(stderr, "bench_load: dtype %s: the CPU backend computes in fp32\n", dtname);
        return 2;
    }
    for (int pass = 1; pass <= repeats; pass++) {
        double t0 = now();
        tdm_status st = load_once(cls, root, sub, variant, &dev);
        /* uploads may still be in flight: the load ends when the device has them */
        if (st == TDM_OK && dev.ops && !dev.ops->sync(&dev)) st = TDM_ERR_INTERNAL;
        double dt = now() - t0;
        if (st != TDM_OK) {
            fprintf(stderr, "bench_load: %s\n", tdm_last_error());
            return 1;
        }
        tdm_dev_trim(&dev);
        printf("{\"bench\": \"load\", \"what\": \"load\", \"component\": \"%s\", \"class\": \"%s\", "
               "\"device\": \"%s\", \"dtype\": \"%s\", \"pass\": %d, \"file_bytes\": %lld, "
               "\"peak_tracked_mib\": %.1f, \"s\": %.3f, \"GBps\": %.2f}\n",
               sub, cls, devname, dtname, pass, (long long)file_bytes,
               dev.peak_bytes / 1048576.0, dt, file_bytes / dt / 1e9);
        fflush(stdout);
    }
    tdm_backend_device_close(&dev);
    return 0;
}
