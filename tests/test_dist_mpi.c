// label: dist
/* test_dist_mpi.c — the MPI process group under mpirun with 1, 2 and 3
 * ranks. Started plainly (as ctest does), it runs itself as
 *   mpirun --allow-run-as-root --oversubscribe -np P <self> --child P
 * and checks each job's exit status; in --child mode every rank runs the
 * collective checks (rank/size/local rank, split coverage, the shared
 * counter, gather order, allreduce, and every communicator op: broadcast,
 * allreduce sum/max, allgather(v), all_to_all, send/recv and sendrecv
 * rings, split into even/odd groups with collectives inside them; with
 * --groups SPEC the --parallel groups of SPEC at 2 to 8 ranks) and exits
 * nonzero on a failure, which makes mpirun's status nonzero. Skipped (exit 77) when the build has no
 * MPI or mpirun is not on PATH. */
#include <stdint.h>
#include <stdlib.h>
#include "dist/dist.h"
#include "test.h"

#ifdef TDM_HAVE_MPI

#include "test_mpi.h"

static tdm_dist_t *g_d;
static int g_expect_size;

static void free_strings(char **s, int n) {
    for (int i = 0; i < n; i++) free(s[i]);
    free(s);
}

TEST(child_rank_size) {
    int rank = tdm_dist_rank(g_d), size = tdm_dist_size(g_d);
    int lr = tdm_dist_local_rank(g_d), ls = tdm_dist_local_size(g_d);
    CHECK_MSG(size == g_expect_size, "size %d, launched with %d", size, g_expect_size);
    CHECK_MSG(rank >= 0 && rank < size, "rank %d of %d", rank, size);
    CHECK_MSG(lr >= 0 && lr < ls && ls <= size, "rank %d: local %d of %d (size %d)", rank, lr, ls, size);
    /* every rank a different number; their sum is 0+1+...+size-1 */
    double v[2] = { rank, 1 };
    CHECK(tdm_dist_allreduce_sum(g_d, v, 2) == TDM_OK);
    CHECK_MSG(v[0] == size * (size - 1) / 2.0 && v[1] == size, "rank sum %g, count %g", v[0], v[1]);

    /* per host: local ranks are 0..k-1 once each and local_size == k */
    char rec[320];
    snprintf(rec, sizeof rec, "%d %d %s", lr, ls, tdm_dist_host(g_d));
    char *recs[] = { rec };
    char **all = NULL;
    int nall = 0;
    CHECK_MSG(tdm_dist_gather_strings(g_d, recs, 1, &all, &nall) == TDM_OK, "%s", tdm_last_error());
    if (rank == 0) {
        CHECK_MSG(nall == size, "gathered %d records from %d ranks", nall, size);
        for (int i = 0; i < nall; i++) {
            int li, si, off = 0, seen = 0;
            CHECK(sscanf(all[i], "%d %d %n", &li, &si, &off) == 2);
            const char *host = all[i] + off;
            int used[64] = { 0 };
            for (int j = 0; j < nall; j++) {
                int lj, sj, offj = 0;
                if (sscanf(all[j], "%d %d %n", &lj, &sj, &offj) != 2 || strcmp(all[j] + offj, host)) continue;
                seen++;
                CHECK_MSG(sj == si, "host %s: local sizes %d and %d", host, si, sj);
                if (lj >= 0 && lj < 64) used[lj]++;
            }
            CHECK_MSG(seen == si, "host %s: %d ranks, local_size %d", host, seen, si);
            for (int k = 0; k < seen && k < 64; k++)
                CHECK_MSG(used[k] == 1, "host %s: local rank %d appears %d times", host, k, used[k]);
        }
    } else {
        CHECK(all == NULL && nall == 0);
    }
    free_strings(all, nall);
}

