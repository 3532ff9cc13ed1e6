/* fuzz_cli_args.c — libFuzzer target for the `tandem` argument parse
 * (src/cli/args.c, compiled into this target: the CLI is not part of
 * libtandem). The first byte picks what the rest is:
 *   0-3: an argument list for generate / encode / decode / plan, split into
 *        argv on NUL bytes, parsed by cli_parse_flags and cli_check_prompts
 *        (--prompts-file is not opened: arbitrary paths would read this
 *        machine's files), each token also run through the flag suggester;
 *   4:   the contents of a --prompts-file (an in-memory file), read by
 *        cli_read_prompts_file and checked.
 * A parse may refuse with a message; it must never crash, overrun, leak,
 * hang or exit, and a refusal always has a message that fits its buffer. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cli.h"

#define MAX_ARGS 512

static void check_err(int rc, const char *err, size_t cap) {
    if (rc == 0 || rc == CLI_PARSE_HELP) return;
    if (rc != 1 && rc != 2) abort();                      /* exit codes are 1 or 2 */
    if (!err[0] || strnlen(err, cap) >= cap) abort();      /* a message, terminated */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *cmds[] = {"generate", "encode", "decode", "plan"};
    if (size < 1) return 0;
    const int which = data[0] % 5;
    const char *body = (const char *)data + 1;
    const size_t n = size - 1;
    char err[512];
    args_t a;
    if (which == 4) {
        int fd = memfd_create("prompts", MFD_CLOEXEC);
        if (fd < 0) return 0;
        if (n && write(fd, body, n) != (ssize_t)n) { close(fd); return 0; }
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        memset(&a, 0, sizeof a);
        a.prompts_file = path;
        int rc = cli_read_prompts_file(&a, err, sizeof err);
        check_err(rc, err, sizeof err);
        if (rc == 0) check_err(cli_check_prompts(&a, err, sizeof err), err, sizeof err);
        args_free(&a);
        close(fd);
        return 0;
    }
    /* argv: the body's NUL-separated tokens (a trailing token without NUL included) */
    char *buf = malloc(n + 1);
    char **argv = malloc(MAX_ARGS * sizeof *argv);
    if (!buf || !argv) { free(buf); free(argv); return 0; }
    memcpy(buf, body, n);
    buf[n] = 0;
    int argc = 0;
    for (size_t i = 0; i < n && argc < MAX_ARGS;) {
        argv[argc++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    for (int i = 0; i < argc; i++) {
        const char *s = cli_suggest_flag(which == 3 ? CLI_PLAN : which, argv[i]);
        if (s && strncmp(s, "-", 1) != 0) abort();   /* a suggestion is a flag */
    }
    int rc = cli_parse_flags(&a, cmds[which], argc, argv, err, sizeof err);
    check_err(rc, err, sizeof err);
    if (rc == 0) check_err(cli_check_prompts(&a, err, sizeof err), err, sizeof err);
    args_free(&a);
    free(argv);
    free(buf);
    return 0;
}
