/* test_cli.h — driving the `tandem` binary from a test: a scratch folder,
 * a command with its stderr captured, and the one-line error check. For
 * the test_cli*.c files; include after test.h and test_files.h. Call
 * cli_setup() first in main and cli_teardown() last. */
#ifndef TDM_TEST_CLI_H
#define TDM_TEST_CLI_H

#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

static const char *PIPE = TDM_FIXTURES "/pipelines/sd15-tiny";
static char tmpdir[256];
static char errtext[8192];

/* Runs `tandem <args>` (args already shell-quoted); returns the exit code
 * and leaves stderr in errtext. */
__attribute__((unused)) static int run(const char *fmt, ...) {
    char args[4096], cmd[8192], errf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(errf, sizeof errf, "%s/stderr.txt", tmpdir);
    snprintf(cmd, sizeof cmd, "\"%s\" %s", TDM_TANDEM_BIN, args);
    return sh_capture(cmd, errf, errtext, sizeof errtext);
}


/* A failure: nonzero exit, exactly one line starting "tandem: error: "
 * that contains `needle`. */
__attribute__((unused)) static void expect_error(int rc, const char *needle) {
    CHECK_MSG(rc != 0, "exit code 0, stderr: %s", errtext);
    CHECK_MSG(!strncmp(errtext, "tandem: error: ", 15), "stderr: %s", errtext);
    CHECK_MSG(strstr(errtext, needle) != NULL, "wanted \"%s\" in: %s", needle, errtext);
    int lines = 0;
    for (const char *p = errtext; *p; p++) lines += *p == '\n';
    CHECK_MSG(lines == 1, "%d lines: %s", lines, errtext);
}

/* Copies the tiny pipeline into tmpdir/name for corruption tests. */
__attribute__((unused)) static void copy_pipe(const char *name) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/%s' && cp -r '%s' '%s/%s'", tmpdir, name, PIPE, tmpdir, name);
    CHECK(system(cmd) == 0);
}

/* Makes the scratch folder tmpdir (0 on failure). */
static int cli_setup(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tdm_cli_XXXXXX");
    return mkdtemp(tmpdir) != NULL;
}

/* Removes the scratch folder (0 on failure). */
static int cli_teardown(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0;
}

#endif
