/* jobs.c — the server's job table and bounded queue (jobs.h). */
#include "serve/jobs.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *job_state_name(job_state s) {
    static const char *const names[JOB_NSTATES] = {"queued", "running", "done", "failed",
                                                   "cancelled"};
    return (unsigned)s < JOB_NSTATES ? names[s] : "?";
}

double jobs_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int jobs_init(jobs_t *q, int qmax, double keep, int64_t keep_bytes) {
    memset(q, 0, sizeof *q);
    q->qmax = qmax;
    q->keep = keep;
    q->keep_bytes = keep_bytes;
    if (pthread_mutex_init(&q->mu, NULL)) return -1;
    if (pthread_cond_init(&q->work, NULL)) return -1;
    if (pthread_cond_init(&q->change, NULL)) return -1;
    return 0;
}

static void job_free(job_t *j) {
    if (!j) return;
    free(j->req.prompt);
    free(j->req.negative);
    for (int k = 0; j->png && k < j->req.n; k++) free(j->png[k]);
    for (int k = 0; j->params && k < j->req.n; k++) free(j->params[k]);
    free(j->png);
    free(j->png_len);
    free(j->params);
    free(j->istep);
    free(j->iworker);
    free(j->iretry);
    free(j->error);
    free(j);
}

void jobs_free(jobs_t *q) {
    for (int i = 0; i < q->nall; i++) job_free(q->all[i]);
    free(q->all);
    pthread_cond_destroy(&q->work);
    pthread_cond_destroy(&q->change);
    pthread_mutex_destroy(&q->mu);
    memset(q, 0, sizeof *q);
}

int jobs_random(void *buf, size_t n) {
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, buf, n) : -1;
    if (fd >= 0) close(fd);
    return got == (ssize_t)n ? 0 : -1;
}

/* 32 hex digits from the kernel's random source (ids are not guessable:
 * a job's images are its submitter's). 0 on success. */
static int new_id(char id[33]) {
    unsigned char b[16];
    if (jobs_random(b, sizeof b)) return -1;
    for (int i = 0; i < 16; i++) snprintf(id + 2 * i, 3, "%02x", b[i]);
    return 0;
}

int jobs_submit(jobs_t *q, job_req_t *req, job_t **out) {
    job_t *j = calloc(1, sizeof *j);
    int rc = -1;
    *out = NULL;
    if (j) {
        j->req = *req;
        j->worker = -1;
        memset(req, 0, sizeof *req);   /* owned by j now */
        j->png = calloc((size_t)j->req.n, sizeof *j->png);
        j->png_len = calloc((size_t)j->req.n, sizeof *j->png_len);
        j->params = calloc((size_t)j->req.n, sizeof *j->params);
        j->istep = calloc((size_t)j->req.n, sizeof *j->istep);
        j->iretry = calloc((size_t)j->req.n, 1);
        if ((j->iworker = malloc((size_t)j->req.n * sizeof *j->iworker)))
            for (int k = 0; k < j->req.n; k++) j->iworker[k] = -1;
    } else {
        free(req->prompt);
        free(req->negative);
        memset(req, 0, sizeof *req);
    }
    if (!j || !j->png || !j->png_len || !j->params || !j->istep || !j->iworker || !j->iretry || new_id(j->id)) {
        job_free(j);
        return -1;
    }
    pthread_mutex_lock(&q->mu);
    jobs_expire(q);
    if (q->stopping) {
        rc = -1;
    } else if (q->qlen >= q->qmax) {
        q->rejected++;
        rc = 1;
    } else if (q->nall == q->cap) {
        int cap = q->cap ? 2 * q->cap : 64;
        job_t **a = realloc(q->all, (size_t)cap * sizeof *a);
        if (a) {
            q->all = a;
            q->cap = cap;
        }
    }
    if (rc != 1 && !q->stopping && q->nall < q->cap) {
        j->state = JOB_QUEUED;
        j->t_submit = jobs_now();
        q->all[q->nall++] = j;
        if (q->tail) q->tail->next = j;
        else q->head = j;
        q->tail = j;
        q->qlen++;
        q->submitted++;
        pthread_cond_signal(&q->work);
        *out = j;
        rc = 0;
    }
    pthread_mutex_unlock(&q->mu);
    if (rc != 0) job_free(j);
    return rc;
}

job_t *jobs_find(jobs_t *q, const char *id) {
    for (int i = 0; id && i < q->nall; i++)
        if (!strcmp(q->all[i]->id, id)) return q->all[i];
    return NULL;
}

