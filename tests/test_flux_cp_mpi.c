// label: dist
/* test_flux_cp_mpi.c — FLUX context parallelism (tdm_flux_forward_cp) over
 * MPI ranks. Started plainly (as ctest does), it writes the wide random
 * model of test_flux_cp.h and runs itself as
 *   mpirun --allow-run-as-root --oversubscribe -np N <self> --child <model> R U
 * for Ulysses 2 and 3 (R = 1), ring 2 and 3 (U = 1) and USP 2 × 2; in
 * --child mode the world splits as dist/groups.h lays ranks out (rank = r·U
 * + u) into a ring and a Ulysses communicator (tdm_comm_split), each
 * wrapped in dist's nn group (dist/nn_group.h); every rank loads the model
 * on its own CPU device, runs tdm_flux_forward for the reference and
 * tdm_flux_forward_cp on the groups: its gathered output must equal the
 * reference byte for byte under Ulysses (3 heads over 2 ranks: padding;
 * text and image lengths 3 does not divide) and within 1e-5 relative with
 * a ring (measured errors printed). A rank with a failed check exits
 * nonzero, which makes mpirun's status nonzero.
 * Skipped (exit 77) when the build has no MPI or mpirun is not on PATH. */
#include <stdlib.h>

#include "dist/nn_group.h"
#include "test_flux_cp.h"

#ifdef TDM_HAVE_MPI

#include "test_mpi.h"

static tdm_nn_group_t g_uly, g_ring;
static tdm_flux_cp_groups_t g_groups;
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
            tdm_status st = out ? tdm_flux_forward_cp(m, &g_groups, io.img, io.B, io.N, io.txt,
                                                      io.T, io.pooled, io.t, io.g, io.iid,
                                                      io.tid, out)
                                : TDM_ERR_NOMEM;
            CHECK_MSG(st == TDM_OK, "ring rank %d, ulysses rank %d: %s", g_ring.rank, g_uly.rank,
                      tdm_last_error());
            if (st == TDM_OK && g_ring.size > 1) {
                const double e = test_rel_err(out, io.ref, (long)nout);
                printf("  ring %d of %d, ulysses %d of %d, B %lld T %lld N %lld: rel err %.3g\n",
                       g_ring.rank, g_ring.size, g_uly.rank, g_uly.size, (long long)io.B,
                       (long long)io.T, (long long)io.N, e);
                CHECK_MSG(e <= 1e-5, "rel err %.3g", e);
            } else if (st == TDM_OK) {
                int64_t d = fcp_first_diff(out, io.ref, nout);
                CHECK_MSG(d < 0, "rank %d of %d, B %lld T %lld N %lld: out[%lld] = %.9g, one "
                          "device %.9g", g_uly.rank, g_uly.size, (long long)io.B,
                          (long long)io.T, (long long)io.N, (long long)d, d < 0 ? 0.0 : out[d],
                          d < 0 ? 0.0 : io.ref[d]);
            }
            free(out);
        }
        fcp_io_free(&io);
    }
    tdm_flux_free(m);
}

static int child_main(const char *root, int R, int U) {
    tdm_comm_t *world = NULL, *ring = NULL, *uly = NULL;
    int rc = EXIT_FAILURE;
    g_root = root;
    if (tdm_comm_mpi_create(&world) != TDM_OK) goto fail;
    const int rank = tdm_comm_rank(world);
    if (R < 1 || U < 1 || tdm_comm_size(world) != R * U) {
        printf("child: %d ranks are not ring %d x ulysses %d\n", tdm_comm_size(world), R, U);
        goto out;
    }
    if (tdm_comm_split(world, rank % U, rank / U, &ring) != TDM_OK ||
        tdm_comm_split(world, rank / U, rank % U, &uly) != TDM_OK ||
        tdm_dist_nn_group_create(ring, &g_ring) != TDM_OK ||
        tdm_dist_nn_group_create(uly, &g_uly) != TDM_OK)
        goto fail;
    g_groups.ulysses = &g_uly, g_groups.ring = &g_ring;
    RUN(child_equal_one_device);
    printf("ring %d of %d, ulysses %d of %d: ", g_ring.rank, R, g_uly.rank, U);
    rc = test_summary();
    goto out;
fail:
    printf("child: %s\n", tdm_last_error());
out:
    tdm_dist_nn_group_free(&g_uly);
    tdm_dist_nn_group_free(&g_ring);
    tdm_comm_free(uly);
    tdm_comm_free(ring);
    tdm_comm_free(world);
    return rc;
}

static char g_model[256];

TEST(mpirun_ulysses_2_3_ring_2_3_usp_2x2) {
    static const int grids[][2] = { { 1, 2 }, { 1, 3 }, { 2, 1 }, { 3, 1 }, { 2, 2 } };
    for (size_t i = 0; i < sizeof grids / sizeof grids[0]; i++) {
        const int R = grids[i][0], U = grids[i][1];
        char args[300];
        snprintf(args, sizeof args, "--child '%s' %d %d", g_model, R, U);
        int rc = tmpi_run(R * U, args, 300);
        CHECK_MSG(rc == 0, "mpirun -np %d (ring %d x ulysses %d): exit code %d", R * U, R, U, rc);
    }
}

int main(int argc, char **argv) {
    if (argc >= 5 && strcmp(argv[1], "--child") == 0)
        return child_main(argv[2], atoi(argv[3]), atoi(argv[4]));
    const int pre = tmpi_parent("test_flux_cp_mpi", argv[0]);
    if (pre >= 0) return pre;
    snprintf(g_model, sizeof g_model, "/tmp/tdm_test_flux_cp_mpi_%d", (int)getpid());
    if (fcp_make_wide(g_model)) RUN(mpirun_ulysses_2_3_ring_2_3_usp_2x2);
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
