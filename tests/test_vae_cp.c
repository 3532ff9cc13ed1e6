// label: unit
/* test_vae_cp.c — the parallel VAE decode (tdm_vae_decode_cp) in one
 * process: 2 and 3 ranks as threads (an in-process nn group: compute
 * serialized by one lock, the exchanges in shared memory), each rank with its
 * own model and CPU device, on the tiny SD, FLUX and two-resnet VAE fixtures
 * with latent heights the rank count does not divide: every rank's image
 * within VCP_TOL of tdm_vae_decode's (the measured error printed), every
 * rank's device peak below the one-device peak and within
 * tdm_vae_decode_work_bytes_cp. Also: group norm in parts with one part is
 * group_norm bit for bit; the one-rank group and a NULL group are
 * tdm_vae_decode bit for bit; argument errors. The MPI twin is
 * test_vae_cp_mpi.c. */
#include <pthread.h>

#include "backend/ops.h"
#include "nn/group.h"
#include "test_vae_cp.h"

#define MAXU 3

typedef struct {
    pthread_mutex_t big;
    pthread_barrier_t bar;
    const void *send[MAXU];
    int to[MAXU];
} tgroup_t;

typedef struct {
    tgroup_t *t;
    tdm_nn_group_t g;
    tdm_device_t dev;
    tdm_vae_t *v;
    const vcp_io_t *io;
    float *img;
    tdm_status st;
    char err[256];
} trank_t;

typedef struct {
    void *recv;
    size_t es, bytes;
    const int64_t *counts, *displs;
    int from;
} targs_t;

/* Publishes send (to `to`), lets every rank read what it needs, then waits
 * until all have read before the send buffers may change. */
static tdm_status t_exchange(trank_t *me, const void *send, int to,
                             tdm_status (*copy)(trank_t *, targs_t *), targs_t *a) {
    tgroup_t *t = me->t;
    tdm_status st;
    t->send[me->g.rank] = send;
    t->to[me->g.rank] = to;
    pthread_mutex_unlock(&t->big);
    pthread_barrier_wait(&t->bar);
    st = copy(me, a);
    pthread_barrier_wait(&t->bar);
    pthread_mutex_lock(&t->big);
    return st;
}

static tdm_status copy_ag(trank_t *me, targs_t *a) {
    for (int i = 0; i < me->g.size; i++)
        memcpy((char *)a->recv + (size_t)i * a->bytes, me->t->send[i], a->bytes);
    return TDM_OK;
}

static tdm_status copy_agv(trank_t *me, targs_t *a) {
    for (int i = 0; i < me->g.size; i++)
        memcpy((char *)a->recv + (size_t)a->displs[i] * a->es, me->t->send[i],
               (size_t)a->counts[i] * a->es);
    return TDM_OK;
}

static tdm_status copy_sr(trank_t *me, targs_t *a) {
    if (a->from < 0) return TDM_OK;
    if (me->t->to[a->from] != me->g.rank)
        return tdm_errorf(TDM_ERR_INTERNAL, "sendrecv: rank %d receives from %d, which sends to %d",
                          me->g.rank, a->from, me->t->to[a->from]);
    memcpy(a->recv, me->t->send[a->from], a->bytes);
    return TDM_OK;
}

static tdm_status t_allgather(void *ctx, tdm_device_t *dev, const void *send, void *recv,
                              int64_t count, tdm_dtype dt) {
    targs_t a = { .recv = recv, .bytes = (size_t)count * tdm_dtype_size(dt) };
    (void)dev;
    return t_exchange(ctx, send, -1, copy_ag, &a);
}

static tdm_status t_allgatherv(void *ctx, tdm_device_t *dev, const void *send, int64_t count,
                               void *recv, const int64_t *counts, const int64_t *displs,
                               tdm_dtype dt) {
    targs_t a = { .recv = recv, .es = tdm_dtype_size(dt), .counts = counts, .displs = displs };
    (void)dev, (void)count;
    return t_exchange(ctx, send, -1, copy_agv, &a);
}

static tdm_status t_sendrecv(void *ctx, tdm_device_t *dev, const void *send, int to, void *recv,
                             int from, int64_t count, tdm_dtype dt) {
    targs_t a = { .recv = recv, .bytes = (size_t)count * tdm_dtype_size(dt), .from = from };
    (void)dev;
    return t_exchange(ctx, send, to, copy_sr, &a);
}

static void *t_rank_main(void *arg) {
    trank_t *me = arg;
    const vcp_io_t *io = me->io;
    pthread_mutex_lock(&me->t->big);
    me->st = tdm_vae_decode_cp(me->v, &me->g, io->z, io->B, io->h, io->w, me->img);
    if (me->st != TDM_OK) snprintf(me->err, sizeof(me->err), "%s", tdm_last_error());
    pthread_mutex_unlock(&me->t->big);
    return NULL;
}

