// label: unit
/* test_ring.c — ring attention and USP (nn/ring.h) in one process: the
 * 2-D split covers every row once; one rank is the attention op bit for
 * bit; ring R = 2, 3, 4 and USP 2 × 2 (and 3 × 2, 2 × 3) with threads as
 * ranks (in-process groups: their compute serialized by one lock, the
 * exchanges in shared memory), every rank's rows within 1e-5 relative of
 * the one-device attention ([text; image] segments with uneven shares,
 * ranks without rows, heads padded by the Ulysses exchange); argument
 * errors. The MPI twin is test_ring_mpi.c. */
#include <pthread.h>

#include "test_ring.h"

TEST(usp_split_covers_each_row_once) {
    for (int R = 1; R <= 5; R++)
        for (int U = 1; U <= 5; U++)
            for (int64_t L = 0; L <= 40; L++) {
                int64_t next = 0;
                for (int r = 0; r < R; r++)
                    for (int u = 0; u < U; u++) {
                        int64_t b, c;
                        tdm_nn_usp_split(L, r, R, u, U, &b, &c);
                        CHECK_MSG(b == next, "L %lld R %d U %d (%d, %d): begins at %lld, not %lld",
                                  (long long)L, R, U, r, u, (long long)b, (long long)next);
                        next = b + c;
                    }
                CHECK_MSG(next == L, "L %lld R %d U %d: shares end at %lld", (long long)L, R, U,
                          (long long)next);
            }
}

TEST(sizes_and_bad_arguments) {
    tdm_nn_ulysses_shape_t s = { 2, 3, 8, 2, { 5, 70 } }, bad = s;
    tdm_nn_ring_sizes_t n;
    tdm_nn_usp_sizes_t m;
    for (int R = 1; R <= 4; R++) {
        int64_t rows = 0;
        for (int r = 0; r < R; r++) {
            CHECK(tdm_nn_ring_sizes(&s, r, R, TDM_F32, &n) == TDM_OK);
            CHECK(n.rows_pad == (5 + R - 1) / R + (70 + R - 1) / R && n.rows <= n.rows_pad);
            CHECK(R == 1 ? n.ws_bytes == 0 : n.ws_bytes >= (2 * 2 * n.rows_pad * 24 * 2 +
                                                            2 * 3 * n.rows) * 4);
            rows += n.rows;
        }
        CHECK(rows == 75);
    }
    CHECK(tdm_nn_usp_sizes(&s, 1, 2, 1, 2, TDM_F32, &m) == TDM_OK);
    CHECK(m.heads_local == 2 && m.slot[0] == 2 && m.slot[1] == 35 && m.slot_rows == 37);
    CHECK(m.begin[0] == 4 && m.count[0] == 1 && m.begin[1] == 35 + 18 && m.count[1] == 17);
    CHECK(tdm_nn_ring_sizes(&s, 2, 2, TDM_F32, &n) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_nn_usp_sizes(&s, 0, 2, 2, 2, TDM_F32, &m) == TDM_ERR_INVALID_ARG);
    bad.H = 0;
    CHECK(tdm_nn_usp_sizes(&bad, 0, 2, 0, 2, TDM_F32, &m) == TDM_ERR_INVALID_ARG);
}

TEST(one_rank_equals_attention_op) {
    tdm_nn_group_t one;
    tdm_nn_group_single(&one);
    for (int i = 0; i < RING_NCASES; i++) {
        const uly_case_t *c = &ring_cases[i];
        const int64_t n = c->s.B * uly_S(&c->s) * c->s.H * c->s.D;
        float *q = NULL, *k = NULL, *v = NULL, *ref = NULL, *o = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
        CHECK(o && uly_full(c, i, &q, &k, &v, &ref));
        CHECK(tdm_nn_ring_attention(NULL, &one, TDM_F32, o, q, k, v, &c->s,
                                    1.0f / sqrtf((float)c->s.D), NULL, 0) == TDM_OK);
        CHECK_MSG(n == 0 || memcmp(o, ref, (size_t)n * sizeof(float)) == 0, "case %d differs", i);
        free(q), free(k), free(v), free(ref), free(o);
        CHECK(ring_check_case(i, c, NULL, NULL) == 0.0);
    }
}

/* ---- threads as ranks --------------------------------------------------- */

#define MAXN 8

/* One in-process group: its barrier and the send buffers posted. `big`
 * (shared by every group) is held by a rank whenever it is outside an
 * exchange, so the ranks' compute runs one at a time (the CPU attention
 * switches OpenBLAS's thread count process-wide). */
typedef struct {
    pthread_mutex_t *big;
    pthread_barrier_t bar;
    const void *send[MAXN];
} tgroup_t;

typedef struct {
    tgroup_t *t;
    tdm_nn_group_t g;
} tmember_t;

static void t_enter(tmember_t *me, const void *send) {
    me->t->send[me->g.rank] = send;
    pthread_mutex_unlock(me->t->big);
    pthread_barrier_wait(&me->t->bar);
}

static void t_leave(tmember_t *me) {
    pthread_barrier_wait(&me->t->bar);   /* no rank reuses its send buffer before all have read */
    pthread_mutex_lock(me->t->big);
}

static tdm_status t_all_to_all(void *ctx, tdm_device_t *dev, const void *send, void *recv,
                               int64_t count, tdm_dtype dt) {
    tmember_t *me = ctx;
    size_t blk = (size_t)count * tdm_dtype_size(dt);
    (void)dev;
    t_enter(me, send);
    for (int i = 0; i < me->g.size; i++)
        memcpy((char *)recv + (size_t)i * blk,
               (const char *)me->t->send[i] + (size_t)me->g.rank * blk, blk);
    t_leave(me);
    return TDM_OK;
}

