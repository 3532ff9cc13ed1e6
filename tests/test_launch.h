/* test_launch.h — what the tests of multi-rank runs share (test_launch.c,
 * test_launch_parallel.c, test_serve_launch.c). Include after test.h. */
#ifndef TDM_TEST_LAUNCH_H
#define TDM_TEST_LAUNCH_H

#include <stdio.h>
#include <stdlib.h>

/* 0 when this build and host can launch ranks (MPI built in, mpirun on
 * PATH), else test_skip's code. Under ASan, Open MPI's dlopened components
 * leak at exit in frames no suppression can name ("<unknown module>"):
 * leak checking stays on for the single-process tests (which never start
 * MPI), and is turned off here for the ranks. */
static inline int launch_test_setup(void) {
#ifndef TDM_HAVE_MPI
    return test_skip("built without MPI (libopenmpi-dev not found at configure time)");
#endif
    if (system("command -v mpirun > /dev/null 2>&1") != 0) return test_skip("mpirun not found on PATH");
    char asan[1024];
    snprintf(asan, sizeof asan, "%s%sdetect_leaks=0", getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "",
             getenv("ASAN_OPTIONS") ? ":" : "");
    setenv("ASAN_OPTIONS", asan, 1);
    return 0;
}

#endif