/* U ranks (models r[i].v loaded) on io; returns the largest error over the
 * ranks (a failed rank: a failed check, 1). */
static double run_ranks(trank_t *r, int U, const vcp_io_t *io) {
    tgroup_t t;
    pthread_t th[MAXU];
    double worst = 0;
    memset(&t, 0, sizeof t);
    pthread_mutex_init(&t.big, NULL);
    pthread_barrier_init(&t.bar, NULL, (unsigned)U);
    for (int i = 0; i < U; i++) {
        r[i].t = &t, r[i].io = io, r[i].st = TDM_OK, r[i].err[0] = 0;
        r[i].g.rank = i, r[i].g.size = U, r[i].g.ctx = &r[i];
        r[i].g.allgather = t_allgather, r[i].g.allgatherv = t_allgatherv;
        r[i].g.sendrecv = t_sendrecv;
        r[i].img = vcp_alloc(io->nimg);
        if (!r[i].img || pthread_create(&th[i], NULL, t_rank_main, &r[i]) != 0) {
            CHECK_MSG(0, "out of memory or pthread_create failed");
            abort();   /* the started ranks would wait forever */
        }
    }
    for (int i = 0; i < U; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < U; i++) {
        CHECK_MSG(r[i].st == TDM_OK, "U %d rank %d: %s", U, i, r[i].err);
        double e = r[i].st == TDM_OK ? vcp_err(io, r[i].img) : 1.0;
        if (!(e <= worst)) worst = e;
        free(r[i].img);
    }
    pthread_barrier_destroy(&t.bar);
    pthread_mutex_destroy(&t.big);
    return worst;
}

/* Case c over U ranks: the images within VCP_TOL of one device's, each
 * rank's peak below the one-device peak and within the estimate. */
static void check_case(const vcp_case_t *c, int U) {
    char root[512], cfg[600];
    tdm_device_t dev;
    tdm_vae_t *ref = NULL;
    trank_t r[MAXU];
    vcp_io_t io;
    snprintf(root, sizeof root, VCP_FIX "/%s", c->fixture);
    snprintf(cfg, sizeof cfg, "%s/vae/config.json", root);
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    memset(r, 0, sizeof r);
    memset(&io, 0, sizeof io);
    if (tdm_vae_load_decoder(&ref, root, "vae", NULL, &dev, NULL) != TDM_OK) {
        CHECK_MSG(0, "%s: %s", root, tdm_last_error());
        return;
    }
    for (int i = 0; i < U; i++) {
        tdm_device_init(&r[i].dev, TDM_DEV_CPU, i + 1);
        if (tdm_vae_load_decoder(&r[i].v, root, "vae", NULL, &r[i].dev, NULL) != TDM_OK)
            CHECK_MSG(0, "%s rank %d: %s", root, i, tdm_last_error());
    }
    if (r[0].v && r[U - 1].v && vcp_io_make(ref, &dev, c, (uint32_t)(c->h * 31 + c->w + U), &io)) {
        int64_t before[MAXU], est = 0;
        for (int i = 0; i < U; i++) before[i] = r[i].dev.peak_bytes = r[i].dev.cur_bytes;
        double e = run_ranks(r, U, &io);
        printf("  %s (%lld,%lld,%lld,%lld) over %d ranks: rel err %.3g\n", c->fixture,
               (long long)io.B, (long long)io.L, (long long)io.h, (long long)io.w, U, e);
        CHECK_MSG(e <= VCP_TOL, "%s h %lld w %lld U %d: rel err %.3g", c->fixture,
                  (long long)c->h, (long long)c->w, U, e);
        CHECK(tdm_vae_decode_work_bytes_cp(cfg, &r[0].dev, c->B, c->h, c->w, U, &est) == TDM_OK);
        for (int i = 0; i < U; i++) {
            int64_t used = r[i].dev.peak_bytes - before[i];
            printf("    rank %d: peak %lld bytes (one device %lld, estimate %lld)\n", i,
                   (long long)used, (long long)io.peak, (long long)est);
            CHECK_MSG(used < io.peak, "%s U %d rank %d: peak %lld, one device %lld", c->fixture,
                      U, i, (long long)used, (long long)io.peak);
            CHECK_MSG(used <= est, "%s U %d rank %d: peak %lld, estimate %lld", c->fixture, U, i,
                      (long long)used, (long long)est);
        }
        vcp_io_free(&io);
    }
    for (int i = 0; i < U; i++) tdm_vae_free(r[i].v);
    tdm_vae_free(ref);
}

TEST(two_ranks_within_float_tolerance) {
    for (int k = 0; k < VCP_NCASES; k++) check_case(&vcp_cases[k], 2);
}