TEST(child_split_covers_once) {
    /* each index of [0, n) is in exactly one rank's block (allreduce of hits) */
    int rank = tdm_dist_rank(g_d), size = tdm_dist_size(g_d);
    for (int64_t n = 0; n <= 20; n++) {
        double hits[21] = { 0 };
        int64_t b, e, pad;
        tdm_split_between_processes_padded(n, rank, size, &b, &e, &pad);
        for (int64_t i = b; i < e; i++)
            if (i >= 0 && i < 21) hits[i] += 1;
        CHECK(tdm_dist_allreduce_sum(g_d, hits, 21) == TDM_OK);
        for (int64_t i = 0; i < 21; i++)
            CHECK_MSG(hits[i] == (i < n ? 1 : 0), "n %lld size %d: index %lld covered %g times",
                      (long long)n, size, (long long)i, hits[i]);
        double lens[2] = { (double)(e - b), (double)pad };
        CHECK(tdm_dist_allreduce_sum(g_d, lens, 2) == TDM_OK);
        CHECK_MSG(lens[0] == (double)n, "n %lld: block lengths sum to %g", (long long)n, lens[0]);
        if (size > 1)
            CHECK_MSG(lens[1] == (double)size * (double)((n + size - 1) / size),
                      "n %lld: padded lengths sum to %g", (long long)n, lens[1]);
    }
}

TEST(child_counter_hands_out_each_once) {
    enum { K = 200 };
    int rank = tdm_dist_rank(g_d), size = tdm_dist_size(g_d);
    for (int round = 0; round < 2; round++) {   /* reopening starts from 0 again */
        CHECK_MSG(tdm_dist_counter_open(g_d) == TDM_OK, "%s", tdm_last_error());
        char buf[K][24];
        char *mine[K];
        int nmine = 0;
        for (;;) {
            int64_t v = -1;
            tdm_status st = tdm_dist_counter_next(g_d, &v);
            CHECK_MSG(st == TDM_OK, "%s", tdm_last_error());
            if (st != TDM_OK || v >= K || v < 0 || nmine >= K) break;
            snprintf(buf[nmine], sizeof buf[nmine], "%lld", (long long)v);
            mine[nmine] = buf[nmine];
            nmine++;
            if ((v + rank) % 7 == 0) usleep(200);   /* let other ranks interleave */
        }
        CHECK_MSG(tdm_dist_counter_close(g_d) == TDM_OK, "%s", tdm_last_error());
        char **all = NULL;
        int nall = 0;
        CHECK_MSG(tdm_dist_gather_strings(g_d, mine, nmine, &all, &nall) == TDM_OK, "%s",
                  tdm_last_error());
        if (rank == 0) {
            int seen[K] = { 0 };
            CHECK_MSG(nall == K, "round %d, %d ranks: %d values handed out, want %d", round, size, nall, K);
            for (int i = 0; i < nall; i++) {
                long long v = atoll(all[i]);
                CHECK_MSG(v >= 0 && v < K, "value %lld out of range", v);
                if (v >= 0 && v < K) seen[v]++;
            }
            for (int v = 0; v < K; v++) CHECK_MSG(seen[v] == 1, "value %d handed out %d times", v, seen[v]);
        }
        free_strings(all, nall);
    }
}

TEST(child_gather_order) {
    /* rank r sends r + 1 records "r.i" (rank 1's second one empty); rank 0
     * gets rank 0's, then rank 1's, ... */
    int rank = tdm_dist_rank(g_d), size = tdm_dist_size(g_d);
    char buf[8][32];
    char *recs[8];
    int n = rank + 1 < 8 ? rank + 1 : 8;
    for (int i = 0; i < n; i++) {
        if (rank == 1 && i == 1) buf[i][0] = '\0';
        else snprintf(buf[i], sizeof buf[i], "%d.%d", rank, i);
        recs[i] = buf[i];
    }
    char **all = NULL;
    int nall = -1;
    CHECK_MSG(tdm_dist_gather_strings(g_d, recs, n, &all, &nall) == TDM_OK, "%s", tdm_last_error());
    if (rank == 0) {
        int k = 0;
        for (int r = 0; r < size; r++) {
            int nr = r + 1 < 8 ? r + 1 : 8;
            for (int i = 0; i < nr; i++, k++) {
                char want[32];
                if (r == 1 && i == 1) want[0] = '\0';
                else snprintf(want, sizeof want, "%d.%d", r, i);
                CHECK_MSG(k < nall && strcmp(all[k], want) == 0, "record %d: '%s' want '%s'", k,
                          k < nall ? all[k] : "(missing)", want);
            }
        }
        CHECK_MSG(nall == k, "gathered %d records, want %d", nall, k);
    } else {
        CHECK(all == NULL && nall == 0);
    }
    free_strings(all, nall > 0 ? nall : 0);
    /* a rank with no records */
    CHECK(tdm_dist_gather_strings(g_d, recs, rank == 0 ? 1 : 0, &all, &nall) == TDM_OK);
    if (rank == 0) CHECK(nall == 1 && strcmp(all[0], "0.0") == 0);
    free_strings(all, nall);
}

