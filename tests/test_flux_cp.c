// label: unit
/* test_flux_cp.c — FLUX context parallelism (tdm_flux_forward_cp) in one
 * process: grids of ring R × Ulysses U ranks as threads (in-process nn
 * groups: compute serialized by one lock, the exchanges in shared memory),
 * each rank with its own model and CPU device, on the three tiny FLUX
 * fixtures (2 and 3 heads: padding where U does not divide them) and shapes
 * whose text and image lengths the ranks do not divide (ranks without text
 * rows). Ulysses alone (U = 2, 3, 4): every rank's gathered output equals
 * tdm_flux_forward's byte for byte. Ring 2, ring 3 and USP 2 × 2: within
 * 1e-5 relative of it (ring attention merges key blocks in float32 in
 * another order: float tolerance, not bits; the measured errors are
 * printed). Also: no groups and one-rank groups are the one-device
 * forward, argument errors, and each rank's device memory within
 * tdm_flux_work_bytes_cp. The MPI twin is test_flux_cp_mpi.c. */
#include <pthread.h>

#include "backend/ops.h"
#include "nn/group.h"
#include "test_flux_cp.h"

#define MAXN 4       /* ranks of a grid */
#define FCP_TOL 1e-5 /* ring / USP against the one-device forward */

/* One in-process group: its barrier and the send buffers posted; `big`,
 * shared by all groups, is held by a rank whenever it is outside an
 * exchange, so the ranks' compute runs one at a time. */
typedef struct {
    pthread_mutex_t *big;
    pthread_barrier_t bar;
    const void *send[MAXN];
} tgroup_t;

typedef struct {
    tgroup_t *t;
    tdm_nn_group_t g;
} tmember_t;

typedef struct {
    tmember_t uly, ring;
    tdm_flux_cp_groups_t groups;
    tdm_device_t dev;
    tdm_flux_t *m;
    const fcp_io_t *io;
    float *out;
    tdm_status st;
    char err[256];
} trank_t;

/* Publishes send, lets every rank of the group read every other's, then
 * waits until all have read before the send buffers may change. */
static void t_exchange(tmember_t *me, const void *send, void (*copy)(tmember_t *, void *),
                       void *arg) {
    tgroup_t *t = me->t;
    t->send[me->g.rank] = send;
    pthread_mutex_unlock(t->big);
    pthread_barrier_wait(&t->bar);
    copy(me, arg);
    pthread_barrier_wait(&t->bar);
    pthread_mutex_lock(t->big);
}

typedef struct { void *recv; size_t blk; const int64_t *counts, *displs; int from; } targs_t;

static void copy_a2a(tmember_t *me, void *arg) {
    targs_t *a = arg;
    for (int i = 0; i < me->g.size; i++)
        memcpy((char *)a->recv + (size_t)i * a->blk,
               (const char *)me->t->send[i] + (size_t)me->g.rank * a->blk, a->blk);
}

static void copy_agv(tmember_t *me, void *arg) {
    targs_t *a = arg;
    for (int i = 0; i < me->g.size; i++)
        memcpy((char *)a->recv + (size_t)a->displs[i] * a->blk, me->t->send[i],
               (size_t)a->counts[i] * a->blk);
}

static void copy_from(tmember_t *me, void *arg) {
    targs_t *a = arg;
    if (a->from >= 0) memcpy(a->recv, me->t->send[a->from], a->blk);
}

static tdm_status t_all_to_all(void *ctx, tdm_device_t *dev, const void *send, void *recv,
                               int64_t count, tdm_dtype dt) {
    targs_t a = { recv, (size_t)count * tdm_dtype_size(dt), NULL, NULL, -1 };
    (void)dev;
    t_exchange(ctx, send, copy_a2a, &a);
    return TDM_OK;
}

static tdm_status t_allgatherv(void *ctx, tdm_device_t *dev, const void *send, int64_t count,
                               void *recv, const int64_t *counts, const int64_t *displs,
                               tdm_dtype dt) {
    targs_t a = { recv, tdm_dtype_size(dt), counts, displs, -1 };
    (void)dev, (void)count;
    t_exchange(ctx, send, copy_agv, &a);
    return TDM_OK;
}

