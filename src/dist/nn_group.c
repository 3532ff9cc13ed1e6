/* nn_group.c — nn/group.h's calls over a tdm_comm_t, with host staging of
 * device buffers (download → exchange → upload), or over an NCCL
 * communicator on the device's stream (no staging). Not thread-safe (one
 * staging buffer per group), like every communicator. */
#include "dist/nn_group.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    tdm_comm_t *c;
    void *stage;           /* host staging: send part, then receive part */
    int64_t stage_bytes;
    tdm_comm_t *nccl;      /* owned; device buffers go here when set */
} nn_group_ctx;

/* The NCCL stream for buffers on dev, or NULL when they are staged. */
static void *nccl_stream(const nn_group_ctx *x, tdm_device_t *dev) {
    if (!x->nccl || tdm_dev_is_host(dev) || !dev->ops->stream) return NULL;
    return dev->ops->stream(dev);
}

/* ctx->stage of at least `bytes` (kept for later calls). */
static tdm_status stage_reserve(nn_group_ctx *x, int64_t bytes, const char *fn) {
    if (bytes <= x->stage_bytes) return TDM_OK;
    void *p = realloc(x->stage, (size_t)bytes);
    if (!p)
        return tdm_errorf(TDM_ERR_NOMEM, "%s on rank %d: cannot allocate %lld bytes of host "
                          "staging", fn, x->c->world_rank, (long long)bytes);
    x->stage = p;
    x->stage_bytes = bytes;
    return TDM_OK;
}

static tdm_status g_all_to_all(void *ctx, tdm_device_t *dev, const void *send, void *recv,
                               int64_t count, tdm_dtype dt) {
    nn_group_ctx *x = ctx;
    tdm_status st;
    int64_t n = count * x->c->size * (int64_t)tdm_dtype_size(dt);   /* checked by the caller */
    void *sm = nccl_stream(x, dev);
    if (sm) return tdm_comm_all_to_all(x->nccl, send, recv, count, dt, sm);
    if (tdm_dev_is_host(dev)) return tdm_comm_all_to_all(x->c, send, recv, count, dt, NULL);
    if ((st = stage_reserve(x, 2 * n, "all_to_all")) != TDM_OK ||
        (st = tdm_dev_download(dev, x->stage, send, n, "all_to_all send")) != TDM_OK ||
        (st = tdm_comm_all_to_all(x->c, x->stage, (char *)x->stage + n, count, dt, NULL)) != TDM_OK)
        return st;
    return tdm_dev_upload(dev, recv, (char *)x->stage + n, n, "all_to_all receive");
}

static tdm_status g_allgather(void *ctx, tdm_device_t *dev, const void *send, void *recv,
                              int64_t count, tdm_dtype dt) {
    nn_group_ctx *x = ctx;
    tdm_status st;
    int64_t one = count * (int64_t)tdm_dtype_size(dt), n = one * x->c->size;
    void *sm = nccl_stream(x, dev);
    if (sm) return tdm_comm_allgather(x->nccl, send, recv, count, dt, sm);
    if (tdm_dev_is_host(dev)) return tdm_comm_allgather(x->c, send, recv, count, dt, NULL);
    if ((st = stage_reserve(x, one + n, "allgather")) != TDM_OK ||
        (st = tdm_dev_download(dev, x->stage, send, one, "allgather send")) != TDM_OK ||
        (st = tdm_comm_allgather(x->c, x->stage, (char *)x->stage + one, count, dt, NULL)) != TDM_OK)
        return st;
    return tdm_dev_upload(dev, recv, (char *)x->stage + one, n, "allgather receive");
}

/* Receives into the staged copy of recv (the span up to the furthest
 * block), then uploads each rank's block only: recv bytes outside the
 * blocks stay as they were, as for host buffers. */
