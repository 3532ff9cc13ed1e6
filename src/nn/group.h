/* group.h — the collectives nn blocks need from a group of ranks (context
 * parallelism: Ulysses and ring attention, parallel VAE decode), as a small
 * table of function pointers.
 * nn and models may not include src/dist, so dist fills this table from a
 * communicator (dist/nn_group.h, tdm_dist_nn_group_create); tests may fill
 * it with anything that keeps the contracts below. Not a communicator: no
 * splitting, no tags, one reduction (the sum).
 *
 * Buffers live on the device `dev` each call names: host memory for a host
 * device, device memory for a CUDA device (an implementation may stage
 * those through host memory). A call returns when its receive buffer is
 * ready for the next op queued on dev. Every rank of the group makes the
 * same calls in the same order with the same count and dtype. */
#ifndef TDM_NN_GROUP_H
#define TDM_NN_GROUP_H

#include <stdint.h>

#include "core/core.h"

typedef struct tdm_nn_group {
    int rank, size;   /* this rank in the group, ranks in the group (>= 1) */
    void *ctx;        /* the implementation's state, passed to every call */
    /* send, recv: size blocks of count elements; block j of send goes to
     * rank j, block i of recv came from rank i. */
    tdm_status (*all_to_all)(void *ctx, tdm_device_t *dev, const void *send, void *recv,
                             int64_t count, tdm_dtype dt);
    /* recv: size blocks of count elements, rank r's send at block r. */
    tdm_status (*allgather)(void *ctx, tdm_device_t *dev, const void *send, void *recv,
                            int64_t count, tdm_dtype dt);
    /* rank r sends counts[r] elements, received at recv + displs[r]
     * (elements); count == counts[rank]. */
    tdm_status (*allgatherv)(void *ctx, tdm_device_t *dev, const void *send, int64_t count,
                             void *recv, const int64_t *counts, const int64_t *displs,
                             tdm_dtype dt);
    /* recv (count elements) = the element-wise sum over the ranks of their
     * send; recv may be send. F32 only. */
    tdm_status (*allreduce_sum)(void *ctx, tdm_device_t *dev, const void *send, void *recv,
                                int64_t count, tdm_dtype dt);
    /* Sends count elements to rank `to` while receiving count elements from
     * rank `from` (a ring shift, a halo exchange); to or from -1 skips that
     * half. Every rank's sends must be matched by its peers' receives in
     * the same call. */
    tdm_status (*sendrecv)(void *ctx, tdm_device_t *dev, const void *send, int to, void *recv,
                           int from, int64_t count, tdm_dtype dt);
} tdm_nn_group_t;

/* Fills *g with the one-rank group (rank 0 of 1): every call copies send
 * to recv on dev (nothing when they are the same pointer). */
void tdm_nn_group_single(tdm_nn_group_t *g);

/* The calls, after argument checks (counts >= 0, known dtype, no size
 * overflow, buffers present for a nonzero count, a well-formed group).
 * g == NULL is the one-rank group. Errors name the call and the rank. */
tdm_status tdm_nn_group_all_to_all(const tdm_nn_group_t *g, tdm_device_t *dev, const void *send,
                                   void *recv, int64_t count, tdm_dtype dt);
tdm_status tdm_nn_group_allgather(const tdm_nn_group_t *g, tdm_device_t *dev, const void *send,
                                  void *recv, int64_t count, tdm_dtype dt);
tdm_status tdm_nn_group_allgatherv(const tdm_nn_group_t *g, tdm_device_t *dev, const void *send,
                                   int64_t count, void *recv, const int64_t *counts,
                                   const int64_t *displs, tdm_dtype dt);
tdm_status tdm_nn_group_allreduce_sum(const tdm_nn_group_t *g, tdm_device_t *dev, const void *send,
                                      void *recv, int64_t count, tdm_dtype dt);
tdm_status tdm_nn_group_sendrecv(const tdm_nn_group_t *g, tdm_device_t *dev, const void *send, int to,
                                 void *recv, int from, int64_t count, tdm_dtype dt);

#endif
