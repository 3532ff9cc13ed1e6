// label: dist
/* test_flux_cp_mpi.c — FLUX context parallelism (tdm_flux_forward_cp) over
 * MPI ranks. Started plainly (as ctest does), it writes the wide random
 * model of test_flux_cp.h and runs itself as
 *   mpirun --allow-run-as-root --oversubscribe -np U <self> --child <model>
 * for U = 2 and 3; in --child mode every rank wraps the MPI world in dist's
 * nn group (dist/nn_group.h), loads the model on its own CPU device, runs
 * tdm_flux_forward for the reference and tdm_flux_forward_cp on the group:
 * its gathered output must equal the reference byte for byte (3 heads over
 * 2 ranks: padding; text and image lengths 3 does not divide). A rank with
 * a failed check exits nonzero, which makes mpirun's status nonzero.
 * Skipped (exit 77) when the build has no MPI or mpirun is not on PATH. */
#include <stdlib.h>

#include "dist/nn_group.h"
#include "test_flux_cp.h"

#ifdef TDM_HAVE_MPI

#include "test_mpi.h"

static tdm_nn_group_t g_group;
static const char *g_root;

TEST(child_equal_one_device) {
    tdm_device_t dev;
    tdm_flux_t *m = NULL;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    if (tdm_flux_load(&m, g_root, "transformer", NULL, &dev) != TDM_OK) {
        CHECK_MSG(0, "%s: %s", g_root, tdm_last_error());
        return;
    }
    for (int si = 0; si < FCP_NWIDE; si++) {
        fcp_io_t io;
        if (fcp_io_make(m, &fcp_wide_shapes[si], (uint32_t)(31 * si + 7), &io)) {
            const int64_t nout = io.B * io.N * io.Cout;
            float *out = fcp_alloc(nout);
            tdm_status st = out ? tdm_flux_forward_cp(m, &g_group, io.img, io.B, io.N, io.txt,
                                                      io.T, io.pooled, io.t, io.g, io.iid,
                                                      io.tid, out)
                                : TDM_ERR_NOMEM;
            CHECK_MSG(st == TDM_OK, "rank %d: %s", g_group.rank, tdm_last_error());
            int64_t d = st == TDM_OK ? fcp_first_diff(out, io.ref, nout) : -1;
            CHECK_MSG(d < 0, "rank %d of %d, B %lld T %lld N %lld: out[%lld] = %.9g, one device "
                      "%.9g", g_group.rank, g_group.size, (long long)io.B, (long long)io.T,
                      (long long)io.N, (long long)d, d < 0 ? 0.0 : out[d],
                      d < 0 ? 0.0 : io.ref[d]);
            free(out);
        }
        fcp_io_free(&io);
    }
    tdm_flux_free(m);
}

static int child_main(const char *root) {
    tdm_comm_t *c = NULL;
    g_root = root;
    if (tdm_comm_mpi_create(&c) != TDM_OK || tdm_dist_nn_group_create(c, &g_group) != TDM_OK) {
        printf("child: %s\n", tdm_last_error());
        tdm_comm_free(c);
        return EXIT_FAILURE;
    }
    RUN(child_equal_one_device);
    printf("rank %d of %d: ", g_group.rank, g_group.size);
    int rc = test_summary();
    tdm_dist_nn_group_free(&g_group);
    tdm_comm_free(c);
    return rc;
}

static char g_model[256];

TEST(mpirun_2_3_ranks) {
    for (int np = 2; np <= 3; np++) {
        char args[300];
        snprintf(args, sizeof args, "--child '%s'", g_model);
        int rc = tmpi_run(np, args, 300);
        CHECK_MSG(rc == 0, "mpirun -np %d: exit code %d", np, rc);
    }
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "--child") == 0) return child_main(argv[2]);
    if (getenv("OMPI_COMM_WORLD_SIZE")) {
        printf("test_flux_cp_mpi: started by mpirun without --child; nothing to do\n");
        return EXIT_FAILURE;
    }
    if (system("command -v mpirun >/dev/null 2>&1") != 0)
        return test_skip("test_flux_cp_mpi: mpirun not found on PATH");
    if (tmpi_init(argv[0]) != 0) return test_skip("test_flux_cp_mpi: cannot quote the test's path for mpirun");
    snprintf(g_model, sizeof g_model, "/tmp/tdm_test_flux_cp_mpi_%d", (int)getpid());
    if (fcp_make_wide(g_model)) RUN(mpirun_2_3_ranks);
    fcp_remove_wide(g_model);
    return test_summary();
}

#else /* !TDM_HAVE_MPI */

int main(void) {
    (void)test_cur_failed;
    (void)test_summary;
    (void)fcp_make_wide;
    (void)fcp_remove_wide;
    (void)fcp_io_make;
    (void)fcp_first_diff;
    return test_skip("test_flux_cp_mpi: this build has no MPI (libopenmpi-dev not found at "
                     "configure time)");
}

#endif
