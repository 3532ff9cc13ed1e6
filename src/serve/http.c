/* http.c — `tandem serve` (serve.h): the HTTP front on libmicrohttpd (one
 * thread per connection, so a synchronous request may wait for its job and
 * an events stream may block between events), the request parsing and
 * limits, and the worker thread that runs the jobs on the resident
 * pipeline. Every answer is JSON (one line) except the images, the page,
 * the events stream and /metrics. No request value ever names a file: the
 * server writes none. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "serve/jobs.h"
#include "serve/request.h"
#include "serve/serve.h"
#include "serve/server.h"

/* src/serve/page.html, embedded by the build (CMakeLists.txt) */
extern const unsigned char tdm_serve_page[];
extern const unsigned long tdm_serve_page_len;


/* Copies a worker's memory counters for /metrics (on its thread, which alone
 * touches its pipeline). */
static void note_memory(worker_t *w) {
    int64_t cur = 0, peak = 0;
    tdm_pipeline_memory(w->pipe, &cur, &peak);
    pthread_mutex_lock(&w->s->q.mu);
    w->mem_now = cur;
    w->mem_peak = peak;
    pthread_mutex_unlock(&w->s->q.mu);
}

/* ---- small helpers -------------------------------------------------------- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 of n bytes (malloc'd, NUL-terminated; NULL out of memory). */
static char *b64(const uint8_t *s, size_t n) {
    char *o = malloc((n + 2) / 3 * 4 + 1), *w = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i += 3) {
        const uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) |
                           (i + 2 < n ? s[i + 2] : 0);
        *w++ = B64[v >> 18 & 63];
        *w++ = B64[v >> 12 & 63];
        *w++ = i + 1 < n ? B64[v >> 6 & 63] : '=';
        *w++ = i + 2 < n ? B64[v & 63] : '=';
    }
    *w = 0;
    return o;
}

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status, const char *type,
                                 const char *text) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == 429) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Answers with JSON o (freed). */
static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, cJSON *o) {
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!s) return send_text(c, 500, "application/json", "{\"error\":\"out of memory\"}");
    enum MHD_Result r = send_text(c, status, "application/json", s);
    free(s);
    return r;
}

/* {"error": "<message>"} with HTTP status `status`. */
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    tdm_log(TDM_LOG_INFO, "serve: %u: %s", status, msg);
    return send_json(c, status, o);
}

/* Constant-time comparison of the Authorization header with "Bearer TOKEN". */
static int authorized(const server_t *s, struct MHD_Connection *c) {
    if (!s->p->token) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncmp(h, "Bearer ", 7) != 0) return 0;
    const char *a = h + 7, *b = s->p->token;
    const size_t na = strlen(a), nb = strlen(b);
    unsigned char d = na != nb;
    for (size_t i = 0; i < nb; i++) d |= (unsigned char)(a[i < na ? i : 0] ^ b[i]);
    return d == 0;
}

/* ---- jobs ------------------------------------------------------------------ */

/* Queues r; on failure answers (429 full, 503 stopping) and returns NULL. */
static job_t *submit(server_t *s, struct MHD_Connection *c, job_req_t *r, enum MHD_Result *ret) {
    job_t *j = NULL;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->client, sizeof r->client);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->client,
                  sizeof r->client);
    const int rc = jobs_submit(&s->q, r, &j);
    if (rc == 1)
        *ret = send_error(c, 429, "the queue is full (%d jobs waiting): retry later", s->p->queue);
    else if (rc < 0)
        *ret = send_error(c, 503, "the server is stopping or out of memory");
    return rc == 0 ? j : NULL;
}

/* Waits until j ended (q.mu held on return; j referenced meanwhile). */
static void wait_end(server_t *s, job_t *j) {
    pthread_mutex_lock(&s->q.mu);
    j->refs++;
    while (j->state < JOB_DONE) pthread_cond_wait(&s->q.change, &s->q.mu);
    j->refs--;
}

