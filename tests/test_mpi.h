/* test_mpi.h — what the tests that start themselves under mpirun share:
 * finding their own path, the sanitizer settings their ranks need, and
 * running `mpirun -np N <self> args` under a time limit. */
#ifndef TDM_TEST_MPI_H
#define TDM_TEST_MPI_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpi_self[PATH_MAX];

/* Appends `opt` to the environment variable `var` (':'-separated options)
 * unless `key` is already in it. */
static void tmpi_add_env_option(const char *var, const char *key, const char *opt) {
    const char *old = getenv(var);
    char buf[PATH_MAX + 512];
    if (old && strstr(old, key)) return;
    snprintf(buf, sizeof buf, "%s%s%s", old && *old ? old : "", old && *old ? ":" : "", opt);
    setenv(var, buf, 1);
}

/* Fills tmpi_self with this executable's path and sets up the ranks'
 * sanitizer environment. In sanitizer builds their LeakSanitizer would
 * report what Open MPI keeps from MPI_Init; tests/lsan.supp names those
 * libraries, and full stacks (fast_unwind_on_malloc=0) are needed to see
 * their frames — added to whatever ASAN_OPTIONS/LSAN_OPTIONS the caller
 * (make test-asan) already set. No effect in other builds. Returns 0, or
 * -1 (with a line printed) when the path cannot be quoted for a shell. */
static int tmpi_init(const char *argv0) {
    ssize_t len = readlink("/proc/self/exe", tmpi_self, sizeof tmpi_self - 1);
    if (len <= 0) snprintf(tmpi_self, sizeof tmpi_self, "%s", argv0);
    else tmpi_self[len] = '\0';
    if (strchr(tmpi_self, '\'')) {
        printf("the test's path contains a quote: %s\n", tmpi_self);
        return -1;
    }
    tmpi_add_env_option("ASAN_OPTIONS", "fast_unwind_on_malloc", "fast_unwind_on_malloc=0");
    tmpi_add_env_option("LSAN_OPTIONS", "suppressions", "suppressions=" TDM_FIXTURES "/../lsan.supp");
    return 0;
}

/* The parent side's start, before its mpirun cases: a process started by
 * mpirun without --child is an error; no mpirun on PATH or a path that
 * cannot be quoted is a skip; else tmpi_init. Returns -1 to go on, or the
 * exit code for main. (Needs test.h's test_skip.) */
static int tmpi_parent(const char *name, const char *argv0) {
    char why[160];
    if (getenv("OMPI_COMM_WORLD_SIZE")) {
        printf("%s: started by mpirun without --child; nothing to do\n", name);
        return EXIT_FAILURE;
    }
    if (system("command -v mpirun >/dev/null 2>&1") != 0) {
        snprintf(why, sizeof why, "%s: mpirun not found on PATH", name);
        return test_skip(why);
    }
    if (tmpi_init(argv0) != 0) {
        snprintf(why, sizeof why, "%s: cannot quote the test's path for mpirun", name);
        return test_skip(why);
    }
    return -1;
}

/* Runs `mpirun ... -np np <self> args` under `timeout_s`: its exit code,
 * or -1 when it did not exit normally. */
static int tmpi_run(int np, const char *args, int timeout_s) {
    char cmd[PATH_MAX + 1024];
    snprintf(cmd, sizeof cmd, "timeout %d mpirun --allow-run-as-root --oversubscribe -np %d '%s' %s",
             timeout_s, np, tmpi_self, args);
    printf("  $ %s\n", cmd);
    fflush(stdout);
    int rc = system(cmd);
    fflush(stdout);
    if (rc == -1 || !WIFEXITED(rc)) return -1;
    return WEXITSTATUS(rc);
}

#endif
