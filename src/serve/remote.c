/* remote.c — the workers of `tandem serve` that are other ranks of
 * `tandem launch` (serve.h, server.h). Rank 0 (the front) hands each idle
 * rank one image at a time from the shared queue and follows it through
 * its steps; the rank makes it on its resident pipeline with the same code
 * path as a local worker (serve_generate_params, serve_parameters_text), so
 * the image is `tandem generate`'s of the same seed.
 *
 * Messages (host, over the world communicator; one tag each way, so they
 * arrive in the order sent). Every message starts with a header of 8
 * int64; a byte payload, when the header announces one, follows at once.
 *   rank 0 → r (TAG_DOWN): JOB  {1, k, seed, steps, width, height, guidance
 *                                bits, prompt bytes | (negative bytes + 1) << 32}
 *                               + prompt and negative (negative 0: none)
 *                          ACK  {2, cancel}      the answer to every STEP
 *                          STOP {3}              end tdm_serve_worker
 *   r → rank 0 (TAG_UP):   STEP {1, step, total} then waits for the ACK
 *                          DONE {2, png bytes, memory now, memory peak} + the PNG
 *                          FAIL {3, cancelled, memory now, memory peak, error bytes}
 *                               + the error line
 * Rank 0 talks MPI from its main thread only (the MPI library is started
 * for one thread); it polls (tdm_comm_probe) so an idle server sleeps, and
 * so do idle ranks. A rank that dies ends the launch (MPI aborts the job). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/core.h"
#include "serve/request.h"
#include "serve/server.h"

enum { TAG_DOWN = 7101, TAG_UP = 7102 };
enum { D_JOB = 1, D_ACK, D_STOP };
enum { U_STEP = 1, U_DONE, U_FAIL };
#define DEVICE_BYTES 64

static tdm_status send_h(tdm_comm_t *c, int peer, int tag, const int64_t h[8]) {
    return tdm_comm_send(c, h, 8, TDM_I64, peer, tag, NULL);
}

static tdm_status send_bytes(tdm_comm_t *c, int peer, int tag, const void *b, int64_t n) {
    return n > 0 ? tdm_comm_send(c, b, n, TDM_U8, peer, tag, NULL) : TDM_OK;
}

static tdm_status recv_bytes(tdm_comm_t *c, int peer, int tag, void *b, int64_t n) {
    return n > 0 ? tdm_comm_recv(c, b, n, TDM_U8, peer, tag, NULL) : TDM_OK;
}

static void pause_ms(int ms) {
    struct timespec t = {0, ms * 1000000L};
    nanosleep(&t, NULL);
}

static uint32_t float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- the front (rank 0) --------------------------------------------------- */

/* Every rank's device, gathered (the workers' half is in tdm_serve_worker). */
static tdm_status exchange_devices(tdm_comm_t *c, const char *mine, char *all) {
    char me[DEVICE_BYTES] = {0};
    snprintf(me, sizeof me, "%s", mine ? mine : "");
    return tdm_comm_allgather(c, me, all, DEVICE_BYTES, TDM_U8, NULL);
}

tdm_status remote_start(server_t *s, int first) {
    const int n = tdm_comm_size(s->comm);
    char *all = calloc((size_t)n, DEVICE_BYTES);
    if (!all) return tdm_errorf(TDM_ERR_NOMEM, "serve: out of memory");
    tdm_status st = exchange_devices(s->comm, s->w[0].device, all);
    for (int r = 1; st == TDM_OK && r < n; r++) {
        worker_t *w = &s->w[first + r - 1];
        w->rank = r;
        all[r * DEVICE_BYTES + DEVICE_BYTES - 1] = 0;
        snprintf(w->device, sizeof w->device, "%s", all + r * DEVICE_BYTES);
    }
    free(all);
    return st;
}

int remote_busy(const server_t *s) {
    int n = 0;
    for (int i = 0; s->comm && i < s->nw; i++) n += s->w[i].rank > 0 && s->w[i].j != NULL;
    return n;
}