/* The job's state as JSON (q.mu held). */
static cJSON *job_json(const server_t *s, const job_t *j) {
    cJSON *o = cJSON_CreateObject(), *imgs = cJSON_CreateArray();
    char num[32], url[96];
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "state", job_state_name(j->state));
    cJSON_AddNumberToObject(o, "n", j->req.n);
    cJSON_AddNumberToObject(o, "images_done", j->ndone);
    /* the first image not made yet, and its steps */
    cJSON_AddNumberToObject(o, "image", j->ndone < j->req.n ? j->ndone : j->req.n - 1);
    cJSON_AddNumberToObject(o, "step", j->ndone < j->req.n ? j->istep[j->ndone] : j->total);
    cJSON_AddNumberToObject(o, "steps", j->req.steps);
    if (j->total) cJSON_AddNumberToObject(o, "step_total", j->total);
    snprintf(num, sizeof num, "%llu", (unsigned long long)j->req.seed);
    cJSON_AddRawToObject(o, "seed", num);
    cJSON_AddNumberToObject(o, "width", j->req.width);
    cJSON_AddNumberToObject(o, "height", j->req.height);
    cJSON_AddNumberToObject(o, "guidance", j->req.guidance);
    double done, total;
    jobs_progress(j, &done, &total);
    cJSON_AddNumberToObject(o, "progress", total > 0 ? done / total : 0);
    if (j->state == JOB_RUNNING && done > 0) {
        const double el = jobs_now() - j->t_start;
        cJSON_AddNumberToObject(o, "eta_seconds", el * (total - done) / done);
    }
    if (j->state == JOB_QUEUED) {
        int pos = 0;
        for (const job_t *x = s->q.head; x && x != j; x = x->next) pos += x->state == JOB_QUEUED;
        cJSON_AddNumberToObject(o, "queue_position", pos);
    }
    cJSON *params = cJSON_CreateArray();
    for (int k = 0; k < j->ndone; k++) {
        snprintf(url, sizeof url, "/v1/jobs/%s/images/%d.png", j->id, k);
        cJSON_AddItemToArray(imgs, cJSON_CreateString(url));
        cJSON_AddItemToArray(params, cJSON_CreateString(j->params[k] ? j->params[k] : ""));
    }
    cJSON_AddItemToObject(o, "images", imgs);
    cJSON_AddItemToObject(o, "parameters", params);
    if (j->order) cJSON_AddNumberToObject(o, "run_order", (double)j->order);
    if (j->worker >= 0) {
        cJSON *iw = cJSON_CreateArray(), *is = cJSON_CreateArray();
        int retried = 0;
        cJSON_AddNumberToObject(o, "worker", j->worker);
        for (int k = 0; k < j->req.n; k++) {   /* each image's worker (-1: not taken yet) and steps */
            cJSON_AddItemToArray(iw, cJSON_CreateNumber(j->iworker[k]));
            cJSON_AddItemToArray(is, cJSON_CreateNumber(j->istep[k]));
            retried += j->iretry[k];
        }
        cJSON_AddItemToObject(o, "image_workers", iw);
        cJSON_AddItemToObject(o, "image_steps", is);
        cJSON_AddNumberToObject(o, "images_retried", retried);   /* their worker was lost */
    }
    if (j->error) cJSON_AddStringToObject(o, "error", j->error);
    return o;
}

/* ---- routes --------------------------------------------------------------- */

static enum MHD_Result route_health(server_t *s, struct MHD_Connection *c) {
    cJSON *o = cJSON_CreateObject(), *w = cJSON_CreateArray();
    pthread_mutex_lock(&s->q.mu);
    cJSON_AddStringToObject(o, "status", s->q.stopping ? "stopping" : "ok");
    cJSON_AddStringToObject(o, "model", s->p->model ? s->p->model : "");
    cJSON_AddStringToObject(o, "pipeline", s->info.class_name);
    cJSON_AddNumberToObject(o, "queue", s->q.qlen);
    for (int i = 0; i < s->nw; i++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddNumberToObject(x, "id", i);
        cJSON_AddNumberToObject(x, "rank", s->w[i].rank);
        cJSON_AddStringToObject(x, "device", s->w[i].device);
        cJSON_AddStringToObject(x, "state", s->w[i].state);
        cJSON_AddNumberToObject(x, "pid", (double)s->w[i].pid);
        if (s->w[i].error[0]) cJSON_AddStringToObject(x, "error", s->w[i].error);
        cJSON_AddItemToArray(w, x);
    }
    pthread_mutex_unlock(&s->q.mu);
    cJSON_AddItemToObject(o, "workers", w);
    return send_json(c, 200, o);
}

