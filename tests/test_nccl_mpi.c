// label: cuda
/* test_nccl_mpi.c — the NCCL communicator (dist/comm_nccl.c) under mpirun,
 * one rank per GPU (NCCL takes no two ranks on one device): started plainly
 * it runs itself as `mpirun -np N <self> --child` with N = min(GPUs, 4);
 * every rank opens cuda:rank, bootstraps NCCL over the MPI world and checks
 * each call on device buffers queued on the device's stream: broadcast
 * from every root, allreduce (sum, max, in place), allgather, allgatherv
 * with uneven blocks (one empty), all_to_all, a sendrecv ring shift, a
 * split into even and odd ranks with an allreduce in each, barrier, and
 * that host buffers (stream NULL) are refused. Skipped (exit 77) without
 * MPI, NCCL, or two GPUs. */
#include <stdlib.h>

#include "backend/ops.h"
#include "dist/comm.h"
#include "test.h"

#ifdef TDM_HAVE_MPI

#include "test_mpi.h"

static tdm_device_t g_dev;
static tdm_comm_t *g_nc;
static void *g_stream;

/* n floats on the device from host x (NULL: zeros) */
static float *dup_dev(const float *x, int64_t n) {
    float *d = tdm_dev_alloc(&g_dev, n * 4 + 4, "test buffer");
    if (d && x) CHECK(tdm_dev_upload(&g_dev, d, x, n * 4, "test buffer") == TDM_OK);
    return d;
}

static void get(float *h, const float *d, int64_t n) {
    CHECK(tdm_dev_download(&g_dev, h, d, n * 4, "test result") == TDM_OK);
}

TEST(child_collectives) {
    const int r = g_nc->rank, n = g_nc->size;
    float h[64], want[64];
    /* broadcast from every root */
    for (int root = 0; root < n; root++) {
        float x[3] = { (float)r, 1.5f * r, -2.0f };
        float *d = dup_dev(x, 3);
        CHECK(tdm_comm_broadcast(g_nc, d, 3, TDM_F32, root, g_stream) == TDM_OK);
        get(h, d, 3);
        CHECK_MSG(h[0] == (float)root && h[1] == 1.5f * root, "broadcast from %d: %g %g", root, h[0], h[1]);
        tdm_dev_free(&g_dev, d, 16);
    }
    /* allreduce sum and max, in place */
    float x[4] = { (float)r, 1.0f, (float)(n - r), 0.25f };
    float *d = dup_dev(x, 4), *e = dup_dev(NULL, 4);
    CHECK(tdm_comm_allreduce(g_nc, d, e, 4, TDM_F32, TDM_REDUCE_SUM, g_stream) == TDM_OK);
    get(h, e, 4);
    CHECK_MSG(h[0] == n * (n - 1) / 2.0f && h[1] == (float)n && h[3] == 0.25f * n, "sum %g %g %g", h[0], h[1], h[3]);
    CHECK(tdm_comm_allreduce(g_nc, d, d, 4, TDM_F32, TDM_REDUCE_MAX, g_stream) == TDM_OK);
    get(h, d, 4);
    CHECK_MSG(h[0] == (float)(n - 1) && h[2] == (float)n, "max in place %g %g", h[0], h[2]);
    tdm_dev_free(&g_dev, d, 20);
    tdm_dev_free(&g_dev, e, 20);
    /* allgather: rank r's two values at block r */
    float two[2] = { (float)r, 10.0f + r };
    d = dup_dev(two, 2), e = dup_dev(NULL, 2 * n);
    CHECK(tdm_comm_allgather(g_nc, d, e, 2, TDM_F32, g_stream) == TDM_OK);
    get(h, e, 2 * n);
    for (int i = 0; i < n; i++) CHECK_MSG(h[2 * i] == i && h[2 * i + 1] == 10.0f + i, "allgather block %d", i);
    tdm_dev_free(&g_dev, d, 12);
    tdm_dev_free(&g_dev, e, 8 * n + 4);
    /* allgatherv: rank i sends i elements (rank 0 none), blocks packed */
    int64_t counts[8], displs[8], tot = 0;
    for (int i = 0; i < n; i++) counts[i] = i, displs[i] = tot, tot += i;
    float mine[8];
    for (int k = 0; k < r; k++) mine[k] = 100.0f * r + k;
    d = dup_dev(mine, r > 0 ? r : 1), e = dup_dev(NULL, tot);
    CHECK(tdm_comm_allgatherv(g_nc, d, r, e, counts, displs, TDM_F32, g_stream) == TDM_OK);
    get(h, e, tot);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < i; k++) want[displs[i] + k] = 100.0f * i + k;
    CHECK_MSG(!memcmp(h, want, (size_t)tot * 4), "allgatherv");
    tdm_dev_free(&g_dev, d, 4 * (r > 0 ? r : 1) + 4);
    tdm_dev_free(&g_dev, e, 4 * tot + 4);
    /* all_to_all: block j of rank r holds 10r + j; rank r receives 10i + r from rank i */
    float blocks[8];
    for (int j = 0; j < n; j++) blocks[j] = 10.0f * r + j;
    d = dup_dev(blocks, n), e = dup_dev(NULL, n);
    CHECK(tdm_comm_all_to_all(g_nc, d, e, 1, TDM_F32, g_stream) == TDM_OK);
    get(h, e, n);
    for (int i = 0; i < n; i++) CHECK_MSG(h[i] == 10.0f * i + r, "all_to_all from %d: %g", i, h[i]);
    /* sendrecv ring shift */
    CHECK(tdm_comm_sendrecv(g_nc, d, (r + 1) % n, e, (r + n - 1) % n, 1, TDM_F32, 3, g_stream) == TDM_OK);
    get(h, e, 1);
    CHECK_MSG(h[0] == 10.0f * ((r + n - 1) % n), "ring: %g", h[0]);
    /* host buffers refused */
    CHECK(tdm_comm_allreduce(g_nc, x, x, 1, TDM_F32, TDM_REDUCE_SUM, NULL) == TDM_ERR_UNSUPPORTED);
    tdm_dev_free(&g_dev, d, 4 * n + 4);
    tdm_dev_free(&g_dev, e, 4 * n + 4);
    CHECK(tdm_comm_barrier(g_nc) == TDM_OK);
}

