/* dist.c — the public process group (tdm_dist_*, include/tandem.h) over a
 * world communicator (comm.h): MPI when the caller says an MPI launcher
 * started the process (or MPI is already running) and the build has MPI,
 * else the single-process communicator. Also accelerate's split arithmetic.
 * Not a tensor transport, and it starts no processes itself. */
#include "dist/dist.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

struct tdm_dist {
    tdm_comm_t *world;
};

/* ---- split arithmetic (accelerate's split_between_processes) ----------- */

void tdm_split_between_processes_padded(int64_t n, int rank, int size, int64_t *begin,
                                        int64_t *end, int64_t *padded_len) {
    int64_t b = 0, e = 0, pad = 0;
    if (n < 0) n = 0;
    if (size <= 1) {
        /* accelerate yields the inputs unchanged, without padding */
        b = 0, e = n, pad = n;
    } else if (rank >= 0 && rank < size) {
        int64_t q = n / size, r = n % size;
        b = (int64_t)rank * q + (rank < r ? rank : r);
        e = b + q + (rank < r ? 1 : 0);
        pad = q + (r > 0 ? 1 : 0);
    }
    if (begin) *begin = b;
    if (end) *end = e;
    if (padded_len) *padded_len = pad;
}

void tdm_split_between_processes(int64_t n, int rank, int size, int64_t *begin, int64_t *end) {
    tdm_split_between_processes_padded(n, rank, size, begin, end, NULL);
}

/* ---- group ------------------------------------------------------------- */

void tdm_dist_params_init(tdm_dist_params_t *p) {
    if (p) memset(p, 0, sizeof *p);   /* not launched */
}

tdm_status tdm_dist_init(tdm_dist_t **out, const tdm_dist_params_t *p) {
    tdm_status st = TDM_OK;
    tdm_dist_t *d = NULL;
    tdm_dist_params_t defaults;
    if (!out) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_init: NULL output pointer");
    *out = NULL;
    if (!p) { tdm_dist_params_init(&defaults); p = &defaults; }
    d = calloc(1, sizeof *d);
    if (!d) return tdm_errorf(TDM_ERR_NOMEM, "tdm_dist_init: out of memory");
    /* MPI already running (the embedding program started it) counts as an
     * MPI launch too. */
    if (p->mpi_launched || tdm_comm_mpi_running()) {
        if (tdm_comm_mpi_built())
            TDM_TRY(tdm_comm_mpi_create(&d->world));
        else
            tdm_log(TDM_LOG_WARN, "dist: started by an MPI launcher, but this build has no MPI: "
                                  "every process runs as rank 0 of 1");
    }
    if (!d->world) TDM_TRY(tdm_comm_single_create(&d->world));
    *out = d;
    return TDM_OK;
fail:
    tdm_dist_free(d);
    return st;
}

void tdm_dist_free(tdm_dist_t *d) {
    if (!d) return;
    tdm_comm_free(d->world);
    free(d);
}

int tdm_dist_rank(const tdm_dist_t *d) { return d ? d->world->rank : 0; }
int tdm_dist_size(const tdm_dist_t *d) { return d ? d->world->size : 1; }
int tdm_dist_local_rank(const tdm_dist_t *d) { return d ? d->world->local_rank : 0; }
int tdm_dist_local_size(const tdm_dist_t *d) { return d ? d->world->local_size : 1; }
const char *tdm_dist_host(const tdm_dist_t *d) { return d ? d->world->host : "localhost"; }
tdm_comm_t *tdm_dist_world(tdm_dist_t *d) { return d ? d->world : NULL; }

/* ---- shared counter ------------------------------------------------------ */

tdm_status tdm_dist_counter_open(tdm_dist_t *d) {
    if (!d) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_counter_open: NULL group");
    if (d->world->counter_open)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_counter_open: the counter is already open");
    return tdm_comm_counter_open(d->world);
}

tdm_status tdm_dist_counter_next(tdm_dist_t *d, int64_t *next) {
    if (!d || !next) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_counter_next: NULL argument");
    if (!d->world->counter_open)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_counter_next: the counter is not open");
    return tdm_comm_counter_next(d->world, next);
}

tdm_status tdm_dist_counter_close(tdm_dist_t *d) {
    if (!d) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_counter_close: NULL group");
    if (!d->world->counter_open)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_counter_close: the counter is not open");
    return tdm_comm_counter_close(d->world);
}

/* ---- collectives ---------------------------------------------------------- */

/* Split `n` NUL-terminated records packed in buf[0, bytes) into out[0..n).
 * Returns 0 when the bytes do not hold exactly n records. */
static int unpack_records(const char *buf, int64_t bytes, int64_t n, char **out) {
    int64_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        const char *p = memchr(buf + off, '\0', (size_t)(bytes - off));
        if (!p) return 0;
        int64_t len = p - (buf + off);
        out[i] = malloc((size_t)len + 1);
        if (!out[i]) return 0;
        memcpy(out[i], buf + off, (size_t)len + 1);
        off += len + 1;
    }
    return off == bytes;
}

static void free_records(char **recs, int64_t n) {
    if (!recs) return;
    for (int64_t i = 0; i < n; i++) free(recs[i]);
    free(recs);
}

/* Collective agreement on a local failure: every rank passes `bad` and gets
 * back in *who the highest rank + 1 that had one (0: none), so all ranks
 * take the same branch next. */