TEST(child_allreduce_barrier) {
    int rank = tdm_dist_rank(g_d), size = tdm_dist_size(g_d);
    double v[3] = { rank, 0.5, (double)rank * rank };
    CHECK(tdm_dist_allreduce_sum(g_d, v, 3) == TDM_OK);
    double s1 = 0, s2 = 0;
    for (int r = 0; r < size; r++) s1 += r, s2 += (double)r * r;
    CHECK_MSG(v[0] == s1 && v[1] == 0.5 * size && v[2] == s2, "got %g %g %g", v[0], v[1], v[2]);
    CHECK(tdm_dist_allreduce_sum(g_d, v, 0) == TDM_OK);
    CHECK(tdm_dist_barrier(g_d) == TDM_OK);
}

/* ---- the communicator (comm.h) ------------------------------------------ */

TEST(child_comm_broadcast) {
    tdm_comm_t *c = tdm_dist_world(g_d);
    int rank = tdm_comm_rank(c), size = tdm_comm_size(c);
    CHECK(c && strcmp(c->ops->name, "mpi") == 0);
    for (int root = 0; root < size; root++) {
        int32_t v[3] = { rank, rank * 10, -rank };
        float f[2] = { (float)rank + 0.5f, -1 };
        uint16_t h[1] = { (uint16_t)(rank + 100) };   /* a 16-bit dtype travels as bits */
        CHECK(tdm_comm_broadcast(c, v, 3, TDM_I32, root, NULL) == TDM_OK);
        CHECK(tdm_comm_broadcast(c, f, 2, TDM_F32, root, NULL) == TDM_OK);
        CHECK(tdm_comm_broadcast(c, h, 1, TDM_BF16, root, NULL) == TDM_OK);
        CHECK_MSG(v[0] == root && v[1] == root * 10 && v[2] == -root, "rank %d root %d: got %d %d %d",
                  rank, root, v[0], v[1], v[2]);
        CHECK_MSG(f[0] == (float)root + 0.5f && f[1] == -1, "rank %d root %d: F32 %g", rank, root, f[0]);
        CHECK_MSG(h[0] == root + 100, "rank %d root %d: BF16 bits %u", rank, root, h[0]);
    }
    int32_t v[1] = { 0 };
    CHECK(tdm_comm_broadcast(c, v, 1, TDM_I32, size, NULL) == TDM_ERR_INVALID_ARG);
    char want[64];
    snprintf(want, sizeof want, "on rank %d", tdm_dist_rank(g_d));
    CHECK_MSG(strstr(tdm_last_error(), want) != NULL, "error names no rank: %s", tdm_last_error());
}

