/* serve.h — `tandem serve`: an HTTP server (libmicrohttpd) over one resident
 * pipeline: native jobs (/v1/jobs: submit, poll, progress events, images,
 * cancel), the OpenAI images API (/v1/images/generations), A1111's
 * txt2img and progress (/sdapi/v1/...), /health and Prometheus /metrics. One
 * worker thread runs the jobs FIFO from a bounded queue; the HTTP threads
 * only parse, queue and answer. Not in libtandem: the CLI links it. */
#ifndef TDM_SERVE_H
#define TDM_SERVE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "tandem.h"

typedef struct {
    const char *model;       /* the --model string (the images' parameters text names it) */
    const char *host;        /* address to bind: "127.0.0.1" (default), "0.0.0.0", "::1", ... */
    int         port;        /* 0: any free port (the ready callback gets it) */
    const char *token;       /* Bearer token every route but /health needs; NULL: none */
    int         queue;       /* jobs waiting at most (default 16); more: 429 */
    int         max_steps;   /* per image (default 150) */
    int64_t     max_pixels;  /* width × height at most (default 2048 × 2048) */
    int         max_images;  /* images per request (default 16) */
    double      keep;        /* seconds an ended job's images stay (default 600) */
    int64_t     keep_bytes;  /* ...and at most this many bytes of them, oldest first (default 1 GiB) */
    size_t      max_body;    /* request body bytes at most (default 1 MiB) */
    double      grace;       /* on stop: seconds the running jobs may finish (default 30) */
    double      rank_timeout;   /* a rank on another host silent this long on an image is lost (600) */
    const char *const *devices;   /* each worker's device name, for /health (may be NULL) */
    /* the ranks of `tandem launch -- serve`: the caller of tdm_serve_run is
     * rank 0 (the front, and its pipelines workers); every other rank calls
     * tdm_serve_worker and makes the images it is handed. NULL: this process. */
    struct tdm_comm *comm;
    /* out (may be NULL): set by tdm_serve_run / tdm_serve_worker to 1 when a
     * worker rank was lost — the MPI library then cannot end cleanly (its
     * finalize waits for the lost rank), so the caller exits without it */
    int *ranks_lost;
    /* what a request leaves out (0 / NULL / NAN: the pipeline's default) */
    const char *negative;
    int         steps, width, height;
    float       guidance;
    uint64_t    seed;
} tdm_serve_params_t;

void tdm_serve_params_init(tdm_serve_params_t *p);

/* The checks of p that need no model (address, token, limits), so a bad
 * flag fails before the weights load; tdm_serve_run makes them too. */
tdm_status tdm_serve_check(const tdm_serve_params_t *p);

/* Serves the model of `pipes` — one worker thread per pipeline (each opened
 * by the caller on its own device, every stage kept resident; the same
 * model), which take the queued jobs as they come free — until
 * *stop becomes nonzero (a signal handler sets it), then stops accepting,
 * cancels queued jobs, lets the running one finish within p->grace seconds
 * (else cancels it at its next step) and returns TDM_OK. ready(user, port)
 * is called once the socket listens. Errors (bad address, port in use,
 * --host other than loopback without a token) name the flag. */
tdm_status tdm_serve_run(tdm_pipeline_t *const *pipes, int npipes, const tdm_serve_params_t *p,
                         volatile sig_atomic_t *stop, void (*ready)(void *user, int port),
                         void *user);

/* A worker rank (rank > 0 of p->comm): makes the images rank 0's
 * tdm_serve_run hands it on its resident pipeline, reporting every step
 * (and stopping at the next one when the job is cancelled), until rank 0
 * ends the server. p: the same parameters as rank 0's (model, comm,
 * devices[0]: this rank's device for /health). */
tdm_status tdm_serve_worker(tdm_pipeline_t *pipe, const tdm_serve_params_t *p);

#endif