static enum MHD_Result route_metrics(server_t *s, struct MHD_Connection *c) {
    static const double le[7] = {0.01, 0.03, 0.1, 0.3, 1, 3, 10};
    char *t = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&t, &n);
    if (!f) return send_error(c, 500, "out of memory");
    pthread_mutex_lock(&s->q.mu);
    fprintf(f, "# HELP tandem_queue_depth Jobs waiting for the worker.\n"
               "# TYPE tandem_queue_depth gauge\ntandem_queue_depth %d\n", s->q.qlen);
    fprintf(f, "# HELP tandem_jobs_submitted_total Jobs accepted.\n"
               "# TYPE tandem_jobs_submitted_total counter\ntandem_jobs_submitted_total %llu\n",
            (unsigned long long)s->q.submitted);
    fprintf(f, "# HELP tandem_jobs_rejected_total Jobs refused with 429 (queue full).\n"
               "# TYPE tandem_jobs_rejected_total counter\ntandem_jobs_rejected_total %llu\n",
            (unsigned long long)s->q.rejected);
    fprintf(f, "# HELP tandem_jobs_ended_total Jobs ended, by final state.\n"
               "# TYPE tandem_jobs_ended_total counter\n");
    for (int k = JOB_DONE; k < JOB_NSTATES; k++)
        fprintf(f, "tandem_jobs_ended_total{state=\"%s\"} %llu\n", job_state_name((job_state)k),
                (unsigned long long)s->q.ended[k]);
    fprintf(f, "# HELP tandem_images_total Images made.\n# TYPE tandem_images_total counter\n"
               "tandem_images_total %llu\n", (unsigned long long)s->q.images);
    fprintf(f, "# HELP tandem_step_seconds Denoising step latency.\n"
               "# TYPE tandem_step_seconds histogram\n");
    uint64_t cum = 0;
    for (int k = 0; k < 7; k++) {
        cum += s->q.step_hist[k];
        fprintf(f, "tandem_step_seconds_bucket{le=\"%g\"} %llu\n", le[k], (unsigned long long)cum);
    }
    cum += s->q.step_hist[7];
    fprintf(f, "tandem_step_seconds_bucket{le=\"+Inf\"} %llu\ntandem_step_seconds_sum %.6f\n"
               "tandem_step_seconds_count %llu\n", (unsigned long long)cum, s->q.step_seconds,
            (unsigned long long)s->q.steps);
    fprintf(f, "# HELP tandem_worker_up Whether each worker serves (0: lost, or stopped).\n"
               "# TYPE tandem_worker_up gauge\n");
    for (int i = 0; i < s->nw; i++)
        fprintf(f, "tandem_worker_up{worker=\"%d\",rank=\"%d\"} %d\n", i, s->w[i].rank,
                !worker_gone(&s->w[i]));
    fprintf(f, "# HELP tandem_worker_busy_seconds_total Seconds each worker spent on jobs.\n"
               "# TYPE tandem_worker_busy_seconds_total counter\n");
    for (int i = 0; i < s->nw; i++)
        fprintf(f, "tandem_worker_busy_seconds_total{worker=\"%d\"} %.3f\n", i, s->w[i].busy);
    fprintf(f, "# HELP tandem_device_memory_bytes Each worker's device memory (weights and work), "
               "after its last job.\n# TYPE tandem_device_memory_bytes gauge\n");
    for (int i = 0; i < s->nw; i++)
        fprintf(f, "tandem_device_memory_bytes{worker=\"%d\",kind=\"current\"} %lld\n"
                   "tandem_device_memory_bytes{worker=\"%d\",kind=\"peak\"} %lld\n",
                i, (long long)s->w[i].mem_now, i, (long long)s->w[i].mem_peak);
    pthread_mutex_unlock(&s->q.mu);
    fclose(f);
    enum MHD_Result r = t ? send_text(c, 200, "text/plain; version=0.0.4", t)
                          : send_error(c, 500, "out of memory");
    free(t);
    return r;
}

static enum MHD_Result route_submit(server_t *s, struct MHD_Connection *c, const cJSON *body) {
    job_req_t r;
    char msg[256];
    enum MHD_Result ret = MHD_NO;
    if (serve_parse_request(s->p, &s->info, SERVE_API_JOBS, body, &r, NULL, msg, sizeof msg))
        return send_error(c, 400, "%s", msg);
    job_t *j = submit(s, c, &r, &ret);
    if (!j) return ret;
    pthread_mutex_lock(&s->q.mu);
    cJSON *o = job_json(s, j);
    pthread_mutex_unlock(&s->q.mu);
    return send_json(c, 202, o);
}

/* The images of ended job j as a JSON array of base64 strings (q.mu held). */
static cJSON *images_b64(const job_t *j) {
    cJSON *a = cJSON_CreateArray();
    for (int k = 0; k < j->ndone; k++) {
        char *e = b64(j->png[k], j->png_len[k]);
        cJSON_AddItemToArray(a, e ? cJSON_CreateString(e) : cJSON_CreateNull());
        free(e);
    }
    return a;
}

/* A synchronous request: queues r and waits for its end. Returns the job,
 * done, with q.mu held; or NULL after answering (full queue, failed or
 * cancelled job) with *ret the answer's result and q.mu not held. */
