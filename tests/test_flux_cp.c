// label: unit
/* test_flux_cp.c — FLUX context parallelism (tdm_flux_forward_cp) in one
 * process: U = 2, 3 and 4 ranks as threads (an in-process nn group: compute
 * serialized by one lock, the exchanges in shared memory), each rank with
 * its own model and CPU device, on the three tiny FLUX fixtures (2 and 3
 * heads: padding where U does not divide them) and shapes whose text and
 * image lengths U does not divide (ranks without text rows); every rank's
 * gathered output equals tdm_flux_forward's byte for byte. Also: the
 * one-rank group and a NULL group are the one-device forward, argument
 * errors, and each rank's device memory within tdm_flux_work_bytes_cp. The
 * MPI twin is test_flux_cp_mpi.c. */
#include <pthread.h>

#include "backend/ops.h"
#include "nn/group.h"
#include "test_flux_cp.h"

#define MAXU 4

typedef struct {
    pthread_mutex_t big;
    pthread_barrier_t bar;
    const void *send[MAXU];
} tgroup_t;

typedef struct {
    tgroup_t *t;
    tdm_nn_group_t g;
    tdm_device_t dev;
    tdm_flux_t *m;
    const fcp_io_t *io;
    float *out;
    tdm_status st;
    char err[256];
} trank_t;

/* Publishes send, lets every rank read every other's, then waits until all
 * have read before the send buffers may change. */
static void t_exchange(trank_t *me, const void *send, void (*copy)(trank_t *, void *), void *arg) {
    tgroup_t *t = me->t;
    t->send[me->g.rank] = send;
    pthread_mutex_unlock(&t->big);
    pthread_barrier_wait(&t->bar);
    copy(me, arg);
    pthread_barrier_wait(&t->bar);
    pthread_mutex_lock(&t->big);
}

typedef struct { void *recv; size_t blk; const int64_t *counts, *displs; } targs_t;

static void copy_a2a(trank_t *me, void *arg) {
    targs_t *a = arg;
    for (int i = 0; i < me->g.size; i++)
        memcpy((char *)a->recv + (size_t)i * a->blk,
               (const char *)me->t->send[i] + (size_t)me->g.rank * a->blk, a->blk);
}

static void copy_agv(trank_t *me, void *arg) {
    targs_t *a = arg;
    for (int i = 0; i < me->g.size; i++)
        memcpy((char *)a->recv + (size_t)a->displs[i] * a->blk, me->t->send[i],
               (size_t)a->counts[i] * a->blk);
}

static tdm_status t_all_to_all(void *ctx, tdm_device_t *dev, const void *send, void *recv,
                               int64_t count, tdm_dtype dt) {
    targs_t a = { recv, (size_t)count * tdm_dtype_size(dt), NULL, NULL };
    (void)dev;
    t_exchange(ctx, send, copy_a2a, &a);
    return TDM_OK;
}

static tdm_status t_allgatherv(void *ctx, tdm_device_t *dev, const void *send, int64_t count,
                               void *recv, const int64_t *counts, const int64_t *displs,
                               tdm_dtype dt) {
    targs_t a = { recv, tdm_dtype_size(dt), counts, displs };
    (void)dev, (void)count;
    t_exchange(ctx, send, copy_agv, &a);
    return TDM_OK;
}

static void *t_rank_main(void *arg) {
    trank_t *me = arg;
    const fcp_io_t *io = me->io;
    pthread_mutex_lock(&me->t->big);
    me->st = tdm_flux_forward_cp(me->m, &me->g, io->img, io->B, io->N, io->txt, io->T,
                                 io->pooled, io->t, io->g, io->iid, io->tid, me->out);
    if (me->st != TDM_OK) snprintf(me->err, sizeof(me->err), "%s", tdm_last_error());
    pthread_mutex_unlock(&me->t->big);
    return NULL;
}

/* U ranks (models r[i].m loaded) on io: every rank's output against
 * io->ref (the one-device forward) bit for bit. */
static void run_ranks(trank_t *r, int U, const fcp_io_t *io, const char *fix) {
    tgroup_t t;
    pthread_t th[MAXU];
    const int64_t nout = io->B * io->N * io->Cout;
    pthread_mutex_init(&t.big, NULL);
    pthread_barrier_init(&t.bar, NULL, (unsigned)U);
    for (int i = 0; i < U; i++) {
        r[i].t = &t, r[i].io = io, r[i].st = TDM_OK, r[i].err[0] = 0;
        r[i].g.rank = i, r[i].g.size = U, r[i].g.ctx = &r[i];
        r[i].g.all_to_all = t_all_to_all, r[i].g.allgatherv = t_allgatherv;
        r[i].out = fcp_alloc(nout);
        if (!r[i].out || pthread_create(&th[i], NULL, t_rank_main, &r[i]) != 0) {
            CHECK_MSG(0, "out of memory or pthread_create failed");
            abort();   /* the started ranks would wait forever */
        }
    }
    for (int i = 0; i < U; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < U; i++) {
        const float *want = io->ref;
        CHECK_MSG(r[i].st == TDM_OK, "%s U %d rank %d: %s", fix, U, i, r[i].err);
        int64_t d = r[i].st == TDM_OK ? fcp_first_diff(r[i].out, want, nout) : -1;
        CHECK_MSG(d < 0, "%s B %lld T %lld N %lld U %d rank %d: out[%lld] = %.9g, %s %.9g "
                  "(%.3g apart)", fix, (long long)io->B, (long long)io->T, (long long)io->N, U,
                  i, (long long)d, d < 0 ? 0.0 : r[i].out[d], "one device",
                  d < 0 ? 0.0 : want[d], d < 0 ? 0.0 : fabs(r[i].out[d] - want[d]));
    }
    for (int i = 0; i < U; i++) free(r[i].out);
    pthread_barrier_destroy(&t.bar);
    pthread_mutex_destroy(&t.big);
}

