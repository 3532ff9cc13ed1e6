// label: unit
/* test_dist.c — accelerate's split_between_processes arithmetic (the spec's
 * examples and an exhaustive sweep), the single-process group (counter,
 * gather, allreduce, barrier) and every op of the single-process
 * communicator, with its argument checks. Needs no MPI launcher. */
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include "dist/dist.h"
#include "test.h"

/* [b, e) and padded length of `rank` out of `size` for n items. */
static void split(int64_t n, int rank, int size, int64_t *b, int64_t *e, int64_t *pad) {
    tdm_split_between_processes_padded(n, rank, size, b, e, pad);
}

TEST(split_17_over_8) {
    /* spec: [0,1,2],[3,4],...,[15,16] */
    static const int64_t want[8][2] = { {0, 3}, {3, 5}, {5, 7}, {7, 9}, {9, 11},
                                        {11, 13}, {13, 15}, {15, 17} };
    for (int r = 0; r < 8; r++) {
        int64_t b, e, pad;
        split(17, r, 8, &b, &e, &pad);
        CHECK_MSG(b == want[r][0] && e == want[r][1], "rank %d: got [%lld,%lld) want [%lld,%lld)", r,
                  (long long)b, (long long)e, (long long)want[r][0], (long long)want[r][1]);
        CHECK_MSG(pad == 3, "rank %d: padded_len %lld", r, (long long)pad);
    }
}

TEST(split_3_over_2) {
    /* ["A","B","C"] over 2 -> ["A","B"], ["C"]; padded -> ["A","B"], ["C","C"] */
    int64_t b, e, pad, b2, e2;
    tdm_split_between_processes(3, 0, 2, &b, &e);
    CHECK(b == 0 && e == 2);
    tdm_split_between_processes(3, 1, 2, &b2, &e2);
    CHECK(b2 == 2 && e2 == 3);
    split(3, 0, 2, &b, &e, &pad);
    CHECK(pad == 2);
    split(3, 1, 2, &b, &e, &pad);
    CHECK(b == 2 && e == 3 && pad == 2);
}

TEST(split_fewer_items_than_ranks) {
    /* N = 2 over 5: ranks 0, 1 get one item, ranks >= 2 empty */
    for (int r = 0; r < 5; r++) {
        int64_t b, e;
        tdm_split_between_processes(2, r, 5, &b, &e);
        if (r < 2) CHECK_MSG(b == r && e == r + 1, "rank %d: [%lld,%lld)", r, (long long)b, (long long)e);
        else CHECK_MSG(b == e, "rank %d: [%lld,%lld) not empty", r, (long long)b, (long long)e);
    }
    /* N = 1 over 4, padded: ["A"] on every rank (padded_len 1) */
    for (int r = 0; r < 4; r++) {
        int64_t b, e, pad;
        split(1, r, 4, &b, &e, &pad);
        CHECK_MSG(pad == 1, "rank %d: padded_len %lld", r, (long long)pad);
        CHECK(e - b == (r == 0 ? 1 : 0));
    }
}

TEST(split_zero_items) {
    for (int size = 1; size <= 4; size++)
        for (int r = 0; r < size; r++) {
            int64_t b = -1, e = -1, pad = -1;
            split(0, r, size, &b, &e, &pad);
            CHECK_MSG(b == 0 && e == 0 && pad == 0, "size %d rank %d: [%lld,%lld) pad %lld", size, r,
                      (long long)b, (long long)e, (long long)pad);
        }
}

TEST(split_one_process) {
    /* P == 1: the whole range, unpadded */
    int64_t b, e, pad;
    split(17, 0, 1, &b, &e, &pad);
    CHECK(b == 0 && e == 17 && pad == 17);
    tdm_split_between_processes(5, 0, 1, &b, &e);
    CHECK(b == 0 && e == 5);
}

