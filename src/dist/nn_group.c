/* nn_group.c — nn/group.h's calls over a tdm_comm_t, with host staging of
 * device buffers (download → exchange → upload). Not thread-safe (one
 * staging buffer per group), like every communicator. */
#include "dist/nn_group.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    tdm_comm_t *c;
    void *stage;           /* host staging: send part, then receive part */
    int64_t stage_bytes;
} nn_group_ctx;

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
    if (tdm_dev_is_host(dev)) return tdm_comm_allreduce(x->c, send, recv, count, dt, TDM_REDUCE_SUM, NULL);
    if ((st = stage_reserve(x, 2 * n, "allreduce_sum")) != TDM_OK ||
        (st = tdm_dev_download(dev, x->stage, send, n, "allreduce_sum send")) != TDM_OK ||
        (st = tdm_comm_allreduce(x->c, x->stage, (char *)x->stage + n, count, dt, TDM_REDUCE_SUM, NULL)) != TDM_OK)
        return st;
    return tdm_dev_upload(dev, recv, (char *)x->stage + n, n, "allreduce_sum receive");
}

#define NN_SENDRECV_TAG 71

/* Host buffers: both halves as one sendrecv, else the half there is (a
 * chain of such calls cannot wait in a cycle: every receive is posted
 * while its sender sends). */
static tdm_status host_sendrecv(tdm_comm_t *c, const void *send, int to, void *recv, int from, int64_t count,
                                tdm_dtype dt) {
    if (to >= 0 && from >= 0) return tdm_comm_sendrecv(c, send, to, recv, from, count, dt, NN_SENDRECV_TAG, NULL);
    if (to >= 0) return tdm_comm_send(c, send, count, dt, to, NN_SENDRECV_TAG, NULL);
    if (from >= 0) return tdm_comm_recv(c, recv, count, dt, from, NN_SENDRECV_TAG, NULL);
    return TDM_OK;
}

static tdm_status g_sendrecv(void *ctx, tdm_device_t *dev, const void *send, int to, void *recv, int from,
                             int64_t count, tdm_dtype dt) {
    nn_group_ctx *x = ctx;
    tdm_status st;
    int64_t n = count * (int64_t)tdm_dtype_size(dt);
    if (tdm_dev_is_host(dev)) return host_sendrecv(x->c, send, to, recv, from, count, dt);
    if ((st = stage_reserve(x, 2 * n, "sendrecv")) != TDM_OK) return st;
    if (to >= 0 && (st = tdm_dev_download(dev, x->stage, send, n, "sendrecv send")) != TDM_OK) return st;
    if ((st = host_sendrecv(x->c, x->stage, to, (char *)x->stage + n, from, count, dt)) != TDM_OK) return st;
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

void tdm_dist_nn_group_free(tdm_nn_group_t *g) {
    if (!g) return;
    nn_group_ctx *x = g->ctx;
    if (x) free(x->stage);
    free(x);
    memset(g, 0, sizeof *g);
}
