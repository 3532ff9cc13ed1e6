/* jobs.h — the server's job table and bounded queue (internal to
 * src/serve/): jobs are submitted by HTTP handlers, their images taken one
 * at a time by the workers (the highest priority first, then the client
 * served longest ago — round robin between clients when the queue is
 * contended — then FIFO; a job of n images is shared by the idle workers),
 * observed (state, progress, images) and cancelled by id, and forgotten
 * `keep` seconds after they ended. One mutex guards everything; two
 * condition variables wake the workers (work) and waiters (any change). */
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
    float    guidance_rescale;   /* SD/SDXL guidance_rescale (0: off) */
    /* SDXL micro-conditioning in pixels (0: the defaults, as tdm_generate_params_t) */
    int      orig_w, orig_h, tgt_w, tgt_h, crop_top, crop_left;
    int      priority;     /* higher runs first (default 0) */
    char     client[48];   /* who asked (the peer address): fairness between clients */
} job_req_t;

typedef struct job {
    char        id[33];       /* 32 hex digits, random */
    job_req_t   req;
    job_state   state;        /* RUNNING from the first image a worker takes */
    int         cancel;       /* set by a cancel; the workers stop at their next step */
    int         total;        /* the scheduler's steps per image (PNDM: steps + 1); 0: unknown */
    /* the images are separate tasks, so the workers share a job's images */
    int         given;        /* images handed to workers (queued while < n or redo > 0) */
    int         running;      /* images being made */
    int         made;         /* images made (in any order) */
    int         ndone;        /* images 0 .. ndone-1 are made (what the routes list) */
    int        *istep;        /* steps done of each image (a made one counts total) */
    int        *iworker;      /* the worker of each image (-1: not taken yet, -2: to be made again) */
    uint8_t    *iretry;       /* 1: the image was handed back once (its worker was lost) */
    int         redo;         /* images handed back, waiting for a worker */
    job_state   halt;         /* JOB_FAILED / JOB_CANCELLED once an image ended so (0: none) */
    uint8_t   **png;          /* req.n PNGs (NULL until made) */
    size_t     *png_len;
    char      **params;       /* their parameters text */
    char       *error;        /* JOB_FAILED: one line */
    double      t_submit, t_start, t_end;   /* seconds (monotonic) */
    uint64_t    version;      /* bumped on every change a watcher can see */
    int         refs;         /* handlers waiting on it (q->mu held): not expired meanwhile */
    uint64_t    order;        /* 1 for the first job the workers took, 2 for the next, ...; 0: not yet */
    int         worker;       /* the worker of its first image (-1: none yet) */
    struct job *next;         /* queue link */
} job_t;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t  work, change;
    job_t         **all;        /* every job not yet forgotten */
    int             nall, cap;
    job_t          *head, *tail;  /* the queue: jobs with images not handed out yet, FIFO */
    int             qlen, qmax;   /* jobs waiting (none of their images started) */
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
/* A worker: waits for the next image to make — of the queued job with the
 * highest priority, then of the client served longest ago, then FIFO — and
 * returns its job (marked running) with *image its index; NULL once
 * stopping and the queue is empty. worker: the caller's number. */
job_t *jobs_take(jobs_t *q, int worker, int *image);
/* The same without waiting: NULL when nothing is queued. */
job_t *jobs_try_take(jobs_t *q, int worker, int *image);
/* A worker: image k of j has `step` of `total` steps done; dt: seconds the
 * step took (the step metrics). */
void jobs_step(jobs_t *q, job_t *j, int k, int step, int total, double dt);
/* A worker: 1 when j was cancelled (its images stop at the next step). */
int jobs_cancelled(jobs_t *q, job_t *j);
/* A worker: image k of j ended in state s: JOB_DONE with its PNG and
 * parameters text (taken over; freed on any path), or JOB_FAILED (error: one
 * line) / JOB_CANCELLED, which stop the job's other images too. The job ends
 * when its last image in work does: done when all are made. */
void jobs_image_end(jobs_t *q, job_t *j, int k, job_state s, const char *error, uint8_t *png,
                    size_t png_len, char *params);
/* A worker was lost while making image k of j: the image is queued again
 * for another worker, once; a second loss fails the job with `error`. */
void jobs_image_retry(jobs_t *q, job_t *j, int k, const char *error);
/* The job's progress in steps: *done of *total (q->mu held). */
void jobs_progress(const job_t *j, double *done, double *total);
/* Forgets ended jobs older than q->keep, and the oldest ended ones while
 * their images hold more than q->keep_bytes; call with q->mu held. */
void jobs_expire(jobs_t *q);
/* Stop: no new jobs; queued jobs are cancelled; the running one is asked to stop
 * when `cancel_running`. */
void jobs_stop(jobs_t *q, int cancel_running);

#endif
