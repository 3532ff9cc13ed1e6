// label: dist
/* test_vae_cp_mpi.c — the parallel VAE decode (tdm_vae_decode_cp) over MPI
 * ranks. Started plainly (as ctest does), it runs itself as
 *   mpirun --allow-run-as-root --oversubscribe -np U <self> --child
 * for U = 2 and 3; in --child mode every rank wraps the MPI world in dist's
 * nn group (dist/nn_group.h), loads each tiny VAE fixture of test_vae_cp.h
 * on its own CPU device, runs tdm_vae_decode for the reference and
 * tdm_vae_decode_cp on the group: its gathered image must be within VCP_TOL
 * of the reference (latent heights that 2 or 3 do not divide; the error is
 * printed) and its device peak below the one-device peak. A rank with a
 * failed check exits nonzero, which makes mpirun's status nonzero. Skipped
 * (exit 77) when the build has no MPI or mpirun is not on PATH. */
#include <stdlib.h>

#include "dist/nn_group.h"
#include "test_vae_cp.h"

#ifdef TDM_HAVE_MPI

#include "test_mpi.h"

static tdm_nn_group_t g_group;

/* One case on this rank: the image against the one-device decode, the
 * device peak against the one-device peak. */
static void child_case(const vcp_case_t *c) {
    char root[512];
    tdm_device_t dev;
    tdm_vae_t *v = NULL;
    vcp_io_t io;
    memset(&io, 0, sizeof io);
    snprintf(root, sizeof root, VCP_FIX "/%s", c->fixture);
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    if (tdm_vae_load_decoder(&v, root, "vae", NULL, &dev, NULL) != TDM_OK) {
        CHECK_MSG(0, "%s: %s", root, tdm_last_error());
        return;
    }
    if (vcp_io_make(v, &dev, c, (uint32_t)(c->h * 17 + c->w), &io)) {
        float *img = vcp_alloc(io.nimg);
        const int64_t before = dev.cur_bytes;
        dev.peak_bytes = dev.cur_bytes;
        tdm_status st = img ? tdm_vae_decode_cp(v, &g_group, io.z, io.B, io.h, io.w, img)
                            : TDM_ERR_NOMEM;
        CHECK_MSG(st == TDM_OK, "rank %d: %s", g_group.rank, tdm_last_error());
        if (st == TDM_OK) {
            const double e = vcp_err(&io, img);
            const int64_t used = dev.peak_bytes - before;
            printf("  rank %d of %d: %s (%lld,%lld,%lld,%lld): rel err %.3g, peak %lld bytes "
                   "(one device %lld)\n", g_group.rank, g_group.size, c->fixture, (long long)io.B,
                   (long long)io.L, (long long)io.h, (long long)io.w, e, (long long)used,
                   (long long)io.peak);
            CHECK_MSG(e <= VCP_TOL, "rank %d of %d, %s h %lld w %lld: rel err %.3g",
                      g_group.rank, g_group.size, c->fixture, (long long)c->h, (long long)c->w, e);
            CHECK_MSG(used < io.peak, "rank %d of %d, %s: peak %lld, one device %lld",
                      g_group.rank, g_group.size, c->fixture, (long long)used,
                      (long long)io.peak);
        }
        free(img);
    }
    vcp_io_free(&io);
    tdm_vae_free(v);
}

TEST(child_within_float_tolerance) {
    for (int k = 0; k < VCP_NCASES; k++) child_case(&vcp_cases[k]);
}

static int child_main(void) {
    tdm_comm_t *c = NULL;
    if (tdm_comm_mpi_create(&c) != TDM_OK || tdm_dist_nn_group_create(c, &g_group) != TDM_OK) {
        printf("child: %s\n", tdm_last_error());
        tdm_comm_free(c);
        return EXIT_FAILURE;
    }
    RUN(child_within_float_tolerance);
    printf("rank %d of %d: ", g_group.rank, g_group.size);
    int rc = test_summary();
    tdm_dist_nn_group_free(&g_group);
    tdm_comm_free(c);
    return rc;
}

TEST(mpirun_2_3_ranks) {
    for (int np = 2; np <= 3; np++) {
        int rc = tmpi_run(np, "--child", 300);
        CHECK_MSG(rc == 0, "mpirun -np %d: exit code %d", np, rc);
    }
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "--child") == 0) return child_main();
    const int pre = tmpi_parent("test_vae_cp_mpi", argv[0]);
    if (pre >= 0) return pre;
    RUN(mpirun_2_3_ranks);
    return test_summary();
}

#else /* !TDM_HAVE_MPI */

int main(void) {
    (void)test_cur_failed;
    (void)test_summary;
    (void)vcp_io_make;
    (void)vcp_io_free;
    (void)vcp_err;
    return test_skip("test_vae_cp_mpi: this build has no MPI (libopenmpi-dev not found at "
                     "configure time)");
}

#endif
