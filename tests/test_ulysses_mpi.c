// label: dist
/* test_ulysses_mpi.c — Ulysses attention (nn/ulysses.h) over MPI ranks.
 * Started plainly (as ctest does), it runs itself as
 *   mpirun --allow-run-as-root --oversubscribe -np U <self> --child
 * for U = 2, 3, 4 and 5; in --child mode every rank wraps the MPI world in
 * dist's nn group (dist/nn_group.h) and runs every case of
 * test_ulysses.h: its rows of the output must equal the one-device
 * attention's rows bit for bit (heads divisible by U and not — 3 heads over
 * 2 and 4 ranks, 24 over 5 —, sequences divisible and not, [text; image]
 * segments, ranks without rows, one causal case). Where a CUDA device is
 * present, 2 and 3 ranks share it (--child-cuda f32 | bf16: buffers staged
 * through host memory) and must match one attention call on that device
 * bit for bit. A rank with a failed
 * check exits nonzero, which makes mpirun's status nonzero. Skipped (exit
 * 77) when the build has no MPI or mpirun is not on PATH. */
#include <stdlib.h>

#include "backend/ops.h"
#include "dist/nn_group.h"
#include "test_ulysses.h"

#ifdef TDM_HAVE_MPI

#include "test_mpi.h"

static tdm_nn_group_t g_group;

TEST(child_cases_equal_one_device) {
    for (int i = 0; i < ULY_NCASES; i++) uly_check_case(i, &uly_cases[i], &g_group);
}

/* The group's sum and point-to-point calls (used by ring attention and the
 * parallel VAE) on host buffers: a ring shift, a halo chain (the end ranks
 * only send or only receive), an in-place sum. */
TEST(child_sum_and_sendrecv) {
    const int r = g_group.rank, U = g_group.size;
    tdm_device_t host;
    tdm_device_init(&host, TDM_DEV_CPU, 0);
    float send[3] = { (float)r, 10.0f * r, 0.5f }, recv[3] = { -1, -1, -1 };
    CHECK(tdm_nn_group_sendrecv(&g_group, &host, send, (r + 1) % U, recv, (r + U - 1) % U, 3, TDM_F32) == TDM_OK);
    CHECK_MSG(recv[0] == (float)((r + U - 1) % U) && recv[1] == 10.0f * ((r + U - 1) % U), "ring: got %g %g",
              recv[0], recv[1]);
    recv[0] = -1;
    CHECK(tdm_nn_group_sendrecv(&g_group, &host, send, r + 1 < U ? r + 1 : -1, recv, r > 0 ? r - 1 : -1, 1,
                                TDM_F32) == TDM_OK);
    CHECK_MSG(recv[0] == (r > 0 ? (float)(r - 1) : -1.0f), "chain: rank %d got %g", r, recv[0]);
    CHECK(tdm_nn_group_allreduce_sum(&g_group, &host, send, send, 3, TDM_F32) == TDM_OK);
    CHECK_MSG(send[0] == U * (U - 1) / 2.0f && send[2] == 0.5f * U, "sum: %g %g", send[0], send[2]);
    CHECK(tdm_nn_group_sendrecv(&g_group, &host, send, U, recv, -1, 1, TDM_F32) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_nn_group_allreduce_sum(&g_group, &host, send, send, 1, TDM_BF16) == TDM_ERR_INVALID_ARG);
}

static int child_main(void) {
    tdm_comm_t *c = NULL;
    if (tdm_comm_mpi_create(&c) != TDM_OK || tdm_dist_nn_group_create(c, &g_group) != TDM_OK) {
        printf("child: %s\n", tdm_last_error());
        tdm_comm_free(c);
        return EXIT_FAILURE;
    }
    RUN(child_cases_equal_one_device);
    RUN(child_sum_and_sendrecv);
    printf("rank %d of %d: ", g_group.rank, g_group.size);
    int rc = test_summary();
    tdm_dist_nn_group_free(&g_group);
    tdm_comm_free(c);
    return rc;
}

/* ---- ranks sharing a CUDA device (staged through host memory) ---------- */

static tdm_device_t g_cuda;
static tdm_dtype g_at;

/* x (n floats) as n elements of at in y. */
static void to_at(void *y, const float *x, int64_t n, tdm_dtype at) {
    if (at == TDM_F32) memcpy(y, x, (size_t)n * sizeof(float));
    else tdm_convert_to_half(y, x, TDM_F32, n, at);
}

/* Case c on the CUDA device in type g_at: this rank's rows from Ulysses
 * must equal the rows of the attention op on the whole sequence on the same
 * device, bit for bit. */
