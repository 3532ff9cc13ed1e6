/* dist.c — the process group behind dist.h: a single-process group, or MPI
 * (Open MPI, MPICH) when the process was started by an MPI launcher and the
 * build has MPI (TDM_HAVE_MPI). MPI errors come back as tdm_status values
 * (MPI_ERRORS_RETURN on our communicator and window) whose message names the
 * MPI call, the rank and MPI's own error text.
 * Not a tensor transport, and it starts no processes itself. */
#include "dist/dist.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef TDM_HAVE_MPI
#include <mpi.h>
#endif

struct tdm_dist {
    int rank, size;               /* in the world group */
    int local_rank, local_size;   /* among the ranks sharing this host */
    char host[320];               /* >= MPI_MAX_PROCESSOR_NAME + 1 (Open MPI: 256, MPICH: 128) */
    int counter_open;
    int64_t counter;              /* single process: the shared counter itself */
#ifdef TDM_HAVE_MPI
    int mpi;                      /* 1: the group is MPI (comm is valid) */
    int mpi_started;              /* 1: we called MPI_Init, so we finalize */
    MPI_Comm comm;                /* duplicate of MPI_COMM_WORLD, errors return */
    MPI_Win win;                  /* the counter's window (one int64 on rank 0) */
#endif
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

/* ---- MPI plumbing -------------------------------------------------------- */

/* Whether an MPI launcher started this process. */
static int launched_by_mpi(void) {
    static const char *const vars[] = {
        "OMPI_COMM_WORLD_SIZE",   /* Open MPI mpirun */
        "PMI_SIZE",               /* MPICH/Hydra, Intel MPI, srun --mpi=pmi2 */
        "PMIX_RANK",              /* PMIx launchers (srun --mpi=pmix, prterun) */
        "MV2_COMM_WORLD_SIZE",    /* MVAPICH2 */
    };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return 1;
    }
    return 0;
}

#ifdef TDM_HAVE_MPI
/* Record a failed MPI call (its text, our rank, MPI's message, where) and
 * jump to `fail`. Needs `tdm_status st` and a `fail` label in scope. */
