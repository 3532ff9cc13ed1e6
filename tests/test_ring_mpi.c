// label: dist
/* test_ring_mpi.c — ring attention and USP (nn/ring.h) over MPI ranks.
 * Started plainly (as ctest does), it runs itself as
 *   mpirun --allow-run-as-root --oversubscribe -np N <self> --child R U
 * for ring 2, 3 and 4 (N = R), USP 2 × 2 (N = 4) and DP 2 × ring 2 (N =
 * 4): in --child mode the world splits as dist/groups.h lays ranks out
 * (rank = (dp·R + r)·U + u) into a ring and a Ulysses communicator
 * (tdm_comm_split), each wrapped in dist's nn group (dist/nn_group.h), and
 * every case of test_ring.h must give each rank's rows within 1e-5
 * relative of the one-device attention (measured errors printed). Where a
 * CUDA device is present, ring 2 and USP 2 × 2 also run with the ranks
 * sharing it (--child-cuda R U f32 | bf16: buffers staged through host
 * memory), against one attention call on that device (float32 within
 * 1e-5; bf16 within 3e-2, what the tensor-core attention's bf16
 * probabilities allow). A rank with a failed check exits nonzero, which
 * makes mpirun's status nonzero.
 * Skipped (exit 77) when the build has no MPI or mpirun is not on PATH. */
#include <stdlib.h>

#include "backend/ops.h"
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

/* ---- ranks sharing a CUDA device (staged through host memory) ---------- */

static tdm_device_t g_cuda;
static tdm_dtype g_at;

/* y = this rank's rows (n's shares of each segment) of the full x (B, S,
 * H·D), elements of es bytes. */
static void rows_of(const tdm_nn_ulysses_shape_t *s, const tdm_nn_usp_sizes_t *n, int64_t es,
                    char *y, const char *x) {
    const int64_t HD = s->H * s->D, S = uly_S(s);
    for (int64_t b = 0, l = 0; b < s->B; b++) {
        int64_t seg0 = 0;
        for (int g = 0; g < s->nseg; g++) {
            memcpy(y + l * HD * es, x + (b * S + seg0 + n->begin[g]) * HD * es,
                   (size_t)(n->count[g] * HD * es));
            l += n->count[g];
            seg0 += s->seg[g];
        }
    }
}

/* Case c on the CUDA device in type g_at: this rank's rows from USP against
 * the rows of the attention op on the whole sequence on the same device. */
