/* comm.c — the tdm_comm_* calls: argument checks shared by every
 * communicator implementation, then the call through its op table.
 * Not an implementation itself (see comm_single.c, comm_mpi.c). */
#include "dist/comm.h"

#define COMM_CHECK(c, fn)                                                      \
    do {                                                                       \
        if (!(c)) return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: NULL communicator", fn); \
    } while (0)

/* Count, dtype, stream and buffer checks of one data call; `bufs_ok` says
 * whether the buffers the call needs for a nonzero count are present, and
 * `blocks` how many count-sized blocks the largest buffer holds. */
static tdm_status check_data(const tdm_comm_t *c, const char *fn, int64_t count, tdm_dtype dt,
                             int bufs_ok, int64_t blocks, const void *stream) {
    int64_t elems = 0, bytes = 0;
    if (count < 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s on rank %d: negative count %lld", fn,
                          c->world_rank, (long long)count);
    if ((unsigned)dt >= TDM_DTYPE_COUNT)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s on rank %d: unknown dtype %d", fn, c->world_rank,
                          (int)dt);
    if (!tdm_mul_ok(count, blocks, &elems) || !tdm_mul_ok(elems, (int64_t)tdm_dtype_size(dt), &bytes))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s on rank %d: %lld x %lld elements overflow", fn,
                          c->world_rank, (long long)count, (long long)blocks);
    if (count > 0 && !bufs_ok)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s on rank %d: NULL buffer for %lld elements", fn,
                          c->world_rank, (long long)count);
    if (stream && !(c->ops->caps & TDM_COMM_DEVICE_BUFFERS))
        return tdm_errorf(TDM_ERR_UNSUPPORTED,
                          "%s on rank %d: the %s communicator takes host buffers only (stream "
                          "must be NULL)", fn, c->world_rank, c->ops->name);
    return TDM_OK;
}

static tdm_status check_rank(const tdm_comm_t *c, const char *fn, const char *what, int r) {
    if (r < 0 || r >= c->size)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s on rank %d: %s %d is not a rank of 0..%d", fn,
                          c->world_rank, what, r, c->size - 1);
    return TDM_OK;
}

tdm_status tdm_comm_barrier(tdm_comm_t *c) {
    COMM_CHECK(c, "tdm_comm_barrier");
    return c->ops->barrier(c);
}

tdm_status tdm_comm_broadcast(tdm_comm_t *c, void *buf, int64_t count, tdm_dtype dt, int root,
                              void *stream) {
    tdm_status st;
    COMM_CHECK(c, "tdm_comm_broadcast");
    if ((st = check_data(c, "tdm_comm_broadcast", count, dt, buf != NULL, 1, stream)) != TDM_OK ||
        (st = check_rank(c, "tdm_comm_broadcast", "root", root)) != TDM_OK)
        return st;
    return c->ops->broadcast(c, buf, count, dt, root, stream);
}

tdm_status tdm_comm_allreduce(tdm_comm_t *c, const void *send, void *recv, int64_t count,
                              tdm_dtype dt, tdm_reduce_op op, void *stream) {
    tdm_status st;
    COMM_CHECK(c, "tdm_comm_allreduce");
    st = check_data(c, "tdm_comm_allreduce", count, dt, send && recv, 1, stream);
    if (st != TDM_OK) return st;
    if (dt != TDM_F32 && dt != TDM_F64 && dt != TDM_I32 && dt != TDM_I64)
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "tdm_comm_allreduce on rank %d: dtype %s (F32, F64, "
                          "I32 or I64)", c->world_rank, tdm_dtype_name(dt));
    if (op != TDM_REDUCE_SUM && op != TDM_REDUCE_MAX)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_allreduce on rank %d: unknown op %d",
                          c->world_rank, (int)op);
    return c->ops->allreduce(c, send, recv, count, dt, op, stream);
}

tdm_status tdm_comm_allgather(tdm_comm_t *c, const void *send, void *recv, int64_t count,
                              tdm_dtype dt, void *stream) {
    tdm_status st;
    COMM_CHECK(c, "tdm_comm_allgather");
    st = check_data(c, "tdm_comm_allgather", count, dt, send && recv, c->size, stream);
    if (st != TDM_OK) return st;
    return c->ops->allgather(c, send, recv, count, dt, stream);
}

tdm_status tdm_comm_allgatherv(tdm_comm_t *c, const void *send, int64_t count, void *recv,
                               const int64_t *counts, const int64_t *displs, tdm_dtype dt,
                               void *stream) {
    tdm_status st;
    int64_t any = 0;
    COMM_CHECK(c, "tdm_comm_allgatherv");
    if (!counts || !displs)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_allgatherv on rank %d: NULL counts or "
                          "displacements", c->world_rank);
    for (int r = 0; r < c->size; r++) {
        if (counts[r] < 0 || displs[r] < 0)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_allgatherv on rank %d: rank %d's "
                              "count %lld or displacement %lld is negative", c->world_rank, r,
                              (long long)counts[r], (long long)displs[r]);
        any |= counts[r];
    }
    if (counts[c->rank] != count)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_allgatherv on rank %d: sends %lld "
                          "elements but counts[%d] = %lld", c->world_rank, (long long)count,
                          c->rank, (long long)counts[c->rank]);
    st = check_data(c, "tdm_comm_allgatherv", count, dt, send != NULL, 1, stream);
    if (st != TDM_OK) return st;
    if (any && !recv)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_allgatherv on rank %d: NULL receive "
                          "buffer", c->world_rank);
    return c->ops->allgatherv(c, send, count, recv, counts, displs, dt, stream);
}

