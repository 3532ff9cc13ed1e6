/* jobs.h — the server's job table and bounded queue (internal to
 * src/serve/): jobs are submitted by HTTP handlers, taken by the worker (the
 * highest priority first, then the client served longest ago — round robin
 * between clients when the queue is contended — then FIFO), observed (state, progress, images) and cancelled by id, and forgotten
 * `keep` seconds after they ended. One mutex guards everything; two condition
 * variables wake the worker (work) and waiters (any change). */
#ifndef TDM_SERVE_JOBS_H
#define TDM_SERVE_JOBS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { JOB_QUEUED = 0, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED, JOB_NSTATES } job_state;

const char *job_state_name(job_state s);

/* What a job makes: n images of prompt/negative at width × height, image k
 * with seed + k (as `tandem generate` numbers them). */
typedef struct {
    char    *prompt, *negative;
    uint64_t seed;
    int      steps, width, height, n;
    float    guidance;
    int      priority;     /* higher runs first (default 0) */
    char     client[48];   /* who asked (the peer address): fairness between clients */
} job_req_t;

typedef struct job {
    char        id[33];       /* 32 hex digits, random */
    job_req_t   req;
    job_state   state;
    int         cancel;       /* set by a cancel; the worker stops at the next step */
    int         image, step;  /* progress: image being made (0-based), steps done in it */
    int         total;        /* the scheduler's steps per image (PNDM: steps + 1); 0: unknown */
    uint8_t   **png;          /* req.n PNGs (NULL until made) */
    size_t     *png_len;
    char      **params;       /* their parameters text */
    int         ndone;        /* images made */
    char       *error;        /* JOB_FAILED: one line */
    double      t_submit, t_start, t_end;   /* seconds (monotonic) */
    int         refs;         /* handlers waiting on it (q->mu held): not expired meanwhile */
    uint64_t    order;        /* 1 for the first job the workers took, 2 for the next, ...; 0: not yet */
    int         worker;       /* the worker that runs / ran it (-1: none yet) */
    struct job *next;         /* queue link */
} job_t;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t  work, change;
    job_t         **all;        /* every job not yet forgotten */
    int             nall, cap;
    job_t          *head, *tail;  /* the queue (JOB_QUEUED jobs, FIFO) */
    int             qlen, qmax;
    double          keep;       /* seconds an ended job stays */
    int64_t         keep_bytes; /* at most this many bytes of ended jobs' images stay (oldest go first) */
    int             stopping;   /* no new jobs; the worker ends once idle */
    /* counters for /metrics */
    uint64_t        submitted, rejected, ended[JOB_NSTATES], images, steps;
    double          step_seconds;
    uint64_t        step_hist[8];   /* steps by duration: <= 0.01, 0.03, 0.1, 0.3, 1, 3, 10 s, more */
    /* fairness: when each client's job was last taken (a take counter) */
    struct { char client[48]; uint64_t last; } served[64];
    int             nserved;
    uint64_t        takes;
} jobs_t;

int  jobs_init(jobs_t *q, int qmax, double keep, int64_t keep_bytes);
/* n bytes from the kernel's random source into buf; 0 on success. */
int  jobs_random(void *buf, size_t n);
void jobs_free(jobs_t *q);
double jobs_now(void);

/* Adds a job (takes ownership of req's strings; freed on failure too). 0 and
 * *out (the job, owned by q) on success; 1 when the queue is full; -1 out of
 * memory or stopping. */
int jobs_submit(jobs_t *q, job_req_t *req, job_t **out);
/* The job with this id (NULL: none); call with q->mu held. */
job_t *jobs_find(jobs_t *q, const char *id);
/* Cancels job `id`: a queued job ends at once, a running one at its next
 * step. Returns its state after the call, or -1 when there is no such job. */
int jobs_cancel(jobs_t *q, const char *id);
/* The worker: waits for the next queued job (priority, then the client
 * served longest ago, then FIFO) and marks it running; NULL once stopping
 * and the queue is empty. */
job_t *jobs_take(jobs_t *q);
/* The worker: the job ended in state s (error: a message for JOB_FAILED). */
void jobs_end(jobs_t *q, job_t *j, job_state s, const char *error);
/* Forgets ended jobs older than q->keep, and the oldest ended ones while
 * their images hold more than q->keep_bytes; call with q->mu held. */
void jobs_expire(jobs_t *q);
/* Stop: no new jobs; queued jobs are cancelled; the running one is asked to stop
 * when `cancel_running`. */
void jobs_stop(jobs_t *q, int cancel_running);

#endif
