/* test_files.h — file helpers shared by the tests that drive the `tandem`
 * binary (test_cli, test_launch): a shell command with its stderr captured,
 * existence with a formatted path, and PNG pixel equality. Include after
 * test.h. */
#ifndef TDM_TEST_FILES_H
#define TDM_TEST_FILES_H

#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "io/png.h"

/* Runs `cmd` through the shell, stdout discarded and stderr written to the
 * file errf and read back into err (cap bytes, NUL-terminated); returns the
 * exit code (128 when the command did not exit normally). */
static int sh_capture(const char *cmd, const char *errf, char *err, size_t cap) {
    char full[9000];
    snprintf(full, sizeof full, "(%s) > /dev/null 2> '%s'", cmd, errf);
    int rc = system(full);
    err[0] = 0;
    FILE *f = fopen(errf, "r");
    if (f) {
        size_t n = fread(err, 1, cap - 1, f);
        err[n] = 0;
        fclose(f);
    }
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

/* 1 if the path formatted from fmt exists. */
static int exists(const char *fmt, ...) {
    char p[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p, sizeof p, fmt, ap);
    va_end(ap);
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* 1 if both PNGs read and have the same size and RGB bytes. */
static int same_pixels(const char *a, const char *b) {
    uint8_t *x = NULL, *y = NULL;
    int wa, ha, wb, hb;
    int ok = tdm_png_read(a, &x, &wa, &ha) == TDM_OK && tdm_png_read(b, &y, &wb, &hb) == TDM_OK &&
             wa == wb && ha == hb && !memcmp(x, y, (size_t)wa * ha * 3);
    free(x);
    free(y);
    return ok;
}

#endif