/* Every rank of the group calls it at once (the ring shift). */
static tdm_status t_sendrecv(void *ctx, tdm_device_t *dev, const void *send, int to, void *recv,
                             int from, int64_t count, tdm_dtype dt) {
    targs_t a = { recv, (size_t)count * tdm_dtype_size(dt), NULL, NULL, from };
    (void)dev, (void)to;
    t_exchange(ctx, send, copy_from, &a);
    return TDM_OK;
}

static void *t_rank_main(void *arg) {
    trank_t *me = arg;
    const fcp_io_t *io = me->io;
    pthread_mutex_lock(me->uly.t->big);
    me->st = tdm_flux_forward_cp(me->m, &me->groups, io->img, io->B, io->N, io->txt, io->T,
                                 io->pooled, io->t, io->g, io->iid, io->tid, me->out);
    if (me->st != TDM_OK) snprintf(me->err, sizeof(me->err), "%s", tdm_last_error());
    pthread_mutex_unlock(me->uly.t->big);
    return NULL;
}

static void member(tmember_t *m, tgroup_t *t, int rank, int size) {
    m->t = t;
    m->g.rank = rank, m->g.size = size, m->g.ctx = m;
    m->g.all_to_all = t_all_to_all, m->g.allgatherv = t_allgatherv, m->g.sendrecv = t_sendrecv;
}

/* An R × U grid of ranks (models r[i].m loaded; rank i = ring i / U,
 * Ulysses i % U, as dist/groups.h lays them out) on io: every rank's output
 * against io->ref (the one-device forward), bit for bit without a ring,
 * within FCP_TOL relative with one. Returns the largest error seen. */
static double run_ranks(trank_t *r, int R, int U, const fcp_io_t *io, const char *fix) {
    pthread_mutex_t big = PTHREAD_MUTEX_INITIALIZER;
    tgroup_t rings[MAXN], ulys[MAXN];
    pthread_t th[MAXN];
    const int n = R * U;
    const int64_t nout = io->B * io->N * io->Cout;
    double worst = 0;
    for (int u = 0; u < U; u++)
        rings[u].big = &big, pthread_barrier_init(&rings[u].bar, NULL, (unsigned)R);
    for (int k = 0; k < R; k++)
        ulys[k].big = &big, pthread_barrier_init(&ulys[k].bar, NULL, (unsigned)U);
    for (int i = 0; i < n; i++) {
        member(&r[i].uly, &ulys[i / U], i % U, U);
        member(&r[i].ring, &rings[i % U], i / U, R);
        r[i].groups.ulysses = &r[i].uly.g, r[i].groups.ring = &r[i].ring.g;
        r[i].io = io, r[i].st = TDM_OK, r[i].err[0] = 0;
        r[i].out = fcp_alloc(nout);
        if (!r[i].out || pthread_create(&th[i], NULL, t_rank_main, &r[i]) != 0) {
            CHECK_MSG(0, "out of memory or pthread_create failed");
            abort();   /* the started ranks would wait forever */
        }
    }
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < n; i++) {
        const float *want = io->ref;
        CHECK_MSG(r[i].st == TDM_OK, "%s ring %d x ulysses %d rank %d: %s", fix, R, U, i,
                  r[i].err);
        if (r[i].st != TDM_OK) continue;
        if (R > 1) {
            const double e = test_rel_err(r[i].out, want, (long)nout);
            worst = e > worst || e != e ? e : worst;
            CHECK_MSG(e <= FCP_TOL, "%s B %lld T %lld N %lld ring %d x ulysses %d rank %d: rel err "
                      "%.3g", fix, (long long)io->B, (long long)io->T, (long long)io->N, R, U, i, e);
            continue;
        }
        int64_t d = fcp_first_diff(r[i].out, want, nout);
        CHECK_MSG(d < 0, "%s B %lld T %lld N %lld U %d rank %d: out[%lld] = %.9g, %s %.9g "
                  "(%.3g apart)", fix, (long long)io->B, (long long)io->T, (long long)io->N, U,
                  i, (long long)d, d < 0 ? 0.0 : r[i].out[d], "one device",
                  d < 0 ? 0.0 : want[d], d < 0 ? 0.0 : fabs(r[i].out[d] - want[d]));
    }
    for (int i = 0; i < n; i++) free(r[i].out);
    for (int u = 0; u < U; u++) pthread_barrier_destroy(&rings[u].bar);
    for (int k = 0; k < R; k++) pthread_barrier_destroy(&ulys[k].bar);
    return worst;
}

