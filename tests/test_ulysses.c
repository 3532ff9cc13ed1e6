// label: unit
/* test_ulysses.c — Ulysses attention (nn/ulysses.h) in one process: the
 * split and size arithmetic over many (S, H, U); one rank (the one-rank
 * group, and dist's nn group over the single-process communicator) bit for
 * bit equal to the attention op on the whole sequence; U = 2..6 and 16
 * ranks as threads of this process (an in-process group; their compute
 * serialized by one lock, the exchange in shared memory), every rank's
 * rows bit for bit equal to the one-device rows; argument errors. The
 * MPI twin is test_ulysses_mpi.c. */
#include <pthread.h>

#include "dist/nn_group.h"
#include "test_ulysses.h"

TEST(split_covers_each_row_once) {
    for (int U = 1; U <= 17; U++)
        for (int64_t L = 0; L <= 50; L++) {
            int64_t next = 0, q = L / U, m = L % U;
            for (int r = 0; r < U; r++) {
                int64_t b, c;
                tdm_nn_ulysses_split(L, r, U, &b, &c);
                CHECK_MSG(b == next && c == q + (r < m), "L %lld U %d rank %d: [%lld, +%lld)",
                          (long long)L, U, r, (long long)b, (long long)c);
                next = b + c;
            }
            CHECK_MSG(next == L, "L %lld U %d: shares end at %lld", (long long)L, U, (long long)next);
        }
}

TEST(sizes_arithmetic) {
    for (int U = 1; U <= 17; U++)
        for (int64_t H = 1; H <= 25; H++)
            for (int64_t L0 = 0; L0 <= 9; L0 += 3)
                for (int64_t L1 = 0; L1 <= 40; L1 += 7) {
                    tdm_nn_ulysses_shape_t s = { 2, H, 4, 2, { L0, L1 } };
                    int64_t rows = 0;
                    for (int r = 0; r < U; r++) {
                        tdm_nn_ulysses_sizes_t n;
                        if (tdm_nn_ulysses_sizes(&s, r, U, TDM_F32, &n) != TDM_OK) {
                            CHECK_MSG(0, "H %lld U %d: %s", (long long)H, U, tdm_last_error());
                            return;
                        }
                        int64_t rp = (L0 + U - 1) / U + (L1 + U - 1) / U;
                        CHECK(n.S == L0 + L1 && n.rows == n.count[0] + n.count[1]);
                        CHECK_MSG(n.rows_pad == rp && n.rows <= rp && U * rp >= n.S,
                                  "rows %lld, pad %lld", (long long)n.rows, (long long)n.rows_pad);
                        CHECK_MSG(n.heads_pad % U == 0 && n.heads_pad >= H && n.heads_pad - H < U &&
                                  n.heads_local * U == n.heads_pad,
                                  "H %lld U %d: padded to %lld", (long long)H, U,
                                  (long long)n.heads_pad);
                        /* send + receive + q, k, v full + zero row, at least */
                        int64_t least = (6 * U * 2 * rp + 3 * 2 * n.S + 1) * n.heads_local * 4 * 4;
                        CHECK(n.ws_bytes >= least);
                        rows += n.rows;
                    }
                    CHECK(rows == L0 + L1);
                }
}

TEST(sizes_reject_bad_shapes) {
    tdm_nn_ulysses_sizes_t n;
    tdm_nn_ulysses_shape_t ok = { 1, 3, 8, 1, { 7 } }, s;
    CHECK(tdm_nn_ulysses_sizes(&ok, 0, 1, TDM_F32, &n) == TDM_OK);
    s = ok, s.H = 0;
    CHECK(tdm_nn_ulysses_sizes(&s, 0, 1, TDM_F32, &n) == TDM_ERR_INVALID_ARG);
    s = ok, s.nseg = TDM_NN_ULYSSES_MAX_SEG + 1;
    CHECK(tdm_nn_ulysses_sizes(&s, 0, 1, TDM_F32, &n) == TDM_ERR_INVALID_ARG);
    s = ok, s.seg[0] = -1;
    CHECK(tdm_nn_ulysses_sizes(&s, 0, 1, TDM_F32, &n) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_nn_ulysses_sizes(&ok, 2, 2, TDM_F32, &n) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_nn_ulysses_sizes(&ok, 0, 0, TDM_F32, &n) == TDM_ERR_INVALID_ARG);
    s = ok, s.seg[0] = INT64_MAX / 2, s.H = 1 << 20;
    CHECK(tdm_nn_ulysses_sizes(&s, 0, 1, TDM_F32, &n) == TDM_ERR_INVALID_ARG);
    /* a workspace one byte short */
    float x[7 * 24] = { 0 }, o[7 * 24];
    CHECK(tdm_nn_ulysses_sizes(&ok, 0, 1, TDM_F32, &n) == TDM_OK);
    void *ws = malloc((size_t)n.ws_bytes);
    CHECK(ws && tdm_nn_ulysses_attention(NULL, NULL, TDM_F32, o, x, x, x, &ok, 1.0f, 0, ws,
                                         n.ws_bytes - 1) == TDM_ERR_INVALID_ARG);
    free(ws);
}

