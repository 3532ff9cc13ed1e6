// label: unit
/* test_flux_tp.c — FLUX tensor parallelism (tdm_flux_load_tp) in one
 * process: ranks as threads, each with its own CPU device and its shard of
 * the model, in-process nn groups (compute serialized by one lock, the
 * exchanges in shared memory; the allreduce sums the ranks' buffers in rank
 * order). Checked: TP 2 and 3 (where the heads allow, else the error) on
 * the three tiny FLUX fixtures, TP 2 and 4 on a wider random model, and
 * TP 2 x Ulysses 2 on four threads (a TP group and a Ulysses group per
 * rank): every rank's output within max|a-b|/max|a| <= 1e-5 of
 * tdm_flux_forward (the measured error is printed); each rank's param_bytes
 * exactly its share (1/T of the split block tensors plus the replicated
 * parts; tdm_flux_plist_tp's bytes too), its device memory within tdm_flux_work_bytes_tp; a NULL and a
 * one-rank TP group give tdm_flux_load's model bit for bit; errors. The MPI
 * twin is test_flux_tp_mpi.c. */
#include <pthread.h>

#include "backend/ops.h"
#include "nn/group.h"
#include "test_flux_tp.h"

#define MAXR 4

static pthread_mutex_t g_big = PTHREAD_MUTEX_INITIALIZER;   /* held while a rank computes */

typedef struct {   /* one in-process group */
    pthread_barrier_t bar;
    const void *send[MAXR];
} tgroup_t;

typedef struct {   /* a rank's place in one group: the group's ctx */
    tgroup_t *t;
    int rank, size;
} tmember_t;

/* Publishes send, lets every rank of the group read every other's (copy),
 * then waits until all have read; `after` runs once no send is read. */
static void t_exchange(tmember_t *me, const void *send, void (*copy)(tmember_t *, void *),
                       void (*after)(void *), void *arg) {
    tgroup_t *t = me->t;
    t->send[me->rank] = send;
    pthread_mutex_unlock(&g_big);
    pthread_barrier_wait(&t->bar);
    copy(me, arg);
    pthread_barrier_wait(&t->bar);
    if (after) after(arg);
    pthread_mutex_lock(&g_big);
}

typedef struct {
    void *recv;
    size_t blk;
    const int64_t *counts, *displs;
    float *sum;
    int64_t n;
} targs_t;

static void copy_a2a(tmember_t *me, void *arg) {
    targs_t *a = arg;
    for (int i = 0; i < me->size; i++)
        memcpy((char *)a->recv + (size_t)i * a->blk,
               (const char *)me->t->send[i] + (size_t)me->rank * a->blk, a->blk);
}

static void copy_agv(tmember_t *me, void *arg) {
    targs_t *a = arg;
    for (int i = 0; i < me->size; i++)
        memcpy((char *)a->recv + (size_t)a->displs[i] * a->blk, me->t->send[i],
               (size_t)a->counts[i] * a->blk);
}

static void sum_ranks(tmember_t *me, void *arg) {   /* rank order: the same bits on every rank */
    targs_t *a = arg;
    memcpy(a->sum, me->t->send[0], (size_t)a->n * sizeof(float));
    for (int i = 1; i < me->size; i++) {
        const float *s = me->t->send[i];
        for (int64_t j = 0; j < a->n; j++) a->sum[j] += s[j];
    }
}

static void store_sum(void *arg) {   /* recv may be send: written once nobody reads */
    targs_t *a = arg;
    memcpy(a->recv, a->sum, (size_t)a->n * sizeof(float));
}

static tdm_status t_all_to_all(void *ctx, tdm_device_t *dev, const void *send, void *recv,
                               int64_t count, tdm_dtype dt) {
    targs_t a = { recv, (size_t)count * tdm_dtype_size(dt), NULL, NULL, NULL, 0 };
    (void)dev;
    t_exchange(ctx, send, copy_a2a, NULL, &a);
    return TDM_OK;
}

static tdm_status t_allgatherv(void *ctx, tdm_device_t *dev, const void *send, int64_t count,
                               void *recv, const int64_t *counts, const int64_t *displs,
                               tdm_dtype dt) {
    targs_t a = { recv, tdm_dtype_size(dt), counts, displs, NULL, 0 };
    (void)dev, (void)count;
    t_exchange(ctx, send, copy_agv, NULL, &a);
    return TDM_OK;
}

