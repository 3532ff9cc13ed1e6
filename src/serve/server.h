/* server.h — the server's state, shared by http.c (the HTTP front, the
 * local worker threads, start and stop) and remote.c (the workers that are
 * other ranks of `tandem launch`); internal to src/serve/. */
#ifndef TDM_SERVE_SERVER_H
#define TDM_SERVE_SERVER_H

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "dist/comm.h"
#include "serve/jobs.h"
#include "serve/serve.h"

struct server;

/* A worker: a resident pipeline and the thread that runs images on it
 * (rank 0), or another rank that does (rank > 0), driven by remote.c from
 * the front's main thread. */
typedef struct {
    struct server  *s;
    int             id;
    int             rank;       /* 0: a thread of this process; else that rank of p->comm */
    char            device[64]; /* for /health */
    tdm_pipeline_t *pipe;       /* rank 0 only */
    pthread_t       thread;
    int             started;
    const char     *state;      /* "idle", "busy", "stopped", "lost" (q.mu) */
    char            error[512]; /* "lost": why (q.mu) */
    double          busy;       /* seconds on images (q.mu) */
    int64_t         mem_now, mem_peak;   /* its device memory after its last image (q.mu) */
    /* rank > 0: the image it makes (j NULL: none), and its process */
    job_t          *j;
    int             k;
    double          t0, t_step;
    int             cancel_sent;
    int64_t         pid;
    int             same_host;  /* on rank 0's host: its pid tells whether it lives */
} worker_t;

/* 1 when w takes no more images ("lost" or "stopped"; read with q.mu held or
 * on the thread that alone changes it). */
static inline int worker_gone(const worker_t *w) {
    return !strcmp(w->state, "lost") || !strcmp(w->state, "stopped");
}

typedef struct server {
    const tdm_serve_params_t *p;
    tdm_pipeline_info_t info;   /* of the first pipeline (all are the same model) */
    jobs_t q;
    worker_t *w;
    int nw;                     /* local workers first, then one per other rank */
    tdm_comm_t *comm;           /* p->comm: ranks 1.. are workers; NULL: none */
    double t_alive;             /* when remote.c last checked the ranks' processes */
} server_t;

/* remote.c, on the front (rank 0; its main thread alone talks MPI) */
/* The handshake with the worker ranks (collective over s->comm): fills
 * s->w[first ..] (one per other rank) with their devices. */
tdm_status remote_start(server_t *s, int first);
/* Serves the other ranks once: hands idle ones an image, answers their
 * progress, takes their results. Returns how many messages moved. */
int remote_poll(server_t *s);
/* Images the other ranks are making now. */
int remote_busy(const server_t *s);
/* Tells every other rank to end tdm_serve_worker (none may be busy). */
void remote_stop(server_t *s);

#endif