TEST(child_comm_allreduce) {
    tdm_comm_t *c = tdm_dist_world(g_d);
    int rank = tdm_comm_rank(c), size = tdm_comm_size(c);
    float f[2] = { (float)rank, 0.25f }, fo[2];
    double g[2] = { (double)rank * 1e10, -(double)rank }, go[2];
    int32_t i[2] = { rank + 1, -rank }, io[2];
    int64_t l[2] = { (int64_t)rank << 40, 1 }, lo[2];
    int64_t s = (int64_t)size * (size - 1) / 2;
    CHECK(tdm_comm_allreduce(c, f, fo, 2, TDM_F32, TDM_REDUCE_SUM, NULL) == TDM_OK);
    CHECK_MSG(fo[0] == (float)s && fo[1] == 0.25f * size, "F32 sum %g %g", fo[0], fo[1]);
    CHECK(tdm_comm_allreduce(c, f, fo, 2, TDM_F32, TDM_REDUCE_MAX, NULL) == TDM_OK);
    CHECK_MSG(fo[0] == (float)(size - 1) && fo[1] == 0.25f, "F32 max %g %g", fo[0], fo[1]);
    CHECK(tdm_comm_allreduce(c, g, go, 2, TDM_F64, TDM_REDUCE_SUM, NULL) == TDM_OK);
    CHECK_MSG(go[0] == (double)s * 1e10 && go[1] == -(double)s, "F64 sum %g %g", go[0], go[1]);
    CHECK(tdm_comm_allreduce(c, g, go, 2, TDM_F64, TDM_REDUCE_MAX, NULL) == TDM_OK);
    CHECK_MSG(go[0] == (double)(size - 1) * 1e10 && go[1] == 0, "F64 max %g %g", go[0], go[1]);
    CHECK(tdm_comm_allreduce(c, i, io, 2, TDM_I32, TDM_REDUCE_SUM, NULL) == TDM_OK);
    CHECK_MSG(io[0] == s + size && io[1] == -s, "I32 sum %d %d", io[0], io[1]);
    CHECK(tdm_comm_allreduce(c, i, io, 2, TDM_I32, TDM_REDUCE_MAX, NULL) == TDM_OK);
    CHECK_MSG(io[0] == size && io[1] == 0, "I32 max %d %d", io[0], io[1]);
    CHECK(tdm_comm_allreduce(c, l, lo, 2, TDM_I64, TDM_REDUCE_SUM, NULL) == TDM_OK);
    CHECK_MSG(lo[0] == s << 40 && lo[1] == size, "I64 sum %lld %lld", (long long)lo[0], (long long)lo[1]);
    CHECK(tdm_comm_allreduce(c, l, l, 2, TDM_I64, TDM_REDUCE_MAX, NULL) == TDM_OK);   /* in place */
    CHECK_MSG(l[0] == (int64_t)(size - 1) << 40 && l[1] == 1, "I64 max %lld %lld", (long long)l[0],
              (long long)l[1]);
    int dummy_stream;
    CHECK(tdm_comm_allreduce(c, f, f, 2, TDM_F32, TDM_REDUCE_SUM, &dummy_stream) == TDM_ERR_UNSUPPORTED);
}

TEST(child_comm_allgather_all_to_all) {
    tdm_comm_t *c = tdm_dist_world(g_d);
    int rank = tdm_comm_rank(c), size = tdm_comm_size(c);
    enum { MAXR = 16 };
    if (size > MAXR) return;
    int64_t mine[2] = { rank * 10, rank * 10 + 1 }, all[2 * MAXR];
    CHECK(tdm_comm_allgather(c, mine, all, 2, TDM_I64, NULL) == TDM_OK);
    for (int r = 0; r < size; r++)
        CHECK_MSG(all[2 * r] == r * 10 && all[2 * r + 1] == r * 10 + 1, "rank %d: block %d is %lld %lld",
                  rank, r, (long long)all[2 * r], (long long)all[2 * r + 1]);

    /* rank r sends r + 1 bytes 'a'+r, placed with a one-byte gap after each */
    int64_t counts[MAXR], displs[MAXR], off = 0;
    for (int r = 0; r < size; r++) counts[r] = r + 1, displs[r] = off, off += r + 2;
    uint8_t send[MAXR], recv[MAXR * (MAXR + 2)];
    memset(send, 'a' + rank, sizeof send);
    memset(recv, '.', sizeof recv);
    CHECK(tdm_comm_allgatherv(c, send, rank + 1, recv, counts, displs, TDM_U8, NULL) == TDM_OK);
    char want[MAXR * (MAXR + 2) + 1];
    int k = 0;
    for (int r = 0; r < size; r++) {
        for (int j = 0; j <= r; j++) want[k++] = (char)('a' + r);
        want[k++] = '.';
    }
    CHECK_MSG(memcmp(recv, want, (size_t)k) == 0, "rank %d: allgatherv gave %.*s want %.*s", rank, k,
              (const char *)recv, k, want);

    /* block j of rank i's send goes to rank j: recv block i = i*100 + rank */
    int32_t a2a_s[2 * MAXR], a2a_r[2 * MAXR];
    for (int j = 0; j < size; j++) a2a_s[2 * j] = rank * 100 + j, a2a_s[2 * j + 1] = -(rank * 100 + j);
    CHECK(tdm_comm_all_to_all(c, a2a_s, a2a_r, 2, TDM_I32, NULL) == TDM_OK);
    for (int i = 0; i < size; i++)
        CHECK_MSG(a2a_r[2 * i] == i * 100 + rank && a2a_r[2 * i + 1] == -(i * 100 + rank),
                  "rank %d: all_to_all block %d is %d %d", rank, i, a2a_r[2 * i], a2a_r[2 * i + 1]);
}