/* Every rank of the group calls it at once (a ring shift). */
static tdm_status t_sendrecv(void *ctx, tdm_device_t *dev, const void *send, int to, void *recv,
                             int from, int64_t count, tdm_dtype dt) {
    tmember_t *me = ctx;
    (void)dev, (void)to;
    t_enter(me, send);
    if (from >= 0) memcpy(recv, me->t->send[from], (size_t)count * tdm_dtype_size(dt));
    t_leave(me);
    return TDM_OK;
}

typedef struct {
    tmember_t ring, uly;
    int ci;
    double err;
} trank_t;

static void *t_rank_main(void *arg) {
    trank_t *me = arg;
    pthread_mutex_lock(me->ring.t->big);
    me->err = ring_check_case(me->ci, &ring_cases[me->ci], me->uly.g.size > 1 ? &me->uly.g : NULL,
                              &me->ring.g);
    pthread_mutex_unlock(me->ring.t->big);
    return NULL;
}

static void member(tmember_t *m, tgroup_t *t, int rank, int size) {
    m->t = t;
    m->g.rank = rank, m->g.size = size, m->g.ctx = m;
    m->g.all_to_all = t_all_to_all;
    m->g.sendrecv = t_sendrecv;
}

/* Case ci over an R × U grid of threads (rank = r·U + u, as dist/groups.h
 * lays them out); returns the largest error of a rank. */
static double run_grid(int R, int U, int ci) {
    pthread_mutex_t big = PTHREAD_MUTEX_INITIALIZER;
    tgroup_t rings[MAXN], ulys[MAXN];
    trank_t rk[MAXN];
    pthread_t th[MAXN];
    double worst = 0;
    for (int u = 0; u < U; u++)
        rings[u].big = &big, pthread_barrier_init(&rings[u].bar, NULL, (unsigned)R);
    for (int r = 0; r < R; r++)
        ulys[r].big = &big, pthread_barrier_init(&ulys[r].bar, NULL, (unsigned)U);
    for (int i = 0; i < R * U; i++) {
        memset(&rk[i], 0, sizeof rk[i]);
        member(&rk[i].ring, &rings[i % U], i / U, R);
        member(&rk[i].uly, &ulys[i / U], i % U, U);
        rk[i].ci = ci;
        if (pthread_create(&th[i], NULL, t_rank_main, &rk[i]) != 0) {
            CHECK_MSG(0, "pthread_create failed");
            abort();   /* the started ranks would wait forever */
        }
    }
    for (int i = 0; i < R * U; i++) {
        pthread_join(th[i], NULL);
        worst = rk[i].err < 0 || rk[i].err > worst ? (rk[i].err < 0 ? 1.0 : rk[i].err) : worst;
    }
    for (int u = 0; u < U; u++) pthread_barrier_destroy(&rings[u].bar);
    for (int r = 0; r < R; r++) pthread_barrier_destroy(&ulys[r].bar);
    return worst;
}

TEST(threads_ring_and_usp_within_1e5) {
    static const int grid[][2] = { { 2, 1 }, { 3, 1 }, { 4, 1 }, { 2, 2 }, { 3, 2 }, { 2, 3 } };
    for (size_t gi = 0; gi < sizeof grid / sizeof grid[0]; gi++) {
        double worst = 0;
        for (int ci = 0; ci < RING_NCASES; ci++) {
            double e = run_grid(grid[gi][0], grid[gi][1], ci);
            worst = e > worst ? e : worst;
        }
        printf("  ring %d x ulysses %d: max rel err %.3g over %d cases\n", grid[gi][0],
               grid[gi][1], worst, RING_NCASES);
    }
}

/* USP with one ring slot is the Ulysses exchange: its bits. */
TEST(usp_one_slot_is_ulysses) {
    for (int ci = 0; ci < RING_NCASES; ci++) {
        double e = run_grid(1, 2, ci);
        CHECK_MSG(e == 0.0, "case %d: ring 1 x ulysses 2 differs from one device (%.3g)", ci, e);
    }
}

TEST(short_workspace_refused) {
    tdm_nn_ulysses_shape_t s = { 1, 2, 4, 1, { 6 } };
    tdm_nn_group_t one;
    tdm_nn_usp_sizes_t m;
    float x[6 * 8] = { 0 }, o[6 * 8], ws[4096];
    tdm_nn_group_single(&one);
    one.size = 2;   /* claims two ranks: the workspace check comes before any exchange */
    CHECK(tdm_nn_usp_sizes(&s, 0, 2, 0, 1, TDM_F32, &m) == TDM_OK && m.ws_bytes <= (int64_t)sizeof ws);
    CHECK(tdm_nn_ring_attention(NULL, &one, TDM_F32, o, x, x, x, &s, 1.0f, ws, m.ws_bytes - 1) ==
          TDM_ERR_INVALID_ARG);
    CHECK(strstr(tdm_last_error(), "rank 0") != NULL);
}

int main(void) {
    RUN(usp_split_covers_each_row_once);
    RUN(sizes_and_bad_arguments);
    RUN(one_rank_equals_attention_op);
    RUN(threads_ring_and_usp_within_1e5);
    RUN(usp_one_slot_is_ulysses);
    RUN(short_workspace_refused);
    return test_summary();
}
