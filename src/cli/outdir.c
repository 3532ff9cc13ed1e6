/* outdir.c — the --out folder of `tandem generate`: its lock, the check for
 * outputs of an earlier job (--overwrite, --resume), file names (images,
 * latents, the hidden folder of denoised latents), the per-rank manifest
 * part files (one fsync'd line appended per image) and their single merge
 * into manifest.jsonl. Not the writers themselves (the library's atomic
 * writers) nor the generation loop (generate.c). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

char *str_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!s) die(1, "out of memory");
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* 1 if `name` is an image or latents file of a job: NNNNNN.png or
 * NNNNNN.safetensors (six or more digits). */
static int is_output_name(const char *name) {
    size_t d = 0;
    while (name[d] >= '0' && name[d] <= '9') d++;
    return d >= 6 && (!strcmp(name + d, ".png") || !strcmp(name + d, ".safetensors"));
}

/* 1 if `name` is a manifest part file: manifest.rank<R>.jsonl. */
static int is_part_name(const char *name) {
    size_t d = 13;
    if (strncmp(name, "manifest.rank", 13) != 0) return 0;
    while (name[d] >= '0' && name[d] <= '9') d++;
    return d > 13 && !strcmp(name + d, ".jsonl");
}

/* 1 if `name` is the temporary file of an output or manifest that a killed
 * run left behind: ".<name>.tmp-<12 hex digits>" (io/atomic's names). */
static int is_temp_name(const char *name) {
    const char *t = name[0] == '.' ? strstr(name, ".tmp-") : NULL;
    if (!t || strlen(t) != 17 || strspn(t + 5, "0123456789abcdef") != 12) return 0;
    char base[256];
    size_t n = (size_t)(t - name) - 1;
    if (n == 0 || n >= sizeof base) return 0;
    memcpy(base, name + 1, n);
    base[n] = 0;
    return !strcmp(base, "manifest.jsonl") || is_output_name(base);
}

/* Removes the temporary files killed runs left in `dir`. */
static void remove_temps(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (is_temp_name(e->d_name)) {
            char *p = str_printf("%s/%s", dir, e->d_name);
            unlink(p);
            free(p);
        }
    if (d) closedir(d);
}

/* The first name (in byte order) of a file of an earlier job in `dir`
 * (malloc'd), or NULL. */
static char *first_output(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) die(1, "--out %s: cannot list: %s", dir, strerror(errno));
    char *found = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *name = NULL;
        if (!strcmp(e->d_name, "manifest.jsonl") || is_part_name(e->d_name) || is_output_name(e->d_name)) {
            name = str_printf("%s", e->d_name);
        } else if (!strcmp(e->d_name, OUT_LATENTS_DIR)) {
            char *sub = str_printf("%s/%s", dir, OUT_LATENTS_DIR);
            DIR *ld = opendir(sub);
            struct dirent *le;
            while (ld && !name && (le = readdir(ld)))
                if (is_output_name(le->d_name)) name = str_printf("%s/%s", OUT_LATENTS_DIR, le->d_name);
            if (ld) closedir(ld);
            free(sub);
        }
        if (name && (!found || strcmp(name, found) < 0)) {
            free(found);
            found = name;
        } else {
            free(name);
        }
    }
    closedir(d);
    return found;
}

/* Removes the files of earlier jobs from `dir` (--overwrite): images,
 * latents, manifests and the hidden latents folder. Other files stay. */
static void remove_outputs(const char *dir) {
    char *sub = str_printf("%s/%s", dir, OUT_LATENTS_DIR);
    remove_temps(sub);
    remove_temps(dir);
    DIR *d = opendir(sub);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (is_output_name(e->d_name)) {
            char *p = str_printf("%s/%s", sub, e->d_name);
            if (unlink(p) != 0 && errno != ENOENT) die(1, "--overwrite: cannot remove %s: %s", p, strerror(errno));
            free(p);
        }
    if (d) closedir(d);
    rmdir(sub);
    free(sub);
    d = opendir(dir);
    if (!d) die(1, "--out %s: cannot list: %s", dir, strerror(errno));
    while ((e = readdir(d)))
        if (!strcmp(e->d_name, "manifest.jsonl") || is_part_name(e->d_name) || is_output_name(e->d_name)) {
            char *p = str_printf("%s/%s", dir, e->d_name);
            if (unlink(p) != 0 && errno != ENOENT) die(1, "--overwrite: cannot remove %s: %s", p, strerror(errno));
            free(p);
        }
    closedir(d);
}

