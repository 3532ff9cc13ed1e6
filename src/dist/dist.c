/* dist.c — the public process group (tdm_dist_*, include/tandem.h) over a
 * world communicator (comm.h): MPI when the caller says an MPI launcher
 * started the process (or MPI is already running) and the build has MPI,
 * else the single-process communicator. Also accelerate's split arithmetic.
 * Not a tensor transport, and it starts no processes itself. */
#include "dist/dist.h"
#include "dist/groups.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

struct tdm_dist {
    tdm_comm_t   *world;
    tdm_groups_t *groups;   /* the --parallel grid (all degrees 1 but dp without one) */
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
    tdm_parallel_t deg;
    /* the same spec on every rank: all fail here, or all split */
    TDM_TRY(tdm_parallel_parse(p->parallel, d->world->size, &deg));
    TDM_TRY(tdm_groups_create(d->world, &deg, &d->groups));
    *out = d;
    return TDM_OK;
fail:
    tdm_dist_free(d);
    return st;
}

tdm_status tdm_dist_set_parallel(tdm_dist_t *d, const char *spec) {
    tdm_parallel_t deg;
    tdm_groups_t *g = NULL;
    tdm_status st;
    if (!d) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_set_parallel: NULL group");
    if ((st = tdm_parallel_parse(spec, d->world->size, &deg)) != TDM_OK) return st;
    if ((st = tdm_groups_create(d->world, &deg, &g)) != TDM_OK) return st;
    tdm_groups_free(d->groups);
    d->groups = g;
    return TDM_OK;
}

void tdm_dist_free(tdm_dist_t *d) {
    if (!d) return;
    tdm_groups_free(d->groups);
    tdm_comm_free(d->world);
    free(d);
}

int tdm_dist_rank(const tdm_dist_t *d) { return d ? d->world->rank : 0; }
int tdm_dist_size(const tdm_dist_t *d) { return d ? d->world->size : 1; }
int tdm_dist_local_rank(const tdm_dist_t *d) { return d ? d->world->local_rank : 0; }
int tdm_dist_local_size(const tdm_dist_t *d) { return d ? d->world->local_size : 1; }
const char *tdm_dist_host(const tdm_dist_t *d) { return d ? d->world->host : "localhost"; }
tdm_comm_t *tdm_dist_world(tdm_dist_t *d) { return d ? d->world : NULL; }
tdm_groups_t *tdm_dist_groups(tdm_dist_t *d) { return d ? d->groups : NULL; }

void tdm_dist_parallel(const tdm_dist_t *d, tdm_parallel_t *deg, tdm_parallel_t *at) {
    static const tdm_parallel_t one = {.dp = 1, .cfg = 1, .ring = 1, .ulysses = 1, .tp = 1};
    static const tdm_parallel_t zero = {0};
    if (deg) *deg = d ? d->groups->deg : one;
    if (at) *at = d ? d->groups->at : zero;
}

int tdm_dist_image_rank(const tdm_dist_t *d) {
    return d ? tdm_comm_rank(d->groups->comm[TDM_GROUP_IMAGE]) : 0;
}

tdm_status tdm_dist_image_broadcast_i64(tdm_dist_t *d, int64_t *v, int n) {
    if (!d || n < 0 || (n > 0 && !v))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_image_broadcast_i64: bad arguments (n = %d)", n);
    return tdm_comm_broadcast(d->groups->comm[TDM_GROUP_IMAGE], v, n, TDM_I64, 0, NULL);
}

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

/* Packs recs[0..n) back to back, each with its NUL, into a new *send of
 * *bytes bytes (NULL when n == 0). Local: a failure is returned for the
 * caller to announce in the exchange, so no rank is left waiting. */
static tdm_status pack_records(const tdm_comm_t *c, char *const *recs, int n, char **send,
                               int64_t *bytes) {
    int64_t total = 0, off = 0;
    *send = NULL;
    *bytes = 0;
    for (int i = 0; i < n; i++) {
        if (!recs[i])
            return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_gather_strings: record %d is NULL", i);
        total += (int64_t)strlen(recs[i]) + 1;
        if (total > INT_MAX)
            return tdm_errorf(TDM_ERR_INVALID_ARG,
                              "tdm_dist_gather_strings: rank %d's records exceed %d bytes",
                              c->rank, INT_MAX);
    }
    if (total > 0) {
        *send = malloc((size_t)total);
        if (!*send) return tdm_errorf(TDM_ERR_NOMEM, "tdm_dist_gather_strings: out of memory");
    }
    for (int i = 0; i < n; i++) {
        size_t len = strlen(recs[i]) + 1;
        memcpy(*send + off, recs[i], len);
        off += (int64_t)len;
    }
    *bytes = total;
    return TDM_OK;
}

/* Where every rank's records lie in the gathered buffer. */
typedef struct {
    int64_t *metas;    // (size, 2): each rank's record count and bytes
    int64_t *counts;   // (size,): each rank's bytes
    int64_t *displs;   // (size,): where each rank's bytes start
    int64_t  total;    // bytes of all ranks
    int64_t  total_n;  // records of all ranks
} gather_layout_t;

static void gather_layout_free(gather_layout_t *g) {
    free(g->metas), free(g->counts), free(g->displs);
    g->metas = g->counts = g->displs = NULL;
}