static tdm_status t_allreduce_sum(void *ctx, tdm_device_t *dev, const void *send, void *recv,
                                  int64_t count, tdm_dtype dt) {
    targs_t a = { recv, 0, NULL, NULL, fcp_alloc(count), count };
    (void)dev;
    if (dt != TDM_F32 || !a.sum) abort();   /* the model only reduces float32 */
    t_exchange(ctx, send, sum_ranks, store_sum, &a);
    free(a.sum);
    return TDM_OK;
}

static void t_group(tdm_nn_group_t *g, tmember_t *m, tgroup_t *t, int rank, int size) {
    memset(g, 0, sizeof *g);
    m->t = t, m->rank = rank, m->size = size;
    g->rank = rank, g->size = size, g->ctx = m;
    g->all_to_all = t_all_to_all, g->allgatherv = t_allgatherv;
    g->allreduce_sum = t_allreduce_sum;
}

/* One thread-rank: rank = u * T + t of a T x U grid. */
typedef struct {
    tdm_device_t dev;
    tdm_flux_t *m;
    tmember_t tpm, ulm;
    tdm_nn_group_t tp, ul;
    int U;
    const fcp_io_t *io;
    float *out;
    tdm_status st;
    char err[256];
} trank_t;

static void *t_rank_main(void *arg) {
    trank_t *me = arg;
    const fcp_io_t *io = me->io;
    pthread_mutex_lock(&g_big);
    const tdm_flux_cp_groups_t cg = { &me->ul, NULL };
    me->st = me->U > 1 ? tdm_flux_forward_cp(me->m, &cg, io->img, io->B, io->N, io->txt,
                                             io->T, io->pooled, io->t, io->g, io->iid, io->tid,
                                             me->out)
                       : tdm_flux_forward(me->m, io->img, io->B, io->N, io->txt, io->T,
                                          io->pooled, io->t, io->g, io->iid, io->tid, me->out);
    if (me->st != TDM_OK) snprintf(me->err, sizeof(me->err), "%s", tdm_last_error());
    pthread_mutex_unlock(&g_big);
    return NULL;
}

/* The T x U grid of ranks r (groups set, models loaded) on io: every
 * rank's output against io->ref within FTP_TOL; the largest error is
 * printed. */
static void run_ranks(trank_t *r, int T, int U, const fcp_io_t *io, const char *what) {
    pthread_t th[MAXR];
    const int n = T * U;
    const int64_t nout = io->B * io->N * io->Cout;
    double worst = 0.0;
    for (int i = 0; i < n; i++) {
        r[i].io = io, r[i].U = U, r[i].st = TDM_OK, r[i].err[0] = 0;
        r[i].out = fcp_alloc(nout);
        if (!r[i].out || pthread_create(&th[i], NULL, t_rank_main, &r[i]) != 0) {
            CHECK_MSG(0, "out of memory or pthread_create failed");
            abort();   /* the started ranks would wait forever */
        }
    }
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < n; i++) {
        CHECK_MSG(r[i].st == TDM_OK, "%s TP %d x U %d rank %d: %s", what, T, U, i, r[i].err);
        if (r[i].st != TDM_OK) continue;
        const double e = ftp_rel_err(r[i].out, io->ref, nout);
        CHECK_MSG(e <= FTP_TOL, "%s B %lld T %lld N %lld TP %d x U %d rank %d: relative error "
                  "%.3g > %.0e", what, (long long)io->B, (long long)io->T, (long long)io->N, T, U,
                  i, e, FTP_TOL);
        if (e > worst) worst = e;
    }
    printf("  %s B %lld T %lld N %lld, TP %d x Ulysses %d: max|a-b|/max|a| = %.3g\n", what,
           (long long)io->B, (long long)io->T, (long long)io->N, T, U, worst);
    for (int i = 0; i < n; i++) free(r[i].out);
}

/* The model of root (weights variant) over a TP T x Ulysses U grid of
 * threads on each shape: outputs (run_ranks), each rank's param_bytes
 * (ftp_param_bytes) and its device memory beyond its weights within
 * tdm_flux_work_bytes_tp. A T not dividing the heads must fail to load
 * with an error naming tp. */