static job_t *run_sync(server_t *s, struct MHD_Connection *c, job_req_t *r, enum MHD_Result *ret) {
    job_t *j = submit(s, c, r, ret);
    if (!j) return NULL;
    wait_end(s, j);
    if (j->state == JOB_DONE) return j;
    if (j->state == JOB_CANCELLED) *ret = send_error(c, 409, "job %s was cancelled", j->id);
    else *ret = send_error(c, 500, "job %s failed: %s", j->id, j->error ? j->error : "unknown error");
    pthread_mutex_unlock(&s->q.mu);
    return NULL;
}

static enum MHD_Result route_openai(server_t *s, struct MHD_Connection *c, const cJSON *body) {
    job_req_t r;
    char msg[256];
    enum MHD_Result ret = MHD_NO;
    int url = 0;
    if (serve_parse_request(s->p, &s->info, SERVE_API_OPENAI, body, &r, &url, msg, sizeof msg))
        return send_error(c, 400, "%s", msg);
    job_t *j = run_sync(s, c, &r, &ret);
    if (!j) return ret;
    cJSON *o = cJSON_CreateObject(), *data = cJSON_CreateArray();
    cJSON_AddNumberToObject(o, "created", (double)time(NULL));
    for (int k = 0; k < j->ndone; k++) {
        cJSON *d = cJSON_CreateObject();
        if (url) {
            char u[96];
            snprintf(u, sizeof u, "/v1/jobs/%s/images/%d.png", j->id, k);
            cJSON_AddStringToObject(d, "url", u);
        } else {
            char *e = b64(j->png[k], j->png_len[k]);
            cJSON_AddStringToObject(d, "b64_json", e ? e : "");
            free(e);
        }
        cJSON_AddStringToObject(d, "revised_prompt", j->req.prompt);
        cJSON_AddItemToArray(data, d);
    }
    cJSON_AddItemToObject(o, "data", data);
    pthread_mutex_unlock(&s->q.mu);
    return send_json(c, 200, o);
}

static enum MHD_Result route_a1111(server_t *s, struct MHD_Connection *c, const cJSON *body) {
    job_req_t r;
    char msg[256];
    enum MHD_Result ret = MHD_NO;
    if (serve_parse_request(s->p, &s->info, SERVE_API_A1111, body, &r, NULL, msg, sizeof msg))
        return send_error(c, 400, "%s", msg);
    job_t *j = run_sync(s, c, &r, &ret);
    if (!j) return ret;
    cJSON *o = cJSON_CreateObject(), *info = cJSON_CreateObject(), *seeds = cJSON_CreateArray(),
          *texts = cJSON_CreateArray();
    cJSON_AddItemToObject(o, "images", images_b64(j));
    cJSON_AddItemToObject(o, "parameters", cJSON_Duplicate(body, 1));
    cJSON_AddStringToObject(info, "prompt", j->req.prompt);
    cJSON_AddStringToObject(info, "negative_prompt", j->req.negative ? j->req.negative : "");
    cJSON_AddNumberToObject(info, "seed", (double)j->req.seed);
    for (int k = 0; k < j->ndone; k++) {
        cJSON_AddItemToArray(seeds, cJSON_CreateNumber((double)(j->req.seed + (uint64_t)k)));
        cJSON_AddItemToArray(texts, cJSON_CreateString(j->params[k] ? j->params[k] : ""));
    }
    cJSON_AddItemToObject(info, "all_seeds", seeds);
    cJSON_AddNumberToObject(info, "steps", j->req.steps);
    cJSON_AddNumberToObject(info, "cfg_scale", j->req.guidance);
    cJSON_AddNumberToObject(info, "width", j->req.width);
    cJSON_AddNumberToObject(info, "height", j->req.height);
    cJSON_AddStringToObject(info, "sampler_name", s->info.scheduler);
    cJSON_AddItemToObject(info, "infotexts", texts);
    char *is = cJSON_PrintUnformatted(info);
    cJSON_Delete(info);
    cJSON_AddStringToObject(o, "info", is ? is : "{}");
    free(is);
    pthread_mutex_unlock(&s->q.mu);
    return send_json(c, 200, o);
}

