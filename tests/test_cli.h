/* test_cli.h — driving the `tandem` binary from a test: a scratch folder,
 * a command with its stderr captured, and the one-line error check. For
 * the test_cli*.c files; include after test.h and test_files.h. Call
 * cli_setup() first in main and cli_teardown() last. */
#ifndef TDM_TEST_CLI_H
#define TDM_TEST_CLI_H

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

static const char *PIPE = TDM_FIXTURES "/pipelines/sd15-tiny";
static char tmpdir[256];
static char errtext[8192];

/* Runs `PREFIX tandem <args>` (args already shell-quoted; prefix "" or
 * e.g. "timeout 30"); returns the exit code and leaves stderr in errtext. */
static int run_v(const char *prefix, const char *fmt, va_list ap) {
    char args[4096], cmd[8192], errf[512];
    vsnprintf(args, sizeof args, fmt, ap);
    snprintf(errf, sizeof errf, "%s/stderr.txt", tmpdir);
    snprintf(cmd, sizeof cmd, "%s \"%s\" %s", prefix, TDM_TANDEM_BIN, args);
    return sh_capture(cmd, errf, errtext, sizeof errtext);
}

/* Runs `tandem <args>`. */
__attribute__((unused, format(printf, 1, 2))) static int run(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = run_v("", fmt, ap);
    va_end(ap);
    return rc;
}

/* Runs `timeout 30 tandem <args>`: a command that would hang ends with 124
 * and no error line, so the check fails instead of the suite stalling. */
__attribute__((unused, format(printf, 1, 2))) static int run_t(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = run_v("timeout 30", fmt, ap);
    va_end(ap);
    return rc;
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

/* Replaces `key` of tmpdir/name/sub/config.json with the JSON `value`. */
__attribute__((unused)) static void set_key(const char *name, const char *sub, const char *key, const char *value) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s/config.json", tmpdir, name, sub);
    char *text = test_slurp(path);
    cJSON *root = text ? cJSON_Parse(text) : NULL, *v = cJSON_Parse(value);
    free(text);
    CHECK_MSG(root && v, "%s / %s", path, value);
    if (!root || !v) { cJSON_Delete(root); cJSON_Delete(v); return; }
    cJSON_DeleteItemFromObjectCaseSensitive(root, key);
    cJSON_AddItemToObject(root, key, v);
    char *out = cJSON_Print(root);
    test_spill(path, out);
    free(out);
    cJSON_Delete(root);
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
