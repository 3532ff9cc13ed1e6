// label: unit
/* test_dist.c — accelerate's split_between_processes arithmetic (the spec's
 * examples and an exhaustive sweep) and the single-process group: counter,
 * gather, allreduce, barrier. Needs no MPI launcher. */
#include <stdint.h>
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
    tdm_status st = tdm_dist_init(&d);
    CHECK_MSG(st == TDM_OK && d, "init: %s", tdm_last_error());
    if (!d) return;
    CHECK(tdm_dist_rank(d) == 0 && tdm_dist_size(d) == 1);
    CHECK(tdm_dist_local_rank(d) == 0 && tdm_dist_local_size(d) == 1);
    CHECK(tdm_dist_host(d) && tdm_dist_host(d)[0]);

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

    double x[3] = { 1.5, -2, 0 };
    CHECK(tdm_dist_allreduce_sum(d, x, 3) == TDM_OK);
    CHECK(x[0] == 1.5 && x[1] == -2 && x[2] == 0);
    CHECK(tdm_dist_barrier(d) == TDM_OK);
    tdm_dist_abort(d, 3);   /* single process: returns */
    tdm_dist_free(d);
    tdm_dist_free(NULL);
}

int main(void) {
    RUN(split_17_over_8);
    RUN(split_3_over_2);
    RUN(split_fewer_items_than_ranks);
    RUN(split_zero_items);
    RUN(split_one_process);
    RUN(split_exhaustive);
    RUN(single_process_group);
    return test_summary();
}