static void cuda_case(int ci, const uly_case_t *c) {
    const tdm_nn_ulysses_shape_t *s = &c->s;
    tdm_device_t *dev = &g_cuda;
    int r = g_group.rank, U = g_group.size;
    size_t es = tdm_dtype_size(g_at);
    float *q = NULL, *k = NULL, *v = NULL, *ref = NULL;
    tdm_nn_ulysses_sizes_t n;
    CHECK(tdm_nn_ulysses_sizes(s, r, U, g_at, &n) == TDM_OK);
    CHECK(uly_full(c, ci, &q, &k, &v, &ref));
    int64_t N = s->B * n.S * s->H * s->D, ln = s->B * n.rows * s->H * s->D;
    int64_t fb = (N > 0 ? N : 1) * (int64_t)es, lb = (ln > 0 ? ln : 1) * (int64_t)es;
    char *h = malloc((size_t)(4 * fb + 3 * lb)), *hl = h + 4 * fb, *hout = hl + 2 * lb;
    void *d[4], *dl[4], *dws = tdm_dev_alloc(dev, n.ws_bytes + 1, "ulysses workspace");
    const float *src[3] = { q, k, v };
    for (int i = 0; i < 4; i++) d[i] = tdm_dev_alloc(dev, fb, "full"), dl[i] = tdm_dev_alloc(dev, lb, "rows");
    CHECK(h && dws && d[0] && d[1] && d[2] && d[3] && dl[0] && dl[1] && dl[2] && dl[3]);
    for (int t = 0; t < 3; t++) {   /* the full tensors and this rank's rows, in type at */
        to_at(h + t * fb, src[t], N, g_at);
        CHECK(tdm_dev_upload(dev, d[t], h + t * fb, N * (int64_t)es, "full") == TDM_OK);
        uly_rows_of(s, r, U, es, hl, h + t * fb, n.rows);
        CHECK(tdm_dev_upload(dev, dl[t], hl, ln * (int64_t)es, "rows") == TDM_OK);
    }
    if (N > 0)
        tdm_op_attention_t(dev, g_at, d[3], d[0], d[1], d[2], s->B, n.S, n.S, s->H, s->D,
                           1.0f / sqrtf((float)s->D), c->causal);
    CHECK(tdm_dev_download(dev, h + 3 * fb, d[3], N * (int64_t)es, "reference") == TDM_OK);
    uly_rows_of(s, r, U, es, hl, h + 3 * fb, n.rows);   /* the rows this rank must get */
    tdm_status st = tdm_nn_ulysses_attention(dev, &g_group, g_at, dl[3], dl[0], dl[1], dl[2], s,
                                             1.0f / sqrtf((float)s->D), c->causal, dws, n.ws_bytes);
    CHECK_MSG(st == TDM_OK, "case %d rank %d: %s", ci, r, tdm_last_error());
    CHECK(tdm_dev_download(dev, hout, dl[3], ln * (int64_t)es, "output") == TDM_OK);
    if (ln > 0 && memcmp(hout, hl, (size_t)ln * es) != 0) {
        int64_t i = 0;
        while (i < ln && memcmp(hout + i * es, hl + i * es, es) == 0) i++;
        CHECK_MSG(0, "%s case %d (H %lld S %lld) rank %d of %d: element %lld differs from the "
                  "device's one-call attention", tdm_dtype_name(g_at), ci, (long long)s->H,
                  (long long)n.S, r, U, (long long)i);
    }
    for (int i = 0; i < 4; i++) tdm_dev_free(dev, d[i], fb), tdm_dev_free(dev, dl[i], lb);
    tdm_dev_free(dev, dws, n.ws_bytes + 1);
    free(h), free(q), free(k), free(v), free(ref);
}

TEST(child_cuda_cases_equal_one_call) {
    for (int i = 0; i < ULY_NCASES; i++) cuda_case(i, &uly_cases[i]);
}

static int child_cuda_main(const char *dt) {
    tdm_comm_t *c = NULL;
    g_at = strcmp(dt, "bf16") == 0 ? TDM_BF16 : TDM_F32;
    if (tdm_comm_mpi_create(&c) != TDM_OK || tdm_dist_nn_group_create(c, &g_group) != TDM_OK ||
        tdm_backend_device_open(&g_cuda, "cuda:0", NULL) != TDM_OK) {
        printf("child: %s\n", tdm_last_error());
        tdm_comm_free(c);
        return EXIT_FAILURE;
    }
    g_cuda.gemm_dtype = g_at;
    RUN(child_cuda_cases_equal_one_call);
    printf("%s rank %d of %d: ", dt, g_group.rank, g_group.size);
    int rc = test_summary();
    tdm_backend_device_close(&g_cuda);
    tdm_dist_nn_group_free(&g_group);
    tdm_comm_free(c);
    return rc;
}

TEST(mpirun_2_3_4_5_ranks) {
    for (int np = 2; np <= 5; np++) {
        int rc = tmpi_run(np, "--child", 300);
        CHECK_MSG(rc == 0, "mpirun -np %d: exit code %d", np, rc);
    }
}

/* Two and three ranks on one GPU, float32 and bf16 (the one-GPU check). */
TEST(mpirun_cuda_2_3_ranks) {
    if (tdm_backend_device_count("cuda") < 1) {
        printf("  no CUDA device: the CUDA ranks are not run\n");
        return;
    }
    for (int np = 2; np <= 3; np++)
        for (int b = 0; b < 2; b++) {
            int rc = tmpi_run(np, b ? "--child-cuda bf16" : "--child-cuda f32", 300);
            CHECK_MSG(rc == 0, "mpirun -np %d (CUDA, %s): exit code %d", np, b ? "bf16" : "f32", rc);
        }
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "--child") == 0) return child_main();
    if (argc >= 3 && strcmp(argv[1], "--child-cuda") == 0) return child_cuda_main(argv[2]);
    const int pre = tmpi_parent("test_ulysses_mpi", argv[0]);
    if (pre >= 0) return pre;
    RUN(mpirun_2_3_4_5_ranks);
    RUN(mpirun_cuda_2_3_ranks);
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