/* Collective: every rank learns every rank's (records, bytes) and so the
 * layout *g (freed with gather_layout_free, also on failure). `local` is
 * this rank's pack result; a failure on any rank fails the call on all of
 * them (the failing rank returns its own error). */
static tdm_status exchange_layout(tdm_comm_t *c, tdm_status local, int n, int64_t bytes,
                                  gather_layout_t *g) {
    tdm_status st = TDM_OK;
    int64_t who = 0, meta[2];
    g->metas = malloc(sizeof(int64_t) * 2 * (size_t)c->size);
    g->counts = malloc(sizeof(int64_t) * (size_t)c->size);
    g->displs = malloc(sizeof(int64_t) * (size_t)c->size);
    g->total = g->total_n = 0;
    TDM_TRY(any_failed(c, !g->metas || !g->counts || !g->displs, &who));
    if (who)
        return tdm_errorf(TDM_ERR_NOMEM, "tdm_dist_gather_strings: out of memory on rank %d",
                          (int)who - 1);
    /* bytes == -1 marks a rank that could not pack its records */
    meta[0] = local == TDM_OK ? n : 0;
    meta[1] = local == TDM_OK ? bytes : -1;
    TDM_TRY(tdm_comm_allgather(c, meta, g->metas, 2, TDM_I64, NULL));
    for (int r = 0; r < c->size; r++) {
        if (g->metas[2 * r + 1] < 0)
            return local != TDM_OK ? local
                                   : tdm_errorf(TDM_ERR_INTERNAL, "tdm_dist_gather_strings: rank "
                                                "%d could not pack its records", r);
        g->counts[r] = g->metas[2 * r + 1];
        g->displs[r] = g->total;
        g->total += g->counts[r];
        g->total_n += g->metas[2 * r];
    }
    if (g->total > INT_MAX || g->total_n > INT_MAX)
        return tdm_errorf(TDM_ERR_INVALID_ARG,
                          "tdm_dist_gather_strings: the gathered records exceed %d bytes", INT_MAX);
    return TDM_OK;
fail:
    return st;
}

/* Collective: every rank's packed bytes into a new *recv on every rank,
 * laid out as g says; rank 0 also gets *res, room for every record
 * (zeroed). On failure (any rank's) both are NULL. */
static tdm_status exchange_records(tdm_comm_t *c, const char *send, int64_t bytes,
                                   const gather_layout_t *g, char **recv, char ***res) {
    tdm_status st = TDM_OK;
    int64_t who = 0;
    *recv = malloc(g->total > 0 ? (size_t)g->total : 1);
    *res = c->rank == 0 ? calloc(g->total_n > 0 ? (size_t)g->total_n : 1, sizeof **res) : NULL;
    TDM_TRY(any_failed(c, !*recv || (c->rank == 0 && !*res), &who));
    if (who) {
        st = tdm_errorf(TDM_ERR_NOMEM, "tdm_dist_gather_strings: out of memory on rank %d",
                        (int)who - 1);
        goto fail;
    }
    TDM_TRY(tdm_comm_allgatherv(c, send, bytes, *recv, g->counts, g->displs, TDM_U8, NULL));
    return TDM_OK;
fail:
    free(*recv), free(*res);
    *recv = NULL, *res = NULL;
    return st;
}

/* Rank 0: splits the gathered bytes into res[0..g->total_n), rank after
 * rank. *nres: the entries of res that may hold records (free_records'
 * count), also on failure. */
static tdm_status unpack_gathered(const char *recv, const gather_layout_t *g, int size,
                                  char **res, int64_t *nres) {
    *nres = 0;
    for (int r = 0; r < size; r++) {
        int ok = unpack_records(recv + g->displs[r], g->counts[r], g->metas[2 * r], res + *nres);
        *nres += g->metas[2 * r];
        if (!ok)
            return tdm_errorf(TDM_ERR_INTERNAL,
                              "tdm_dist_gather_strings: rank %d's records arrived malformed", r);
    }
    return TDM_OK;
}

tdm_status tdm_dist_gather_strings(tdm_dist_t *d, char *const *recs, int n, char ***all,
                                   int *nall) {
    tdm_status st = TDM_OK, local = TDM_OK;
    tdm_comm_t *c = NULL;
    gather_layout_t g = { 0 };
    char **res = NULL, *send = NULL, *recv = NULL;
    int64_t bytes = 0, nres = 0;
    if (!d || !all || !nall || n < 0 || (n > 0 && !recs))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_dist_gather_strings: bad arguments (n = %d)", n);
    c = d->world;
    *all = NULL;
    *nall = 0;

    /* A rank that fails to pack still takes part in every collective, and
     * every rank takes the same branch after each, so a failure on any rank
     * ends the call on all of them. */
    local = pack_records(c, recs, n, &send, &bytes);
    TDM_TRY(exchange_layout(c, local, n, bytes, &g));
    TDM_TRY(exchange_records(c, send, bytes, &g, &recv, &res));
    if (c->rank == 0) {
        TDM_TRY(unpack_gathered(recv, &g, c->size, res, &nres));
        *all = res;
        *nall = (int)nres;
        res = NULL, nres = 0;   /* the caller's now */
    }
fail:
    gather_layout_free(&g);
    free(recv), free(send);
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