TEST(three_ranks_within_float_tolerance) {
    for (int k = 0; k < VCP_NCASES; k++) check_case(&vcp_cases[k], 3);
}

/* sums → sum_parts_f64 → sums with the mean → sum_parts_f64 → apply over
 * one part is group_norm bit for bit (what makes a one-rank band the
 * one-device norm, and the parts differ only in summation order). */
TEST(group_norm_in_one_part_is_group_norm) {
    const int64_t B = 2, C = 12, S = 37, G = 3, BG = B * G;
    float *x = vcp_alloc(B * C * S), *y0 = vcp_alloc(B * C * S), *y1 = vcp_alloc(B * C * S);
    float gamma[12], beta[12];
    double part[6], mean[6], var[6];
    vcp_fill(x, B * C * S, 5);
    for (int64_t i = 0; i < B * C * S; i++) x[i] = 3.0f * x[i] + 0.7f;
    vcp_fill(gamma, C, 6);
    vcp_fill(beta, C, 7);
    for (int silu = 0; silu < 2; silu++) {
        tdm_op_group_norm(NULL, y0, x, gamma, beta, B, C, S, G, 1e-6f, silu);
        tdm_op_group_norm_sums(NULL, part, x, NULL, B, C, S, G);
        tdm_op_sum_parts_f64(NULL, mean, part, 1, BG, (double)(C / G * S));
        tdm_op_group_norm_sums(NULL, part, x, mean, B, C, S, G);
        tdm_op_sum_parts_f64(NULL, var, part, 1, BG, (double)(C / G * S));
        tdm_op_group_norm_apply(NULL, y1, x, mean, var, gamma, beta, B, C, S, G, 1e-6f, silu);
        CHECK_MSG(memcmp(y0, y1, (size_t)(B * C * S) * sizeof(float)) == 0, "silu %d", silu);
    }
    free(x);
    free(y0);
    free(y1);
}

/* No group and the one-rank group: tdm_vae_decode bit for bit; errors. */
TEST(one_rank_and_errors) {
    char root[512];
    tdm_device_t dev;
    tdm_vae_t *v = NULL;
    tdm_nn_group_t one, bad;
    vcp_io_t io;
    snprintf(root, sizeof root, VCP_FIX "/sd");
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    if (tdm_vae_load_decoder(&v, root, "vae", NULL, &dev, NULL) != TDM_OK) {
        CHECK_MSG(0, "%s: %s", root, tdm_last_error());
        return;
    }
    tdm_nn_group_single(&one);
    if (vcp_io_make(v, &dev, &vcp_cases[0], 9, &io)) {
        float *img = vcp_alloc(io.nimg);
        const tdm_nn_group_t *gs[2] = { NULL, &one };
        for (int i = 0; i < 2 && img; i++) {
            memset(img, 0, (size_t)io.nimg * sizeof(float));
            CHECK(tdm_vae_decode_cp(v, gs[i], io.z, io.B, io.h, io.w, img) == TDM_OK);
            CHECK_MSG(memcmp(img, io.ref, (size_t)io.nimg * sizeof(float)) == 0, "group %d", i);
        }
        bad = one, bad.size = 6;   /* 5 latent rows over 6 ranks */
        CHECK(tdm_vae_decode_cp(v, &bad, io.z, io.B, io.h, io.w, img) == TDM_ERR_INVALID_ARG);
        CHECK_MSG(strstr(tdm_last_error(), "5 rows over 6 ranks") != NULL, "%s", tdm_last_error());
        bad.size = 2, bad.rank = 2;
        CHECK(tdm_vae_decode_cp(v, &bad, io.z, io.B, io.h, io.w, img) == TDM_ERR_INVALID_ARG);
        CHECK_MSG(strstr(tdm_last_error(), "rank 2 of a group of 2") != NULL, "%s",
                  tdm_last_error());
        int64_t b1 = 0, b2 = 0;
        char cfg[600];
        snprintf(cfg, sizeof cfg, "%s/vae/config.json", root);
        CHECK(tdm_vae_decode_work_bytes(cfg, &dev, 1, 5, 6, &b1) == TDM_OK);
        CHECK(tdm_vae_decode_work_bytes_cp(cfg, &dev, 1, 5, 6, 1, &b2) == TDM_OK && b1 == b2);
        CHECK(tdm_vae_decode_work_bytes_cp(cfg, &dev, 1, 5, 6, 6, &b2) == TDM_ERR_INVALID_ARG);
        free(img);
    }
    vcp_io_free(&io);
    tdm_vae_free(v);
}

int main(void) {
    RUN(group_norm_in_one_part_is_group_norm);
    RUN(one_rank_and_errors);
    RUN(two_ranks_within_float_tolerance);
    RUN(three_ranks_within_float_tolerance);
    return test_summary();
}