static enum MHD_Result route_progress(server_t *s, struct MHD_Connection *c) {
    cJSON *o = cJSON_CreateObject(), *st = cJSON_CreateObject();
    double prog = 0, eta = 0;
    int step = 0, steps = 0, running = 0;
    pthread_mutex_lock(&s->q.mu);
    for (int i = 0; i < s->q.nall; i++) {
        const job_t *j = s->q.all[i];
        if (j->state != JOB_RUNNING) continue;
        double done, total;
        jobs_progress(j, &done, &total);
        prog = total > 0 ? done / total : 0;
        eta = done > 0 ? (jobs_now() - j->t_start) * (total - done) / done : 0;
        step = j->ndone < j->req.n ? j->istep[j->ndone] : 0;
        steps = j->total > j->req.steps ? j->total : j->req.steps;
        running = 1;
    }
    cJSON_AddNumberToObject(st, "job_count", s->q.qlen + running);
    cJSON_AddNumberToObject(st, "sampling_step", step);
    cJSON_AddNumberToObject(st, "sampling_steps", steps);
    pthread_mutex_unlock(&s->q.mu);
    cJSON_AddNumberToObject(o, "progress", prog);
    cJSON_AddNumberToObject(o, "eta_relative", eta);
    cJSON_AddItemToObject(o, "state", st);
    cJSON_AddNullToObject(o, "current_image");
    return send_json(c, 200, o);
}

/* ---- server-sent events of one job ---------------------------------------- */

typedef struct {
    server_t *s;
    job_t    *j;        /* referenced (refs) until the stream is freed */
    char     *pending;  /* the event not yet sent in full */
    size_t    off;
    uint64_t  sent;     /* the job's version last sent (+ 1; 0: nothing sent) */
    int       ended;
} events_t;

/* The next event of the stream (malloc'd), waiting for a change (q.mu held). */
static char *next_event(events_t *e) {
    job_t *j = e->j;
    while (!e->ended && e->sent == j->version + 1) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_sec += 15;   /* a comment line keeps proxies from closing an idle stream */
        if (pthread_cond_timedwait(&e->s->q.change, &e->s->q.mu, &t) == ETIMEDOUT)
            return strdup(": keep-alive\n\n");
    }
    e->sent = j->version + 1;
    cJSON *o = job_json(e->s, j);
    char *js = cJSON_PrintUnformatted(o), *ev = NULL;
    cJSON_Delete(o);
    const char *name = j->state >= JOB_DONE ? "end" : "progress";
    if (js) {
        size_t n = strlen(js) + strlen(name) + 32;
        if ((ev = malloc(n))) snprintf(ev, n, "event: %s\ndata: %s\n\n", name, js);
    }
    free(js);
    if (j->state >= JOB_DONE) e->ended = 1;
    return ev;
}

static ssize_t events_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    events_t *e = cls;
    if (!e->pending) {
        pthread_mutex_lock(&e->s->q.mu);
        const int done = e->ended;
        if (!done) e->pending = next_event(e);
        pthread_mutex_unlock(&e->s->q.mu);
        if (done) return MHD_CONTENT_READER_END_OF_STREAM;
        if (!e->pending) return MHD_CONTENT_READER_END_WITH_ERROR;
        e->off = 0;
    }
    size_t n = strlen(e->pending + e->off);
    if (n > max) n = max;
    memcpy(buf, e->pending + e->off, n);
    e->off += n;
    if (!e->pending[e->off]) {
        free(e->pending);
        e->pending = NULL;
    }
    return (ssize_t)n;
}

static void events_free(void *cls) {
    events_t *e = cls;
    pthread_mutex_lock(&e->s->q.mu);
    e->j->refs--;
    pthread_mutex_unlock(&e->s->q.mu);
    free(e->pending);
    free(e);
}