TEST(child_comm_send_recv_ring) {
    tdm_comm_t *c = tdm_dist_world(g_d);
    int rank = tdm_comm_rank(c), size = tdm_comm_size(c);
    int right = (rank + 1) % size, left = (rank + size - 1) % size;
    /* sendrecv: each rank passes its token right, size times: every token
     * comes back home, having been seen by each rank once */
    int64_t tok[2] = { rank, 0 }, in[2];
    for (int step = 0; step < size; step++) {
        CHECK(tdm_comm_sendrecv(c, tok, right, in, left, 2, TDM_I64, 3, NULL) == TDM_OK);
        tok[0] = in[0], tok[1] = in[1] + 1;
    }
    CHECK_MSG(tok[0] == rank && tok[1] == size, "rank %d: token %lld back after %lld hops", rank,
              (long long)tok[0], (long long)tok[1]);
    /* plain send/recv: even ranks send first, odd ones receive first, so
     * no cycle waits */
    if (size > 1) {
        double out[3] = { rank, rank * 2.0, -1 }, got[3] = { 0, 0, 0 };
        if (rank % 2 == 0) {
            CHECK(tdm_comm_send(c, out, 3, TDM_F64, right, 5, NULL) == TDM_OK);
            CHECK(tdm_comm_recv(c, got, 3, TDM_F64, left, 5, NULL) == TDM_OK);
        } else {
            CHECK(tdm_comm_recv(c, got, 3, TDM_F64, left, 5, NULL) == TDM_OK);
            CHECK(tdm_comm_send(c, out, 3, TDM_F64, right, 5, NULL) == TDM_OK);
        }
        CHECK_MSG(got[0] == left && got[1] == left * 2.0 && got[2] == -1, "rank %d: got %g %g %g from %d",
                  rank, got[0], got[1], got[2], left);
        /* probe: nothing from the left until it sends; then ready without
         * receiving, and the message still arrives whole */
        int ready = -1;
        CHECK(tdm_comm_probe(c, left, 6, &ready) == TDM_OK && ready == 0);
        CHECK(tdm_comm_barrier(c) == TDM_OK);
        CHECK(tdm_comm_send(c, out, 3, TDM_F64, right, 6, NULL) == TDM_OK);   /* small: sent eagerly */
        for (int i = 0; i < 10000 && ready != 1; i++) {
            CHECK(tdm_comm_probe(c, left, 6, &ready) == TDM_OK);
            if (!ready) usleep(1000);
        }
        CHECK_MSG(ready == 1, "rank %d: no message from %d in 10 s", rank, left);
        CHECK(tdm_comm_probe(c, left, 7, &ready) == TDM_OK && ready == 0);   /* other tag */
        CHECK(tdm_comm_recv(c, got, 3, TDM_F64, left, 6, NULL) == TDM_OK && got[0] == left);
    }
}