static tdm_status g_allgatherv(void *ctx, tdm_device_t *dev, const void *send, int64_t count,
                               void *recv, const int64_t *counts, const int64_t *displs,
                               tdm_dtype dt) {
    nn_group_ctx *x = ctx;
    tdm_status st;
    int64_t es = (int64_t)tdm_dtype_size(dt), one = count * es, end = 0;
    void *sm = nccl_stream(x, dev);
    if (sm) return tdm_comm_allgatherv(x->nccl, send, count, recv, counts, displs, dt, sm);
    if (tdm_dev_is_host(dev))
        return tdm_comm_allgatherv(x->c, send, count, recv, counts, displs, dt, NULL);
    for (int r = 0; r < x->c->size; r++) {
        if (counts[r] <= 0) continue;
        if (displs[r] > INT64_MAX / es - counts[r])
            return tdm_errorf(TDM_ERR_INVALID_ARG, "allgatherv on rank %d: rank %d's block "
                              "overflows", x->c->world_rank, r);
        if ((displs[r] + counts[r]) * es > end) end = (displs[r] + counts[r]) * es;
    }
    if (end > INT64_MAX - one)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "allgatherv on rank %d: receive span overflows",
                          x->c->world_rank);
    char *rs = NULL;
    if ((st = stage_reserve(x, one + end, "allgatherv")) != TDM_OK) return st;
    rs = (char *)x->stage + one;
    if ((st = tdm_dev_download(dev, x->stage, send, one, "allgatherv send")) != TDM_OK ||
        (st = tdm_comm_allgatherv(x->c, x->stage, count, rs, counts, displs, dt, NULL)) != TDM_OK)
        return st;
    for (int r = 0; r < x->c->size; r++) {
        if (counts[r] <= 0) continue;
        st = tdm_dev_upload(dev, (char *)recv + displs[r] * es, rs + displs[r] * es,
                            counts[r] * es, "allgatherv receive");
        if (st != TDM_OK) return st;
    }
    return TDM_OK;
}

static tdm_status g_allreduce_sum(void *ctx, tdm_device_t *dev, const void *send, void *recv,
                                  int64_t count, tdm_dtype dt) {
    nn_group_ctx *x = ctx;
    tdm_status st;
    int64_t n = count * (int64_t)tdm_dtype_size(dt);
    void *sm = nccl_stream(x, dev);
    if (sm) return tdm_comm_allreduce(x->nccl, send, recv, count, dt, TDM_REDUCE_SUM, sm);
    if (tdm_dev_is_host(dev)) return tdm_comm_allreduce(x->c, send, recv, count, dt, TDM_REDUCE_SUM, NULL);
    if ((st = stage_reserve(x, 2 * n, "allreduce_sum")) != TDM_OK ||
        (st = tdm_dev_download(dev, x->stage, send, n, "allreduce_sum send")) != TDM_OK ||
        (st = tdm_comm_allreduce(x->c, x->stage, (char *)x->stage + n, count, dt, TDM_REDUCE_SUM, NULL)) != TDM_OK)
        return st;
    return tdm_dev_upload(dev, recv, (char *)x->stage + n, n, "allreduce_sum receive");
}

#define NN_SENDRECV_TAG 71

/* Both halves as one sendrecv, else the half there is (a chain of such
 * calls cannot wait in a cycle: every receive is posted while its sender
 * sends). stream NULL: host buffers. */
static tdm_status half_sendrecv(tdm_comm_t *c, const void *send, int to, void *recv, int from, int64_t count,
                                tdm_dtype dt, void *stream) {
    if (to >= 0 && from >= 0) return tdm_comm_sendrecv(c, send, to, recv, from, count, dt, NN_SENDRECV_TAG, stream);
    if (to >= 0) return tdm_comm_send(c, send, count, dt, to, NN_SENDRECV_TAG, stream);
    if (from >= 0) return tdm_comm_recv(c, recv, count, dt, from, NN_SENDRECV_TAG, stream);
    return TDM_OK;
}

static tdm_status g_sendrecv(void *ctx, tdm_device_t *dev, const void *send, int to, void *recv, int from,
                             int64_t count, tdm_dtype dt) {
    nn_group_ctx *x = ctx;
    tdm_status st;
    int64_t n = count * (int64_t)tdm_dtype_size(dt);
    void *sm = nccl_stream(x, dev);
    if (sm) return half_sendrecv(x->nccl, send, to, recv, from, count, dt, sm);
    if (tdm_dev_is_host(dev)) return half_sendrecv(x->c, send, to, recv, from, count, dt, NULL);
    if ((st = stage_reserve(x, 2 * n, "sendrecv")) != TDM_OK) return st;
    if (to >= 0 && (st = tdm_dev_download(dev, x->stage, send, n, "sendrecv send")) != TDM_OK) return st;
    if ((st = half_sendrecv(x->c, x->stage, to, (char *)x->stage + n, from, count, dt, NULL)) != TDM_OK)
        return st;
    return from >= 0 ? tdm_dev_upload(dev, recv, (char *)x->stage + n, n, "sendrecv receive") : TDM_OK;
}

