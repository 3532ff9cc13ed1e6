/* comm_nccl.c — the NCCL communicator: device buffers, every data call
 * enqueued on the caller's CUDA stream (stream != NULL is required: NCCL
 * takes no host buffers), bootstrapped over a host communicator (MPI):
 * rank 0 makes the NCCL unique id and broadcasts it. barrier, split and the
 * shared counter go to the bootstrap communicator (split splits both).
 * NCCL uses the calling thread's current CUDA device: the caller selects
 * the rank's GPU (opening a CUDA backend device does) before create and
 * every call. In a build without NCCL the constructor says so.
 * Not thread-safe: only the thread that created it calls it. */
#include "dist/comm.h"

#include <stdlib.h>
#include <string.h>

#ifdef TDM_HAVE_NCCL
#include <nccl.h>

typedef struct {
    ncclComm_t nc;
    tdm_comm_t *boot;    /* host communicator for barrier, split, counter */
    int own_boot;        /* boot was made by a split of ours: free it with us */
} nccl_ctx;

static const tdm_comm_ops nccl_ops;

#define CTX(c) ((nccl_ctx *)(c)->ctx)

/* returns the status of x unless it is TDM_OK */
#define RETURN_IF_ERR(x)                  \
    do {                                  \
        tdm_status st_ = (x);             \
        if (st_ != TDM_OK) return st_;    \
    } while (0)

static tdm_status nccl_fail(const tdm_comm_t *c, ncclResult_t r, const char *call) {
    return tdm_errorf(TDM_ERR_INTERNAL, "%s failed on rank %d: %s", call, c->world_rank,
                      ncclGetErrorString(r));
}