/* The grids: Ulysses 2, 3, 4 (bit for bit), ring 2, ring 3, USP 2 × 2. */
static const struct { int R, U; } fcp_grids[] = { { 1, 2 }, { 1, 3 }, { 1, 4 },
                                                  { 2, 1 }, { 3, 1 }, { 2, 2 } };
#define FCP_NGRIDS ((int)(sizeof fcp_grids / sizeof fcp_grids[0]))

/* The model of root (weights variant) over every grid on each shape,
 * outputs checked as run_ranks says (ring errors printed), and each rank's
 * device memory (beyond its weights) within tdm_flux_work_bytes_cp. */
static void check_model(const char *root, const char *variant, const fcp_shape_t *shapes,
                        int nshapes) {
    char cfg[1100];
    tdm_device_t dev;
    tdm_flux_t *ref = NULL;
    snprintf(cfg, sizeof cfg, "%s/transformer/config.json", root);
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    if (tdm_flux_load(&ref, root, "transformer", variant, &dev) != TDM_OK) {
        CHECK_MSG(0, "%s: %s", root, tdm_last_error());
        return;
    }
    for (int gi = 0; gi < FCP_NGRIDS; gi++) {
        const int R = fcp_grids[gi].R, U = fcp_grids[gi].U, n = R * U;
        trank_t r[MAXN];
        double worst = 0;
        memset(r, 0, sizeof r);
        for (int i = 0; i < n; i++) {
            tdm_device_init(&r[i].dev, TDM_DEV_CPU, i + 1);
            if (tdm_flux_load(&r[i].m, root, "transformer", variant, &r[i].dev) != TDM_OK)
                CHECK_MSG(0, "%s rank %d: %s", root, i, tdm_last_error());
        }
        for (int si = 0; si < nshapes && r[n - 1].m && r[0].m; si++) {
            fcp_io_t io;
            const fcp_shape_t *s = &shapes[si];
            int64_t est = 0;
            if (fcp_io_make(ref, s, (uint32_t)(17 * si + n), &io)) {
                for (int i = 0; i < n; i++) r[i].dev.peak_bytes = r[i].dev.cur_bytes;
                const double e = run_ranks(r, R, U, &io, root);
                worst = e > worst ? e : worst;
                CHECK(tdm_flux_work_bytes_cp(cfg, &r[0].dev, s->B, s->N, s->T, U, R, &est) ==
                      TDM_OK);
                for (int i = 0; i < n; i++) {
                    int64_t used = r[i].dev.peak_bytes - tdm_flux_info(r[i].m)->param_bytes;
                    CHECK_MSG(used <= est, "%s ring %d x ulysses %d rank %d: %lld device bytes, "
                              "estimate %lld", root, R, U, i, (long long)used, (long long)est);
                }
            }
            fcp_io_free(&io);
        }
        if (R > 1)
            printf("  %s: ring %d x ulysses %d: max rel err %.3g over %d shapes\n", root, R, U,
                   worst, nshapes);
        for (int i = 0; i < n; i++) tdm_flux_free(r[i].m);
    }
    tdm_flux_free(ref);
}

/* The wide model (see test_flux_cp.h): every rank's output is the
 * one-device output byte for byte under Ulysses (3 heads: padded over 2
 * and 4 ranks), within 1e-5 with a ring. */
TEST(threads_as_ranks_equal_one_device) {
    char root[256];
    snprintf(root, sizeof root, "/tmp/tdm_test_flux_cp_%d", (int)getpid());
    if (fcp_make_wide(root)) check_model(root, NULL, fcp_wide_shapes, FCP_NWIDE);
    fcp_remove_wide(root);
}