#define TDM_MPI_CHECK(d, call)                                                 \
    do {                                                                       \
        int mpi_rc_ = (call);                                                  \
        if (mpi_rc_ != MPI_SUCCESS) {                                          \
            st = mpi_error((d), mpi_rc_, #call, __FILE__, __LINE__);           \
            goto fail;                                                         \
        }                                                                      \
    } while (0)

static tdm_status mpi_error(const tdm_dist_t *d, int rc, const char *call, const char *file,
                            int line) {
    char msg[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
    msg[len > 0 && len <= MPI_MAX_ERROR_STRING ? len : 0] = '\0';
    return tdm_errorf(TDM_ERR_INTERNAL, "%s failed on rank %d: %s (%s:%d)", call,
                      d ? d->rank : -1, msg[0] ? msg : "unknown MPI error", file, line);
}

static tdm_status dist_init_mpi(tdm_dist_t *d) {
    tdm_status st = TDM_OK;
    MPI_Comm local = MPI_COMM_NULL;
    int inited = 0, finalized = 0, provided = 0, len = 0;

    MPI_Finalized(&finalized);
    if (finalized)
        return tdm_errorf(TDM_ERR_INTERNAL, "dist: MPI was already finalized in this process");
    MPI_Initialized(&inited);
    if (!inited) {
        /* Only the main thread calls MPI; OpenMP threads do not. */
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return mpi_error(NULL, rc, "MPI_Init_thread", __FILE__, __LINE__);
        d->mpi_started = 1;
    }
    d->mpi = 1;
    d->rank = 0;
    /* World errors return from here on (they would abort the job by default). */
    TDM_MPI_CHECK(d, MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    TDM_MPI_CHECK(d, MPI_Comm_dup(MPI_COMM_WORLD, &d->comm));
    TDM_MPI_CHECK(d, MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN));
    TDM_MPI_CHECK(d, MPI_Comm_rank(d->comm, &d->rank));
    TDM_MPI_CHECK(d, MPI_Comm_size(d->comm, &d->size));
    TDM_MPI_CHECK(d, MPI_Comm_split_type(d->comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL,
                                         &local));
    TDM_MPI_CHECK(d, MPI_Comm_rank(local, &d->local_rank));
    TDM_MPI_CHECK(d, MPI_Comm_size(local, &d->local_size));
    TDM_MPI_CHECK(d, MPI_Comm_free(&local));

    char name[MPI_MAX_PROCESSOR_NAME + 1];
    TDM_MPI_CHECK(d, MPI_Get_processor_name(name, &len));
    name[len > 0 && len <= MPI_MAX_PROCESSOR_NAME ? len : 0] = '\0';
    if (name[0]) snprintf(d->host, sizeof d->host, "%s", name);
    return TDM_OK;
fail:
    if (local != MPI_COMM_NULL) MPI_Comm_free(&local);
    return st;
}
#endif /* TDM_HAVE_MPI */

/* ---- group ------------------------------------------------------------- */

tdm_status tdm_dist_init(tdm_dist_t **out) {
    tdm_status st = TDM_OK;
    tdm_dist_t *d = NULL;
    if (!out) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_init: NULL output pointer");
    *out = NULL;
    d = calloc(1, sizeof *d);
    if (!d) return tdm_errorf(TDM_ERR_NOMEM, "tdm_dist_init: out of memory");
    d->rank = 0, d->size = 1, d->local_rank = 0, d->local_size = 1;
    if (gethostname(d->host, sizeof d->host - 1) != 0 || !d->host[0])
        snprintf(d->host, sizeof d->host, "localhost");
    d->host[sizeof d->host - 1] = '\0';

#ifdef TDM_HAVE_MPI
    d->comm = MPI_COMM_NULL;
    d->win = MPI_WIN_NULL;
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    /* MPI already running (the embedding program started it) counts as an
     * MPI launch too. */
    if (launched_by_mpi() || (inited && !finalized)) {
        st = dist_init_mpi(d);
        if (st != TDM_OK) {
            tdm_dist_free(d);
            return st;
        }
    }
#else
    if (launched_by_mpi())
        tdm_log(TDM_LOG_WARN, "dist: started by an MPI launcher, but this build has no MPI: "
                              "every process runs as rank 0 of 1");
#endif
    *out = d;
    return st;
}

void tdm_dist_free(tdm_dist_t *d) {
    if (!d) return;
#ifdef TDM_HAVE_MPI
    if (d->mpi) {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) {
            if (d->win != MPI_WIN_NULL) {
                /* collective, like tdm_dist_counter_close */
                MPI_Win_unlock_all(d->win);
                MPI_Win_free(&d->win);
            }
            if (d->comm != MPI_COMM_NULL) MPI_Comm_free(&d->comm);
            if (d->mpi_started) MPI_Finalize();
        }
    }
#endif
    free(d);
}

int tdm_dist_rank(const tdm_dist_t *d) { return d ? d->rank : 0; }
int tdm_dist_size(const tdm_dist_t *d) { return d ? d->size : 1; }
int tdm_dist_local_rank(const tdm_dist_t *d) { return d ? d->local_rank : 0; }
int tdm_dist_local_size(const tdm_dist_t *d) { return d ? d->local_size : 1; }
const char *tdm_dist_host(const tdm_dist_t *d) { return d ? d->host : "localhost"; }

/* ---- shared counter ------------------------------------------------------ */

tdm_status tdm_dist_counter_open(tdm_dist_t *d) {
    tdm_status st = TDM_OK;
    if (!d) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_counter_open: NULL group");
    if (d->counter_open)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_counter_open: the counter is already open");
#ifdef TDM_HAVE_MPI
    if (d->mpi) {
        int64_t *base = NULL;
        int locked_all = 0;
        MPI_Aint bytes = d->rank == 0 ? (MPI_Aint)sizeof(int64_t) : 0;
        TDM_MPI_CHECK(d, MPI_Win_allocate(bytes, (int)sizeof(int64_t), MPI_INFO_NULL, d->comm,
                                          &base, &d->win));
        TDM_MPI_CHECK(d, MPI_Win_set_errhandler(d->win, MPI_ERRORS_RETURN));
        if (d->rank == 0) {
            /* A local store into the window belongs in an exclusive epoch
             * (needed under the separate memory model). */
            TDM_MPI_CHECK(d, MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, d->win));
            *base = 0;
            TDM_MPI_CHECK(d, MPI_Win_unlock(0, d->win));
        }
        TDM_MPI_CHECK(d, MPI_Barrier(d->comm));   /* nobody adds before the zero */
        TDM_MPI_CHECK(d, MPI_Win_lock_all(0, d->win));
        locked_all = 1;
        d->counter_open = 1;
        return TDM_OK;
    fail:
        if (d->win != MPI_WIN_NULL) {
            if (locked_all) MPI_Win_unlock_all(d->win);
            MPI_Win_free(&d->win);
            d->win = MPI_WIN_NULL;
        }
        return st;
    }
#endif
    d->counter = 0;
    d->counter_open = 1;
    return st;
}

