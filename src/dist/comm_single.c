/* comm_single.c — the one-process communicator: rank 0 of 1. Every
 * collective is a copy (or nothing, when in place); a send is queued until
 * the matching recv takes it; the counter is a plain integer. Host buffers
 * only. Not thread-safe, like every communicator. */
#include "dist/comm.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct single_msg {
    struct single_msg *next;
    int tag;
    int64_t bytes;
    unsigned char data[];
} single_msg;

typedef struct {
    int64_t counter;
    single_msg *queue;   /* sent, not yet received, oldest first */
} single_ctx;

static size_t nbytes(int64_t count, tdm_dtype dt) { return (size_t)count * tdm_dtype_size(dt); }

static void copy(void *dst, const void *src, size_t n) {
    if (n && dst != src) memmove(dst, src, n);
}

static tdm_status single_barrier(tdm_comm_t *c) { return TDM_OK; }

static tdm_status single_broadcast(tdm_comm_t *c, void *buf, int64_t count, tdm_dtype dt, int root,
                                   void *stream) {
    return TDM_OK;
}

static tdm_status single_allreduce(tdm_comm_t *c, const void *send, void *recv, int64_t count,
                                   tdm_dtype dt, tdm_reduce_op op, void *stream) {
    copy(recv, send, nbytes(count, dt));
    return TDM_OK;
}

static tdm_status single_allgather(tdm_comm_t *c, const void *send, void *recv, int64_t count,
                                   tdm_dtype dt, void *stream) {
    copy(recv, send, nbytes(count, dt));
    return TDM_OK;
}

static tdm_status single_allgatherv(tdm_comm_t *c, const void *send, int64_t count, void *recv,
                                    const int64_t *counts, const int64_t *displs, tdm_dtype dt,
                                    void *stream) {
    if (count > 0) copy((char *)recv + nbytes(displs[0], dt), send, nbytes(count, dt));
    return TDM_OK;
}

static tdm_status single_all_to_all(tdm_comm_t *c, const void *send, void *recv, int64_t count,
                                    tdm_dtype dt, void *stream) {
    copy(recv, send, nbytes(count, dt));
    return TDM_OK;
}

static tdm_status single_send(tdm_comm_t *c, const void *buf, int64_t count, tdm_dtype dt, int peer,
                              int tag, void *stream) {
    single_ctx *s = c->ctx;
    size_t n = nbytes(count, dt);
    single_msg *m = malloc(sizeof *m + n), **tail = &s->queue;
    if (!m) return tdm_errorf(TDM_ERR_NOMEM, "tdm_comm_send: out of memory for %zu bytes", n);
    m->next = NULL, m->tag = tag, m->bytes = (int64_t)n;
    copy(m->data, buf, n);
    while (*tail) tail = &(*tail)->next;
    *tail = m;
    return TDM_OK;
}

static tdm_status single_recv(tdm_comm_t *c, void *buf, int64_t count, tdm_dtype dt, int peer,
                              int tag, void *stream) {
    single_ctx *s = c->ctx;
    size_t n = nbytes(count, dt);
    for (single_msg **p = &s->queue; *p; p = &(*p)->next) {
        single_msg *m = *p;
        if (m->tag != tag) continue;
        if (m->bytes != (int64_t)n)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_recv on rank 0: message with tag %d "
                              "has %lld bytes, receive of %zu", tag, (long long)m->bytes, n);
        copy(buf, m->data, n);
        *p = m->next;
        free(m);
        return TDM_OK;
    }
    /* nothing queued would be a wait forever under MPI */
    return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_recv on rank 0: no message with tag %d was "
                      "sent (one process: the receive would never complete)", tag);
}

static tdm_status single_probe(tdm_comm_t *c, int peer, int tag, int *ready) {
    const single_ctx *s = c->ctx;
    for (const single_msg *m = s->queue; m; m = m->next)
        if (m->tag == tag) {
            *ready = 1;
            break;
        }
    return TDM_OK;
}

static tdm_status single_sendrecv(tdm_comm_t *c, const void *send, int to, void *recv, int from,
                                  int64_t count, tdm_dtype dt, int tag, void *stream) {
    copy(recv, send, nbytes(count, dt));
    return TDM_OK;
}

static tdm_status single_split(tdm_comm_t *c, int color, int key, tdm_comm_t **out) {
    tdm_status st = TDM_OK;
    tdm_comm_t *sub = NULL;
    if (color < 0) return TDM_OK;
    TDM_TRY(tdm_comm_single_create(&sub));
    memcpy(sub->host, c->host, sizeof sub->host);
    sub->world_rank = c->world_rank;
    *out = sub;
    return TDM_OK;
fail:
    return st;
}

static tdm_status single_counter_open(tdm_comm_t *c) {
    ((single_ctx *)c->ctx)->counter = 0;
    return TDM_OK;
}

static tdm_status single_counter_next(tdm_comm_t *c, int64_t *next) {
    *next = ((single_ctx *)c->ctx)->counter++;
    return TDM_OK;
}

static tdm_status single_counter_close(tdm_comm_t *c) { return TDM_OK; }

/* One process: nothing else to end; the caller exits. */
static void single_abort(tdm_comm_t *c, int code) {}

static void single_free(tdm_comm_t *c) {
    single_ctx *s = c->ctx;
    while (s && s->queue) {
        single_msg *m = s->queue;
        s->queue = m->next;
        free(m);
    }
    free(s);
    free(c);
}

static const tdm_comm_ops single_ops = {
    .name = "single",
    .caps = 0,
    .barrier = single_barrier,
    .broadcast = single_broadcast,
    .allreduce = single_allreduce,
    .allgather = single_allgather,
    .allgatherv = single_allgatherv,
    .all_to_all = single_all_to_all,
    .send = single_send,
    .recv = single_recv,
    .sendrecv = single_sendrecv,
    .probe = single_probe,
    .split = single_split,
    .counter_open = single_counter_open,
    .counter_next = single_counter_next,
    .counter_close = single_counter_close,
    .abort = single_abort,
    .free = single_free,
};

tdm_status tdm_comm_single_create(tdm_comm_t **out) {
    tdm_comm_t *c = NULL;
    if (!out) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_comm_single_create: NULL output pointer");
    *out = NULL;
    c = calloc(1, sizeof *c);
    if (!c) return tdm_errorf(TDM_ERR_NOMEM, "tdm_comm_single_create: out of memory");
    c->ops = &single_ops;
    c->ctx = calloc(1, sizeof(single_ctx));
    if (!c->ctx) {
        free(c);
        return tdm_errorf(TDM_ERR_NOMEM, "tdm_comm_single_create: out of memory");
    }
    c->rank = 0, c->size = 1, c->local_rank = 0, c->local_size = 1, c->world_rank = 0;
    if (gethostname(c->host, sizeof c->host - 1) != 0 || !c->host[0])
        snprintf(c->host, sizeof c->host, "localhost");
    c->host[sizeof c->host - 1] = '\0';
    *out = c;
    return TDM_OK;
}