static void cuda_case(int ci, const uly_case_t *c) {
    const tdm_nn_ulysses_shape_t *s = &c->s;
    tdm_device_t *dev = &g_cuda;
    const tdm_nn_group_t *gu = g_uly.size > 1 ? &g_uly : NULL;
    const int64_t HD = s->H * s->D, S = uly_S(s), es = (int64_t)tdm_dtype_size(g_at);
    float *q = NULL, *k = NULL, *v = NULL, *ref = NULL;
    tdm_nn_usp_sizes_t n;
    CHECK(tdm_nn_usp_sizes(s, g_ring.rank, g_ring.size, g_uly.rank, g_uly.size, g_at, &n) == TDM_OK);
    CHECK(uly_full(c, ci, &q, &k, &v, &ref));
    const int64_t N = s->B * S * HD, ln = s->B * n.rows * HD;
    const int64_t fb = (N > 0 ? N : 1) * es, lb = (ln > 0 ? ln : 1) * es;
    char *h = malloc((size_t)(4 * fb + 2 * lb)), *hl = h + 4 * fb;
    float *got = malloc((size_t)(ln > 0 ? ln : 1) * 8), *want = got + (ln > 0 ? ln : 1);
    void *d[4], *dl[4], *dws = tdm_dev_alloc(dev, n.ws_bytes + 1, "usp workspace");
    const float *src[3] = { q, k, v };
    for (int i = 0; i < 4; i++) d[i] = tdm_dev_alloc(dev, fb, "full"), dl[i] = tdm_dev_alloc(dev, lb, "rows");
    CHECK(h && got && dws && d[0] && d[1] && d[2] && d[3] && dl[0] && dl[1] && dl[2] && dl[3]);
    for (int t = 0; t < 3; t++) {
        if (g_at == TDM_F32) memcpy(h + t * fb, src[t], (size_t)N * 4);
        else tdm_convert_to_half((uint16_t *)(h + t * fb), src[t], TDM_F32, N, g_at);
        CHECK(tdm_dev_upload(dev, d[t], h + t * fb, N * es, "full") == TDM_OK);
        rows_of(s, &n, es, hl, h + t * fb);
        CHECK(tdm_dev_upload(dev, dl[t], hl, ln * es, "rows") == TDM_OK);
    }
    if (N > 0)
        tdm_op_attention_t(dev, g_at, d[3], d[0], d[1], d[2], s->B, S, S, s->H, s->D,
                           1.0f / sqrtf((float)s->D), 0);
    CHECK(tdm_dev_download(dev, h + 3 * fb, d[3], N * es, "reference") == TDM_OK);
    rows_of(s, &n, es, hl, h + 3 * fb);
    CHECK(tdm_convert_to_f32(want, hl, g_at, ln) == TDM_OK);
    tdm_status st = tdm_nn_usp_attention(dev, gu, &g_ring, g_at, dl[3], dl[0], dl[1], dl[2], s,
                                         1.0f / sqrtf((float)s->D), dws, n.ws_bytes);
    CHECK_MSG(st == TDM_OK, "case %d: %s", ci, tdm_last_error());
    CHECK(tdm_dev_download(dev, hl, dl[3], ln * es, "output") == TDM_OK);
    CHECK(tdm_convert_to_f32(got, hl, g_at, ln) == TDM_OK);
    const double e = ln > 0 ? test_rel_err(got, want, (long)ln) : 0, tol = g_at == TDM_F32 ? 1e-5 : 3e-2;
    CHECK_MSG(e <= tol, "%s case %d (H %lld S %lld) ring %d of %d, ulysses %d of %d: rel err %.3g",
              tdm_dtype_name(g_at), ci, (long long)s->H, (long long)S, g_ring.rank, g_ring.size,
              g_uly.rank, g_uly.size, e);
    for (int i = 0; i < 4; i++) tdm_dev_free(dev, d[i], fb), tdm_dev_free(dev, dl[i], lb);
    tdm_dev_free(dev, dws, n.ws_bytes + 1);
    free(h), free(got), free(q), free(k), free(v), free(ref);
}

TEST(child_cuda_cases_within_tolerance) {
    for (int i = 0; i < RING_NCASES; i++) cuda_case(i, &ring_cases[i]);
}

/* The world of R·U ranks split into a ring and a Ulysses communicator (rank
 * = r·U + u) and their nn groups; then the CPU cases or, with dt, the CUDA
 * ones. */
static int child_grid(int R, int U, const char *dt) {
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
    if (dt) {
        g_at = strcmp(dt, "bf16") == 0 ? TDM_BF16 : TDM_F32;
        if (tdm_backend_device_open(&g_cuda, "cuda:0", NULL) != TDM_OK) goto fail;
        g_cuda.gemm_dtype = g_at;
        RUN(child_cuda_cases_within_tolerance);
        tdm_backend_device_close(&g_cuda);
    } else {
        RUN(child_cases_within_1e5);
    }
    printf("%s dp %d, ring %d of %d, ulysses %d of %d: ", dt ? dt : "cpu", dp, r, R, u, U);
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

/* Ring 2 and USP 2 × 2 with the ranks sharing one GPU, float32 and bf16. */
TEST(mpirun_cuda_ring_2_usp_2x2) {
    if (tdm_backend_device_count("cuda") < 1) {
        printf("  no CUDA device: the CUDA ranks are not run\n");
        return;
    }
    static const char *runs[] = { "2 1 f32", "2 1 bf16", "2 2 f32", "2 2 bf16" };
    for (int i = 0; i < 4; i++) {
        char args[64];
        snprintf(args, sizeof args, "--child-cuda %s", runs[i]);
        int rc = tmpi_run(runs[i][2] == '2' ? 4 : 2, args, 300);
        CHECK_MSG(rc == 0, "mpirun %s: exit code %d", args, rc);
    }
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "--child") == 0) return child_grid(atoi(argv[2]), atoi(argv[3]), NULL);
    if (argc >= 5 && strcmp(argv[1], "--child-cuda") == 0)
        return child_grid(atoi(argv[2]), atoi(argv[3]), argv[4]);
    const int pre = tmpi_parent("test_ring_mpi", argv[0]);
    if (pre >= 0) return pre;
    RUN(mpirun_ring_2_3_4_usp_2x2_dp_2);
    RUN(mpirun_cuda_ring_2_usp_2x2);
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
