// label: dist
/* test_flux_tp_mpi.c — FLUX tensor parallelism (tdm_flux_load_tp) over MPI
 * ranks. Started plainly (as ctest does), it writes the 4-head random model
 * of test_flux_tp.h and runs itself as
 *   mpirun --allow-run-as-root --oversubscribe -np N <self> --child <model> T
 * for N = 2 (TP 2) and N = 4 (TP 2 x Ulysses 2); in --child mode the world
 * is split as tandem's groups split it (TP innermost: rank = u·T + t) with
 * tdm_comm_split, each sub-communicator wrapped in dist's nn group
 * (dist/nn_group.h); every rank loads its shard on its own CPU device, runs
 * tdm_flux_forward of the whole model for the reference and the TP (x
 * Ulysses) forward: its output must be within max|a-b|/max|a| <= 1e-5 (the
 * measured error is printed) and its param_bytes exactly its share. A rank
 * with a failed check exits nonzero, which makes mpirun's status nonzero.
 * Skipped (exit 77) when the build has no MPI or mpirun is not on PATH. */
#include <stdlib.h>

#include "dist/nn_group.h"
#include "test_flux_tp.h"

#ifdef TDM_HAVE_MPI

#include "test_mpi.h"

static tdm_nn_group_t g_tp, g_ul;
static const char *g_root;
static int g_rank;

TEST(child_within_tolerance) {
    char cfg[1100];
    tdm_device_t dev, devr;
    tdm_flux_t *m = NULL, *ref = NULL;
    snprintf(cfg, sizeof cfg, "%s/transformer/config.json", g_root);
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    tdm_device_init(&devr, TDM_DEV_CPU, 1);
    if (tdm_flux_load(&ref, g_root, "transformer", NULL, &devr) != TDM_OK ||
        tdm_flux_load_tp(&m, g_root, "transformer", NULL, &dev, &g_tp) != TDM_OK) {
        CHECK_MSG(0, "rank %d: %s: %s", g_rank, g_root, tdm_last_error());
        goto done;
    }
    const int64_t want = ftp_param_bytes(cfg, g_tp.size, g_tp.rank);
    CHECK_MSG(tdm_flux_info(m)->param_bytes == want, "rank %d: param_bytes %lld, its share %lld",
              g_rank, (long long)tdm_flux_info(m)->param_bytes, (long long)want);
    for (int si = 0; si < FCP_NWIDE; si++) {
        fcp_io_t io;
        if (fcp_io_make(ref, &fcp_wide_shapes[si], (uint32_t)(31 * si + 7), &io)) {
            const int64_t nout = io.B * io.N * io.Cout;
            float *out = fcp_alloc(nout);
            const tdm_flux_cp_groups_t cg = { &g_ul, NULL };
            tdm_status st = out ? tdm_flux_forward_cp(m, &cg, io.img, io.B, io.N, io.txt, io.T,
                                                      io.pooled, io.t, io.g, io.iid, io.tid, out)
                                : TDM_ERR_NOMEM;
            CHECK_MSG(st == TDM_OK, "rank %d: %s", g_rank, tdm_last_error());
            if (st == TDM_OK) {
                const double e = ftp_rel_err(out, io.ref, nout);
                CHECK_MSG(e <= FTP_TOL, "rank %d (TP %d of %d, Ulysses %d of %d) B %lld T %lld "
                          "N %lld: relative error %.3g > %.0e", g_rank, g_tp.rank, g_tp.size,
                          g_ul.rank, g_ul.size, (long long)io.B, (long long)io.T,
                          (long long)io.N, e, FTP_TOL);
                printf("rank %d TP %d x Ulysses %d, B %lld T %lld N %lld: max|a-b|/max|a| = "
                       "%.3g\n", g_rank, g_tp.size, g_ul.size, (long long)io.B, (long long)io.T,
                       (long long)io.N, e);
            }
            free(out);
        }
        fcp_io_free(&io);
    }
done:
    tdm_flux_free(m);
    tdm_flux_free(ref);
}

static int child_main(const char *root, int T) {
    tdm_comm_t *c = NULL, *ctp = NULL, *cul = NULL;
    int rc = EXIT_FAILURE, ran = 0;
    g_root = root;
    if (tdm_comm_mpi_create(&c) != TDM_OK) goto out;
    g_rank = tdm_comm_rank(c);
    if (T < 1 || tdm_comm_size(c) % T != 0) {
        printf("child: %d ranks do not split into TP %d\n", tdm_comm_size(c), T);
        goto out;
    }
    /* rank = u·T + t: TP peers are neighbours, a Ulysses group shares t */
    if (tdm_comm_split(c, g_rank / T, g_rank, &ctp) != TDM_OK ||
        tdm_comm_split(c, g_rank % T, g_rank, &cul) != TDM_OK ||
        tdm_dist_nn_group_create(ctp, &g_tp) != TDM_OK ||
        tdm_dist_nn_group_create(cul, &g_ul) != TDM_OK)
        goto out;
    RUN(child_within_tolerance);
    printf("rank %d of %d: ", g_rank, tdm_comm_size(c));
    rc = test_summary();
    ran = 1;
out:
    if (!ran) printf("child: %s\n", tdm_last_error());
    tdm_dist_nn_group_free(&g_ul);
    tdm_dist_nn_group_free(&g_tp);
    tdm_comm_free(cul);
    tdm_comm_free(ctp);
    tdm_comm_free(c);
    return rc;
}

static char g_model[256];

TEST(mpirun_tp2_and_tp2_ulysses2) {
    const int np[2] = { 2, 4 };
    for (int i = 0; i < 2; i++) {
        char args[300];
        snprintf(args, sizeof args, "--child '%s' 2", g_model);
        int rc = tmpi_run(np[i], args, 300);
        CHECK_MSG(rc == 0, "mpirun -np %d (TP 2 x Ulysses %d): exit code %d", np[i], np[i] / 2, rc);
    }
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "--child") == 0) return child_main(argv[2], atoi(argv[3]));
    const int pre = tmpi_parent("test_flux_tp_mpi", argv[0]);
    if (pre >= 0) return pre;
    snprintf(g_model, sizeof g_model, "/tmp/tdm_test_flux_tp_mpi_%d", (int)getpid());
    if (fcp_make_model(g_model, FTP_WIDE4_CONFIG)) RUN(mpirun_tp2_and_tp2_ulysses2);
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
    (void)ftp_param_bytes;
    (void)ftp_rel_err;
    return test_skip("test_flux_tp_mpi: this build has no MPI (libopenmpi-dev not found at "
                     "configure time)");
}

#endif