TEST(child_split) {
    const int r = g_nc->rank, n = g_nc->size;
    tdm_comm_t *sub = NULL;
    CHECK(tdm_comm_split(g_nc, r % 2, r, &sub) == TDM_OK);
    if (!sub) return;
    CHECK_MSG(sub->size == (n + 1 - r % 2) / 2 && sub->rank == r / 2, "split: rank %d of %d", sub->rank, sub->size);
    float one = 1.0f, h = 0;
    float *d = dup_dev(&one, 1);
    CHECK(tdm_comm_allreduce(sub, d, d, 1, TDM_F32, TDM_REDUCE_SUM, g_stream) == TDM_OK);
    get(&h, d, 1);
    CHECK_MSG(h == (float)sub->size, "sub allreduce %g", h);
    tdm_dev_free(&g_dev, d, 8);
    tdm_comm_free(sub);
}

static int child_main(void) {
    tdm_comm_t *w = NULL;
    char spec[32];
    if (tdm_comm_mpi_create(&w) != TDM_OK) {
        printf("child: %s\n", tdm_last_error());
        return EXIT_FAILURE;
    }
    snprintf(spec, sizeof spec, "cuda:%d", w->rank);
    if (tdm_backend_device_open(&g_dev, spec, NULL) != TDM_OK || !g_dev.ops || !g_dev.ops->stream ||
        tdm_comm_nccl_create(w, &g_nc) != TDM_OK) {
        printf("child rank %d: %s\n", w->rank, tdm_last_error());
        tdm_comm_free(w);
        return EXIT_FAILURE;
    }
    g_stream = g_dev.ops->stream(&g_dev);
    RUN(child_collectives);
    RUN(child_split);
    printf("rank %d of %d: ", g_nc->rank, g_nc->size);
    int rc = test_summary();
    tdm_comm_free(g_nc);
    tdm_backend_device_close(&g_dev);
    tdm_comm_free(w);
    return rc;
}

static int g_np;

TEST(mpirun_one_rank_per_gpu) {
    int rc = tmpi_run(g_np, "--child", 300);
    CHECK_MSG(rc == 0, "mpirun -np %d: exit code %d", g_np, rc);
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "--child") == 0) return child_main();
    if (!tdm_comm_nccl_built()) return test_skip("test_nccl_mpi: this build has no NCCL");
    g_np = tdm_backend_device_count("cuda");
    if (g_np < 2) return test_skip("test_nccl_mpi: needs two GPUs (NCCL takes one rank per GPU)");
    if (g_np > 4) g_np = 4;
    const int pre = tmpi_parent("test_nccl_mpi", argv[0]);
    if (pre >= 0) return pre;
    RUN(mpirun_one_rank_per_gpu);
    return test_summary();
}

#else /* !TDM_HAVE_MPI */

int main(void) {
    (void)test_cur_failed;
    (void)test_summary;
    return test_skip("test_nccl_mpi: this build has no MPI");
}

#endif