tdm_status tdm_dist_nn_group_create(tdm_comm_t *c, tdm_nn_group_t *out) {
    if (!out) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_nn_group_create: NULL group");
    memset(out, 0, sizeof *out);
    if (!c) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_nn_group_create: NULL communicator");
    nn_group_ctx *x = calloc(1, sizeof *x);
    if (!x)
        return tdm_errorf(TDM_ERR_NOMEM, "tdm_dist_nn_group_create on rank %d: out of memory",
                          c->world_rank);
    x->c = c;
    out->rank = c->rank;
    out->size = c->size;
    out->ctx = x;
    out->all_to_all = g_all_to_all;
    out->allgather = g_allgather;
    out->allgatherv = g_allgatherv;
    out->allreduce_sum = g_allreduce_sum;
    out->sendrecv = g_sendrecv;
    return TDM_OK;
}

tdm_status tdm_nn_comm_mode_parse(const char *s, tdm_nn_comm_mode *out) {
    if (!s || !strcmp(s, "auto")) *out = TDM_NN_COMM_AUTO;
    else if (!strcmp(s, "mpi")) *out = TDM_NN_COMM_MPI;
    else if (!strcmp(s, "nccl")) *out = TDM_NN_COMM_NCCL;
    else return tdm_errorf(TDM_ERR_INVALID_ARG, "--comm %.100s: expected auto, mpi or nccl", s);
    return TDM_OK;
}

static int64_t host_hash(const char *h) { return (int64_t)(tdm_fnv(h, strlen(h)) >> 1); }

/* Collective over c: *shared = 1 when two ranks of c use the same GPU of
 * one host (*a, *b: two such ranks), else 0. */
static tdm_status gpus_shared(tdm_comm_t *c, const tdm_device_t *dev, int *shared, int *a, int *b) {
    int64_t mine[2] = { host_hash(c->host), dev->index };
    int64_t *all = malloc((size_t)c->size * sizeof mine);
    if (!all) return tdm_errorf(TDM_ERR_NOMEM, "--comm on rank %d: out of memory", c->world_rank);
    tdm_status st = tdm_comm_allgather(c, mine, all, 2, TDM_I64, NULL);
    *shared = 0;
    for (int i = 0; st == TDM_OK && i < c->size && !*shared; i++)
        for (int j = i + 1; j < c->size && !*shared; j++)
            if (all[2 * i] == all[2 * j] && all[2 * i + 1] == all[2 * j + 1]) *shared = 1, *a = i, *b = j;
    free(all);
    return st;
}

tdm_status tdm_dist_nn_group_create_on(tdm_comm_t *c, tdm_device_t *dev, tdm_nn_comm_mode mode,
                                       tdm_nn_group_t *out) {
    tdm_status st = tdm_dist_nn_group_create(c, out);
    if (st != TDM_OK) return st;
    const int cuda = dev && !tdm_dev_is_host(dev) && dev->ops->stream;
    if (mode == TDM_NN_COMM_MPI || c->size < 2 || (mode == TDM_NN_COMM_AUTO && (!cuda || !tdm_comm_nccl_built())))
        return TDM_OK;
    int shared = 0, a = 0, b = 0;
    if (!cuda)
        st = tdm_errorf(TDM_ERR_INVALID_ARG, "--comm nccl on rank %d: the group's buffers are not on a CUDA "
                        "device", c->world_rank);
    else if (!tdm_comm_nccl_built())
        st = tdm_errorf(TDM_ERR_UNSUPPORTED, "--comm nccl: this build has no NCCL");
    if (st == TDM_OK) st = gpus_shared(c, dev, &shared, &a, &b);
    if (st == TDM_OK && shared && mode == TDM_NN_COMM_NCCL)
        st = tdm_errorf(TDM_ERR_INVALID_ARG, "--comm nccl: ranks %d and %d of a group share GPU %d (NCCL "
                        "takes one rank per GPU; use --comm mpi)", a, b, dev->index);
    if (st == TDM_OK && !shared) {
        dev->ops->stream(dev);   /* makes dev the calling thread's current GPU, as NCCL needs */
        st = tdm_comm_nccl_create(c, &((nn_group_ctx *)out->ctx)->nccl);
    }
    if (st != TDM_OK) tdm_dist_nn_group_free(out);
    return st;
}

void tdm_dist_nn_group_free(tdm_nn_group_t *g) {
    if (!g) return;
    nn_group_ctx *x = g->ctx;
    if (x) {
        free(x->stage);
        tdm_comm_free(x->nccl);
    }
    free(x);
    memset(g, 0, sizeof *g);
}
