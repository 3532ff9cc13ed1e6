/* atomic.c — exclusive temporary files renamed into place, and fsync'd
 * appends; see atomic.h. */
#include "io/atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct tdm_atomic_file {
    FILE *f;
    char *path;
    char *tmp;
    char *dir;   /* the folder of path ("." when it has none) */
};

/* 64 unpredictable bits: getrandom, else a mix of clock, pid and a counter
 * (the name only has to be unique; O_EXCL makes a clash fail, not follow). */
static uint64_t random_bits(void) {
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r) return r;
    static uint64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    r = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 17) ^ ++counter;
    r ^= r >> 33;
    r *= 0xff51afd7ed558ccdULL;
    r ^= r >> 33;
    return r;
}

static tdm_status create_error(const char *path, const char *dir, int err) {
    return tdm_errorf(TDM_ERR_IO, "cannot write '%s': cannot create a file in folder '%s': %s", path, dir,
                      strerror(err));
}

tdm_status tdm_atomic_open(tdm_atomic_file_t **out, const char *path) {
    *out = NULL;
    if (!path || !*path) return tdm_errorf(TDM_ERR_INVALID_ARG, "empty output path");
    const size_t plen = strlen(path);
    if (path[plen - 1] == '/') return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: is a folder name, not a file", path);
    tdm_atomic_file_t *af = calloc(1, sizeof *af);
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const size_t dlen = slash ? (slash == path ? 1 : (size_t)(slash - path)) : 1;
    if (af) {
        af->path = strdup(path);
        af->dir = malloc(dlen + 1);
        af->tmp = malloc(plen + 32);
    }
    if (!af || !af->path || !af->dir || !af->tmp) {
        tdm_atomic_abort(af);
        return tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(af->dir, slash ? path : ".", dlen);
    af->dir[dlen] = 0;
    int fd = -1, err = EEXIST;
    for (int tries = 0; fd < 0 && err == EEXIST && tries < 100; tries++) {
        snprintf(af->tmp, plen + 32, "%.*s.%s.tmp-%012llx", (int)(base - path), path, base,
                 (unsigned long long)(random_bits() & 0xffffffffffffULL));
        fd = open(af->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd < 0) err = errno;
    }
    if (fd < 0) {
        tdm_status st = create_error(path, af->dir, err);
        free(af->tmp);
        af->tmp = NULL;   /* nothing of ours to remove */
        tdm_atomic_abort(af);
        return st;
    }
    af->f = fdopen(fd, "wb");
    if (!af->f) {
        int e = errno;
        close(fd);
        tdm_atomic_abort(af);
        return tdm_errorf(TDM_ERR_IO, "cannot write '%s': %s", path, strerror(e));
    }
    *out = af;
    return TDM_OK;
}

FILE *tdm_atomic_stream(tdm_atomic_file_t *af) { return af ? af->f : NULL; }

void tdm_atomic_abort(tdm_atomic_file_t *af) {
    if (!af) return;
    if (af->f) fclose(af->f);
    if (af->tmp) unlink(af->tmp);
    free(af->tmp);
    free(af->path);
    free(af->dir);
    free(af);
}

tdm_status tdm_atomic_commit(tdm_atomic_file_t *af) {
    if (!af) return TDM_OK;
    tdm_status st = TDM_OK;
    FILE *f = af->f;
    af->f = NULL;
    int ok = fflush(f) == 0 && !ferror(f);
    int err = errno;
    if (ok && fsync(fileno(f)) != 0) { ok = 0; err = errno; }
    if (fclose(f) != 0 && ok) { ok = 0; err = errno; }
    if (!ok) {
        st = tdm_errorf(TDM_ERR_IO, "%s: write failed: %s", af->path, strerror(err));
    } else if (rename(af->tmp, af->path) != 0) {
        st = tdm_errorf(TDM_ERR_IO, "cannot rename '%s' to '%s': %s", af->tmp, af->path, strerror(errno));
    } else {
        free(af->tmp);
        af->tmp = NULL;   /* renamed: nothing to remove */
        int dfd = open(af->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {   /* the rename itself survives a crash */
            (void)fsync(dfd);
            close(dfd);
        }
    }
    tdm_atomic_abort(af);
    return st;
}

tdm_status tdm_atomic_write(const char *path, const void *data, size_t len) {
    tdm_atomic_file_t *af;
    tdm_status st = tdm_atomic_open(&af, path);
    if (st != TDM_OK) return st;
    if (len && fwrite(data, 1, len, af->f) != len) {
        int e = errno;
        tdm_atomic_abort(af);
        return tdm_errorf(TDM_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    return tdm_atomic_commit(af);
}

tdm_status tdm_append_sync(const char *path, const void *data, size_t len) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0) return tdm_errorf(TDM_ERR_IO, "cannot append to '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return tdm_errorf(TDM_ERR_IO, "cannot append to '%s': not a regular file", path);
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            close(fd);
            return tdm_errorf(TDM_ERR_IO, "cannot append to '%s': %s", path, strerror(e));
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return tdm_errorf(TDM_ERR_IO, "cannot append to '%s': %s", path, strerror(e));
    }
    close(fd);
    return TDM_OK;
}