static enum MHD_Result route_events(server_t *s, struct MHD_Connection *c, job_t *j) {
    events_t *e = calloc(1, sizeof *e);
    if (!e) return send_error(c, 500, "out of memory");
    e->s = s;
    e->j = j;
    j->refs++;   /* q.mu held by the caller */
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, events_read, e, events_free);
    if (!r) {
        j->refs--;
        free(e);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* /v1/jobs/{id}[/events | /images/{k}.png] with method m. */
static enum MHD_Result route_job(server_t *s, struct MHD_Connection *c, const char *m,
                                 const char *rest) {
    char id[33];
    size_t n = strcspn(rest, "/");
    if (n != 32) return send_error(c, 404, "no such job");
    memcpy(id, rest, 32);
    id[32] = 0;
    const char *sub = rest + 32;
    enum MHD_Result ret;
    if (!strcmp(m, "DELETE") && !*sub) {
        const int st = jobs_cancel(&s->q, id);
        if (st < 0) return send_error(c, 404, "no such job: %s", id);
        pthread_mutex_lock(&s->q.mu);
        job_t *j = jobs_find(&s->q, id);
        cJSON *o = j ? job_json(s, j) : cJSON_CreateObject();
        pthread_mutex_unlock(&s->q.mu);
        return send_json(c, 200, o);
    }
    if (strcmp(m, "GET")) return send_error(c, 405, "%s is not allowed here", m);
    pthread_mutex_lock(&s->q.mu);
    job_t *j = jobs_find(&s->q, id);
    if (!j) {
        pthread_mutex_unlock(&s->q.mu);
        return send_error(c, 404, "no such job: %s (unknown, or expired)", id);
    }
    if (!*sub) {
        cJSON *o = job_json(s, j);
        pthread_mutex_unlock(&s->q.mu);
        return send_json(c, 200, o);
    }
    if (!strcmp(sub, "/events")) {
        ret = route_events(s, c, j);
        pthread_mutex_unlock(&s->q.mu);
        return ret;
    }
    unsigned k = 0;
    int end = 0;
    if (sscanf(sub, "/images/%5u.png%n", &k, &end) == 1 && !sub[end] && sub[8] >= '0' &&
        sub[8] <= '9') {
        if ((int)k >= j->req.n) {
            pthread_mutex_unlock(&s->q.mu);
            return send_error(c, 404, "job %s has %d images", id, j->req.n);
        }
        if ((int)k >= j->ndone) {
            pthread_mutex_unlock(&s->q.mu);
            return send_error(c, 409, "image %u of job %s is not made yet (state %s)", k, id,
                              job_state_name(j->state));
        }
        struct MHD_Response *r = MHD_create_response_from_buffer(j->png_len[k], j->png[k],
                                                                 MHD_RESPMEM_MUST_COPY);
        pthread_mutex_unlock(&s->q.mu);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "image/png");
        ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ret;
    }
    pthread_mutex_unlock(&s->q.mu);
    return send_error(c, 404, "no such route");
}

/* ---- the connection handler ----------------------------------------------- */

typedef struct {
    char  *body;
    size_t len, cap;
    int    too_big;
} conn_t;