TEST(split_exhaustive) {
    for (int64_t n = 0; n <= 50; n++)
        for (int size = 1; size <= 9; size++) {
            int64_t next = 0, q = n / size, r = n % size, minsz = INT64_MAX, maxsz = -1;
            for (int rank = 0; rank < size; rank++) {
                int64_t b, e, pad;
                split(n, rank, size, &b, &e, &pad);
                int64_t len = e - b;
                /* contiguous, in rank order: each block starts where the last ended */
                CHECK_MSG(b == next && e >= b, "n %lld size %d rank %d: [%lld,%lld), expected start %lld",
                          (long long)n, size, rank, (long long)b, (long long)e, (long long)next);
                next = e;
                if (len < minsz) minsz = len;
                if (len > maxsz) maxsz = len;
                /* the first n % size ranks are the larger ones */
                int64_t want = q + (rank < r ? 1 : 0);
                CHECK_MSG(len == want, "n %lld size %d rank %d: length %lld want %lld", (long long)n, size,
                          rank, (long long)len, (long long)want);
                int64_t wpad = size == 1 ? n : q + (r > 0 ? 1 : 0);
                CHECK_MSG(pad == wpad && pad >= len, "n %lld size %d rank %d: padded_len %lld want %lld",
                          (long long)n, size, rank, (long long)pad, (long long)wpad);
            }
            CHECK_MSG(next == n, "n %lld size %d: blocks end at %lld", (long long)n, size, (long long)next);
            CHECK_MSG(maxsz - minsz <= 1, "n %lld size %d: sizes %lld..%lld", (long long)n, size,
                      (long long)minsz, (long long)maxsz);
        }
}

TEST(single_process_group) {
    tdm_dist_t *d = NULL;
    tdm_dist_params_t p;
    tdm_dist_params_init(&p);
    CHECK(p.mpi_launched == 0);
    tdm_status st = tdm_dist_init(&d, &p);
    CHECK_MSG(st == TDM_OK && d, "init: %s", tdm_last_error());
    if (!d) return;
    CHECK(tdm_dist_rank(d) == 0 && tdm_dist_size(d) == 1);
    CHECK(tdm_dist_local_rank(d) == 0 && tdm_dist_local_size(d) == 1);
    CHECK(tdm_dist_host(d) && tdm_dist_host(d)[0]);
    CHECK(tdm_dist_world(d) && strcmp(tdm_dist_world(d)->ops->name, "single") == 0);
    CHECK(tdm_dist_world(NULL) == NULL);

    /* counter: 0, 1, 2, ... and again from 0 after reopening */
    int64_t v = -1;
    CHECK(tdm_dist_counter_next(d, &v) != TDM_OK);   /* not open */
    CHECK(tdm_dist_counter_open(d) == TDM_OK);
    CHECK(tdm_dist_counter_open(d) != TDM_OK);       /* already open */
    for (int64_t i = 0; i < 5; i++) {
        CHECK(tdm_dist_counter_next(d, &v) == TDM_OK);
        CHECK_MSG(v == i, "counter gave %lld want %lld", (long long)v, (long long)i);
    }
    CHECK(tdm_dist_counter_close(d) == TDM_OK);
    CHECK(tdm_dist_counter_close(d) != TDM_OK);
    CHECK(tdm_dist_counter_open(d) == TDM_OK);
    CHECK(tdm_dist_counter_next(d, &v) == TDM_OK && v == 0);
    CHECK(tdm_dist_counter_close(d) == TDM_OK);

    /* gather: rank 0 gets its own records back, copied */
    char a[] = "alpha", b[] = "", c[] = "gamma\tdelta";
    char *recs[] = { a, b, c };
    char **all = NULL;
    int nall = -1;
    st = tdm_dist_gather_strings(d, recs, 3, &all, &nall);
    CHECK_MSG(st == TDM_OK, "gather: %s", tdm_last_error());
    CHECK(nall == 3 && all);
    if (all && nall == 3) {
        CHECK(strcmp(all[0], "alpha") == 0 && all[0] != a);
        CHECK(strcmp(all[1], "") == 0);
        CHECK(strcmp(all[2], "gamma\tdelta") == 0);
    }
    for (int i = 0; i < nall; i++) free(all[i]);
    free(all);
    all = NULL;
    st = tdm_dist_gather_strings(d, NULL, 0, &all, &nall);
    CHECK(st == TDM_OK && nall == 0);
    free(all);
    CHECK(tdm_dist_gather_strings(d, recs, -1, &all, &nall) == TDM_ERR_INVALID_ARG);
    /* a NULL record fails the call with its index, and hands out nothing */
    char *holed[] = { a, NULL, c };
    nall = -1;
    st = tdm_dist_gather_strings(d, holed, 3, &all, &nall);
    CHECK_MSG(st == TDM_ERR_INVALID_ARG && strstr(tdm_last_error(), "record 1 is NULL"),
              "gather with a NULL record: status %d, %s", (int)st, tdm_last_error());
    CHECK(all == NULL && nall == 0);

    double x[3] = { 1.5, -2, 0 };
    CHECK(tdm_dist_allreduce_sum(d, x, 3) == TDM_OK);
    CHECK(x[0] == 1.5 && x[1] == -2 && x[2] == 0);
    CHECK(tdm_dist_barrier(d) == TDM_OK);
    tdm_dist_abort(d, 3);   /* single process: returns */
    tdm_dist_free(d);
    tdm_dist_free(NULL);
}