tdm_status tdm_dist_counter_next(tdm_dist_t *d, int64_t *next) {
    tdm_status st = TDM_OK;
    if (!d || !next) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_counter_next: NULL argument");
    if (!d->counter_open)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_counter_next: the counter is not open");
#ifdef TDM_HAVE_MPI
    if (d->mpi) {
        const int64_t one = 1;
        int64_t prev = 0;
        TDM_MPI_CHECK(d, MPI_Fetch_and_op(&one, &prev, MPI_INT64_T, 0, 0, MPI_SUM, d->win));
        TDM_MPI_CHECK(d, MPI_Win_flush(0, d->win));
        *next = prev;
        return TDM_OK;
    fail:
        return st;
    }
#endif
    *next = d->counter++;
    return st;
}

tdm_status tdm_dist_counter_close(tdm_dist_t *d) {
    tdm_status st = TDM_OK;
    if (!d) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_counter_close: NULL group");
    if (!d->counter_open)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_counter_close: the counter is not open");
    d->counter_open = 0;
#ifdef TDM_HAVE_MPI
    if (d->mpi) {
        TDM_MPI_CHECK(d, MPI_Win_unlock_all(d->win));
        TDM_MPI_CHECK(d, MPI_Win_free(&d->win));   /* collective */
        d->win = MPI_WIN_NULL;
        return TDM_OK;
    fail:
        if (d->win != MPI_WIN_NULL) MPI_Win_free(&d->win);
        d->win = MPI_WIN_NULL;
        return st;
    }
#endif
    return st;
}

/* ---- collectives ---------------------------------------------------------- */

/* Split `n` NUL-terminated records packed in buf[0, bytes) into out[0..n).
 * Returns 0 when the bytes do not hold exactly n records. */