static enum MHD_Result dispatch(server_t *s, struct MHD_Connection *c, const char *url,
                                const char *m, conn_t *k) {
    const int get = !strcmp(m, "GET") || !strcmp(m, "HEAD"), post = !strcmp(m, "POST");
    if (!strcmp(url, "/health")) return get ? route_health(s, c) : send_error(c, 405, "use GET");
    if (!strcmp(url, "/") || !strcmp(url, "/index.html")) {   /* static: its API calls carry the token */
        if (!get) return send_error(c, 405, "use GET");
        struct MHD_Response *r = MHD_create_response_from_buffer(
            tdm_serve_page_len, (void *)tdm_serve_page, MHD_RESPMEM_PERSISTENT);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (!authorized(s, c))
        return send_error(c, 401, "this server needs \"Authorization: Bearer TOKEN\"");
    if (!strcmp(url, "/metrics")) return get ? route_metrics(s, c) : send_error(c, 405, "use GET");
    if (!strcmp(url, "/sdapi/v1/progress"))
        return get ? route_progress(s, c) : send_error(c, 405, "use GET");
    if (!strncmp(url, "/v1/jobs/", 9)) return route_job(s, c, m, url + 9);
    const int jobs = !strcmp(url, "/v1/jobs"), oai = !strcmp(url, "/v1/images/generations"),
              a11 = !strcmp(url, "/sdapi/v1/txt2img");
    if (!jobs && !oai && !a11) return send_error(c, 404, "no such route: %.200s", url);
    if (!post) return send_error(c, 405, "use POST");
    if (k->too_big)
        return send_error(c, 413, "the body is larger than %zu bytes", s->p->max_body);
    cJSON *body = k->body ? cJSON_ParseWithLength(k->body, k->len) : NULL;
    if (!body) return send_error(c, 400, "the body is not valid JSON");
    enum MHD_Result r = jobs ? route_submit(s, c, body) : oai ? route_openai(s, c, body)
                                                             : route_a1111(s, c, body);
    cJSON_Delete(body);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls) {
    (void)version;
    server_t *s = cls;
    conn_t *k = *con_cls;
    if (!k) {   /* headers only: the body (if any) comes in the next calls */
        if (!(k = calloc(1, sizeof *k))) return MHD_NO;
        *con_cls = k;
        return MHD_YES;
    }
    if (*upload_size) {
        const size_t n = *upload_size;
        *upload_size = 0;
        if (k->too_big || k->len + n > s->p->max_body) {
            k->too_big = 1;
            return MHD_YES;
        }
        if (k->len + n + 1 > k->cap) {
            size_t cap = k->cap ? k->cap : 4096;
            while (cap < k->len + n + 1) cap *= 2;
            char *b = realloc(k->body, cap);
            if (!b) return MHD_NO;
            k->body = b;
            k->cap = cap;
        }
        memcpy(k->body + k->len, upload_data, n);
        k->len += n;
        k->body[k->len] = 0;
        return MHD_YES;
    }
    return dispatch(s, c, url, method, k);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    conn_t *k = *con_cls;
    if (k) free(k->body);
    free(k);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = 0;
    tdm_log(TDM_LOG_DEBUG, "serve: libmicrohttpd: %s", msg);
}

/* ---- the worker ----------------------------------------------------------- */

typedef struct {
    server_t *s;
    job_t    *j;
    int       k;
    double    t_step;
} run_t;

static void on_step(void *user, int step, int total) {
    run_t *r = user;
    const double now = jobs_now();
    jobs_step(&r->s->q, r->j, r->k, step, total, now - r->t_step);
    r->t_step = now;
}

static int on_cancel(void *user) {
    run_t *r = user;
    return jobs_cancelled(&r->s->q, r->j);
}

/* Makes image k of job j: `tandem generate`'s image of the same parameters
 * with seed + k. */
static void run_image(worker_t *w, job_t *j, int k) {
    server_t *s = w->s;
    run_t r = {s, j, k, jobs_now()};
    uint8_t *png;
    size_t len;
    char *params;
    const char *err;
    const tdm_status st = serve_make_image(w->pipe, &j->req, k, s->info.scheduler, s->p->model, on_step,
                                           on_cancel, &r, &png, &len, &params, &err);
    if (st == TDM_OK) {
        jobs_image_end(&s->q, j, k, JOB_DONE, NULL, png, len, params);
        return;
    }
    if (st != TDM_ERR_CANCELLED) tdm_log(TDM_LOG_WARN, "serve: job %s image %d failed: %s", j->id, k, err);
    jobs_image_end(&s->q, j, k, st == TDM_ERR_CANCELLED ? JOB_CANCELLED : JOB_FAILED, err, NULL, 0, NULL);
}

static void *worker(void *arg) {
    worker_t *w = arg;
    server_t *s = w->s;
    job_t *j;
    int k;
    note_memory(w);
    while ((j = jobs_take(&s->q, w->id, &k)) != NULL) {
        pthread_mutex_lock(&s->q.mu);
        w->state = "busy";
        pthread_mutex_unlock(&s->q.mu);
        const double t0 = jobs_now();
        run_image(w, j, k);
        note_memory(w);
        pthread_mutex_lock(&s->q.mu);
        w->busy += jobs_now() - t0;
        w->state = "idle";
        pthread_mutex_unlock(&s->q.mu);
    }
    pthread_mutex_lock(&s->q.mu);
    w->state = "stopped";
    pthread_cond_broadcast(&s->q.change);
    pthread_mutex_unlock(&s->q.mu);
    return NULL;
}

/* ---- start and stop ------------------------------------------------------- */

static int is_loopback(const char *host) {
    return !strcmp(host, "127.0.0.1") || !strcmp(host, "::1") || !strcmp(host, "localhost") ||
           !strncmp(host, "127.", 4);
}

tdm_status tdm_serve_check(const tdm_serve_params_t *p) {
    const char *host = p->host ? p->host : "127.0.0.1";
    unsigned char buf[sizeof(struct in6_addr)];
    const char *h = !strcmp(host, "localhost") ? "127.0.0.1" : host;
    if (inet_pton(AF_INET, h, buf) != 1 && inet_pton(AF_INET6, h, buf) != 1)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--host %s: expected an IPv4 or IPv6 address "
                          "(e.g. 127.0.0.1, 0.0.0.0, ::1)", host);
    if (!p->token && !is_loopback(host))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--host %s: serving beyond this machine needs "
                          "--token (every route but /health then asks for it)", host);
    if (p->token && strlen(p->token) < 8)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--token: at least 8 characters");
    if (p->port < 0 || p->port > 65535)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--port %d: expected 0 to 65535", p->port);
    if (p->queue < 1 || p->max_steps < 1 || p->max_images < 1 || p->max_pixels < 64)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "--queue, --max-steps, --max-images and "
                          "--max-pixels must be positive");
    return TDM_OK;
}

/* Local workers still on an image. */
static int local_busy(server_t *s) {
    int n = 0;
    pthread_mutex_lock(&s->q.mu);
    for (int i = 0; i < s->nw; i++)
        n += s->w[i].started && !s->w[i].rank && strcmp(s->w[i].state, "stopped");
    pthread_mutex_unlock(&s->q.mu);
    return n;
}

static void nap(double seconds) {
    struct timespec t = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&t, NULL);
}

/* Stops the workers: queued jobs cancelled, the images in work given the
 * grace period, then cancelled at their next step; the other ranks told to
 * end; joins the threads. */