/* A fresh single-process communicator, or NULL (a failed check). */
static tdm_comm_t *single(void) {
    tdm_comm_t *c = NULL;
    tdm_status st = tdm_comm_single_create(&c);
    CHECK_MSG(st == TDM_OK && c, "tdm_comm_single_create: %s", tdm_last_error());
    return c;
}

TEST(single_comm_identity) {
    tdm_comm_t *c = single();
    if (!c) return;
    CHECK(tdm_comm_rank(c) == 0 && tdm_comm_size(c) == 1);
    CHECK(c->local_rank == 0 && c->local_size == 1 && c->host[0]);
    CHECK(strcmp(c->ops->name, "single") == 0);
    CHECK(tdm_comm_barrier(c) == TDM_OK);
    CHECK(tdm_comm_barrier(NULL) == TDM_ERR_INVALID_ARG);
    tdm_comm_abort(c, 5);   /* one process: returns */
    tdm_comm_free(c);
    tdm_comm_free(NULL);
}

TEST(single_comm_broadcast_allreduce) {
    tdm_comm_t *c = single();
    if (!c) return;
    int32_t b[3] = { 7, -1, 9 };
    CHECK(tdm_comm_broadcast(c, b, 3, TDM_I32, 0, NULL) == TDM_OK);
    CHECK(b[0] == 7 && b[1] == -1 && b[2] == 9);
    CHECK(tdm_comm_broadcast(c, b, 3, TDM_I32, 1, NULL) == TDM_ERR_INVALID_ARG);   /* no rank 1 */
    CHECK(strstr(tdm_last_error(), "root 1") != NULL);

    /* one process: the reduction of one contribution is itself, for every
     * dtype and op, in place and not */
    float f[2] = { 1.5f, -3 }, fo[2] = { 0, 0 };
    double g[2] = { 0.25, 1e300 }, go[2] = { 0, 0 };
    int32_t i[2] = { -4, INT32_MAX }, io[2] = { 0, 0 };
    int64_t l[2] = { INT64_MIN, 3 }, lo[2] = { 0, 0 };
    for (int op = TDM_REDUCE_SUM; op <= TDM_REDUCE_MAX; op++) {
        CHECK(tdm_comm_allreduce(c, f, fo, 2, TDM_F32, op, NULL) == TDM_OK);
        CHECK_MSG(fo[0] == 1.5f && fo[1] == -3, "op %d: F32 %g %g", op, fo[0], fo[1]);
        CHECK(tdm_comm_allreduce(c, g, go, 2, TDM_F64, op, NULL) == TDM_OK);
        CHECK_MSG(go[0] == 0.25 && go[1] == 1e300, "op %d: F64 %g %g", op, go[0], go[1]);
        CHECK(tdm_comm_allreduce(c, i, io, 2, TDM_I32, op, NULL) == TDM_OK);
        CHECK_MSG(io[0] == -4 && io[1] == INT32_MAX, "op %d: I32 %d %d", op, io[0], io[1]);
        CHECK(tdm_comm_allreduce(c, l, lo, 2, TDM_I64, op, NULL) == TDM_OK);
        CHECK_MSG(lo[0] == INT64_MIN && lo[1] == 3, "op %d: I64 %lld %lld", op, (long long)lo[0],
                  (long long)lo[1]);
        CHECK(tdm_comm_allreduce(c, l, l, 2, TDM_I64, op, NULL) == TDM_OK);   /* in place */
        CHECK(l[0] == INT64_MIN && l[1] == 3);
    }
    uint16_t h[1] = { 0 };
    CHECK(tdm_comm_allreduce(c, h, h, 1, TDM_F16, TDM_REDUCE_SUM, NULL) == TDM_ERR_UNSUPPORTED);
    CHECK(tdm_comm_allreduce(c, f, f, 2, TDM_F32, (tdm_reduce_op)7, NULL) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_comm_allreduce(c, f, f, -1, TDM_F32, TDM_REDUCE_SUM, NULL) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_comm_allreduce(c, NULL, f, 2, TDM_F32, TDM_REDUCE_SUM, NULL) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_comm_allreduce(c, NULL, NULL, 0, TDM_F32, TDM_REDUCE_SUM, NULL) == TDM_OK);
    /* a stream means device buffers, which this communicator does not take */
    int dummy_stream;
    CHECK(tdm_comm_allreduce(c, f, f, 2, TDM_F32, TDM_REDUCE_SUM, &dummy_stream) == TDM_ERR_UNSUPPORTED);
    CHECK(strstr(tdm_last_error(), "host buffers") != NULL);
    tdm_comm_free(c);
}

