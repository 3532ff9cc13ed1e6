/* comm.h — the communicator interface of src/dist: a group of ranks and the
 * collective and point-to-point operations between them, behind one table of
 * function pointers (tdm_comm_ops) so callers have no #ifdef. Filled by
 *   comm_single.c  one process (rank 0 of 1): every collective is a copy or
 *                  a no-op;
 *   comm_mpi.c     MPI (Open MPI, MPICH); the only file of src/dist that
 *                  names MPI;
 *   comm_nccl.c    NCCL: device buffers on a stream, bootstrapped over a
 *                  host (MPI) communicator.
 * Not a launcher and not a schedule: dist.c builds the public tdm_dist_*
 * API on top of a world communicator.
 *
 * Buffers and streams. Every data call takes a tdm_dtype, an element count
 * (int64) and a `void *stream`:
 *   stream == NULL  host buffers; the call has completed when it returns.
 *   stream != NULL  device buffers, the call is enqueued on that stream
 *                   (a cudaStream_t) and completes in stream order. Only an
 *                   implementation with TDM_COMM_DEVICE_BUFFERS in its caps
 *                   takes it (a later NCCL one; an MPI one may stage device
 *                   buffers through pinned host memory); the others answer
 *                   TDM_ERR_UNSUPPORTED.
 * Counts are elements of the dtype, never bytes. Buffers of one call do not
 * overlap, except allreduce, where send == recv means in place.
 *
 * Collectives are called by every rank of the communicator, in the same
 * order, with the same count, dtype and root. An error leaves the
 * communicator usable only for free/abort. Errors name the call and this
 * rank (rank in the world communicator for sub-communicators too). */
#ifndef TDM_COMM_H
#define TDM_COMM_H

#include "core/core.h"

typedef struct tdm_comm tdm_comm_t;

typedef enum { TDM_REDUCE_SUM = 0, TDM_REDUCE_MAX } tdm_reduce_op;

/* tdm_comm_ops.caps bits */
enum { TDM_COMM_DEVICE_BUFFERS = 1 };

/* The table an implementation fills. The tdm_comm_* wrappers below check
 * arguments (counts >= 0, ranks in range, dtypes, counter state, stream vs
 * caps) before calling, so an op sees only valid requests. */
typedef struct tdm_comm_ops {
    const char *name;   /* "single", "mpi" */
    unsigned caps;      /* TDM_COMM_* bits */
    tdm_status (*barrier)(tdm_comm_t *c);
    tdm_status (*broadcast)(tdm_comm_t *c, void *buf, int64_t count, tdm_dtype dt, int root,
                            void *stream);
    /* dt is F32, F64, I32 or I64 */
    tdm_status (*allreduce)(tdm_comm_t *c, const void *send, void *recv, int64_t count,
                            tdm_dtype dt, tdm_reduce_op op, void *stream);
    /* recv: size * count elements, rank r's block at r * count */
    tdm_status (*allgather)(tdm_comm_t *c, const void *send, void *recv, int64_t count,
                            tdm_dtype dt, void *stream);
    /* rank r contributes counts[r] elements, received at recv + displs[r] */
    tdm_status (*allgatherv)(tdm_comm_t *c, const void *send, int64_t count, void *recv,
                             const int64_t *counts, const int64_t *displs, tdm_dtype dt,
                             void *stream);
    /* send, recv: size blocks of count elements; block j of send goes to
     * rank j, block i of recv came from rank i */
    tdm_status (*all_to_all)(tdm_comm_t *c, const void *send, void *recv, int64_t count,
                             tdm_dtype dt, void *stream);
    tdm_status (*send)(tdm_comm_t *c, const void *buf, int64_t count, tdm_dtype dt, int peer,
                       int tag, void *stream);
    tdm_status (*recv)(tdm_comm_t *c, void *buf, int64_t count, tdm_dtype dt, int peer, int tag,
                       void *stream);
    /* send to `to` and receive from `from` at once (a ring step) */
    tdm_status (*sendrecv)(tdm_comm_t *c, const void *send, int to, void *recv, int from,
                           int64_t count, tdm_dtype dt, int tag, void *stream);
    /* *ready = 1 when a message from peer with tag waits to be received */
    tdm_status (*probe)(tdm_comm_t *c, int peer, int tag, int *ready);
    /* MPI_Comm_split: *out = NULL for color < 0 */
    tdm_status (*split)(tdm_comm_t *c, int color, int key, tdm_comm_t **out);
    tdm_status (*counter_open)(tdm_comm_t *c);
    tdm_status (*counter_next)(tdm_comm_t *c, int64_t *next);
    tdm_status (*counter_close)(tdm_comm_t *c);
    void (*abort)(tdm_comm_t *c, int code);
    void (*free)(tdm_comm_t *c);   /* frees c->ctx and c */
} tdm_comm_ops;