static void check_grid(const char *root, const char *variant, int T, int U,
                       const fcp_shape_t *shapes, int nshapes) {
    char cfg[1100];
    tdm_device_t dev;
    tdm_flux_t *ref = NULL;
    tgroup_t tg[MAXR], ug[MAXR];
    trank_t r[MAXR];
    const int n = T * U;
    snprintf(cfg, sizeof cfg, "%s/transformer/config.json", root);
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    if (tdm_flux_load(&ref, root, "transformer", variant, &dev) != TDM_OK) {
        CHECK_MSG(0, "%s: %s", root, tdm_last_error());
        return;
    }
    memset(r, 0, sizeof r);
    for (int i = 0; i < U; i++) pthread_barrier_init(&tg[i].bar, NULL, (unsigned)T);
    for (int i = 0; i < T; i++) pthread_barrier_init(&ug[i].bar, NULL, (unsigned)U);
    const int64_t H = tdm_flux_info(ref)->num_attention_heads;
    int ok = 1;
    for (int i = 0; i < n; i++) {
        const int t = i % T, u = i / T;
        t_group(&r[i].tp, &r[i].tpm, &tg[u], t, T);
        t_group(&r[i].ul, &r[i].ulm, &ug[t], u, U);
        tdm_device_init(&r[i].dev, TDM_DEV_CPU, i + 1);
        tdm_status st = tdm_flux_load_tp(&r[i].m, root, "transformer", variant, &r[i].dev, &r[i].tp);
        if (H % T != 0) {   /* whole heads only: the load must refuse */
            char want[64];
            snprintf(want, sizeof want, "tp=%d does not divide num_attention_heads=%lld", T,
                     (long long)H);
            CHECK_MSG(st == TDM_ERR_INVALID_ARG && strstr(tdm_last_error(), want) && !r[i].m,
                      "%s TP %d: %d, \"%s\"", root, T, (int)st, tdm_last_error());
            printf("  %s TP %d refused: %s\n", root, T, tdm_last_error());
            ok = 0;
            break;
        }
        CHECK_MSG(st == TDM_OK, "%s rank %d: %s", root, i, tdm_last_error());
        ok = ok && st == TDM_OK;
        if (st != TDM_OK) continue;
        const int64_t want = ftp_param_bytes(cfg, T, t), got = tdm_flux_info(r[i].m)->param_bytes;
        CHECK_MSG(got == want, "%s TP %d rank %d: param_bytes %lld, its share is %lld", root, T,
                  t, (long long)got, (long long)want);
        tdm_plist_t pl;   /* the planner's list of the rank's shard says the same */
        CHECK(tdm_flux_plist_tp(cfg, TDM_F32, T, t, &pl) == TDM_OK && pl.bytes == want);
        tdm_plist_free(&pl);
    }
    if (ok && U == 1 && T == 2)
        printf("  %s: one device %lld parameter bytes, each TP 2 rank %lld / %lld\n", root,
               (long long)tdm_flux_info(ref)->param_bytes,
               (long long)tdm_flux_info(r[0].m)->param_bytes,
               (long long)tdm_flux_info(r[1].m)->param_bytes);
    for (int si = 0; ok && si < nshapes; si++) {
        fcp_io_t io;
        const fcp_shape_t *s = &shapes[si];
        int64_t est = 0;
        if (U > 1 && s->N < U) continue;
        if (fcp_io_make(ref, s, (uint32_t)(13 * si + 7 * T + U), &io)) {
            for (int i = 0; i < n; i++) r[i].dev.peak_bytes = r[i].dev.cur_bytes;
            run_ranks(r, T, U, &io, root);
            CHECK(tdm_flux_work_bytes_tp(cfg, &r[0].dev, s->B, s->N, s->T, U, T, &est) == TDM_OK);
            for (int i = 0; i < n; i++) {
                int64_t used = r[i].dev.peak_bytes - tdm_flux_info(r[i].m)->param_bytes;
                CHECK_MSG(used <= est, "%s TP %d x U %d rank %d: %lld device bytes, estimate %lld",
                          root, T, U, i, (long long)used, (long long)est);
            }
        }
        fcp_io_free(&io);
    }
    for (int i = 0; i < n; i++) tdm_flux_free(r[i].m);
    for (int i = 0; i < U; i++) pthread_barrier_destroy(&tg[i].bar);
    for (int i = 0; i < T; i++) pthread_barrier_destroy(&ug[i].bar);
    tdm_flux_free(ref);
}

/* The tiny fixtures (2, 2 and 3 heads; bf16 weights; no guidance): TP 2
 * and 3 where the heads split, else the load's error; TP 2 x Ulysses 2. */
