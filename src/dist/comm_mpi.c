/* comm_mpi.c — the MPI communicator (Open MPI, MPICH): a duplicate of
 * MPI_COMM_WORLD, or a split of one, with MPI_ERRORS_RETURN on it and on
 * the counter's window, so MPI errors come back as tdm_status values whose
 * message names the MPI call, the rank and MPI's own error text. Host
 * buffers only (stream NULL). The only file of src/dist that names MPI;
 * in a build without MPI it provides constructors that say so.
 * Not thread-safe: only the thread that created it calls it. */
#include "dist/comm.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef TDM_HAVE_MPI
#include <mpi.h>

typedef struct {
    MPI_Comm comm;      /* ours: errors return */
    MPI_Win win;        /* the counter's window (one int64 on rank 0) */
    int mpi_started;    /* 1: we called MPI_Init, so freeing this finalizes */
} mpi_ctx;

static const tdm_comm_ops mpi_ops;

#define CTX(c) ((mpi_ctx *)(c)->ctx)

/* Record a failed MPI call (its text, our rank, MPI's message, where) and
 * jump to `fail`. Needs `tdm_status st` and a `fail` label in scope. */
#define TDM_MPI_CHECK(c, call)                                                 \
    do {                                                                       \
        int mpi_rc_ = (call);                                                  \
        if (mpi_rc_ != MPI_SUCCESS) {                                          \
            st = mpi_error((c)->world_rank, mpi_rc_, #call, __FILE__, __LINE__);           \
            goto fail;                                                         \
        }                                                                      \
    } while (0)

static tdm_status mpi_error(int rank, int rc, const char *call, const char *file,
                            int line) {
    char msg[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
    msg[len > 0 && len <= MPI_MAX_ERROR_STRING ? len : 0] = '\0';
    return tdm_errorf(TDM_ERR_INTERNAL, "%s failed on rank %d: %s (%s:%d)", call,
                      rank, msg[0] ? msg : "unknown MPI error", file, line);
}

/* The MPI datatype of one element of dt (16-bit floats travel as bits; the
 * wrappers let only F32, F64, I32 and I64 reach a reduction). */
static MPI_Datatype mpi_type(tdm_dtype dt) {
    switch (dt) {
    case TDM_F32: return MPI_FLOAT;
    case TDM_F64: return MPI_DOUBLE;
    case TDM_F16: case TDM_BF16: case TDM_U16: return MPI_UINT16_T;
    case TDM_I16: return MPI_INT16_T;
    case TDM_I8: return MPI_INT8_T;
    case TDM_U8: case TDM_BOOL: return MPI_UINT8_T;
    case TDM_I32: return MPI_INT32_T;
    case TDM_U32: return MPI_UINT32_T;
    case TDM_I64: return MPI_INT64_T;
    case TDM_U64: return MPI_UINT64_T;
    default: return MPI_DATATYPE_NULL;
    }
}

/* MPI counts are int: refuse what does not fit. */
static tdm_status mpi_count(const tdm_comm_t *c, const char *fn, int64_t n, int *out) {
    if (n > INT_MAX)
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "%s on rank %d: %lld elements exceed MPI's int "
                          "count", fn, c->world_rank, (long long)n);
    *out = (int)n;
    return TDM_OK;
}

static tdm_status mpi_barrier(tdm_comm_t *c) {
    tdm_status st = TDM_OK;
    TDM_MPI_CHECK(c, MPI_Barrier(CTX(c)->comm));
fail:
    return st;
}

static tdm_status mpi_broadcast(tdm_comm_t *c, void *buf, int64_t count, tdm_dtype dt, int root,
                                void *stream) {
    tdm_status st = TDM_OK;
    int n = 0;
    TDM_TRY(mpi_count(c, "tdm_comm_broadcast", count, &n));
    TDM_MPI_CHECK(c, MPI_Bcast(buf, n, mpi_type(dt), root, CTX(c)->comm));
fail:
    return st;
}

static tdm_status mpi_allreduce(tdm_comm_t *c, const void *send, void *recv, int64_t count,
                                tdm_dtype dt, tdm_reduce_op op, void *stream) {
    tdm_status st = TDM_OK;
    int n = 0;
    if (count == 0) return TDM_OK;
    TDM_TRY(mpi_count(c, "tdm_comm_allreduce", count, &n));
    TDM_MPI_CHECK(c, MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, n, mpi_type(dt),
                                   op == TDM_REDUCE_MAX ? MPI_MAX : MPI_SUM, CTX(c)->comm));
fail:
    return st;
}

