// label: dist
/* test_ring_mpi.c — ring attention and USP (nn/ring.h) over MPI ranks.
 * Started plainly (as ctest does), it runs itself as
 *   mpirun --allow-run-as-root --oversubscribe -np N <self> --child R U
 * for ring 2, 3 and 4 (N = R), USP 2 × 2 (N = 4) and DP 2 × ring 2 (N =
 * 4): in --child mode the world splits as dist/groups.h lays ranks out
 * (rank = (dp·R + r)·U + u) into a ring and a Ulysses communicator
 * (tdm_comm_split), each wrapped in dist's nn group (dist/nn_group.h), and
 * every case of test_ring.h must give each rank's rows within 1e-5
 * relative of the one-device attention (measured errors printed). A rank
 * with a failed check exits nonzero, which makes mpirun's status nonzero.
 * Skipped (exit 77) when the build has no MPI or mpirun is not on PATH. */
#include <stdlib.h>

#include "dist/nn_group.h"
#include "test_ring.h"

#ifdef TDM_HAVE_MPI

#include "test_mpi.h"

static tdm_nn_group_t g_ring, g_uly;

TEST(child_cases_within_1e5) {
    double worst = 0;
    for (int i = 0; i < RING_NCASES; i++) {
        double e = ring_check_case(i, &ring_cases[i], g_uly.size > 1 ? &g_uly : NULL, &g_ring);
        worst = e < 0 || e > worst ? (e < 0 ? 1.0 : e) : worst;
    }
    printf("  ring %d of %d, ulysses %d of %d: max rel err %.3g over %d cases\n", g_ring.rank,
           g_ring.size, g_uly.rank, g_uly.size, worst, RING_NCASES);
}

static int child_main(int R, int U) {
    tdm_comm_t *world = NULL, *ring = NULL, *uly = NULL;
    int rc = EXIT_FAILURE;
    if (tdm_comm_mpi_create(&world) != TDM_OK) goto fail;
    const int rank = tdm_comm_rank(world), size = tdm_comm_size(world);
    if (R < 1 || U < 1 || size % (R * U) != 0) {
        printf("child: %d ranks do not hold ring %d x ulysses %d\n", size, R, U);
        goto out;
    }
    const int dp = rank / (R * U), r = rank % (R * U) / U, u = rank % U;
    if (tdm_comm_split(world, dp * U + u, r, &ring) != TDM_OK ||
        tdm_comm_split(world, dp * R + r, u, &uly) != TDM_OK ||
        tdm_dist_nn_group_create(ring, &g_ring) != TDM_OK ||
        tdm_dist_nn_group_create(uly, &g_uly) != TDM_OK)
        goto fail;
    RUN(child_cases_within_1e5);
    printf("dp %d, ring %d of %d, ulysses %d of %d: ", dp, r, R, u, U);
    rc = test_summary();
    goto out;
fail:
    printf("child: %s\n", tdm_last_error());
out:
    tdm_dist_nn_group_free(&g_ring);
    tdm_dist_nn_group_free(&g_uly);
    tdm_comm_free(uly);
    tdm_comm_free(ring);
    tdm_comm_free(world);
    return rc;
}

TEST(mpirun_ring_2_3_4_usp_2x2_dp_2) {
    static const struct { int np; const char *args; } runs[] = {
        { 2, "--child 2 1" }, { 3, "--child 3 1" }, { 4, "--child 4 1" },
        { 4, "--child 2 2" },   /* USP: ulysses 2 inside ring 2 */
        { 4, "--child 2 1" },   /* DP 2 over ring 2 */
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        int rc = tmpi_run(runs[i].np, runs[i].args, 300);
        CHECK_MSG(rc == 0, "mpirun -np %d %s: exit code %d", runs[i].np, runs[i].args, rc);
    }
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "--child") == 0) return child_main(atoi(argv[2]), atoi(argv[3]));
    if (getenv("OMPI_COMM_WORLD_SIZE")) {
        printf("test_ring_mpi: started by mpirun without --child; nothing to do\n");
        return EXIT_FAILURE;
    }
    if (system("command -v mpirun >/dev/null 2>&1") != 0)
        return test_skip("test_ring_mpi: mpirun not found on PATH");
    if (tmpi_init(argv[0]) != 0) return test_skip("test_ring_mpi: cannot quote the test's path for mpirun");
    RUN(mpirun_ring_2_3_4_usp_2x2_dp_2);
    return test_summary();
}

#else /* !TDM_HAVE_MPI */

int main(void) {
    (void)test_cur_failed;
    (void)test_summary;
    (void)ring_check_case;
    return test_skip("test_ring_mpi: this build has no MPI (libopenmpi-dev not found at "
                     "configure time)");
}

#endif