tdm_status tdm_comm_all_to_all(tdm_comm_t *c, const void *send, void *recv, int64_t count,
                               tdm_dtype dt, void *stream) {
    tdm_status st;
    COMM_CHECK(c, "tdm_comm_all_to_all");
    st = check_data(c, "tdm_comm_all_to_all", count, dt, send && recv, c->size, stream);
    if (st != TDM_OK) return st;
    return c->ops->all_to_all(c, send, recv, count, dt, stream);
}

tdm_status tdm_comm_send(tdm_comm_t *c, const void *buf, int64_t count, tdm_dtype dt, int peer,
                         int tag, void *stream) {
    tdm_status st;
    COMM_CHECK(c, "tdm_comm_send");
    if ((st = check_data(c, "tdm_comm_send", count, dt, buf != NULL, 1, stream)) != TDM_OK ||
        (st = check_rank(c, "tdm_comm_send", "peer", peer)) != TDM_OK)
        return st;
    if (tag < 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_send on rank %d: negative tag %d",
                          c->world_rank, tag);
    return c->ops->send(c, buf, count, dt, peer, tag, stream);
}

tdm_status tdm_comm_recv(tdm_comm_t *c, void *buf, int64_t count, tdm_dtype dt, int peer, int tag,
                         void *stream) {
    tdm_status st;
    COMM_CHECK(c, "tdm_comm_recv");
    if ((st = check_data(c, "tdm_comm_recv", count, dt, buf != NULL, 1, stream)) != TDM_OK ||
        (st = check_rank(c, "tdm_comm_recv", "peer", peer)) != TDM_OK)
        return st;
    if (tag < 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_recv on rank %d: negative tag %d",
                          c->world_rank, tag);
    return c->ops->recv(c, buf, count, dt, peer, tag, stream);
}

tdm_status tdm_comm_probe(tdm_comm_t *c, int peer, int tag, int *ready) {
    tdm_status st;
    COMM_CHECK(c, "tdm_comm_probe");
    if (!ready)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_probe on rank %d: ready is NULL", c->world_rank);
    *ready = 0;
    if ((st = check_rank(c, "tdm_comm_probe", "peer", peer)) != TDM_OK) return st;
    if (tag < 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_probe on rank %d: negative tag %d",
                          c->world_rank, tag);
    if (!c->ops->probe)
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "tdm_comm_probe on rank %d: the %s communicator has "
                          "no probe", c->world_rank, c->ops->name);
    return c->ops->probe(c, peer, tag, ready);
}

tdm_status tdm_comm_sendrecv(tdm_comm_t *c, const void *send, int to, void *recv, int from,
                             int64_t count, tdm_dtype dt, int tag, void *stream) {
    tdm_status st;
    COMM_CHECK(c, "tdm_comm_sendrecv");
    if ((st = check_data(c, "tdm_comm_sendrecv", count, dt, send && recv, 1, stream)) != TDM_OK ||
        (st = check_rank(c, "tdm_comm_sendrecv", "destination", to)) != TDM_OK ||
        (st = check_rank(c, "tdm_comm_sendrecv", "source", from)) != TDM_OK)
        return st;
    if (tag < 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_sendrecv on rank %d: negative tag %d",
                          c->world_rank, tag);
    return c->ops->sendrecv(c, send, to, recv, from, count, dt, tag, stream);
}

tdm_status tdm_comm_split(tdm_comm_t *c, int color, int key, tdm_comm_t **out) {
    COMM_CHECK(c, "tdm_comm_split");
    if (!out) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_split: NULL output pointer");
    *out = NULL;
    return c->ops->split(c, color, key, out);
}

tdm_status tdm_comm_counter_open(tdm_comm_t *c) {
    tdm_status st;
    COMM_CHECK(c, "tdm_comm_counter_open");
    if (c->counter_open)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_counter_open: the counter is already open");
    st = c->ops->counter_open(c);
    if (st == TDM_OK) c->counter_open = 1;
    return st;
}

tdm_status tdm_comm_counter_next(tdm_comm_t *c, int64_t *next) {
    if (!c || !next) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_counter_next: NULL argument");
    if (!c->counter_open)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_counter_next: the counter is not open");
    return c->ops->counter_next(c, next);
}

tdm_status tdm_comm_counter_close(tdm_comm_t *c) {
    COMM_CHECK(c, "tdm_comm_counter_close");
    if (!c->counter_open)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_counter_close: the counter is not open");
    c->counter_open = 0;   /* closed even when the close fails */
    return c->ops->counter_close(c);
}

void tdm_comm_abort(tdm_comm_t *c, int code) {
    if (c) c->ops->abort(c, code);
}

void tdm_comm_free(tdm_comm_t *c) {
    if (c) c->ops->free(c);
}