TEST(one_rank_equals_attention_op) {
    tdm_nn_group_t one;
    tdm_nn_group_single(&one);
    for (int i = 0; i < ULY_NCASES; i++) {
        uly_check_case(i, &uly_cases[i], NULL);
        uly_check_case(i, &uly_cases[i], &one);
    }
}

TEST(one_rank_group_copies) {
    tdm_nn_group_t one;
    float a[6] = { 1, 2, 3, 4, 5, 6 }, b[8] = { 0 };
    int64_t counts[1] = { 3 }, displs[1] = { 2 };
    tdm_nn_group_single(&one);
    CHECK(tdm_nn_group_all_to_all(&one, NULL, a, b, 6, TDM_F32) == TDM_OK && !memcmp(a, b, sizeof a));
    memset(b, 0, sizeof b);
    CHECK(tdm_nn_group_allgather(&one, NULL, a, b, 2, TDM_F32) == TDM_OK && b[1] == 2 && b[2] == 0);
    memset(b, 0, sizeof b);
    CHECK(tdm_nn_group_allgatherv(&one, NULL, a, 3, b, counts, displs, TDM_F32) == TDM_OK &&
          b[1] == 0 && b[2] == 1 && b[4] == 3 && b[5] == 0);
    CHECK(tdm_nn_group_all_to_all(&one, NULL, NULL, b, 1, TDM_F32) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_nn_group_all_to_all(&one, NULL, a, b, -1, TDM_F32) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_nn_group_allgatherv(&one, NULL, a, 2, b, counts, displs, TDM_F32) ==
          TDM_ERR_INVALID_ARG);
}

TEST(dist_group_over_single_communicator) {
    tdm_comm_t *c = NULL;
    tdm_nn_group_t g;
    CHECK(tdm_comm_single_create(&c) == TDM_OK);
    CHECK(tdm_dist_nn_group_create(c, &g) == TDM_OK && g.rank == 0 && g.size == 1);
    for (int i = 0; i < ULY_NCASES; i++) uly_check_case(i, &uly_cases[i], &g);
    tdm_dist_nn_group_free(&g);
    tdm_dist_nn_group_free(&g);   /* a zeroed group: no-op */
    tdm_comm_free(c);
}

/* ---- threads as ranks --------------------------------------------------- */

#define MAXU 16

/* The ranks' shared state: `big` is held by a rank whenever it is outside
 * an exchange, so their compute runs one at a time (the CPU attention
 * switches OpenBLAS's thread count process-wide). */
typedef struct {
    pthread_mutex_t big;
    pthread_barrier_t bar;
    const void *send[MAXU];
} tgroup_t;

typedef struct {
    tgroup_t *t;
    tdm_nn_group_t g;
    int ci;
} trank_t;

static tdm_status t_all_to_all(void *ctx, tdm_device_t *dev, const void *send, void *recv,
                               int64_t count, tdm_dtype dt) {
    trank_t *me = ctx;
    tgroup_t *t = me->t;
    size_t blk = (size_t)count * tdm_dtype_size(dt);
    t->send[me->g.rank] = send;
    pthread_mutex_unlock(&t->big);
    pthread_barrier_wait(&t->bar);
    for (int i = 0; i < me->g.size; i++)
        memcpy((char *)recv + (size_t)i * blk, (const char *)t->send[i] + (size_t)me->g.rank * blk,
               blk);
    pthread_barrier_wait(&t->bar);   /* no rank reuses its send buffer before all have read */
    pthread_mutex_lock(&t->big);
    return TDM_OK;
}

static void *t_rank_main(void *arg) {
    trank_t *me = arg;
    pthread_mutex_lock(&me->t->big);
    uly_check_case(me->ci, &uly_cases[me->ci], &me->g);
    pthread_mutex_unlock(&me->t->big);
    return NULL;
}

TEST(threads_as_ranks_equal_one_device) {
    static const int Us[] = { 2, 3, 4, 5, 6, 16 };
    for (size_t u = 0; u < sizeof Us / sizeof Us[0]; u++)
        for (int ci = 0; ci < ULY_NCASES; ci++) {
            int U = Us[u];
            tgroup_t t;
            trank_t r[MAXU];
            pthread_t th[MAXU];
            pthread_mutex_init(&t.big, NULL);
            pthread_barrier_init(&t.bar, NULL, (unsigned)U);
            for (int i = 0; i < U; i++) {
                memset(&r[i], 0, sizeof r[i]);
                r[i].t = &t, r[i].ci = ci;
                r[i].g.rank = i, r[i].g.size = U, r[i].g.ctx = &r[i];
                r[i].g.all_to_all = t_all_to_all;   /* Ulysses needs no allgather */
                if (pthread_create(&th[i], NULL, t_rank_main, &r[i]) != 0) {
                    CHECK_MSG(0, "pthread_create failed");
                    abort();   /* the started ranks would wait forever */
                }
            }
            for (int i = 0; i < U; i++) pthread_join(th[i], NULL);
            pthread_barrier_destroy(&t.bar);
            pthread_mutex_destroy(&t.big);
        }
}

int main(void) {
    RUN(split_covers_each_row_once);
    RUN(sizes_arithmetic);
    RUN(sizes_reject_bad_shapes);
    RUN(one_rank_equals_attention_op);
    RUN(one_rank_group_copies);
    RUN(dist_group_over_single_communicator);
    RUN(threads_as_ranks_equal_one_device);
    return test_summary();
}