/* The model of root (weights variant) over U = 2..MAXU ranks on each shape,
 * outputs checked as run_ranks says, and each rank's device memory (beyond
 * its weights) within tdm_flux_work_bytes_cp. */
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
    for (int U = 2; U <= MAXU; U++) {
        trank_t r[MAXU];
        memset(r, 0, sizeof r);
        for (int i = 0; i < U; i++) {
            tdm_device_init(&r[i].dev, TDM_DEV_CPU, i + 1);
            if (tdm_flux_load(&r[i].m, root, "transformer", variant, &r[i].dev) != TDM_OK)
                CHECK_MSG(0, "%s rank %d: %s", root, i, tdm_last_error());
        }
        for (int si = 0; si < nshapes && r[U - 1].m && r[0].m; si++) {
            fcp_io_t io;
            const fcp_shape_t *s = &shapes[si];
            int64_t est = 0;
            if (fcp_io_make(ref, s, (uint32_t)(17 * si + U), &io)) {
                for (int i = 0; i < U; i++) r[i].dev.peak_bytes = r[i].dev.cur_bytes;
                run_ranks(r, U, &io, root);
                CHECK(tdm_flux_work_bytes_cp(cfg, &r[0].dev, s->B, s->N, s->T, U, &est) == TDM_OK);
                for (int i = 0; i < U; i++) {
                    int64_t used = r[i].dev.peak_bytes - tdm_flux_info(r[i].m)->param_bytes;
                    CHECK_MSG(used <= est, "%s U %d rank %d: %lld device bytes, estimate %lld",
                              root, U, i, (long long)used, (long long)est);
                }
            }
            fcp_io_free(&io);
        }
        for (int i = 0; i < U; i++) tdm_flux_free(r[i].m);
    }
    tdm_flux_free(ref);
}

/* The wide model (see test_flux_cp.h): every rank's output is the
 * one-device output byte for byte (3 heads: padded over 2 and 4 ranks). */
TEST(threads_as_ranks_equal_one_device) {
    char root[256];
    snprintf(root, sizeof root, "/tmp/tdm_test_flux_cp_%d", (int)getpid());
    if (fcp_make_wide(root)) check_model(root, NULL, fcp_wide_shapes, FCP_NWIDE);
    fcp_remove_wide(root);
}

/* The tiny fixtures (ranks without text rows, 1-3 rows a segment, 32-wide
 * linears: the CPU GEMM's computed-in-order and padded paths): every
 * rank's output is the one-device output byte for byte. */
TEST(threads_as_ranks_tiny_fixtures_equal_one_device) {
    for (int f = 0; f < FCP_NFIX; f++) {
        char root[1024];
        snprintf(root, sizeof root, "%s/%s", FCP_FIX, fcp_fixtures[f].name);
        check_model(root, fcp_fixtures[f].variant, fcp_shapes, FCP_NSHAPES);
    }
}

/* No group and the one-rank group: tdm_flux_forward; errors. */
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
        const tdm_nn_group_t *gs[2] = { NULL, &one };
        for (int i = 0; i < 2 && out; i++) {
            memset(out, 0, (size_t)nout * sizeof(float));
            CHECK(tdm_flux_forward_cp(m, gs[i], io.img, io.B, io.N, io.txt, io.T, io.pooled, io.t,
                                      io.g, io.iid, io.tid, out) == TDM_OK);
            CHECK_MSG(fcp_first_diff(out, io.ref, nout) < 0, "group %d", i);
        }
        bad = one, bad.size = 8;   /* 7 image rows over 8 ranks */
        CHECK(tdm_flux_forward_cp(m, &bad, io.img, io.B, io.N, io.txt, io.T, io.pooled, io.t,
                                  io.g, io.iid, io.tid, out) == TDM_ERR_INVALID_ARG);
        bad.size = 2, bad.rank = 2;
        CHECK(tdm_flux_forward_cp(m, &bad, io.img, io.B, io.N, io.txt, io.T, io.pooled, io.t,
                                  io.g, io.iid, io.tid, out) == TDM_ERR_INVALID_ARG);
        CHECK(tdm_flux_forward_cp(m, &one, io.img, io.B, io.N, io.txt, io.T, io.pooled, io.t,
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