static tdm_status mpi_allgather(tdm_comm_t *c, const void *send, void *recv, int64_t count,
                                tdm_dtype dt, void *stream) {
    tdm_status st = TDM_OK;
    int n = 0;
    TDM_TRY(mpi_count(c, "tdm_comm_allgather", count, &n));
    TDM_MPI_CHECK(c, MPI_Allgather(send, n, mpi_type(dt), recv, n, mpi_type(dt), CTX(c)->comm));
fail:
    return st;
}

static tdm_status mpi_allgatherv(tdm_comm_t *c, const void *send, int64_t count, void *recv,
                                 const int64_t *counts, const int64_t *displs, tdm_dtype dt,
                                 void *stream) {
    tdm_status st = TDM_OK;
    int n = 0, *ic = malloc(sizeof(int) * (size_t)c->size), *id = malloc(sizeof(int) * (size_t)c->size);
    if (!ic || !id) {
        st = tdm_errorf(TDM_ERR_NOMEM, "tdm_comm_allgatherv on rank %d: out of memory", c->world_rank);
        goto fail;
    }
    TDM_TRY(mpi_count(c, "tdm_comm_allgatherv", count, &n));
    for (int r = 0; r < c->size; r++) {
        TDM_TRY(mpi_count(c, "tdm_comm_allgatherv", counts[r], &ic[r]));
        TDM_TRY(mpi_count(c, "tdm_comm_allgatherv", displs[r], &id[r]));
    }
    TDM_MPI_CHECK(c, MPI_Allgatherv(send, n, mpi_type(dt), recv, ic, id, mpi_type(dt),
                                    CTX(c)->comm));
fail:
    free(ic), free(id);
    return st;
}

static tdm_status mpi_all_to_all(tdm_comm_t *c, const void *send, void *recv, int64_t count,
                                 tdm_dtype dt, void *stream) {
    tdm_status st = TDM_OK;
    int n = 0;
    TDM_TRY(mpi_count(c, "tdm_comm_all_to_all", count, &n));
    TDM_MPI_CHECK(c, MPI_Alltoall(send, n, mpi_type(dt), recv, n, mpi_type(dt), CTX(c)->comm));
fail:
    return st;
}

static tdm_status mpi_send(tdm_comm_t *c, const void *buf, int64_t count, tdm_dtype dt, int peer,
                           int tag, void *stream) {
    tdm_status st = TDM_OK;
    int n = 0;
    TDM_TRY(mpi_count(c, "tdm_comm_send", count, &n));
    TDM_MPI_CHECK(c, MPI_Send(buf, n, mpi_type(dt), peer, tag, CTX(c)->comm));
fail:
    return st;
}

static tdm_status mpi_recv(tdm_comm_t *c, void *buf, int64_t count, tdm_dtype dt, int peer,
                           int tag, void *stream) {
    tdm_status st = TDM_OK;
    int n = 0;
    TDM_TRY(mpi_count(c, "tdm_comm_recv", count, &n));
    TDM_MPI_CHECK(c, MPI_Recv(buf, n, mpi_type(dt), peer, tag, CTX(c)->comm, MPI_STATUS_IGNORE));
fail:
    return st;
}

static tdm_status mpi_probe(tdm_comm_t *c, int peer, int tag, int *ready) {
    tdm_status st = TDM_OK;
    int flag = 0;
    TDM_MPI_CHECK(c, MPI_Iprobe(peer, tag, CTX(c)->comm, &flag, MPI_STATUS_IGNORE));
    *ready = flag != 0;
fail:
    return st;
}

static tdm_status mpi_sendrecv(tdm_comm_t *c, const void *send, int to, void *recv, int from,
                               int64_t count, tdm_dtype dt, int tag, void *stream) {
    tdm_status st = TDM_OK;
    int n = 0;
    TDM_TRY(mpi_count(c, "tdm_comm_sendrecv", count, &n));
    TDM_MPI_CHECK(c, MPI_Sendrecv(send, n, mpi_type(dt), to, tag, recv, n, mpi_type(dt), from, tag,
                                  CTX(c)->comm, MPI_STATUS_IGNORE));
fail:
    return st;
}

/* A tdm_comm over `comm` (which it then owns): errors return, rank, size,
 * ranks on this host. world_rank names this process in errors; -1: comm is
 * the world, so its own rank once known (0 before). OUT: *out. */