TEST(single_comm_gathers_all_to_all) {
    tdm_comm_t *c = single();
    if (!c) return;
    int64_t s[3] = { 4, 5, 6 }, r[3] = { 0, 0, 0 };
    CHECK(tdm_comm_allgather(c, s, r, 3, TDM_I64, NULL) == TDM_OK);
    CHECK_MSG(r[0] == 4 && r[1] == 5 && r[2] == 6, "allgather %lld %lld %lld", (long long)r[0],
              (long long)r[1], (long long)r[2]);

    /* allgatherv puts this rank's elements at its displacement */
    uint8_t bytes[2] = { 'x', 'y' }, out[5] = { '.', '.', '.', '.', '.' };
    int64_t counts[1] = { 2 }, displs[1] = { 2 };
    CHECK(tdm_comm_allgatherv(c, bytes, 2, out, counts, displs, TDM_U8, NULL) == TDM_OK);
    CHECK_MSG(memcmp(out, "..xy.", 5) == 0, "allgatherv gave %.5s", (const char *)out);
    counts[0] = 3;   /* disagrees with the count sent */
    CHECK(tdm_comm_allgatherv(c, bytes, 2, out, counts, displs, TDM_U8, NULL) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_comm_allgatherv(c, bytes, 2, out, NULL, displs, TDM_U8, NULL) == TDM_ERR_INVALID_ARG);

    float a[2] = { 1, 2 }, b[2] = { 0, 0 };
    CHECK(tdm_comm_all_to_all(c, a, b, 2, TDM_F32, NULL) == TDM_OK);
    CHECK(b[0] == 1 && b[1] == 2);
    CHECK(tdm_comm_all_to_all(c, a, b, 2, TDM_DTYPE_COUNT, NULL) == TDM_ERR_INVALID_ARG);
    tdm_comm_free(c);
}

TEST(single_comm_send_recv) {
    tdm_comm_t *c = single();
    if (!c) return;
    /* sends to self are queued and matched by tag, in order */
    int32_t m1[2] = { 1, 2 }, m2[1] = { 3 }, m3[2] = { 4, 5 }, got[2] = { 0, 0 };
    CHECK(tdm_comm_send(c, m1, 2, TDM_I32, 0, 1, NULL) == TDM_OK);
    CHECK(tdm_comm_send(c, m2, 1, TDM_I32, 0, 2, NULL) == TDM_OK);
    CHECK(tdm_comm_send(c, m3, 2, TDM_I32, 0, 1, NULL) == TDM_OK);
    m1[0] = -1;   /* the queued copy is not the caller's buffer */
    CHECK(tdm_comm_recv(c, got, 1, TDM_I32, 0, 2, NULL) == TDM_OK && got[0] == 3);
    CHECK(tdm_comm_recv(c, got, 2, TDM_I32, 0, 1, NULL) == TDM_OK);
    CHECK_MSG(got[0] == 1 && got[1] == 2, "first tag-1 message gave %d %d", got[0], got[1]);
    CHECK(tdm_comm_recv(c, got, 1, TDM_I32, 0, 1, NULL) == TDM_ERR_INVALID_ARG);   /* size */
    CHECK(tdm_comm_recv(c, got, 2, TDM_I32, 0, 1, NULL) == TDM_OK && got[0] == 4 && got[1] == 5);
    CHECK(tdm_comm_recv(c, got, 2, TDM_I32, 0, 1, NULL) == TDM_ERR_INVALID_ARG);   /* none left */
    CHECK(tdm_comm_send(c, m1, 2, TDM_I32, 1, 0, NULL) == TDM_ERR_INVALID_ARG);    /* no rank 1 */
    CHECK(tdm_comm_send(c, m1, 2, TDM_I32, 0, -1, NULL) == TDM_ERR_INVALID_ARG);   /* tag */
    int ready = -1;   /* probe: a queued message of that tag, no other */
    CHECK(tdm_comm_probe(c, 0, 9, &ready) == TDM_OK && ready == 0);
    CHECK(tdm_comm_send(c, m1, 2, TDM_I32, 0, 9, NULL) == TDM_OK);   /* left queued: freed */
    CHECK(tdm_comm_probe(c, 0, 9, &ready) == TDM_OK && ready == 1);
    CHECK(tdm_comm_probe(c, 0, 8, &ready) == TDM_OK && ready == 0);
    CHECK(tdm_comm_probe(c, 1, 9, &ready) == TDM_ERR_INVALID_ARG);   /* no rank 1 */
    CHECK(tdm_comm_probe(c, 0, -2, &ready) == TDM_ERR_INVALID_ARG);

    double x[2] = { 1, 2 }, y[2] = { 0, 0 };
    CHECK(tdm_comm_sendrecv(c, x, 0, y, 0, 2, TDM_F64, 0, NULL) == TDM_OK);
    CHECK(y[0] == 1 && y[1] == 2);
    CHECK(tdm_comm_sendrecv(c, x, 0, y, 1, 2, TDM_F64, 0, NULL) == TDM_ERR_INVALID_ARG);
    tdm_comm_free(c);
}