TEST(child_comm_split_groups) {
    tdm_comm_t *c = tdm_dist_world(g_d), *g = NULL, *h = NULL;
    int rank = tdm_comm_rank(c), size = tdm_comm_size(c);
    /* even and odd ranks, ordered by descending world rank (key = -rank) */
    CHECK_MSG(tdm_comm_split(c, rank % 2, -rank, &g) == TDM_OK && g, "%s", tdm_last_error());
    if (!g) return;
    int gsize = 0, grank = 0, gsum = 0, gmax = -1;
    for (int r = 0; r < size; r++)
        if (r % 2 == rank % 2) {
            gsize++;
            gsum += r;
            if (r > gmax) gmax = r;
            if (r > rank) grank++;
        }
    CHECK_MSG(tdm_comm_size(g) == gsize && tdm_comm_rank(g) == grank, "rank %d: group rank %d of %d, "
              "want %d of %d", rank, tdm_comm_rank(g), tdm_comm_size(g), grank, gsize);
    CHECK(g->world_rank == rank && strcmp(g->host, c->host) == 0);
    CHECK(g->local_rank >= 0 && g->local_rank < g->local_size && g->local_size <= gsize);
    int32_t v[1] = { rank };
    CHECK(tdm_comm_allreduce(g, v, v, 1, TDM_I32, TDM_REDUCE_SUM, NULL) == TDM_OK);
    CHECK_MSG(v[0] == gsum, "rank %d: group sum %d want %d", rank, v[0], gsum);
    int32_t b[1] = { rank };
    CHECK(tdm_comm_broadcast(g, b, 1, TDM_I32, 0, NULL) == TDM_OK);   /* group rank 0: the highest */
    CHECK_MSG(b[0] == gmax, "rank %d: group broadcast %d want %d", rank, b[0], gmax);
    int32_t ranks[16];
    if (gsize <= 16) {
        CHECK(tdm_comm_allgather(g, v, ranks, 1, TDM_I32, NULL) == TDM_OK);   /* v = gsum everywhere */
        int32_t me[1] = { rank };
        CHECK(tdm_comm_allgather(g, me, ranks, 1, TDM_I32, NULL) == TDM_OK);
        for (int i = 0; i < gsize; i++)
            CHECK_MSG(ranks[i] == gmax - 2 * i, "rank %d: group member %d is world rank %d", rank, i,
                      ranks[i]);
    }
    /* a ring inside the group */
    int64_t tok = rank, in = -1;
    CHECK(tdm_comm_sendrecv(g, &tok, (tdm_comm_rank(g) + 1) % gsize, &in,
                            (tdm_comm_rank(g) + gsize - 1) % gsize, 1, TDM_I64, 0, NULL) == TDM_OK);
    /* group rank - 1 is world rank + 2; group rank 0's left is the group's
     * last rank, the lowest world rank of this parity */
    int64_t want_left = grank == 0 ? rank % 2 : rank + 2;
    CHECK_MSG(in == want_left, "rank %d: group ring gave %lld want %lld", rank, (long long)in,
              (long long)want_left);
    /* each group has its own counter: values 0..K-1 once per group */
    enum { K = 40 };
    CHECK(tdm_comm_counter_open(g) == TDM_OK);
    int64_t taken = 0, vsum = 0;
    for (;;) {
        int64_t x = -1;
        if (tdm_comm_counter_next(g, &x) != TDM_OK || x < 0 || x >= K) break;
        taken++, vsum += x;
        if ((x + rank) % 5 == 0) usleep(100);
    }
    CHECK(tdm_comm_counter_close(g) == TDM_OK);
    int64_t tv[2] = { taken, vsum };
    CHECK(tdm_comm_allreduce(g, tv, tv, 2, TDM_I64, TDM_REDUCE_SUM, NULL) == TDM_OK);
    CHECK_MSG(tv[0] == K && tv[1] == K * (K - 1) / 2, "rank %d: group counter handed out %lld values "
              "summing to %lld", rank, (long long)tv[0], (long long)tv[1]);
    /* the last rank in no group (color < 0): the others form one */
    int out_of = size > 1 && rank == size - 1;
    CHECK(tdm_comm_split(c, out_of ? -1 : 0, rank, &h) == TDM_OK);
    CHECK_MSG(out_of ? h == NULL : (h && tdm_comm_size(h) == (size > 1 ? size - 1 : 1) &&
                                    tdm_comm_rank(h) == rank),
              "rank %d: split with color -1 on the last rank", rank);
    if (h) CHECK(tdm_comm_barrier(h) == TDM_OK);
    tdm_comm_free(h);
    tdm_comm_free(g);
    CHECK(tdm_comm_barrier(c) == TDM_OK);   /* the world still works */
}

/* ---- the --parallel groups (groups.h) ------------------------------------ */

/* The world ranks of this rank's group along `dim`, in group order, as the
 * layout says (groups.h): the ranks whose coordinates differ from at's in
 * that dimension only (the image group: the same dp coordinate), ordered by
 * that coordinate (the image group: by rank). Returns how many. */