static tdm_status any_failed(tdm_comm_t *c, int bad, int64_t *who) {
    *who = bad ? (int64_t)c->rank + 1 : 0;
    return tdm_comm_allreduce(c, who, who, 1, TDM_I64, TDM_REDUCE_MAX, NULL);
}

tdm_status tdm_dist_gather_strings(tdm_dist_t *d, char *const *recs, int n, char ***all,
                                   int *nall) {
    tdm_status st = TDM_OK, local = TDM_OK;
    tdm_comm_t *c = NULL;
    char **res = NULL, *send = NULL, *recv = NULL;
    int64_t *metas = NULL, *counts = NULL, *displs = NULL, bytes = 0, total = 0, total_n = 0,
            nres = 0, who = 0, meta[2];
    if (!d || !all || !nall || n < 0 || (n > 0 && !recs))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_gather_strings: bad arguments (n = %d)", n);
    c = d->world;
    *all = NULL;
    *nall = 0;

    /* Pack this rank's records. bytes == -1 marks a local failure; the rank
     * still takes part in every collective so no rank is left waiting. */
    for (int i = 0; i < n; i++) {
        if (!recs[i]) {
            local = tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_gather_strings: record %d is NULL", i);
            break;
        }
        bytes += (int64_t)strlen(recs[i]) + 1;
        if (bytes > INT_MAX) {
            local = tdm_errorf(TDM_ERR_INVALID_ARG,
                               "tdm_dist_gather_strings: rank %d's records exceed %d bytes",
                               c->rank, INT_MAX);
            break;
        }
    }
    if (local == TDM_OK && bytes > 0) {
        send = malloc((size_t)bytes);
        if (!send) local = tdm_errorf(TDM_ERR_NOMEM, "tdm_dist_gather_strings: out of memory");
    }
    if (local == TDM_OK) {
        int64_t off = 0;
        for (int i = 0; i < n; i++) {
            size_t len = strlen(recs[i]) + 1;
            memcpy(send + off, recs[i], len);
            off += (int64_t)len;
        }
    }

    /* Every rank learns every rank's (records, bytes) and takes the same
     * branch after each step, so a failure on any rank ends the call on all
     * of them. */
    metas = malloc(sizeof(int64_t) * 2 * (size_t)c->size);
    counts = malloc(sizeof(int64_t) * (size_t)c->size);
    displs = malloc(sizeof(int64_t) * (size_t)c->size);
    TDM_TRY(any_failed(c, !metas || !counts || !displs, &who));
    if (who) {
        st = tdm_errorf(TDM_ERR_NOMEM, "tdm_dist_gather_strings: out of memory on rank %d",
                        (int)who - 1);
        goto fail;
    }
    meta[0] = local == TDM_OK ? n : 0;
    meta[1] = local == TDM_OK ? bytes : -1;
    TDM_TRY(tdm_comm_allgather(c, meta, metas, 2, TDM_I64, NULL));
    for (int r = 0; r < c->size; r++) {
        if (metas[2 * r + 1] < 0) {
            st = local != TDM_OK ? local
                                 : tdm_errorf(TDM_ERR_INTERNAL, "tdm_dist_gather_strings: rank "
                                              "%d could not pack its records", r);
            goto fail;
        }
        counts[r] = metas[2 * r + 1];
        displs[r] = total;
        total += counts[r];
        total_n += metas[2 * r];
    }
    if (total > INT_MAX || total_n > INT_MAX) {
        st = tdm_errorf(TDM_ERR_INVALID_ARG,
                        "tdm_dist_gather_strings: the gathered records exceed %d bytes", INT_MAX);
        goto fail;
    }
    recv = malloc(total > 0 ? (size_t)total : 1);
    if (c->rank == 0) res = calloc(total_n > 0 ? (size_t)total_n : 1, sizeof *res);
    TDM_TRY(any_failed(c, !recv || (c->rank == 0 && !res), &who));
    if (who) {
        st = tdm_errorf(TDM_ERR_NOMEM, "tdm_dist_gather_strings: out of memory on rank %d",
                        (int)who - 1);
        goto fail;
    }
    TDM_TRY(tdm_comm_allgatherv(c, send, bytes, recv, counts, displs, TDM_U8, NULL));
    if (c->rank == 0) {
        for (int r = 0; r < c->size; r++) {
            int ok = unpack_records(recv + displs[r], counts[r], metas[2 * r], res + nres);
            nres += metas[2 * r];   /* res[..nres) may hold records unpacked so far */
            if (!ok) {
                st = tdm_errorf(TDM_ERR_INTERNAL,
                                "tdm_dist_gather_strings: rank %d's records arrived malformed", r);
                goto fail;
            }
        }
        *all = res;
        *nall = (int)nres;
    }
    free(metas), free(counts), free(displs), free(recv), free(send);
    return TDM_OK;
fail:
    free(metas), free(counts), free(displs), free(recv), free(send);
    free_records(res, nres);
    return st;
}

tdm_status tdm_dist_allreduce_sum(tdm_dist_t *d, double *v, int n) {
    if (!d || n < 0 || (n > 0 && !v))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_allreduce_sum: bad arguments (n = %d)", n);
    return tdm_comm_allreduce(d->world, v, v, n, TDM_F64, TDM_REDUCE_SUM, NULL);
}

tdm_status tdm_dist_barrier(tdm_dist_t *d) {
    if (!d) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_barrier: NULL group");
    return tdm_comm_barrier(d->world);
}

void tdm_dist_abort(tdm_dist_t *d, int code) {
    if (d) tdm_comm_abort(d->world, code);
}