/* The rank of w could not be reached: its image fails, it takes no more. */
static void lost(server_t *s, worker_t *w, const char *what) {
    char err[512];
    snprintf(err, sizeof err, "rank %d (%s): %s", w->rank, what, tdm_last_error());
    tdm_log(TDM_LOG_ERROR, "serve: %s", err);
    if (w->j) jobs_image_end(&s->q, w->j, w->k, JOB_FAILED, err, NULL, 0, NULL);
    pthread_mutex_lock(&s->q.mu);
    w->j = NULL;
    w->state = "stopped";
    pthread_mutex_unlock(&s->q.mu);
}

/* Hands image k of j to w's rank. */
static tdm_status hand_out(server_t *s, worker_t *w, job_t *j, int k) {
    const job_req_t *r = &j->req;
    const int64_t plen = (int64_t)strlen(r->prompt), nlen = r->negative ? (int64_t)strlen(r->negative) : -1;
    const int64_t h[8] = {D_JOB, k, (int64_t)r->seed, r->steps, r->width, r->height,
                          float_bits(r->guidance), plen | ((nlen + 1) << 32)};
    tdm_status st = send_h(s->comm, w->rank, TAG_DOWN, h);
    if (st == TDM_OK) st = send_bytes(s->comm, w->rank, TAG_DOWN, r->prompt, plen);
    if (st == TDM_OK && nlen > 0) st = send_bytes(s->comm, w->rank, TAG_DOWN, r->negative, nlen);
    return st;
}

/* Ends w's image with what its rank sent (h: a DONE or FAIL header). */
static tdm_status finish(server_t *s, worker_t *w, const int64_t h[8]) {
    job_t *j = w->j;
    const int done = h[0] == U_DONE;
    const int64_t len = done ? h[1] : h[4];
    if (len < 0 || len > ((int64_t)1 << 31))
        return tdm_errorf(TDM_ERR_INTERNAL, "serve: rank %d sent a payload of %lld bytes", w->rank,
                          (long long)len);
    char *b = malloc((size_t)len + 1);
    if (!b) return tdm_errorf(TDM_ERR_NOMEM, "serve: out of memory for rank %d's image", w->rank);
    tdm_status st = recv_bytes(s->comm, w->rank, TAG_UP, b, len);
    if (st != TDM_OK) {
        free(b);
        return st;
    }
    b[len] = 0;
    pthread_mutex_lock(&s->q.mu);
    w->busy += jobs_now() - w->t0;
    w->mem_now = h[2];
    w->mem_peak = h[3];
    w->state = "idle";
    w->j = NULL;
    pthread_mutex_unlock(&s->q.mu);
    if (done) {
        char *params = serve_parameters_text(&j->req, w->k, s->info.scheduler, s->p->model);
        if (params) {
            jobs_image_end(&s->q, j, w->k, JOB_DONE, NULL, (uint8_t *)b, (size_t)len, params);
            return TDM_OK;
        }
        free(b);
        jobs_image_end(&s->q, j, w->k, JOB_FAILED, "out of memory", NULL, 0, NULL);
        return TDM_OK;
    }
    if (!h[1]) tdm_log(TDM_LOG_WARN, "serve: job %s image %d failed on rank %d: %s", j->id, w->k, w->rank, b);
    jobs_image_end(&s->q, j, w->k, h[1] ? JOB_CANCELLED : JOB_FAILED, b, NULL, 0, NULL);
    free(b);
    return TDM_OK;
}

/* Takes what w's rank sent: progress (answered with the job's cancel flag)
 * or the image's end. Returns how many messages moved. */
static int follow(server_t *s, worker_t *w) {
    int moved = 0, ready = 0;
    while (w->j) {
        int64_t h[8];
        if (tdm_comm_probe(s->comm, w->rank, TAG_UP, &ready) != TDM_OK) {
            lost(s, w, "probe");
            break;
        }
        if (!ready) break;
        if (tdm_comm_recv(s->comm, h, 8, TDM_I64, w->rank, TAG_UP, NULL) != TDM_OK) {
            lost(s, w, "receive");
            break;
        }
        moved++;
        if (h[0] == U_STEP) {
            const double now = jobs_now();
            jobs_step(&s->q, w->j, w->k, (int)h[1], (int)h[2], now - w->t_step);
            w->t_step = now;
            const int64_t ack[8] = {D_ACK, jobs_cancelled(&s->q, w->j)};
            if (send_h(s->comm, w->rank, TAG_DOWN, ack) != TDM_OK) lost(s, w, "send");
        } else if (h[0] == U_DONE || h[0] == U_FAIL) {
            if (finish(s, w, h) != TDM_OK) lost(s, w, "image");
        } else {
            tdm_errorf(TDM_ERR_INTERNAL, "unknown message %lld", (long long)h[0]);
            lost(s, w, "protocol");
        }
    }
    return moved;
}

