/* dist.h — data-parallel process groups: the communicator (single process,
 * or MPI when the process was started by mpirun/srun and the build has MPI),
 * accelerate's split_between_processes arithmetic, a shared work counter for
 * dynamic scheduling, gathering of text records to rank 0, barrier, abort.
 * Not a transport for tensors (that is NCCL's job, later). */
#ifndef TDM_DIST_H
#define TDM_DIST_H

#include "core/core.h"

typedef struct tdm_dist tdm_dist_t;

/* Joins the process group: MPI when this process runs under an MPI launcher
 * (OMPI_COMM_WORLD_SIZE / PMI_SIZE / PMIX_RANK in the environment) and the
 * build has MPI, else a single-process group (rank 0 of 1). OUT: *d. */
tdm_status tdm_dist_init(tdm_dist_t **d);
/* Leaves the group (MPI_Finalize when MPI was started); NULL is a no-op. */
void tdm_dist_free(tdm_dist_t *d);

int         tdm_dist_rank(const tdm_dist_t *d);
int         tdm_dist_size(const tdm_dist_t *d);
int         tdm_dist_local_rank(const tdm_dist_t *d);   /* rank among the ranks of this host */
int         tdm_dist_local_size(const tdm_dist_t *d);
const char *tdm_dist_host(const tdm_dist_t *d);          /* this rank's host name */

/* accelerate's PartialState.split_between_processes for n items:
 * contiguous blocks, the first n % size ranks one more, empty for ranks
 * beyond n. OUT: [*begin, *end). */
void tdm_split_between_processes(int64_t n, int rank, int size, int64_t *begin, int64_t *end);
/* The apply_padding=True variant: the same block, and *padded_len = the
 * length every rank has after padding (ceil(n / size); 0 when n == 0),
 * padded with the last item of the whole input. */
void tdm_split_between_processes_padded(int64_t n, int rank, int size, int64_t *begin,
                                        int64_t *end, int64_t *padded_len);

/* Dynamic schedule: a counter shared by all ranks (MPI one-sided atomic
 * fetch-and-add on rank 0's window; a plain counter for one process).
 * Collective: every rank calls tdm_dist_counter_open and _close. */
tdm_status tdm_dist_counter_open(tdm_dist_t *d);
/* Returns the next value (0, 1, 2, ... across all ranks) in *next. */
tdm_status tdm_dist_counter_next(tdm_dist_t *d, int64_t *next);
tdm_status tdm_dist_counter_close(tdm_dist_t *d);

/* Collective: every rank contributes `n` NUL-terminated records; rank 0
 * receives all ranks' records (its own first, then rank 1's, ...) in
 * *all (array of *nall malloc'd strings, free each and the array);
 * other ranks get *all = NULL, *nall = 0. */
tdm_status tdm_dist_gather_strings(tdm_dist_t *d, char *const *recs, int n, char ***all, int *nall);
/* Collective: sum of v over ranks, on every rank. */
tdm_status tdm_dist_allreduce_sum(tdm_dist_t *d, double *v, int n);

tdm_status tdm_dist_barrier(tdm_dist_t *d);
/* Under MPI: ends every rank of the job now with `code` (MPI_Abort) and does
 * not return. Single process: returns, and the caller (the CLI) exits. */
void tdm_dist_abort(tdm_dist_t *d, int code);

#endif