TEST(single_comm_split_counter) {
    tdm_comm_t *c = single(), *sub = NULL, *none = (tdm_comm_t *)1;
    if (!c) return;
    CHECK(tdm_comm_split(c, -1, 0, &none) == TDM_OK && none == NULL);   /* in no group */
    CHECK(tdm_comm_split(c, 3, 0, &sub) == TDM_OK && sub);
    if (sub) {
        CHECK(tdm_comm_rank(sub) == 0 && tdm_comm_size(sub) == 1);
        CHECK(strcmp(sub->host, c->host) == 0);
        int64_t v[1] = { 11 };
        CHECK(tdm_comm_allreduce(sub, v, v, 1, TDM_I64, TDM_REDUCE_MAX, NULL) == TDM_OK && v[0] == 11);
        /* each communicator has its own counter */
        int64_t a = -1, b = -1;
        CHECK(tdm_comm_counter_open(c) == TDM_OK);
        CHECK(tdm_comm_counter_open(sub) == TDM_OK);
        CHECK(tdm_comm_counter_next(c, &a) == TDM_OK && a == 0);
        CHECK(tdm_comm_counter_next(c, &a) == TDM_OK && a == 1);
        CHECK(tdm_comm_counter_next(sub, &b) == TDM_OK && b == 0);
        CHECK(tdm_comm_counter_close(sub) == TDM_OK);
        CHECK(tdm_comm_counter_next(sub, &b) == TDM_ERR_INVALID_ARG);
        CHECK(tdm_comm_counter_close(c) == TDM_OK);
        CHECK(tdm_comm_counter_close(c) == TDM_ERR_INVALID_ARG);
    }
    tdm_comm_free(sub);
    tdm_comm_free(c);
}

TEST(mpi_comm_absent_says_so) {
    /* only the build without MPI is checked here: with MPI, creating the
     * world outside a launcher would start a singleton MPI job */
    if (tdm_comm_mpi_built()) return;
    tdm_comm_t *c = (tdm_comm_t *)1;
    CHECK(tdm_comm_mpi_create(&c) == TDM_ERR_UNSUPPORTED && c == NULL);
    CHECK(strstr(tdm_last_error(), "not built with MPI") != NULL);
    CHECK(!tdm_comm_mpi_running());
}

TEST(dist_params_null_and_launched) {
    tdm_dist_t *d = NULL;
    CHECK(tdm_dist_init(NULL, NULL) == TDM_ERR_INVALID_ARG);
    /* NULL params: the defaults, one process */
    CHECK_MSG(tdm_dist_init(&d, NULL) == TDM_OK && d, "init: %s", tdm_last_error());
    CHECK(tdm_dist_size(d) == 1 && tdm_dist_rank(d) == 0);
    tdm_dist_free(d);
    d = NULL;
    /* launched, in a build without MPI: a warning and rank 0 of 1 (with MPI
     * it would start a singleton MPI job, which test_dist_mpi covers) */
    if (tdm_comm_mpi_built()) return;
    tdm_dist_params_t p;
    tdm_dist_params_init(&p);
    p.mpi_launched = 1;
    CHECK_MSG(tdm_dist_init(&d, &p) == TDM_OK && d, "init: %s", tdm_last_error());
    CHECK(tdm_dist_size(d) == 1 && tdm_dist_rank(d) == 0);
    CHECK(d && strcmp(tdm_dist_world(d)->ops->name, "single") == 0);
    tdm_dist_free(d);
}

int main(void) {
    RUN(split_17_over_8);
    RUN(split_3_over_2);
    RUN(split_fewer_items_than_ranks);
    RUN(split_zero_items);
    RUN(split_one_process);
    RUN(split_exhaustive);
    RUN(single_process_group);
    RUN(dist_params_null_and_launched);
    RUN(single_comm_identity);
    RUN(single_comm_broadcast_allreduce);
    RUN(single_comm_gathers_all_to_all);
    RUN(single_comm_send_recv);
    RUN(single_comm_split_counter);
    RUN(mpi_comm_absent_says_so);
    return test_summary();
}
