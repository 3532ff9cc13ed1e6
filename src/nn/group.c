/* group.c — argument checks of the nn group calls and the one-rank group
 * (every collective a copy on the device). Not a communicator (dist/). */
#include "nn/group.h"

#include <string.h>

/* dst = src, bytes, on dev (a no-op when they are the same). */
static tdm_status dev_copy(tdm_device_t *dev, void *dst, const void *src, int64_t bytes,
                           const char *fn) {
    if (bytes <= 0 || dst == src) return TDM_OK;
    if (tdm_dev_is_host(dev)) {
        memmove(dst, src, (size_t)bytes);
        return TDM_OK;
    }
    if (!dev->ops->copy || !dev->ops->copy(dev, dst, src, bytes))
        return tdm_errorf(TDM_ERR_INTERNAL, "%s (one rank): device copy of %lld bytes failed", fn,
                          (long long)bytes);
    return TDM_OK;
}

static tdm_status single_all_to_all(void *ctx, tdm_device_t *dev, const void *send, void *recv,
                                    int64_t count, tdm_dtype dt) {
    return dev_copy(dev, recv, send, count * (int64_t)tdm_dtype_size(dt), "all_to_all");
}

static tdm_status single_allgather(void *ctx, tdm_device_t *dev, const void *send, void *recv,
                                   int64_t count, tdm_dtype dt) {
    return dev_copy(dev, recv, send, count * (int64_t)tdm_dtype_size(dt), "allgather");
}

static tdm_status single_allgatherv(void *ctx, tdm_device_t *dev, const void *send, int64_t count,
                                    void *recv, const int64_t *counts, const int64_t *displs,
                                    tdm_dtype dt) {
    size_t es = tdm_dtype_size(dt);
    return dev_copy(dev, (char *)recv + displs[0] * (int64_t)es, send, count * (int64_t)es,
                    "allgatherv");
}

static tdm_status single_allreduce_sum(void *ctx, tdm_device_t *dev, const void *send, void *recv,
                                       int64_t count, tdm_dtype dt) {
    return dev_copy(dev, recv, send, count * (int64_t)tdm_dtype_size(dt), "allreduce_sum");
}

/* to and from are 0 or -1 here: a message to itself arrives, else nothing */
static tdm_status single_sendrecv(void *ctx, tdm_device_t *dev, const void *send, int to, void *recv,
                                  int from, int64_t count, tdm_dtype dt) {
    if (to < 0 || from < 0) return TDM_OK;
    return dev_copy(dev, recv, send, count * (int64_t)tdm_dtype_size(dt), "sendrecv");
}

void tdm_nn_group_single(tdm_nn_group_t *g) {
    memset(g, 0, sizeof *g);
    g->rank = 0;
    g->size = 1;
    g->all_to_all = single_all_to_all;
    g->allgather = single_allgather;
    g->allgatherv = single_allgatherv;
    g->allreduce_sum = single_allreduce_sum;
    g->sendrecv = single_sendrecv;
}

static const tdm_nn_group_t *group_or_single(const tdm_nn_group_t *g, tdm_nn_group_t *one) {
    if (g) return g;
    tdm_nn_group_single(one);
    return one;
}

/* The checks every call shares; `blocks` count-sized blocks in the largest buffer. */
static tdm_status check_call(const tdm_nn_group_t *g, const char *fn, int64_t count, tdm_dtype dt,
                             int bufs_ok, int64_t blocks) {
    int64_t elems, bytes;
    if (g->size < 1 || g->rank < 0 || g->rank >= g->size)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: rank %d of a group of %d", fn, g->rank, g->size);
    if (count < 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s on rank %d: negative count %lld", fn, g->rank,
                          (long long)count);
    if ((unsigned)dt >= TDM_DTYPE_COUNT)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s on rank %d: unknown dtype %d", fn, g->rank,
                          (int)dt);
    if (!tdm_mul_ok(count, blocks, &elems) || !tdm_mul_ok(elems, (int64_t)tdm_dtype_size(dt), &bytes))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s on rank %d: %lld x %lld elements overflow", fn,
                          g->rank, (long long)count, (long long)blocks);
    if (count > 0 && !bufs_ok)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s on rank %d: NULL buffer for %lld elements", fn,
                          g->rank, (long long)count);
    return TDM_OK;
}

