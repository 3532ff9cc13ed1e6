/* nn_group.h — the nn layer's group of ranks (nn/group.h) over a
 * communicator of src/dist: what a model's context-parallel blocks (Ulysses
 * attention) call, without nn or models including dist. Not a
 * communicator of its own: it borrows c. */
#ifndef TDM_DIST_NN_GROUP_H
#define TDM_DIST_NN_GROUP_H

#include "dist/comm.h"
#include "nn/group.h"

/* Fills *out with rank and size of c and calls that run c's collectives.
 * Buffers on host devices go to c as they are. Buffers on other (CUDA)
 * devices are staged through host memory: downloaded (which waits for the
 * device's queue), exchanged, uploaded; the staging buffer is kept in the
 * group and grows to the largest call, so a repeated call allocates nothing.
 * (A communicator with TDM_COMM_DEVICE_BUFFERS is staged too for now: the
 * backend gives no stream to hand it.) c is borrowed and must outlive the
 * group. Free with tdm_dist_nn_group_free. OUT: *out. */
tdm_status tdm_dist_nn_group_create(tdm_comm_t *c, tdm_nn_group_t *out);

/* How the group moves device buffers. AUTO: NCCL where the build has it,
 * `dev` is a CUDA device and every rank of c has a GPU of its own (ranks
 * sharing a GPU, as in one-GPU tests, stage through MPI); MPI: always
 * staged through host memory; NCCL: NCCL or an error naming why not. */
typedef enum { TDM_NN_COMM_AUTO = 0, TDM_NN_COMM_MPI, TDM_NN_COMM_NCCL } tdm_nn_comm_mode;

/* "auto", "mpi" or "nccl" (NULL: auto); an error names --comm. */
tdm_status tdm_nn_comm_mode_parse(const char *s, tdm_nn_comm_mode *out);

/* As tdm_dist_nn_group_create, for buffers on `dev`; with NCCL chosen
 * (see tdm_nn_comm_mode) the group makes an NCCL communicator over c's
 * ranks (collective over c) and runs every call on device buffers on
 * dev's stream, nothing staged. Host buffers still go to c. */
tdm_status tdm_dist_nn_group_create_on(tdm_comm_t *c, tdm_device_t *dev, tdm_nn_comm_mode mode,
                                       tdm_nn_group_t *out);
/* Frees what create made (the staging buffer); *g becomes zero. NULL and a
 * zeroed group are no-ops. */
void tdm_dist_nn_group_free(tdm_nn_group_t *g);

#endif