static int expected_members(const tdm_parallel_t *deg, const tdm_parallel_t *at, int dim, int *out) {
    int n = 0;
    const int world = deg->dp * tdm_parallel_per_image(deg);
    int lens[TDM_GROUP_COUNT] = {deg->dp, deg->cfg, deg->ring, deg->ulysses, deg->tp, 0};
    if (dim == TDM_GROUP_IMAGE) {
        for (int r = 0; r < world; r++) {
            tdm_parallel_t c;
            tdm_parallel_coords(deg, r, &c);
            if (c.dp == at->dp) out[n++] = r;
        }
        return n;
    }
    for (int i = 0; i < lens[dim]; i++) {
        tdm_parallel_t c = *at;
        int *f[TDM_GROUP_COUNT - 1] = {&c.dp, &c.cfg, &c.ring, &c.ulysses, &c.tp};
        *f[dim] = i;
        out[n++] = tdm_parallel_rank(deg, &c);
    }
    return n;
}

static const char *k_dim_names[TDM_GROUP_COUNT] = {"dp", "cfg", "ring", "ulysses", "tp", "image"};

/* The groups of g_d (made from --parallel `spec`): each group's size, this
 * rank's place in it (its coordinate), and an allgather of world ranks in
 * each that sees exactly the members the layout names, in order; a sum in
 * each that adds exactly theirs. */
TEST(child_parallel_groups) {
    tdm_groups_t *g = tdm_dist_groups(g_d);
    int rank = tdm_dist_rank(g_d), size = tdm_dist_size(g_d);
    enum { MAXR = 64 };
    CHECK(g != NULL && size <= MAXR);
    if (!g || size > MAXR) return;
    tdm_parallel_t want_at;
    tdm_parallel_coords(&g->deg, rank, &want_at);
    CHECK(g->deg.dp * tdm_parallel_per_image(&g->deg) == size);
    CHECK(memcmp(&want_at, &g->at, sizeof want_at) == 0);
    const int coord[TDM_GROUP_COUNT] = {g->at.dp, g->at.cfg, g->at.ring, g->at.ulysses, g->at.tp,
                                        rank % tdm_parallel_per_image(&g->deg)};
    for (int dim = 0; dim < TDM_GROUP_COUNT; dim++) {
        int want[MAXR], got[MAXR];
        const int n = expected_members(&g->deg, &g->at, dim, want);
        tdm_comm_t *c = g->comm[dim];
        CHECK_MSG(c && tdm_comm_size(c) == n && tdm_comm_rank(c) == coord[dim],
                  "rank %d: %s group: rank %d of %d, want %d of %d", rank, k_dim_names[dim],
                  tdm_comm_rank(c), tdm_comm_size(c), coord[dim], n);
        if (!c || tdm_comm_size(c) != n) continue;
        int32_t me = rank;
        CHECK(tdm_comm_allgather(c, &me, got, 1, TDM_I32, NULL) == TDM_OK);
        for (int i = 0; i < n; i++)
            CHECK_MSG(got[i] == want[i], "rank %d: %s group member %d is world rank %d, want %d", rank,
                      k_dim_names[dim], i, got[i], want[i]);
        int64_t sum = 0, bits = (int64_t)1 << rank, wsum = 0, wbits = 0;
        for (int i = 0; i < n; i++) wsum += want[i], wbits |= (int64_t)1 << want[i];
        int64_t v[2] = {rank, bits};
        CHECK(tdm_comm_allreduce(c, v, v, 2, TDM_I64, TDM_REDUCE_SUM, NULL) == TDM_OK);
        sum = v[0];
        CHECK_MSG(sum == wsum && v[1] == wbits, "rank %d: %s group sum %lld (members %llx), want %lld "
                  "(%llx)", rank, k_dim_names[dim], (long long)sum, (long long)v[1], (long long)wsum,
                  (long long)wbits);
    }
    /* the image broadcast: the image's rank 0 gives its world rank */
    int64_t b = rank;
    CHECK(tdm_dist_image_broadcast_i64(g_d, &b, 1) == TDM_OK);
    CHECK_MSG(b == rank - rank % tdm_parallel_per_image(&g->deg), "rank %d: image broadcast %lld", rank,
              (long long)b);
    CHECK(tdm_dist_image_rank(g_d) == coord[TDM_GROUP_IMAGE]);
}

/* A child of `--groups SPEC`: the world split by SPEC, then the checks. */
static int child_groups(const char *spec) {
    tdm_dist_params_t p;
    tdm_dist_params_init(&p);
    p.mpi_launched = 1;
    p.parallel = spec;
    if (tdm_dist_init(&g_d, &p) != TDM_OK) {
        printf("tdm_dist_init (--parallel %s): %s\n", spec, tdm_last_error());
        return EXIT_FAILURE;
    }
    RUN(child_parallel_groups);
    printf("rank %d of %d (--parallel %s): ", tdm_dist_rank(g_d), tdm_dist_size(g_d), spec);
    int rc = test_summary();
    tdm_dist_free(g_d);
    return rc;
}