struct tdm_comm {
    const tdm_comm_ops *ops;
    void *ctx;                    /* the implementation's state */
    int rank, size;               /* in this communicator */
    int local_rank, local_size;   /* among this communicator's ranks on this host */
    int world_rank;               /* for error messages */
    int counter_open;             /* kept by the tdm_comm_counter_* wrappers */
    char host[320];               /* >= MPI_MAX_PROCESSOR_NAME + 1 (Open MPI: 256, MPICH: 128) */
};

/* ---- constructors ------------------------------------------------------ */

/* One process: rank 0 of 1, host from gethostname(). OUT: *out. */
tdm_status tdm_comm_single_create(tdm_comm_t **out);
/* 1 when this build has MPI. */
int tdm_comm_mpi_built(void);
/* 1 when MPI has been initialized (and not finalized) in this process. */
int tdm_comm_mpi_running(void);
/* The MPI world (a duplicate of MPI_COMM_WORLD, errors returned, not
 * fatal); calls MPI_Init_thread unless MPI is running, and then
 * tdm_comm_free of this communicator finalizes. TDM_ERR_UNSUPPORTED "not
 * built with MPI" in a build without MPI. OUT: *out. */
tdm_status tdm_comm_mpi_create(tdm_comm_t **out);

/* 1 when this build has NCCL. */
int tdm_comm_nccl_built(void);
/* An NCCL communicator over the ranks of `boot` (collective over boot:
 * rank 0's NCCL id is broadcast on it), on the calling thread's current
 * CUDA device; boot is borrowed (barrier, split and the counter run on it)
 * and must outlive the result. Data calls need device buffers and a stream.
 * TDM_ERR_UNSUPPORTED in a build without NCCL. OUT: *out. */
tdm_status tdm_comm_nccl_create(tdm_comm_t *boot, tdm_comm_t **out);

/* ---- calls (argument checks, then c->ops) ------------------------------- */

static inline int tdm_comm_rank(const tdm_comm_t *c) { return c ? c->rank : 0; }
static inline int tdm_comm_size(const tdm_comm_t *c) { return c ? c->size : 1; }

tdm_status tdm_comm_barrier(tdm_comm_t *c);
tdm_status tdm_comm_broadcast(tdm_comm_t *c, void *buf, int64_t count, tdm_dtype dt, int root,
                              void *stream);
tdm_status tdm_comm_allreduce(tdm_comm_t *c, const void *send, void *recv, int64_t count,
                              tdm_dtype dt, tdm_reduce_op op, void *stream);
tdm_status tdm_comm_allgather(tdm_comm_t *c, const void *send, void *recv, int64_t count,
                              tdm_dtype dt, void *stream);
tdm_status tdm_comm_allgatherv(tdm_comm_t *c, const void *send, int64_t count, void *recv,
                               const int64_t *counts, const int64_t *displs, tdm_dtype dt,
                               void *stream);
tdm_status tdm_comm_all_to_all(tdm_comm_t *c, const void *send, void *recv, int64_t count,
                               tdm_dtype dt, void *stream);
/* Blocking send/recv of count elements; a message matches on (peer, tag).
 * A send may wait for its recv (MPI rendezvous): order sends and recvs so
 * no cycle waits, or use sendrecv. Single process: peer 0 is itself, sends
 * are queued until received. */
tdm_status tdm_comm_send(tdm_comm_t *c, const void *buf, int64_t count, tdm_dtype dt, int peer,
                         int tag, void *stream);
tdm_status tdm_comm_recv(tdm_comm_t *c, void *buf, int64_t count, tdm_dtype dt, int peer, int tag,
                         void *stream);
tdm_status tdm_comm_sendrecv(tdm_comm_t *c, const void *send, int to, void *recv, int from,
                             int64_t count, tdm_dtype dt, int tag, void *stream);
/* Does not wait: *ready = 1 when a message from peer with this tag can be
 * received now (a recv would not block), else 0. Host messages only;
 * TDM_ERR_UNSUPPORTED where the implementation has none (NCCL). */
tdm_status tdm_comm_probe(tdm_comm_t *c, int peer, int tag, int *ready);
/* Collective: ranks with the same color >= 0 form a new communicator,
 * ordered by key (ties by rank); color < 0 gives *out = NULL. Free every
 * sub-communicator before its parent. */
tdm_status tdm_comm_split(tdm_comm_t *c, int color, int key, tdm_comm_t **out);
/* A counter shared by the ranks: open (collective) sets it to 0, next
 * returns 0, 1, 2, ... across all ranks (atomic fetch-and-add), close
 * (collective) ends it. */
tdm_status tdm_comm_counter_open(tdm_comm_t *c);
tdm_status tdm_comm_counter_next(tdm_comm_t *c, int64_t *next);
tdm_status tdm_comm_counter_close(tdm_comm_t *c);
/* Ends every rank of the job with `code` and does not return when the
 * communicator spans processes (MPI); returns otherwise. */
void tdm_comm_abort(tdm_comm_t *c, int code);
/* NULL is a no-op. */
void tdm_comm_free(tdm_comm_t *c);

#endif
