// label: dist
/* test_ulysses_mpi.c — Ulysses attention (nn/ulysses.h) over MPI ranks.
 * Started plainly (as ctest does), it runs itself as
 *   mpirun --allow-run-as-root --oversubscribe -np U <self> --child
 * for U = 2, 3, 4 and 5; in --child mode every rank wraps the MPI world in
 * dist's nn group (dist/nn_group.h) and runs every case of
 * test_ulysses.h: its rows of the output must equal the one-device
 * attention's rows bit for bit (heads divisible by U and not — 3 heads over
 * 2 and 4 ranks, 24 over 5 —, sequences divisible and not, [text; image]
 * segments, ranks without rows, one causal case). A rank with a failed
 * check exits nonzero, which makes mpirun's status nonzero. Skipped (exit
 * 77) when the build has no MPI or mpirun is not on PATH. */
#include <limits.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dist/nn_group.h"
#include "test_ulysses.h"

#ifdef TDM_HAVE_MPI

static tdm_nn_group_t g_group;

TEST(child_cases_equal_one_device) {
    for (int i = 0; i < ULY_NCASES; i++) uly_check_case(i, &uly_cases[i], &g_group);
}

static int child_main(void) {
    tdm_comm_t *c = NULL;
    if (tdm_comm_mpi_create(&c) != TDM_OK || tdm_dist_nn_group_create(c, &g_group) != TDM_OK) {
        printf("child: %s\n", tdm_last_error());
        tdm_comm_free(c);
        return EXIT_FAILURE;
    }
    RUN(child_cases_equal_one_device);
    printf("rank %d of %d: ", g_group.rank, g_group.size);
    int rc = test_summary();
    tdm_dist_nn_group_free(&g_group);
    tdm_comm_free(c);
    return rc;
}

static char g_self[PATH_MAX];

/* `mpirun ... -np np <self> --child` under a time limit: its exit code, or
 * -1 when it did not exit normally. */
static int run_mpi(int np) {
    char cmd[PATH_MAX + 256];
    snprintf(cmd, sizeof cmd,
             "timeout 300 mpirun --allow-run-as-root --oversubscribe -np %d '%s' --child", np,
             g_self);
    printf("  $ %s\n", cmd);
    fflush(stdout);
    int rc = system(cmd);
    fflush(stdout);
    if (rc == -1 || !WIFEXITED(rc)) return -1;
    return WEXITSTATUS(rc);
}

TEST(mpirun_2_3_4_5_ranks) {
    for (int np = 2; np <= 5; np++) {
        int rc = run_mpi(np);
        CHECK_MSG(rc == 0, "mpirun -np %d: exit code %d", np, rc);
    }
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "--child") == 0) return child_main();
    if (getenv("OMPI_COMM_WORLD_SIZE")) {
        printf("test_ulysses_mpi: started by mpirun without --child; nothing to do\n");
        return EXIT_FAILURE;
    }
    if (system("command -v mpirun >/dev/null 2>&1") != 0)
        return test_skip("test_ulysses_mpi: mpirun not found on PATH");
    ssize_t len = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (len <= 0) snprintf(g_self, sizeof g_self, "%s", argv[0]);
    else g_self[len] = '\0';
    if (strchr(g_self, '\''))
        return test_skip("test_ulysses_mpi: cannot quote the test's path for mpirun");
    /* sanitizer builds: the suppressions test_dist_mpi.c sets, for Open MPI's leaks */
    if (!getenv("LSAN_OPTIONS")) setenv("LSAN_OPTIONS", "suppressions=" TDM_FIXTURES "/../lsan.supp", 1);
    if (!getenv("ASAN_OPTIONS")) setenv("ASAN_OPTIONS", "fast_unwind_on_malloc=0", 1);
    RUN(mpirun_2_3_4_5_ranks);
    return test_summary();
}

#else /* !TDM_HAVE_MPI */

int main(void) {
    (void)test_cur_failed;
    (void)test_summary;
    (void)uly_check_case;
    return test_skip("test_ulysses_mpi: this build has no MPI (libopenmpi-dev not found at "
                     "configure time)");
}

#endif