static tdm_status mpi_wrap(MPI_Comm comm, int mpi_started, int world_rank, tdm_comm_t **out) {
    tdm_status st = TDM_OK;
    MPI_Comm local = MPI_COMM_NULL;
    tdm_comm_t *c = calloc(1, sizeof *c);
    mpi_ctx *m = calloc(1, sizeof *m);
    if (!c || !m) {
        free(c), free(m);
        MPI_Comm_free(&comm);
        if (mpi_started) MPI_Finalize();
        return tdm_errorf(TDM_ERR_NOMEM, "tdm_comm_mpi_create: out of memory");
    }
    c->ops = &mpi_ops, c->ctx = m;
    m->comm = comm, m->win = MPI_WIN_NULL, m->mpi_started = mpi_started;
    c->rank = 0, c->size = 1, c->local_rank = 0, c->local_size = 1;
    c->world_rank = world_rank < 0 ? 0 : world_rank;
    TDM_MPI_CHECK(c, MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
    TDM_MPI_CHECK(c, MPI_Comm_rank(comm, &c->rank));
    if (world_rank < 0) c->world_rank = c->rank;
    TDM_MPI_CHECK(c, MPI_Comm_size(comm, &c->size));
    TDM_MPI_CHECK(c, MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local));
    TDM_MPI_CHECK(c, MPI_Comm_rank(local, &c->local_rank));
    TDM_MPI_CHECK(c, MPI_Comm_size(local, &c->local_size));
    TDM_MPI_CHECK(c, MPI_Comm_free(&local));
    *out = c;
    return TDM_OK;
fail:
    if (local != MPI_COMM_NULL) MPI_Comm_free(&local);
    tdm_comm_free(c);
    return st;
}

static tdm_status mpi_split(tdm_comm_t *c, int color, int key, tdm_comm_t **out) {
    tdm_status st = TDM_OK;
    MPI_Comm sub = MPI_COMM_NULL;
    TDM_MPI_CHECK(c, MPI_Comm_split(CTX(c)->comm, color < 0 ? MPI_UNDEFINED : color, key, &sub));
    if (sub == MPI_COMM_NULL) return TDM_OK;
    TDM_TRY(mpi_wrap(sub, 0, c->world_rank, out));
    memcpy((*out)->host, c->host, sizeof c->host);
fail:
    return st;
}

static tdm_status mpi_counter_open(tdm_comm_t *c) {
    tdm_status st = TDM_OK;
    mpi_ctx *m = CTX(c);
    int64_t *base = NULL;
    int locked_all = 0;
    MPI_Aint bytes = c->rank == 0 ? (MPI_Aint)sizeof(int64_t) : 0;
    TDM_MPI_CHECK(c, MPI_Win_allocate(bytes, (int)sizeof(int64_t), MPI_INFO_NULL, m->comm, &base,
                                      &m->win));
    TDM_MPI_CHECK(c, MPI_Win_set_errhandler(m->win, MPI_ERRORS_RETURN));
    if (c->rank == 0) {
        /* A local store into the window belongs in an exclusive epoch
         * (needed under the separate memory model). */
        TDM_MPI_CHECK(c, MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, m->win));
        *base = 0;
        TDM_MPI_CHECK(c, MPI_Win_unlock(0, m->win));
    }
    TDM_MPI_CHECK(c, MPI_Barrier(m->comm));   /* nobody adds before the zero */
    TDM_MPI_CHECK(c, MPI_Win_lock_all(0, m->win));
    locked_all = 1;
    return TDM_OK;
fail:
    if (m->win != MPI_WIN_NULL) {
        if (locked_all) MPI_Win_unlock_all(m->win);
        MPI_Win_free(&m->win);
        m->win = MPI_WIN_NULL;
    }
    return st;
}

static tdm_status mpi_counter_next(tdm_comm_t *c, int64_t *next) {
    tdm_status st = TDM_OK;
    const int64_t one = 1;
    int64_t prev = 0;
    TDM_MPI_CHECK(c, MPI_Fetch_and_op(&one, &prev, MPI_INT64_T, 0, 0, MPI_SUM, CTX(c)->win));
    TDM_MPI_CHECK(c, MPI_Win_flush(0, CTX(c)->win));
    *next = prev;
fail:
    return st;
}

static tdm_status mpi_counter_close(tdm_comm_t *c) {
    tdm_status st = TDM_OK;
    mpi_ctx *m = CTX(c);
    TDM_MPI_CHECK(c, MPI_Win_unlock_all(m->win));
    TDM_MPI_CHECK(c, MPI_Win_free(&m->win));   /* collective */
    m->win = MPI_WIN_NULL;
    return TDM_OK;
fail:
    if (m->win != MPI_WIN_NULL) MPI_Win_free(&m->win);
    m->win = MPI_WIN_NULL;
    return st;
}