/* The tiny fixtures (ranks without text rows, 1-3 rows a segment, 32-wide
 * linears: the CPU GEMM's computed-in-order and padded paths): every
 * rank's output is the one-device output byte for byte under Ulysses,
 * within 1e-5 with a ring. */
TEST(threads_as_ranks_tiny_fixtures_equal_one_device) {
    for (int f = 0; f < FCP_NFIX; f++) {
        char root[1024];
        snprintf(root, sizeof root, "%s/%s", FCP_FIX, fcp_fixtures[f].name);
        check_model(root, fcp_fixtures[f].variant, fcp_shapes, FCP_NSHAPES);
    }
}

/* No groups and one-rank groups: tdm_flux_forward; errors. */
TEST(one_rank_and_errors) {
    char root[1024];
    tdm_device_t dev;
    tdm_flux_t *m = NULL;
    tdm_nn_group_t one, bad;
    fcp_io_t io;
    snprintf(root, sizeof root, "%s/dev", FCP_FIX);
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    if (tdm_flux_load(&m, root, "transformer", NULL, &dev) != TDM_OK) {
        CHECK_MSG(0, "%s: %s", root, tdm_last_error());
        return;
    }
    tdm_nn_group_single(&one);
    if (fcp_io_make(m, &fcp_shapes[0], 5, &io)) {
        const int64_t nout = io.B * io.N * io.Cout;
        float *out = fcp_alloc(nout);
        const tdm_flux_cp_groups_t gs[4] = { { NULL, NULL }, { &one, NULL }, { NULL, &one },
                                             { &one, &one } };
        for (int i = -1; i < 4 && out; i++) {
            memset(out, 0, (size_t)nout * sizeof(float));
            CHECK(tdm_flux_forward_cp(m, i < 0 ? NULL : &gs[i], io.img, io.B, io.N, io.txt, io.T,
                                      io.pooled, io.t, io.g, io.iid, io.tid, out) == TDM_OK);
            CHECK_MSG(fcp_first_diff(out, io.ref, nout) < 0, "groups %d", i);
        }
        bad = one, bad.size = 8;   /* 7 image rows over 8 ranks */
        tdm_flux_cp_groups_t g = { &bad, NULL };
        CHECK(tdm_flux_forward_cp(m, &g, io.img, io.B, io.N, io.txt, io.T, io.pooled, io.t,
                                  io.g, io.iid, io.tid, out) == TDM_ERR_INVALID_ARG);
        bad.size = 4, g.ring = &bad, g.ulysses = NULL;   /* ring 4 x ulysses 2: 8 ranks */
        tdm_nn_group_t two = one;
        two.size = 2;
        g.ulysses = &two;
        CHECK(tdm_flux_forward_cp(m, &g, io.img, io.B, io.N, io.txt, io.T, io.pooled, io.t,
                                  io.g, io.iid, io.tid, out) == TDM_ERR_INVALID_ARG);
        CHECK_MSG(strstr(tdm_last_error(), "ring 4 x ulysses 2") != NULL, "%s", tdm_last_error());
        bad.size = 2, bad.rank = 2, g.ulysses = NULL;
        CHECK(tdm_flux_forward_cp(m, &g, io.img, io.B, io.N, io.txt, io.T, io.pooled, io.t,
                                  io.g, io.iid, io.tid, out) == TDM_ERR_INVALID_ARG);
        CHECK_MSG(strstr(tdm_last_error(), "ring group") != NULL, "%s", tdm_last_error());
        CHECK(tdm_flux_forward_cp(m, &gs[1], io.img, io.B, io.N, io.txt, io.T, io.pooled, io.t,
                                  NULL, io.iid, io.tid, out) == TDM_ERR_INVALID_ARG);
        free(out);
    }
    fcp_io_free(&io);
    tdm_flux_free(m);
}

int main(void) {
    RUN(one_rank_and_errors);
    RUN(threads_as_ranks_equal_one_device);
    RUN(threads_as_ranks_tiny_fixtures_equal_one_device);
    return test_summary();
}
