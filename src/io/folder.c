/* folder.c — diffusers folders: resolving --model (directory, or ORG/NAME
 * in the offline Hugging Face cache) and locating component weights,
 * variants and sharded indexes. */
#include "io/folder.h"

#include <cjson/cJSON.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

int tdm_file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* What a non-regular file is, for "PATH: <kind>". */
static const char *file_kind(mode_t m) {
    return S_ISDIR(m)    ? "is a directory"
           : S_ISFIFO(m) ? "is a FIFO, not a regular file"
           : S_ISCHR(m)  ? "is a character device, not a regular file"
           : S_ISBLK(m)  ? "is a block device, not a regular file"
           : S_ISSOCK(m) ? "is a socket, not a regular file"
                         : "is not a regular file";
}

tdm_status tdm_file_probe(const char *path, int *present) {
    struct stat sb;
    *present = 0;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) return TDM_OK;
        if (errno == ELOOP) return tdm_errorf(TDM_ERR_IO, "%s: symlink loop", path);
        return tdm_errorf(TDM_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) return tdm_errorf(TDM_ERR_IO, "%s: %s", path, file_kind(sb.st_mode));
    *present = 1;
    return TDM_OK;
}

tdm_status tdm_file_open(const char *path, int *fd) {
    struct stat sb;
    *fd = -1;
    int f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (f < 0) {
        int e = errno;
        if (e == ELOOP) return tdm_errorf(TDM_ERR_IO, "%s: symlink loop", path);
        if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))   /* a socket: ENXIO */
            return tdm_errorf(TDM_ERR_IO, "%s: %s", path, file_kind(sb.st_mode));
        return tdm_errorf(TDM_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    if (fstat(f, &sb) != 0) {
        int e = errno;
        close(f);
        return tdm_errorf(TDM_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(f);
        return tdm_errorf(TDM_ERR_IO, "%s: %s", path, file_kind(sb.st_mode));
    }
    int fl = fcntl(f, F_GETFL);
    if (fl < 0 || fcntl(f, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(f);
        return tdm_errorf(TDM_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    *fd = f;
    return TDM_OK;
}

tdm_status tdm_file_read(const char *path, int64_t max_bytes, char **out, int64_t *len) {
    *out = NULL;
    *len = 0;
    int fd;
    tdm_status st = tdm_file_open(path, &fd);
    if (st != TDM_OK) return st;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return tdm_errorf(TDM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    char *buf = NULL;
    long sz = -1;
    if (fseek(f, 0, SEEK_END) == 0) sz = ftell(f);
    if (sz < 0 || fseek(f, 0, SEEK_SET) != 0) {
        st = tdm_errorf(TDM_ERR_IO, "%s: cannot determine the file size", path);
        goto fail;
    }
    if ((int64_t)sz > max_bytes) {
        st = tdm_errorf(TDM_ERR_FORMAT, "%s: %ld bytes is larger than the %lld allowed", path, sz,
                        (long long)max_bytes);
        goto fail;
    }
    buf = malloc((size_t)sz + 1);
    if (!buf) { st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", path); goto fail; }
    if (sz > 0 && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        st = tdm_errorf(TDM_ERR_IO, "%s: read failed", path);
        goto fail;
    }
    buf[sz] = '\0';
    fclose(f);
    *out = buf;
    *len = sz;
    return TDM_OK;
fail:
    free(buf);
    fclose(f);
    return st;
}

tdm_status tdm_folder_components_check(const struct cJSON *index, const char *index_path) {
    for (const cJSON *it = index ? index->child : NULL; it; it = it->next) {
        if (!cJSON_IsArray(it)) continue;   /* "_class_name", "_diffusers_version", ... */
        const char *k = it->string ? it->string : "";
        const char *why = NULL;
        size_t n = strlen(k);
        if (n == 0) why = "is empty";
        else if (!strcmp(k, ".") || !strcmp(k, "..")) why = "names no folder inside the model folder";
        else if (k[0] == '/') why = "is an absolute path";
        else if (strchr(k, '/') || strchr(k, '\\')) why = "contains a path separator";
        else if (n > TDM_COMPONENT_NAME_MAX) why = "is longer than 63 bytes";
        for (size_t i = 0; !why && i < n; i++)
            if ((unsigned char)k[i] < 0x20 || k[i] == 0x7f) why = "contains a control character";
        if (why)
            return tdm_errorf(TDM_ERR_MODEL, "%s: component name \"%.80s%s\" %s (it must be a "
                              "folder inside the model folder)", index_path, k, n > 80 ? "..." : "",
                              why);
    }
    return TDM_OK;
}

static int dir_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

tdm_status tdm_path_join(char *out, size_t cap, const char *dir, const char *sub,
                         const char *file) {
    int n;
    if (sub && *sub && file && *file) n = snprintf(out, cap, "%s/%s/%s", dir, sub, file);
    else if (sub && *sub) n = snprintf(out, cap, "%s/%s", dir, sub);
    else if (file && *file) n = snprintf(out, cap, "%s/%s", dir, file);
    else n = snprintf(out, cap, "%s", dir);
    if (n < 0 || (size_t)n >= cap)
        return tdm_errorf(TDM_ERR_IO, "%s/%s/%s: path longer than %zu bytes", dir, sub ? sub : "",
                          file ? file : "", cap);
    return TDM_OK;
}

/* Reads the first line of a small text file (refs/main) into out. */
static int read_ref(const char *path, char *out, size_t cap) {
    int fd;
    if (tdm_file_open(path, &fd) != TDM_OK) return 0;   /* not a regular file: no ref */
    FILE *f = fdopen(fd, "r");
    if (!f) {
        close(fd);
        return 0;
    }
    int ok = fgets(out, (int)cap, f) != NULL;
    fclose(f);
    if (!ok) return 0;
    out[strcspn(out, " \r\n")] = 0;
    return out[0] != 0 && !strchr(out, '/') && strcmp(out, "..") != 0;
}

/* Picks a snapshot in `snaps`: refs/main's revision when present, else the
 * only or most recently modified snapshot folder. */
static int pick_snapshot(const char *repo, char *out, size_t cap) {
    char snaps[TDM_PATH_MAX], ref[256], p[TDM_PATH_MAX];
    if ((size_t)snprintf(snaps, sizeof snaps, "%s/snapshots", repo) >= sizeof snaps) return 0;
    if ((size_t)snprintf(p, sizeof p, "%s/refs/main", repo) < sizeof p && read_ref(p, ref, sizeof ref) &&
        (size_t)snprintf(p, sizeof p, "%s/%s", snaps, ref) < sizeof p && dir_exists(p)) {
        return (size_t)snprintf(out, cap, "%s", p) < cap;
    }
    DIR *d = opendir(snaps);
    if (!d) return 0;
    struct dirent *e;
    time_t best = 0;
    int found = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        struct stat sb;
        if ((size_t)snprintf(p, sizeof p, "%s/%s", snaps, e->d_name) >= sizeof p) continue;
        if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)) continue;
        if (!found || sb.st_mtime > best) {
            best = sb.st_mtime;
            found = (size_t)snprintf(out, cap, "%s", p) < cap;
        }
    }
    closedir(d);
    return found;
}

tdm_status tdm_folder_resolve(const char *model, char *out, size_t cap) {
    if (!model || !*model) return tdm_errorf(TDM_ERR_INVALID_ARG, "--model: empty model name");
    if (dir_exists(model)) {
        if ((size_t)snprintf(out, cap, "%s", model) >= cap)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--model %s: path too long", model);
        return TDM_OK;
    }
    struct stat st;
    if (stat(model, &st) == 0 && !S_ISDIR(st.st_mode)) {   /* a file: say what to do with it */
        const char *dot = strrchr(model, '.');
        static const char *const pickles[] = {".ckpt", ".pt", ".pth", ".bin", ".pkl"};
        for (size_t i = 0; dot && i < sizeof pickles / sizeof *pickles; i++)
            if (!strcasecmp(dot, pickles[i]))
                return tdm_errorf(TDM_ERR_UNSUPPORTED, "--model %s: a pickle checkpoint; tandem reads "
                                  "only safetensors (loading a pickle can run code). Convert it once with "
                                  "diffusers: python3 -c \"import diffusers as d; d.StableDiffusionPipeline."
                                  "from_single_file('%s').save_pretrained('OUT_DIR')\" "
                                  "(StableDiffusionXLPipeline or FluxPipeline for those models), then "
                                  "--model OUT_DIR", model, model);
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "--model %s: a file, not a model folder; a single-file "
                          "SD/SDXL/FLUX .safetensors runs with --config DIR (a diffusers folder of the same "
                          "architecture), other files converted once with diffusers: python3 -c "
                          "\"import diffusers as d; d.StableDiffusionPipeline.from_single_file('%s')"
                          ".save_pretrained('OUT_DIR')\" (StableDiffusionXLPipeline or FluxPipeline for "
                          "those models), then --model OUT_DIR", model, model);
    }
    const char *slash = strchr(model, '/');
    int looks_like_repo = slash && slash != model && slash[1] && !strchr(slash + 1, '/') &&
                          model[0] != '.';
    if (!looks_like_repo)
        return tdm_errorf(TDM_ERR_IO, "--model %s: no such directory (and not an ORG/NAME repo id)", model);
    char hub[TDM_PATH_MAX];
    const char *e;
    if ((e = getenv("HF_HUB_CACHE")) && *e) snprintf(hub, sizeof hub, "%s", e);
    else if ((e = getenv("HF_HOME")) && *e) snprintf(hub, sizeof hub, "%s/hub", e);
    else if ((e = getenv("XDG_CACHE_HOME")) && *e) snprintf(hub, sizeof hub, "%s/huggingface/hub", e);
    else snprintf(hub, sizeof hub, "%s/.cache/huggingface/hub", getenv("HOME") ? getenv("HOME") : "");
    char repo[TDM_PATH_MAX];
    int n = snprintf(repo, sizeof repo, "%s/models--%.*s--%s", hub, (int)(slash - model), model,
                     slash + 1);
    if (n < 0 || (size_t)n >= sizeof repo)
        return tdm_errorf(TDM_ERR_IO, "--model %s: cache path too long", model);
    if (!pick_snapshot(repo, out, cap))
        return tdm_errorf(TDM_ERR_IO,
                          "--model %s: not a directory, and no snapshot in the Hugging Face cache at %s "
                          "(set HF_HOME or HF_HUB_CACHE, or pass a folder)",
                          model, repo);
    return TDM_OK;
}

/* The weight search of tdm_folder_weights: *found = 1 with the path in out,
 * or 0 with the names tried in `tried`. Errors only when a path does not fit. */
static tdm_status find_weights(const char *dir, const char *sub, const char *variant, char *out,
                               size_t cap, int *found, char *tried, size_t tcap) {
    static const char *stems[] = {"diffusion_pytorch_model", "model"};
    char name[256];
    size_t tl = 0;
    *found = 0;
    tried[0] = 0;
    for (int pass = (variant && *variant) ? 0 : 1; pass < 2; pass++) {
        for (int s = 0; s < 2; s++) {
            for (int idx = 0; idx < 2; idx++) {
                if (pass == 0)
                    snprintf(name, sizeof name, "%s.%s.safetensors%s", stems[s], variant,
                             idx ? ".index.json" : "");
                else
                    snprintf(name, sizeof name, "%s.safetensors%s", stems[s], idx ? ".index.json" : "");
                tdm_status st = tdm_path_join(out, cap, dir, sub, name);
                if (st != TDM_OK) return st;
                /* a FIFO, directory, device or link loop under a weight name is an error */
                if ((st = tdm_file_probe(out, found)) != TDM_OK || *found) return st;
                if (tl < tcap)
                    tl += (size_t)snprintf(tried + tl, tcap - tl, "%s%s", tl ? ", " : "", name);
            }
        }
    }
    return TDM_OK;
}

tdm_status tdm_folder_weights(const char *dir, const char *sub, const char *variant, char *out,
                              size_t cap) {
    char tried[1024];
    int found;
    tdm_status st = find_weights(dir, sub, variant, out, cap, &found, tried, sizeof tried);
    if (st != TDM_OK || found) return st;
    char folder[TDM_PATH_MAX];
    tdm_path_join(folder, sizeof folder, dir, sub, NULL);
    char bin[TDM_PATH_MAX];
    tdm_path_join(bin, sizeof bin, dir, sub, "diffusion_pytorch_model.bin");
    int has_bin = tdm_file_exists(bin);
    tdm_path_join(bin, sizeof bin, dir, sub, "pytorch_model.bin");
    has_bin |= tdm_file_exists(bin);
    return tdm_errorf(TDM_ERR_MODEL, "%s: no weights found (tried %s)%s", folder, tried,
                      has_bin ? "; .bin (pickle) weights are not read, convert them to safetensors" : "");
}

tdm_status tdm_folder_weights_opt(const char *dir, const char *sub, const char *variant, char *out,
                                  size_t cap) {
    char tried[1024];
    int found;
    tdm_status st = find_weights(dir, sub, variant, out, cap, &found, tried, sizeof tried);
    if (st == TDM_OK && !found) out[0] = 0;
    return st;
}

int tdm_folder_variant_fallback(const char *dir, const char *sub, const char *variant, char *wanted,
                                size_t wcap, char *used, size_t ucap) {
    char path[TDM_PATH_MAX], tried[1024];
    int found = 0;
    if (!variant || !*variant) return 0;
    if (find_weights(dir, sub, variant, path, sizeof path, &found, tried, sizeof tried) != TDM_OK || !found)
        return 0;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strstr(base, ".safetensors") == NULL || strchr(base, '.') != strstr(base, ".safetensors"))
        return 0;   /* a variant file (stem.V.safetensors...) was found */
    const char *ext = strstr(base, ".safetensors");
    snprintf(wanted, wcap, "%.*s.%s%s", (int)(ext - base), base, variant, ext);
    snprintf(used, ucap, "%s", base);
    return 1;
}