/* Unlinks queued job j from the queue (q->mu held). */
static void unqueue(jobs_t *q, job_t *j) {
    job_t *prev = NULL;
    for (job_t *c = q->head; c; prev = c, c = c->next)
        if (c == j) {
            if (prev) prev->next = c->next;
            else q->head = c->next;
            if (q->tail == c) q->tail = prev;
            c->next = NULL;
            return;
        }
}

/* Ends j in state s (q->mu held). */
static void end_locked(jobs_t *q, job_t *j, job_state s, const char *error) {
    j->state = s;
    j->t_end = jobs_now();
    if (error && !j->error) j->error = strdup(error);
    q->ended[s]++;
    j->version++;
    pthread_cond_broadcast(&q->change);
}

/* Stops handing out j's images; a job no worker is on ends now in state s,
 * else the last image in work ends it (q->mu held). */
static void halt_locked(jobs_t *q, job_t *j, job_state s, const char *error) {
    if (j->state >= JOB_DONE) return;
    j->cancel = 1;
    if (!j->halt || (s == JOB_FAILED && j->halt != JOB_FAILED)) j->halt = s;
    if (error && !j->error) j->error = strdup(error);
    if (j->given < j->req.n || j->redo > 0) {
        if (j->given == 0) q->qlen--;
        unqueue(q, j);
        j->given = j->req.n;
        j->redo = 0;
    }
    if (j->running == 0) end_locked(q, j, j->made == j->req.n ? JOB_DONE : j->halt, NULL);
    j->version++;
    pthread_cond_broadcast(&q->change);
}

int jobs_cancel(jobs_t *q, const char *id) {
    pthread_mutex_lock(&q->mu);
    job_t *j = jobs_find(q, id);
    int st = -1;
    if (j) {
        halt_locked(q, j, JOB_CANCELLED, NULL);
        st = (int)j->state;
    }
    pthread_mutex_unlock(&q->mu);
    return st;
}

/* When client c's job was last taken (0: never), q->mu held. */
static uint64_t last_served(const jobs_t *q, const char *c) {
    for (int i = 0; i < q->nserved; i++)
        if (!strcmp(q->served[i].client, c)) return q->served[i].last;
    return 0;
}

static void mark_served(jobs_t *q, const char *c) {
    int k = 0;
    for (; k < q->nserved && strcmp(q->served[k].client, c); k++) continue;
    if (k == q->nserved) {
        if (q->nserved < (int)(sizeof q->served / sizeof q->served[0])) {
            q->nserved++;
        } else {   /* full: the client served longest ago makes room */
            k = 0;
            for (int i = 1; i < q->nserved; i++)
                if (q->served[i].last < q->served[k].last) k = i;
        }
        snprintf(q->served[k].client, sizeof q->served[k].client, "%s", c);
    }
    q->served[k].last = ++q->takes;
}

/* The next image to make (q->mu held): see jobs_take. */
static job_t *take_locked(jobs_t *q, int worker, int *image) {
    job_t *j = q->head;
    for (job_t *c = q->head ? q->head->next : NULL; c; c = c->next)   /* FIFO among equals */
        if (c->req.priority > j->req.priority ||
            (c->req.priority == j->req.priority &&
             last_served(q, c->req.client) < last_served(q, j->req.client)))
            j = c;
    if (!j) return NULL;
    mark_served(q, j->req.client);
    int k = 0;
    if (j->redo > 0) {   /* an image handed back first */
        while (j->iworker[k] != -2) k++;
        j->redo--;
    } else {
        k = j->given++;
    }
    if (j->given == j->req.n && j->redo == 0) unqueue(q, j);
    if (q->head) pthread_cond_signal(&q->work);   /* more to take: the next idle worker */
    if (j->state == JOB_QUEUED) {   /* its first image (not image 0 made again) */
        q->qlen--;
        j->order = q->takes;
        j->state = JOB_RUNNING;
        j->t_start = jobs_now();
        j->worker = worker;
    }
    j->iworker[k] = worker;
    j->running++;
    j->version++;
    *image = k;
    pthread_cond_broadcast(&q->change);
    return j;
}

job_t *jobs_take(jobs_t *q, int worker, int *image) {
    pthread_mutex_lock(&q->mu);
    while (!q->head && !q->stopping) pthread_cond_wait(&q->work, &q->mu);
    job_t *j = take_locked(q, worker, image);
    pthread_mutex_unlock(&q->mu);
    return j;
}

job_t *jobs_try_take(jobs_t *q, int worker, int *image) {
    pthread_mutex_lock(&q->mu);
    job_t *j = take_locked(q, worker, image);
    pthread_mutex_unlock(&q->mu);
    return j;
}