tdm_status tdm_nn_group_all_to_all(const tdm_nn_group_t *g, tdm_device_t *dev, const void *send,
                                   void *recv, int64_t count, tdm_dtype dt) {
    tdm_nn_group_t one;
    tdm_status st;
    g = group_or_single(g, &one);
    st = check_call(g, "all_to_all", count, dt, send && recv, g->size);
    if (st != TDM_OK) return st;
    return g->all_to_all(g->ctx, dev, send, recv, count, dt);
}

tdm_status tdm_nn_group_allgather(const tdm_nn_group_t *g, tdm_device_t *dev, const void *send,
                                  void *recv, int64_t count, tdm_dtype dt) {
    tdm_nn_group_t one;
    tdm_status st;
    g = group_or_single(g, &one);
    st = check_call(g, "allgather", count, dt, send && recv, g->size);
    if (st != TDM_OK) return st;
    return g->allgather(g->ctx, dev, send, recv, count, dt);
}

tdm_status tdm_nn_group_allgatherv(const tdm_nn_group_t *g, tdm_device_t *dev, const void *send,
                                   int64_t count, void *recv, const int64_t *counts,
                                   const int64_t *displs, tdm_dtype dt) {
    tdm_nn_group_t one;
    tdm_status st;
    int64_t any = 0;
    g = group_or_single(g, &one);
    if (!counts || !displs)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "allgatherv on rank %d: NULL counts or "
                          "displacements", g->rank);
    st = check_call(g, "allgatherv", count, dt, send != NULL, 1);
    if (st != TDM_OK) return st;
    for (int r = 0; r < g->size; r++) {
        if (counts[r] < 0 || displs[r] < 0)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "allgatherv on rank %d: rank %d's count %lld "
                              "or displacement %lld is negative", g->rank, r,
                              (long long)counts[r], (long long)displs[r]);
        any |= counts[r];
    }
    if (counts[g->rank] != count)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "allgatherv on rank %d: sends %lld elements but "
                          "counts[%d] = %lld", g->rank, (long long)count, g->rank,
                          (long long)counts[g->rank]);
    if (any && !recv)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "allgatherv on rank %d: NULL receive buffer",
                          g->rank);
    return g->allgatherv(g->ctx, dev, send, count, recv, counts, displs, dt);
}

tdm_status tdm_nn_group_allreduce_sum(const tdm_nn_group_t *g, tdm_device_t *dev, const void *send,
                                      void *recv, int64_t count, tdm_dtype dt) {
    tdm_nn_group_t one;
    tdm_status st;
    g = group_or_single(g, &one);
    st = check_call(g, "allreduce_sum", count, dt, send && recv, 1);
    if (st != TDM_OK) return st;
    if (dt != TDM_F32)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "allreduce_sum on rank %d: %s elements (F32 only)", g->rank,
                          tdm_dtype_name(dt));
    return g->allreduce_sum(g->ctx, dev, send, recv, count, dt);
}

tdm_status tdm_nn_group_sendrecv(const tdm_nn_group_t *g, tdm_device_t *dev, const void *send, int to,
                                 void *recv, int from, int64_t count, tdm_dtype dt) {
    tdm_nn_group_t one;
    tdm_status st;
    g = group_or_single(g, &one);
    st = check_call(g, "sendrecv", count, dt, (to < 0 || send) && (from < 0 || recv), 1);
    if (st != TDM_OK) return st;
    if (to < -1 || to >= g->size || from < -1 || from >= g->size)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "sendrecv on rank %d: peer %d / %d outside the group of %d "
                          "(-1: none)", g->rank, to, from, g->size);
    return g->sendrecv(g->ctx, dev, send, to, recv, from, count, dt);
}