static void mpi_abort(tdm_comm_t *c, int code) {
    MPI_Comm comm = CTX(c)->comm;
    MPI_Abort(comm != MPI_COMM_NULL ? comm : MPI_COMM_WORLD, code);
    abort();   /* MPI_Abort does not return; should it, do not go on */
}

static void mpi_free(tdm_comm_t *c) {
    mpi_ctx *m = CTX(c);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
        if (m->win != MPI_WIN_NULL) {
            /* collective, like tdm_comm_counter_close */
            MPI_Win_unlock_all(m->win);
            MPI_Win_free(&m->win);
        }
        if (m->comm != MPI_COMM_NULL) MPI_Comm_free(&m->comm);
        if (m->mpi_started) MPI_Finalize();
    }
    free(m);
    free(c);
}

static const tdm_comm_ops mpi_ops = {
    .name = "mpi",
    .caps = 0,
    .barrier = mpi_barrier,
    .broadcast = mpi_broadcast,
    .allreduce = mpi_allreduce,
    .allgather = mpi_allgather,
    .allgatherv = mpi_allgatherv,
    .all_to_all = mpi_all_to_all,
    .send = mpi_send,
    .recv = mpi_recv,
    .sendrecv = mpi_sendrecv,
    .probe = mpi_probe,
    .split = mpi_split,
    .counter_open = mpi_counter_open,
    .counter_next = mpi_counter_next,
    .counter_close = mpi_counter_close,
    .abort = mpi_abort,
    .free = mpi_free,
};

int tdm_comm_mpi_built(void) { return 1; }

int tdm_comm_mpi_running(void) {
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    return inited && !finalized;
}

tdm_status tdm_comm_mpi_create(tdm_comm_t **out) {
    tdm_status st = TDM_OK;
    tdm_comm_t *c = NULL;
    MPI_Comm world = MPI_COMM_NULL;
    int inited = 0, finalized = 0, provided = 0, started = 0, started_owned = 0, len = 0, rc;
    char host[320], name[MPI_MAX_PROCESSOR_NAME + 1];
    if (!out) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_mpi_create: NULL output pointer");
    *out = NULL;

    MPI_Finalized(&finalized);
    if (finalized)
        return tdm_errorf(TDM_ERR_INTERNAL, "dist: MPI was already finalized in this process");
    MPI_Initialized(&inited);
    if (!inited) {
        /* Only the main thread calls MPI; OpenMP threads do not. */
        rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return mpi_error(-1, rc, "MPI_Init_thread", __FILE__, __LINE__);
        started = started_owned = 1;
    }
    /* World errors return from here on (they would abort the job by default).
     * Failures before the rank is known are reported as rank 0's. */
    rc = MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (rc != MPI_SUCCESS) {
        st = mpi_error(0, rc, "MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN)",
                       __FILE__, __LINE__);
        goto fail;
    }
    rc = MPI_Comm_dup(MPI_COMM_WORLD, &world);
    if (rc != MPI_SUCCESS) {
        st = mpi_error(0, rc, "MPI_Comm_dup(MPI_COMM_WORLD, &world)", __FILE__, __LINE__);
        goto fail;
    }
    started_owned = 0;   /* from here on, freeing the communicator finalizes */
    TDM_TRY(mpi_wrap(world, started, -1, &c));

    if (gethostname(host, sizeof host - 1) != 0 || !host[0]) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    memcpy(c->host, host, sizeof c->host);
    TDM_MPI_CHECK(c, MPI_Get_processor_name(name, &len));
    name[len > 0 && len <= MPI_MAX_PROCESSOR_NAME ? len : 0] = '\0';
    if (name[0]) snprintf(c->host, sizeof c->host, "%s", name);
    *out = c;
    return TDM_OK;
fail:
    tdm_comm_free(c);
    if (started_owned) MPI_Finalize();
    return st;
}

#else /* !TDM_HAVE_MPI */

int tdm_comm_mpi_built(void) { return 0; }
int tdm_comm_mpi_running(void) { return 0; }

tdm_status tdm_comm_mpi_create(tdm_comm_t **out) {
    if (out) *out = NULL;
    return tdm_errorf(TDM_ERR_UNSUPPORTED, "tdm_comm_mpi_create: tandem was not built with MPI");
}

#endif