int remote_poll(server_t *s) {
    int moved = 0;
    for (int i = 0; s->comm && i < s->nw; i++) {
        worker_t *w = &s->w[i];
        if (w->rank <= 0 || !strcmp(w->state, "stopped")) continue;
        if (!w->j) {
            int k;
            job_t *j = jobs_try_take(&s->q, w->id, &k);
            if (!j) continue;
            pthread_mutex_lock(&s->q.mu);
            w->j = j;
            w->k = k;
            w->state = "busy";
            pthread_mutex_unlock(&s->q.mu);
            w->t0 = w->t_step = jobs_now();
            moved++;
            if (hand_out(s, w, j, k) != TDM_OK) {
                lost(s, w, "send");
                continue;
            }
        }
        moved += follow(s, w);
    }
    return moved;
}

void remote_stop(server_t *s) {
    const int64_t h[8] = {D_STOP};
    for (int i = 0; i < s->nw; i++) {
        worker_t *w = &s->w[i];
        if (w->rank <= 0) continue;
        if (strcmp(w->state, "stopped") && send_h(s->comm, w->rank, TAG_DOWN, h) != TDM_OK)
            tdm_log(TDM_LOG_ERROR, "serve: rank %d: %s", w->rank, tdm_last_error());
        pthread_mutex_lock(&s->q.mu);
        w->state = "stopped";
        pthread_mutex_unlock(&s->q.mu);
    }
}

/* ---- a worker rank -------------------------------------------------------- */

typedef struct {
    tdm_comm_t *c;
    int         cancel;   /* from rank 0's last ACK */
    tdm_status  st;       /* the first message that failed */
} rank_run_t;

static void rank_step(void *user, int step, int total) {
    rank_run_t *r = user;
    int64_t h[8] = {U_STEP, step, total};
    if (r->st != TDM_OK) return;
    if ((r->st = send_h(r->c, 0, TAG_UP, h)) != TDM_OK ||
        (r->st = tdm_comm_recv(r->c, h, 8, TDM_I64, 0, TAG_DOWN, NULL)) != TDM_OK)
        return;
    if (h[0] != D_ACK) {
        r->st = tdm_errorf(TDM_ERR_INTERNAL, "serve: rank %d expected an ACK, got message %lld",
                           r->c->world_rank, (long long)h[0]);
        return;
    }
    r->cancel = h[1] != 0;
}

static int rank_cancel(void *user) {
    const rank_run_t *r = user;
    return r->cancel || r->st != TDM_OK;
}