static int unpack_records(const char *buf, int64_t bytes, int n, char **out) {
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
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

static void free_records(char **recs, int n) {
    if (!recs) return;
    for (int i = 0; i < n; i++) free(recs[i]);
    free(recs);
}

tdm_status tdm_dist_gather_strings(tdm_dist_t *d, char *const *recs, int n, char ***all,
                                   int *nall) {
    tdm_status st = TDM_OK;
    char **res = NULL;
    int nres = 0;
    char *send = NULL;
    if (!d || !all || !nall || n < 0 || (n > 0 && !recs))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_gather_strings: bad arguments (n = %d)", n);
    *all = NULL;
    *nall = 0;

    /* Pack this rank's records. bytes == -1 marks a local failure; the rank
     * still takes part in every collective so no rank is left waiting. */
    int64_t bytes = 0;
    tdm_status local = TDM_OK;
    for (int i = 0; i < n; i++) {
        if (!recs[i]) {
            local = tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_gather_strings: record %d is NULL", i);
            break;
        }
        bytes += (int64_t)strlen(recs[i]) + 1;
        if (bytes > INT_MAX) {
            local = tdm_errorf(TDM_ERR_INVALID_ARG,
                               "tdm_dist_gather_strings: rank %d's records exceed %d bytes",
                               d->rank, INT_MAX);
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

#ifdef TDM_HAVE_MPI
    if (d->mpi) {
        int meta[2] = { local == TDM_OK ? n : 0, local == TDM_OK ? (int)bytes : -1 };
        int *metas = NULL, *counts = NULL, *displs = NULL;
        char *recv = NULL;
        int ok = 1;
        int64_t total = 0, total_n = 0;
        if (d->rank == 0) {
            metas = malloc(sizeof(int) * 2 * (size_t)d->size);
            counts = malloc(sizeof(int) * (size_t)d->size);
            displs = malloc(sizeof(int) * (size_t)d->size);
            ok = metas && counts && displs;
        }
        /* Every step is collective; rank 0 says whether the next one goes
         * ahead, so a failure on any rank ends the call on all of them. */
        TDM_MPI_CHECK(d, MPI_Bcast(&ok, 1, MPI_INT, 0, d->comm));
        if (!ok) {
            st = tdm_errorf(TDM_ERR_NOMEM, "tdm_dist_gather_strings: out of memory on rank 0");
            goto fail;
        }
        TDM_MPI_CHECK(d, MPI_Gather(meta, 2, MPI_INT, metas, 2, MPI_INT, 0, d->comm));
        if (d->rank == 0) {
            for (int r = 0; r < d->size && ok; r++) {
                if (metas[2 * r + 1] < 0) {
                    ok = 0;
                    if (r != 0)
                        st = tdm_errorf(TDM_ERR_INTERNAL,
                                        "tdm_dist_gather_strings: rank %d could not pack its records", r);
                    break;
                }
                counts[r] = metas[2 * r + 1];
                displs[r] = (int)total;
                total += counts[r];
                total_n += metas[2 * r];
                if (total > INT_MAX || total_n > INT_MAX) {
                    ok = 0;
                    st = tdm_errorf(TDM_ERR_INVALID_ARG,
                                    "tdm_dist_gather_strings: the gathered records exceed %d bytes",
                                    INT_MAX);
                }
            }
            if (ok) {
                recv = malloc(total > 0 ? (size_t)total : 1);
                res = calloc(total_n > 0 ? (size_t)total_n : 1, sizeof *res);
                if (!recv || !res) {
                    ok = 0;
                    st = tdm_errorf(TDM_ERR_NOMEM, "tdm_dist_gather_strings: out of memory on rank 0");
                }
            }
        }
        TDM_MPI_CHECK(d, MPI_Bcast(&ok, 1, MPI_INT, 0, d->comm));
        if (ok) {
            TDM_MPI_CHECK(d, MPI_Gatherv(send, (int)bytes, MPI_CHAR, recv, counts, displs,
                                         MPI_CHAR, 0, d->comm));
            if (d->rank == 0) {
                for (int r = 0; r < d->size; r++) {
                    if (!unpack_records(recv + displs[r], counts[r], metas[2 * r], res + nres)) {
                        /* res[nres..] may hold the records unpacked so far */
                        nres += metas[2 * r];
                        st = tdm_errorf(TDM_ERR_INTERNAL,
                                        "tdm_dist_gather_strings: rank %d's records arrived malformed", r);
                        goto fail;
                    }
                    nres += metas[2 * r];
                }
            }
        } else if (local == TDM_OK && st == TDM_OK) {
            st = tdm_errorf(TDM_ERR_INTERNAL,
                            "tdm_dist_gather_strings: rank 0 could not gather the records");
        }
        if (local != TDM_OK) st = local;
        if (st != TDM_OK) goto fail;
        free(metas), free(counts), free(displs), free(recv), free(send);
        if (d->rank == 0) {
            *all = res;
            *nall = nres;
        }
        return TDM_OK;
    fail:
        free(metas), free(counts), free(displs), free(recv), free(send);
        free_records(res, nres);
        return st;
    }
#endif
    if (local != TDM_OK) {
        free(send);
        return local;
    }
    res = calloc(n > 0 ? (size_t)n : 1, sizeof *res);
    if (!res) {
        free(send);
        return tdm_errorf(TDM_ERR_NOMEM, "tdm_dist_gather_strings: out of memory");
    }
    if (!unpack_records(send, bytes, n, res)) {
        free(send);
        free_records(res, n);
        return tdm_errorf(TDM_ERR_NOMEM, "tdm_dist_gather_strings: out of memory");
    }
    nres = n;
    free(send);
    *all = res;
    *nall = nres;
    return st;
}

tdm_status tdm_dist_allreduce_sum(tdm_dist_t *d, double *v, int n) {
    tdm_status st = TDM_OK;
    if (!d || n < 0 || (n > 0 && !v))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_allreduce_sum: bad arguments (n = %d)", n);
#ifdef TDM_HAVE_MPI
    if (d->mpi && n > 0) {
        TDM_MPI_CHECK(d, MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, d->comm));
        return TDM_OK;
    fail:
        return st;
    }
#endif
    return st;
}

tdm_status tdm_dist_barrier(tdm_dist_t *d) {
    tdm_status st = TDM_OK;
    if (!d) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_barrier: NULL group");
#ifdef TDM_HAVE_MPI
    if (d->mpi) {
        TDM_MPI_CHECK(d, MPI_Barrier(d->comm));
        return TDM_OK;
    fail:
        return st;
    }
#endif
    return st;
}

void tdm_dist_abort(tdm_dist_t *d, int code) {
#ifdef TDM_HAVE_MPI
    if (d && d->mpi) {
        MPI_Abort(d->comm != MPI_COMM_NULL ? d->comm : MPI_COMM_WORLD, code);
        abort();   /* MPI_Abort does not return; should it, do not go on */
    }
#endif
    (void)d, (void)code;
}