#define NCCL_TRY(c, call)                                        \
    do {                                                         \
        ncclResult_t nr_ = (call);                               \
        if (nr_ != ncclSuccess) return nccl_fail((c), nr_, #call); \
    } while (0)

/* Reductions see only F32, F64, I32, I64 (the wrappers); the rest travel as
 * bytes of their width. */
static ncclDataType_t nccl_type(tdm_dtype dt) {
    switch (dt) {
    case TDM_F32: return ncclFloat32;
    case TDM_F64: return ncclFloat64;
    case TDM_F16: case TDM_U16: case TDM_I16: return ncclFloat16;
    case TDM_BF16: return ncclBfloat16;
    case TDM_I32: return ncclInt32;
    case TDM_U32: return ncclUint32;
    case TDM_I64: return ncclInt64;
    case TDM_U64: return ncclUint64;
    case TDM_I8: return ncclInt8;
    default: return ncclUint8;
    }
}

static tdm_status need_stream(const tdm_comm_t *c, const char *fn, const void *stream) {
    if (stream) return TDM_OK;
    return tdm_errorf(TDM_ERR_UNSUPPORTED, "%s on rank %d: the nccl communicator takes device buffers "
                      "on a stream only (stream NULL)", fn, c->world_rank);
}

static char *at(const void *p, int64_t elems, tdm_dtype dt) {
    return (char *)p + elems * (int64_t)tdm_dtype_size(dt);
}

static tdm_status n_barrier(tdm_comm_t *c) { return tdm_comm_barrier(CTX(c)->boot); }

static tdm_status n_broadcast(tdm_comm_t *c, void *buf, int64_t count, tdm_dtype dt, int root, void *stream) {
    RETURN_IF_ERR(need_stream(c, "tdm_comm_broadcast", stream));
    NCCL_TRY(c, ncclBroadcast(buf, buf, (size_t)count, nccl_type(dt), root, CTX(c)->nc, (cudaStream_t)stream));
    return TDM_OK;
}

static tdm_status n_allreduce(tdm_comm_t *c, const void *send, void *recv, int64_t count, tdm_dtype dt,
                              tdm_reduce_op op, void *stream) {
    RETURN_IF_ERR(need_stream(c, "tdm_comm_allreduce", stream));
    NCCL_TRY(c, ncclAllReduce(send, recv, (size_t)count, nccl_type(dt), op == TDM_REDUCE_MAX ? ncclMax : ncclSum,
                              CTX(c)->nc, (cudaStream_t)stream));
    return TDM_OK;
}

static tdm_status n_allgather(tdm_comm_t *c, const void *send, void *recv, int64_t count, tdm_dtype dt,
                              void *stream) {
    RETURN_IF_ERR(need_stream(c, "tdm_comm_allgather", stream));
    NCCL_TRY(c, ncclAllGather(send, recv, (size_t)count, nccl_type(dt), CTX(c)->nc, (cudaStream_t)stream));
    return TDM_OK;
}

/* one broadcast per rank's block, grouped */
static tdm_status n_allgatherv(tdm_comm_t *c, const void *send, int64_t count, void *recv, const int64_t *counts,
                               const int64_t *displs, tdm_dtype dt, void *stream) {
    RETURN_IF_ERR(need_stream(c, "tdm_comm_allgatherv", stream));
    NCCL_TRY(c, ncclGroupStart());
    for (int r = 0; r < c->size; r++) {
        if (counts[r] == 0) continue;
        ncclResult_t nr = ncclBroadcast(r == c->rank ? send : NULL, at(recv, displs[r], dt), (size_t)counts[r],
                                        nccl_type(dt), r, CTX(c)->nc, (cudaStream_t)stream);
        if (nr != ncclSuccess) {
            ncclGroupEnd();
            return nccl_fail(c, nr, "ncclBroadcast (allgatherv)");
        }
    }
    NCCL_TRY(c, ncclGroupEnd());
    return TDM_OK;
}

/* a send and a receive per peer, grouped */
static tdm_status n_all_to_all(tdm_comm_t *c, const void *send, void *recv, int64_t count, tdm_dtype dt,
                               void *stream) {
    RETURN_IF_ERR(need_stream(c, "tdm_comm_all_to_all", stream));
    NCCL_TRY(c, ncclGroupStart());
    for (int r = 0; r < c->size && count > 0; r++) {
        ncclResult_t nr = ncclSend(at(send, r * count, dt), (size_t)count, nccl_type(dt), r, CTX(c)->nc,
                                   (cudaStream_t)stream);
        if (nr == ncclSuccess)
            nr = ncclRecv(at(recv, r * count, dt), (size_t)count, nccl_type(dt), r, CTX(c)->nc, (cudaStream_t)stream);
        if (nr != ncclSuccess) {
            ncclGroupEnd();
            return nccl_fail(c, nr, "ncclSend/ncclRecv (all_to_all)");
        }
    }
    NCCL_TRY(c, ncclGroupEnd());
    return TDM_OK;
}

/* NCCL matches point-to-point messages by order, not tag */
static tdm_status n_send(tdm_comm_t *c, const void *buf, int64_t count, tdm_dtype dt, int peer, int tag,
                         void *stream) {
    RETURN_IF_ERR(need_stream(c, "tdm_comm_send", stream));
    NCCL_TRY(c, ncclSend(buf, (size_t)count, nccl_type(dt), peer, CTX(c)->nc, (cudaStream_t)stream));
    return TDM_OK;
}

static tdm_status n_recv(tdm_comm_t *c, void *buf, int64_t count, tdm_dtype dt, int peer, int tag, void *stream) {
    RETURN_IF_ERR(need_stream(c, "tdm_comm_recv", stream));
    NCCL_TRY(c, ncclRecv(buf, (size_t)count, nccl_type(dt), peer, CTX(c)->nc, (cudaStream_t)stream));
    return TDM_OK;
}

static tdm_status n_sendrecv(tdm_comm_t *c, const void *send, int to, void *recv, int from, int64_t count,
                             tdm_dtype dt, int tag, void *stream) {
    RETURN_IF_ERR(need_stream(c, "tdm_comm_sendrecv", stream));
    NCCL_TRY(c, ncclGroupStart());
    ncclResult_t nr = ncclSend(send, (size_t)count, nccl_type(dt), to, CTX(c)->nc, (cudaStream_t)stream);
    if (nr == ncclSuccess) nr = ncclRecv(recv, (size_t)count, nccl_type(dt), from, CTX(c)->nc, (cudaStream_t)stream);
    if (nr != ncclSuccess) {
        ncclGroupEnd();
        return nccl_fail(c, nr, "ncclSend/ncclRecv (sendrecv)");
    }
    NCCL_TRY(c, ncclGroupEnd());
    return TDM_OK;
}

/* A tdm_comm over nc and boot (owned when own_boot). On failure nothing is kept. */
static tdm_status wrap(ncclComm_t nc, tdm_comm_t *boot, int own_boot, tdm_comm_t **out) {
    tdm_comm_t *c = calloc(1, sizeof *c);
    nccl_ctx *x = calloc(1, sizeof *x);
    if (!c || !x) {
        free(c), free(x);
        ncclCommDestroy(nc);
        if (own_boot) tdm_comm_free(boot);
        return tdm_errorf(TDM_ERR_NOMEM, "tdm_comm_nccl_create on rank %d: out of memory", boot->world_rank);
    }
    x->nc = nc, x->boot = boot, x->own_boot = own_boot;
    c->ops = &nccl_ops, c->ctx = x;
    c->rank = boot->rank, c->size = boot->size;
    c->local_rank = boot->local_rank, c->local_size = boot->local_size;
    c->world_rank = boot->world_rank;
    memcpy(c->host, boot->host, sizeof c->host);
    *out = c;
    return TDM_OK;
}

/* Collective: both communicators split the same way. */
static tdm_status n_split(tdm_comm_t *c, int color, int key, tdm_comm_t **out) {
    tdm_comm_t *b = NULL;
    ncclComm_t nc = NULL;
    RETURN_IF_ERR(tdm_comm_split(CTX(c)->boot, color, key, &b));
    ncclResult_t nr = ncclCommSplit(CTX(c)->nc, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &nc, NULL);
    if (nr != ncclSuccess) {
        tdm_comm_free(b);
        return nccl_fail(c, nr, "ncclCommSplit");
    }
    if (!b) return TDM_OK;
    return wrap(nc, b, 1, out);
}

static tdm_status n_counter_open(tdm_comm_t *c) { return tdm_comm_counter_open(CTX(c)->boot); }
static tdm_status n_counter_next(tdm_comm_t *c, int64_t *next) { return tdm_comm_counter_next(CTX(c)->boot, next); }
static tdm_status n_counter_close(tdm_comm_t *c) { return tdm_comm_counter_close(CTX(c)->boot); }

static void n_abort(tdm_comm_t *c, int code) {
    ncclCommAbort(CTX(c)->nc);
    tdm_comm_abort(CTX(c)->boot, code);
}

static void n_free(tdm_comm_t *c) {
    nccl_ctx *x = CTX(c);
    ncclCommDestroy(x->nc);
    if (x->own_boot) tdm_comm_free(x->boot);
    free(x);
    free(c);
}

static const tdm_comm_ops nccl_ops = {
    .name = "nccl",
    .caps = TDM_COMM_DEVICE_BUFFERS,
    .barrier = n_barrier,
    .broadcast = n_broadcast,
    .allreduce = n_allreduce,
    .allgather = n_allgather,
    .allgatherv = n_allgatherv,
    .all_to_all = n_all_to_all,
    .send = n_send,
    .recv = n_recv,
    .sendrecv = n_sendrecv,
    .split = n_split,
    .counter_open = n_counter_open,
    .counter_next = n_counter_next,
    .counter_close = n_counter_close,
    .abort = n_abort,
    .free = n_free,
};

int tdm_comm_nccl_built(void) { return 1; }

tdm_status tdm_comm_nccl_create(tdm_comm_t *boot, tdm_comm_t **out) {
    ncclUniqueId id;
    ncclComm_t nc = NULL;
    if (!boot || !out) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_nccl_create: NULL argument");
    *out = NULL;
    memset(&id, 0, sizeof id);
    if (boot->rank == 0) {
        ncclResult_t nr = ncclGetUniqueId(&id);
        if (nr != ncclSuccess) return nccl_fail(boot, nr, "ncclGetUniqueId");
    }
    RETURN_IF_ERR(tdm_comm_broadcast(boot, &id, (int64_t)sizeof id, TDM_U8, 0, NULL));
    ncclResult_t nr = ncclCommInitRank(&nc, boot->size, id, boot->rank);
    if (nr != ncclSuccess) return nccl_fail(boot, nr, "ncclCommInitRank");
    return wrap(nc, boot, 0, out);
}

#else /* !TDM_HAVE_NCCL */

int tdm_comm_nccl_built(void) { return 0; }

tdm_status tdm_comm_nccl_create(tdm_comm_t *boot, tdm_comm_t **out) {
    if (out) *out = NULL;
    return tdm_errorf(TDM_ERR_UNSUPPORTED, "tdm_comm_nccl_create: this build has no NCCL (configure with "
                      "-DTDM_CUDA=ON where nccl.h and libnccl are found)");
}

#endif