/* The children are ranks mpirun started (run_mpi): they say so. */
static tdm_status child_dist_init(tdm_dist_t **d) {
    tdm_dist_params_t p;
    tdm_dist_params_init(&p);
    p.mpi_launched = 1;
    return tdm_dist_init(d, &p);
}

static int child_main(int expect_size) {
    g_expect_size = expect_size;
    if (child_dist_init(&g_d) != TDM_OK) {
        printf("tdm_dist_init: %s\n", tdm_last_error());
        return EXIT_FAILURE;
    }
    int rank = tdm_dist_rank(g_d);
    RUN(child_rank_size);
    RUN(child_split_covers_once);
    RUN(child_counter_hands_out_each_once);
    RUN(child_gather_order);
    RUN(child_allreduce_barrier);
    RUN(child_comm_broadcast);
    RUN(child_comm_allreduce);
    RUN(child_comm_allgather_all_to_all);
    RUN(child_comm_send_recv_ring);
    RUN(child_comm_split_groups);
    printf("rank %d of %d: ", rank, tdm_dist_size(g_d));
    int rc = test_summary();
    tdm_dist_free(g_d);
    return rc;
}

/* Rank 1 aborts while rank 0 waits in a barrier: the whole job must end. */
static int child_abort(void) {
    if (child_dist_init(&g_d) != TDM_OK) return EXIT_FAILURE;
    if (tdm_dist_rank(g_d) == 1) tdm_dist_abort(g_d, 7);
    tdm_dist_barrier(g_d);
    tdm_dist_free(g_d);
    return EXIT_SUCCESS;   /* reached only if the abort did not end the job */
}

TEST(mpirun_1_2_3_ranks) {
    for (int np = 1; np <= 3; np++) {
        char args[32];
        snprintf(args, sizeof args, "--child %d", np);
        int rc = tmpi_run(np, args, 120);
        CHECK_MSG(rc == 0, "mpirun -np %d: exit code %d", np, rc);
    }
}

TEST(mpirun_parallel_groups) {
    static const struct { int np; const char *spec; } k[] = {
        {2, "cfg=2"}, {4, "cfg=2"}, {4, "tp=2,ulysses=2"}, {6, "ring=3,cfg=2"},
        {8, "cfg=2,ring=2,tp=2"}, {3, ""},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        char args[64];
        snprintf(args, sizeof args, "--groups '%s'", k[i].spec);
        int rc = tmpi_run(k[i].np, args, 120);
        CHECK_MSG(rc == 0, "mpirun -np %d --parallel %s: exit code %d", k[i].np, k[i].spec, rc);
    }
    /* degrees that do not divide the world: every rank fails, the job ends */
    int rc = tmpi_run(3, "--groups cfg=2", 120);
    CHECK_MSG(rc != 0 && rc != 124, "mpirun -np 3 --parallel cfg=2: exit code %d (want a failure)", rc);
}

TEST(mpirun_abort_ends_job) {
    int rc = tmpi_run(2, "--abort", 120);
    CHECK_MSG(rc != 0 && rc != 124, "mpirun -np 2 with rank 1 aborting: exit code %d "
              "(want nonzero, and not the time limit's 124)", rc);
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "--child") == 0) return child_main(atoi(argv[2]));
    if (argc >= 2 && strcmp(argv[1], "--abort") == 0) return child_abort();
    if (argc >= 3 && strcmp(argv[1], "--groups") == 0) return child_groups(argv[2]);
    const int pre = tmpi_parent("test_dist_mpi", argv[0]);
    if (pre >= 0) return pre;
    RUN(mpirun_1_2_3_ranks);
    RUN(mpirun_parallel_groups);
    RUN(mpirun_abort_ends_job);
    return test_summary();
}

#else /* !TDM_HAVE_MPI */

int main(void) {
    (void)test_cur_failed;
    (void)test_summary;
    return test_skip("test_dist_mpi: this build has no MPI (libopenmpi-dev not found at configure time)");
}

#endif