static void stop_workers(server_t *s, double grace) {
    for (int phase = 0; phase < 2; phase++) {
        jobs_stop(&s->q, phase);
        const double t0 = jobs_now();
        while (local_busy(s) + remote_busy(s) && (phase || jobs_now() - t0 < grace))
            if (!remote_poll(s)) nap(s->comm ? 0.001 : 0.02);
    }
    if (s->comm) remote_stop(s);
    for (int i = 0; i < s->nw; i++)
        if (s->w[i].started) pthread_join(s->w[i].thread, NULL);
}

tdm_status tdm_serve_run(tdm_pipeline_t *const *pipes, int npipes, const tdm_serve_params_t *p,
                         volatile sig_atomic_t *stop, void (*ready)(void *user, int port),
                         void *user) {
    server_t s;
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    struct sockaddr *sa;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC;
    memset(&s, 0, sizeof s);
    const char *host = p->host ? p->host : "127.0.0.1";
    const int nranks = tdm_comm_size(p->comm);
    if (npipes < 1 || !pipes)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "serve: no pipeline to serve");
    s.p = p;
    s.comm = nranks > 1 ? p->comm : NULL;
    tdm_pipeline_info(pipes[0], &s.info);
    s.nw = npipes + nranks - 1;
    if (!(s.w = calloc((size_t)s.nw, sizeof *s.w)) || jobs_init(&s.q, p->queue, p->keep, p->keep_bytes)) {
        free(s.w);   /* the other ranks wait in their handshake: the launcher's abort ends them */
        return tdm_errorf(TDM_ERR_NOMEM, "serve: out of memory");
    }
    for (int i = 0; i < s.nw; i++) {
        worker_t *w = &s.w[i];
        w->s = &s;
        w->id = i;
        w->state = "idle";
        if (i < npipes) {
            w->pipe = pipes[i];
            w->pid = (int64_t)getpid();
            snprintf(w->device, sizeof w->device, "%s", p->devices && p->devices[i] ? p->devices[i] : "");
        }
    }
    tdm_status st = s.comm ? remote_start(&s, npipes) : TDM_OK;   /* collective: first */
    if (st == TDM_OK) st = tdm_serve_check(p);
    memset(&a4, 0, sizeof a4);
    memset(&a6, 0, sizeof a6);
    const char *h = !strcmp(host, "localhost") ? "127.0.0.1" : host;
    if (inet_pton(AF_INET, h, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)p->port);
        sa = (struct sockaddr *)&a4;
    } else {   /* tdm_serve_check took it (or failed: sa is not used then) */
        inet_pton(AF_INET6, h, &a6.sin6_addr);
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)p->port);
        sa = (struct sockaddr *)&a6;
        flags |= MHD_USE_IPv6;
    }
    for (int i = 0; st == TDM_OK && i < npipes; i++) {
        if (pthread_create(&s.w[i].thread, NULL, worker, &s.w[i])) {
            st = tdm_errorf(TDM_ERR_INTERNAL, "serve: cannot start worker thread %d", i);
            break;
        }
        s.w[i].started = 1;
    }
    struct MHD_Daemon *d = NULL;
    if (st == TDM_OK) {
        d = MHD_start_daemon(flags, (uint16_t)p->port, NULL, NULL, on_request, &s,
                             MHD_OPTION_SOCK_ADDR, sa, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
                             &s, MHD_OPTION_CONNECTION_LIMIT, (unsigned)(p->queue + 64),
                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                             MHD_OPTION_EXTERNAL_LOGGER, mhd_log, &s, MHD_OPTION_END);
        if (!d) {
            const int e = errno;
            st = tdm_errorf(TDM_ERR_IO, "--host %s --port %d: cannot listen: %s", host, p->port,
                            e ? strerror(e) : "libmicrohttpd refused");
        }
    }
    if (st == TDM_OK) {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
        if (ready) ready(user, di ? (int)di->port : p->port);
        double t_expire = 0;
        while (!*stop) {
            const int moved = remote_poll(&s);
            if (jobs_now() - t_expire > 0.05) {
                pthread_mutex_lock(&s.q.mu);
                jobs_expire(&s.q);
                pthread_mutex_unlock(&s.q.mu);
                t_expire = jobs_now();
            }
            if (!moved) nap(s.comm ? 0.001 : 0.05);
        }
        tdm_log(TDM_LOG_INFO, "serve: stopping");
    }
    const tdm_status keep = st;   /* stopping keeps the first error */
    stop_workers(&s, st == TDM_OK ? p->grace : 0);
    if (d) MHD_stop_daemon(d);   /* after the workers: waiting requests have their answers */
    jobs_free(&s.q);
    free(s.w);
    return keep;
}