void jobs_step(jobs_t *q, job_t *j, int k, int step, int total, double dt) {
    static const double le[7] = {0.01, 0.03, 0.1, 0.3, 1, 3, 10};
    int b = 0;
    while (b < 7 && dt > le[b]) b++;
    pthread_mutex_lock(&q->mu);
    j->istep[k] = step;
    j->total = total;
    j->version++;
    q->steps++;
    q->step_seconds += dt;
    q->step_hist[b]++;
    pthread_cond_broadcast(&q->change);
    pthread_mutex_unlock(&q->mu);
}

int jobs_cancelled(jobs_t *q, job_t *j) {
    pthread_mutex_lock(&q->mu);
    const int c = j->cancel;
    pthread_mutex_unlock(&q->mu);
    return c;
}

void jobs_image_end(jobs_t *q, job_t *j, int k, job_state s, const char *error, uint8_t *png,
                    size_t png_len, char *params) {
    pthread_mutex_lock(&q->mu);
    j->running--;
    if (s == JOB_DONE) {
        j->png[k] = png;
        j->png_len[k] = png_len;
        j->params[k] = params;
        j->istep[k] = j->total > j->req.steps ? j->total : j->req.steps;
        j->made++;
        while (j->ndone < j->req.n && j->png[j->ndone]) j->ndone++;
        q->images++;
        j->version++;
        if (j->made == j->req.n) end_locked(q, j, JOB_DONE, NULL);
        else if (j->halt && j->running == 0) end_locked(q, j, j->halt, NULL);
        pthread_cond_broadcast(&q->change);
    } else {
        free(png);
        free(params);
        halt_locked(q, j, s, error);
    }
    pthread_mutex_unlock(&q->mu);
}

void jobs_image_retry(jobs_t *q, job_t *j, int k, const char *error) {
    pthread_mutex_lock(&q->mu);
    if (j->iretry[k] || j->halt || q->stopping) {
        pthread_mutex_unlock(&q->mu);
        jobs_image_end(q, j, k, JOB_FAILED, error, NULL, 0, NULL);
        return;
    }
    j->running--;
    j->iretry[k] = 1;
    j->iworker[k] = -2;
    j->istep[k] = 0;
    if (j->given == j->req.n && j->redo == 0) {   /* not queued: first in line again */
        j->next = q->head;
        q->head = j;
        if (!q->tail) q->tail = j;
    }
    j->redo++;
    j->version++;
    pthread_cond_signal(&q->work);
    pthread_cond_broadcast(&q->change);
    pthread_mutex_unlock(&q->mu);
}

void jobs_progress(const job_t *j, double *done, double *total) {
    const double per = j->total > j->req.steps ? j->total : j->req.steps;
    *total = (double)j->req.n * per;
    *done = 0;
    if (j->state == JOB_DONE) *done = *total;
    else
        for (int k = 0; k < j->req.n; k++) *done += j->istep[k];
}

static int64_t job_bytes(const job_t *j) {
    int64_t b = 0;
    for (int k = 0; k < j->req.n; k++) b += j->png[k] ? (int64_t)j->png_len[k] : 0;
    return b;
}

void jobs_expire(jobs_t *q) {
    const double now = jobs_now();
    int64_t kept = 0;
    int k = 0;
    for (int i = 0; i < q->nall; i++) {
        job_t *j = q->all[i];
        if (j->state >= JOB_DONE && !j->refs && now - j->t_end > q->keep) {
            job_free(j);
            continue;
        }
        if (j->state >= JOB_DONE) kept += job_bytes(j);
        q->all[k++] = j;
    }
    q->nall = k;
    while (kept > q->keep_bytes) {   /* the oldest ended job not being read goes */
        int old = -1;
        for (int i = 0; i < q->nall; i++) {
            const job_t *j = q->all[i];
            if (j->state >= JOB_DONE && !j->refs && (old < 0 || j->t_end < q->all[old]->t_end)) old = i;
        }
        if (old < 0) break;
        kept -= job_bytes(q->all[old]);
        job_free(q->all[old]);
        q->all[old] = q->all[--q->nall];
    }
}

void jobs_stop(jobs_t *q, int cancel_running) {
    pthread_mutex_lock(&q->mu);
    q->stopping = 1;
    while (q->head) {
        job_t *j = q->head;
        halt_locked(q, j, JOB_CANCELLED, "the server is shutting down");   /* unqueues j */
    }
    for (int i = 0; cancel_running && i < q->nall; i++)
        if (q->all[i]->state == JOB_RUNNING) halt_locked(q, q->all[i], JOB_CANCELLED, "the server is shutting down");
    pthread_cond_broadcast(&q->work);
    pthread_cond_broadcast(&q->change);
    pthread_mutex_unlock(&q->mu);
}