/* A folder this run created holds only our lock file after a failure before
 * any output: remove both (a failed run leaves no trace). */
static char *g_created_lock;

static void remove_created_lock(void) {
    if (!g_created_lock) return;
    char *dir = str_printf("%s", g_created_lock);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    DIR *d = opendir(dir);
    int others = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        others += strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, OUT_LOCK_NAME) &&
                  strcmp(e->d_name, OUT_LATENTS_DIR);
    if (d) closedir(d);
    if (!others) {   /* the folder itself goes in prepare_out_dir's handler */
        char *sub = str_printf("%s/%s", dir, OUT_LATENTS_DIR);
        rmdir(sub);
        free(sub);
        unlink(g_created_lock);
    }
    free(dir);
}

void outdir_open(outdir_t *o, const args_t *a, tdm_dist_t *dist) {
    memset(o, 0, sizeof *o);
    o->dir = a->out;
    o->lock_fd = -1;
    o->rank = tdm_dist_rank(dist);
    o->latents_dir = str_printf("%s/%s", a->out, OUT_LATENTS_DIR);
    o->part = str_printf("%s/manifest.rank%d.jsonl", a->out, o->rank);
    if (a->overwrite && a->resume) die(2, "--overwrite and --resume: give one of them");
    if (o->rank == 0) {
        struct stat sb;
        const int existed = stat(a->out, &sb) == 0;
        prepare_out_dir(a->out);
        /* one job per folder: rank 0 holds the lock until it exits; the
         * other ranks start writing only after the barrier below */
        char *lock = str_printf("%s/%s", a->out, OUT_LOCK_NAME);
        o->lock_fd = open(lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (o->lock_fd < 0) die(1, "--out %s: cannot open the lock file %s: %s", a->out, lock, strerror(errno));
        if (!existed) {
            g_created_lock = lock;
            atexit(remove_created_lock);
        }
        if (flock(o->lock_fd, LOCK_EX | LOCK_NB) != 0) {
            if (errno == EWOULDBLOCK)
                die(1, "--out %s: another tandem job is writing to this folder (it holds %s); wait for it or "
                    "choose another --out", a->out, lock);
            die(1, "--out %s: cannot lock %s: %s", a->out, lock, strerror(errno));
        }
        if (existed) free(lock);
        if (a->overwrite) {
            remove_outputs(a->out);
        } else if (!a->resume) {
            char *f = first_output(a->out);
            if (f)
                die(1, "--out %s: %s/%s exists from an earlier job; give --overwrite to replace that job's "
                    "outputs or --resume to keep them and make the missing ones", a->out, a->out, f);
        }
        if (mkdir(o->latents_dir, 0777) != 0 && errno != EEXIST)
            die(1, "--out %s: cannot create %s: %s", a->out, o->latents_dir, strerror(errno));
    }
    if (tdm_dist_barrier(dist) != TDM_OK) die_status();
    /* a part file of a killed run may end inside a line: start a new one */
    int fd = open(o->part, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    char last = '\n';
    if (fd >= 0) {
        off_t end = lseek(fd, 0, SEEK_END);
        if (end > 0 && pread(fd, &last, 1, end - 1) != 1) last = '\n';
        close(fd);
    }
    if (last != '\n' && tdm_file_append_sync(o->part, "\n", 1) != TDM_OK) die_status();
}

void outdir_close(outdir_t *o) {
    if (o->lock_fd >= 0) close(o->lock_fd);
    free(o->latents_dir);
    free(o->part);
    memset(o, 0, sizeof *o);
    o->lock_fd = -1;
}

char *outdir_file(const outdir_t *o, int64_t index, int latent) {
    return str_printf("%06lld.%s", (long long)index, latent ? "safetensors" : "png");
}

char *outdir_path(const outdir_t *o, int64_t index, int latent) {
    return str_printf("%s/%06lld.%s", o->dir, (long long)index, latent ? "safetensors" : "png");
}

char *outdir_latent_path(const outdir_t *o, int64_t index) {
    return str_printf("%s/%06lld.safetensors", o->latents_dir, (long long)index);
}

void outdir_append(const outdir_t *o, const char *line) {
    size_t n = strlen(line);
    char *rec = malloc(n + 2);
    if (!rec) die(1, "out of memory");
    memcpy(rec, line, n);
    rec[n] = '\n';
    rec[n + 1] = 0;
    if (tdm_file_append_sync(o->part, rec, n + 1) != TDM_OK) die_status();
    free(rec);
}

/* The index of a manifest line, or -1 when it is not a line of this job
 * (not JSON, no integral index in [0, n)). */
static int64_t line_index(const char *line, int64_t n) {
    cJSON *obj = cJSON_Parse(line);
    const cJSON *ix = obj ? cJSON_GetObjectItem(obj, "index") : NULL;
    int64_t i = -1;
    if (cJSON_IsNumber(ix) && ix->valuedouble >= 0 && ix->valuedouble < (double)n &&
        ix->valuedouble == (double)(int64_t)ix->valuedouble)
        i = (int64_t)ix->valuedouble;
    cJSON_Delete(obj);
    return i;
}

/* Adds every line of the manifest file `path` whose index is in [0, n) to
 * by_index (index → line, owned; a later line replaces an earlier one). */
static void read_lines(const char *path, char **by_index, int64_t n) {
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (!f) {
        if (fd >= 0) close(fd);
        return;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        int64_t i = line_index(line, n);
        if (i < 0) continue;
        free(by_index[i]);
        by_index[i] = str_printf("%s", line);
    }
    free(line);
    fclose(f);
}

/* The lines of manifest.jsonl and of every part file in the folder. */
static char **read_all_lines(const outdir_t *o, int64_t n) {
    char **by_index = calloc((size_t)n + 1, sizeof *by_index);
    if (!by_index) die(1, "out of memory");
    char *path = str_printf("%s/manifest.jsonl", o->dir);
    read_lines(path, by_index, n);
    free(path);
    DIR *d = opendir(o->dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (is_part_name(e->d_name)) {
            path = str_printf("%s/%s", o->dir, e->d_name);
            read_lines(path, by_index, n);
            free(path);
        }
    if (d) closedir(d);
    return by_index;
}

uint8_t *outdir_recorded(const outdir_t *o, int64_t n) {
    char **by_index = read_all_lines(o, n);
    uint8_t *rec = calloc((size_t)n + 1, 1);
    if (!rec) die(1, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        rec[i] = by_index[i] != NULL;
        free(by_index[i]);
    }
    free(by_index);
    return rec;
}

void outdir_merge(const outdir_t *o, int64_t n, int latent, char *const *lines, int nlines) {
    char **by_index = read_all_lines(o, n);
    for (int j = 0; j < nlines; j++) {   /* this run's lines, as gathered from the ranks */
        int64_t i = line_index(lines[j], n);
        if (i < 0) continue;
        free(by_index[i]);
        by_index[i] = str_printf("%s", lines[j]);
    }
    size_t len = 0;
    for (int64_t i = 0; i < n; i++) {   /* a line only for an output that is there */
        if (!by_index[i]) continue;
        char *p = outdir_path(o, i, latent);
        if (!file_exists(p)) {
            free(by_index[i]);
            by_index[i] = NULL;
        } else {
            len += strlen(by_index[i]) + 1;
        }
        free(p);
    }
    char *buf = malloc(len + 1), *w = buf;
    if (!buf) die(1, "out of memory");
    for (int64_t i = 0; i < n; i++)
        if (by_index[i]) {
            size_t k = strlen(by_index[i]);
            memcpy(w, by_index[i], k);
            w[k] = '\n';
            w += k + 1;
            free(by_index[i]);
        }
    free(by_index);
    char *path = str_printf("%s/manifest.jsonl", o->dir);
    if (tdm_file_write_atomic(path, buf, len) != TDM_OK) die_status();
    free(path);
    free(buf);
    DIR *d = opendir(o->dir);   /* the part files are merged now */
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (is_part_name(e->d_name)) {
            path = str_printf("%s/%s", o->dir, e->d_name);
            unlink(path);
            free(path);
        }
    if (d) closedir(d);
    remove_temps(o->dir);   /* of killed runs: every rank of this one is done */
    remove_temps(o->latents_dir);
    rmdir(o->latents_dir);   /* when empty: every denoised latent was decoded */
}