TEST(tiny_fixtures_tp_within_tolerance) {
    for (int f = 0; f < FCP_NFIX; f++) {
        char root[1024];
        snprintf(root, sizeof root, "%s/%s", FCP_FIX, fcp_fixtures[f].name);
        check_grid(root, fcp_fixtures[f].variant, 2, 1, fcp_shapes, FCP_NSHAPES);
        check_grid(root, fcp_fixtures[f].variant, 3, 1, fcp_shapes, FCP_NSHAPES);
    }
    char root[1024];
    snprintf(root, sizeof root, "%s/dev", FCP_FIX);
    check_grid(root, NULL, 2, 2, fcp_shapes, FCP_NSHAPES);
}

/* A wider random model (4 heads of 64, inner 256): TP 2, TP 4, TP 2 x
 * Ulysses 2 (2 heads each exchanged); and test_flux_cp.h's 3-head model
 * over TP 3 (one head a rank) and its refusal of TP 2. */
TEST(wide_models_tp_within_tolerance) {
    char root[256];
    snprintf(root, sizeof root, "/tmp/tdm_test_flux_tp_%d", (int)getpid());
    if (fcp_make_model(root, FTP_WIDE4_CONFIG)) {
        check_grid(root, NULL, 2, 1, fcp_wide_shapes, FCP_NWIDE);
        check_grid(root, NULL, 4, 1, fcp_wide_shapes, 1);
        check_grid(root, NULL, 2, 2, fcp_wide_shapes, FCP_NWIDE);
    }
    fcp_remove_wide(root);
    if (fcp_make_wide(root)) {
        check_grid(root, NULL, 3, 1, fcp_wide_shapes, 1);
        check_grid(root, NULL, 2, 1, fcp_wide_shapes, 1);
    }
    fcp_remove_wide(root);
}

/* A NULL and a one-rank TP group load tdm_flux_load's model: the same
 * bytes, the same output bit for bit. Errors: a rank outside its group, a
 * tp not dividing the heads in tdm_flux_work_bytes_tp. */
TEST(one_rank_and_errors) {
    char root[1024], cfg[1100];
    tdm_device_t dev;
    tdm_flux_t *m = NULL, *m1 = NULL, *m0 = NULL;
    tdm_nn_group_t one, bad;
    fcp_io_t io;
    int64_t est = 0;
    snprintf(root, sizeof root, "%s/dev", FCP_FIX);
    snprintf(cfg, sizeof cfg, "%s/transformer/config.json", root);
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    tdm_nn_group_single(&one);
    if (tdm_flux_load(&m, root, "transformer", NULL, &dev) != TDM_OK ||
        tdm_flux_load_tp(&m1, root, "transformer", NULL, &dev, &one) != TDM_OK ||
        tdm_flux_load_tp(&m0, root, "transformer", NULL, &dev, NULL) != TDM_OK) {
        CHECK_MSG(0, "%s: %s", root, tdm_last_error());
        goto done;
    }
    CHECK(tdm_flux_info(m1)->param_bytes == tdm_flux_info(m)->param_bytes);
    CHECK(tdm_flux_info(m0)->param_bytes == tdm_flux_info(m)->param_bytes);
    if (fcp_io_make(m, &fcp_shapes[0], 5, &io)) {
        const int64_t nout = io.B * io.N * io.Cout;
        float *out = fcp_alloc(nout);
        tdm_flux_t *ms[2] = { m0, m1 };
        for (int i = 0; i < 2 && out; i++) {
            CHECK(tdm_flux_forward(ms[i], io.img, io.B, io.N, io.txt, io.T, io.pooled, io.t, io.g,
                                   io.iid, io.tid, out) == TDM_OK);
            CHECK_MSG(fcp_first_diff(out, io.ref, nout) < 0, "TP group %d", i);
        }
        free(out);
    }
    fcp_io_free(&io);
    bad = one, bad.size = 2, bad.rank = 2;
    tdm_flux_t *x = NULL;
    CHECK(tdm_flux_load_tp(&x, root, "transformer", NULL, &dev, &bad) == TDM_ERR_INVALID_ARG && !x);
    CHECK(tdm_flux_work_bytes_tp(cfg, &dev, 1, 8, 4, 1, 3, &est) == TDM_ERR_INVALID_ARG);
    CHECK_MSG(strstr(tdm_last_error(), "tp=3") != NULL, "%s", tdm_last_error());
    CHECK(tdm_flux_work_bytes_tp(cfg, &dev, 1, 8, 4, 1, 2, &est) == TDM_OK && est > 0);
done:
    tdm_flux_free(m);
    tdm_flux_free(m1);
    tdm_flux_free(m0);
}

int main(void) {
    RUN(one_rank_and_errors);
    RUN(tiny_fixtures_tp_within_tolerance);
    RUN(wide_models_tp_within_tolerance);
    return test_summary();
}