/* Makes the image of JOB header h (its strings follow) and sends its end. */
static tdm_status rank_image(tdm_pipeline_t *pipe, const tdm_serve_params_t *p,
                             const tdm_pipeline_info_t *info, const int64_t h[8]) {
    tdm_comm_t *c = p->comm;
    job_req_t q;
    memset(&q, 0, sizeof q);
    const int64_t plen = h[7] & 0xffffffff, nlen = (h[7] >> 32) - 1;
    const int k = (int)h[1];
    q.seed = (uint64_t)h[2];
    q.steps = (int)h[3];
    q.width = (int)h[4];
    q.height = (int)h[5];
    q.guidance = bits_float((uint32_t)h[6]);
    q.n = k + 1;
    q.prompt = calloc((size_t)plen + 1, 1);
    q.negative = nlen >= 0 ? calloc((size_t)nlen + 1, 1) : NULL;
    uint8_t *rgb = malloc((size_t)q.width * (size_t)q.height * 3), *png = NULL;
    size_t len = 0;
    char *params = NULL;
    tdm_status st = TDM_OK;
    if (!q.prompt || (nlen >= 0 && !q.negative)) {   /* bytes of a request body: this rank is done for */
        st = tdm_errorf(TDM_ERR_NOMEM, "serve: rank %d: out of memory for a prompt", c->world_rank);
        goto out;
    }
    if ((st = recv_bytes(c, 0, TAG_DOWN, q.prompt, plen)) != TDM_OK ||
        (nlen > 0 && (st = recv_bytes(c, 0, TAG_DOWN, q.negative, nlen)) != TDM_OK))
        goto out;   /* the channel is gone: nothing more can be sent */
    rank_run_t r = {c, 0, TDM_OK};
    tdm_status gst = TDM_ERR_NOMEM;
    if (rgb) {
        tdm_generate_params_t gp;
        serve_generate_params(&q, k, &gp);
        gp.on_step = rank_step;
        gp.cancel = rank_cancel;
        gp.user = &r;
        gst = tdm_pipeline_generate(pipe, q.prompt, q.negative, &gp, NULL, rgb);
        if (r.st != TDM_OK) {
            st = r.st;
            goto out;
        }
        if (gst == TDM_OK && !(params = serve_parameters_text(&q, k, info->scheduler, p->model)))
            gst = TDM_ERR_NOMEM;
        if (gst == TDM_OK) gst = tdm_image_png(rgb, q.width, q.height, params, &png, &len);
    }
    int64_t mem[2] = {0, 0};
    tdm_pipeline_memory(pipe, &mem[0], &mem[1]);
    if (gst == TDM_OK) {
        const int64_t e[8] = {U_DONE, (int64_t)len, mem[0], mem[1]};
        if ((st = send_h(c, 0, TAG_UP, e)) == TDM_OK) st = send_bytes(c, 0, TAG_UP, png, (int64_t)len);
    } else {
        const char *err = gst == TDM_ERR_NOMEM ? "out of memory" : tdm_last_error();
        const int64_t e[8] = {U_FAIL, gst == TDM_ERR_CANCELLED, mem[0], mem[1], (int64_t)strlen(err)};
        if ((st = send_h(c, 0, TAG_UP, e)) == TDM_OK) st = send_bytes(c, 0, TAG_UP, err, e[4]);
    }
out:
    free(q.prompt);
    free(q.negative);
    free(rgb);
    free(png);
    free(params);
    return st;
}

tdm_status tdm_serve_worker(tdm_pipeline_t *pipe, const tdm_serve_params_t *p) {
    tdm_comm_t *c = p->comm;
    if (!pipe || tdm_comm_size(c) < 2 || tdm_comm_rank(c) == 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "serve: tdm_serve_worker runs on ranks 1.. of a launch");
    tdm_pipeline_info_t info;
    tdm_pipeline_info(pipe, &info);
    char *all = calloc((size_t)tdm_comm_size(c), DEVICE_BYTES);
    if (!all) return tdm_errorf(TDM_ERR_NOMEM, "serve: out of memory");
    tdm_status st = exchange_devices(c, p->devices ? p->devices[0] : NULL, all);
    free(all);
    int idle_ms = 1;
    while (st == TDM_OK) {
        int ready = 0;
        int64_t h[8];
        if ((st = tdm_comm_probe(c, 0, TAG_DOWN, &ready)) != TDM_OK) break;
        if (!ready) {   /* idle: sleep a little longer each time, up to 10 ms */
            pause_ms(idle_ms);
            if (idle_ms < 10) idle_ms++;
            continue;
        }
        idle_ms = 1;
        if ((st = tdm_comm_recv(c, h, 8, TDM_I64, 0, TAG_DOWN, NULL)) != TDM_OK) break;
        if (h[0] == D_STOP) break;
        if (h[0] != D_JOB)
            return tdm_errorf(TDM_ERR_INTERNAL, "serve: rank %d got message %lld where a job was due",
                              c->world_rank, (long long)h[0]);
        st = rank_image(pipe, p, &info, h);
    }
    return st;
}
