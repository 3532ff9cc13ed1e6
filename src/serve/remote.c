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
 *                               + the extras {guidance_rescale bits, original
 *                                 width, height, target width, height, crop top,
 *                                 left, 0} + prompt and negative (negative 0: none)
 *                          CANCEL {2}            stop the image at the next step
 *                          STOP {3, lost}        end tdm_serve_worker (lost: a rank was)
 *                          PING {4}              to an idle rank every PING_S seconds
 *   r → rank 0 (TAG_UP):   STEP {1, step, total} (no answer: the rank checks for
 *                               a CANCEL at each step without waiting)
 *                          DONE {2, png bytes, memory now, memory peak} + the PNG
 *                          FAIL {3, cancelled, memory now, memory peak, error bytes}
 *                               + the error line
 * Rank 0 talks MPI from its main thread only (the MPI library is started
 * for one thread); it polls (tdm_comm_probe) so an idle server sleeps, and
 * so do idle ranks.
 *
 * A lost rank: one on rank 0's host whose process is gone (its pid, from
 * the handshake, checked twice a second), or one elsewhere silent for
 * p->rank_timeout seconds on an image. Its image goes back to the queue for
 * another worker (once), it gets no more, and /health says so. The job of
 * ranks survives only where the MPI runtime lets it (tandem launch runs
 * mpirun with --enable-recovery for serve; a bare mpirun ends the job).
 * The other way round, a rank ends (with an error) once rank 0 is gone: its
 * process, on the same host, or FRONT_S seconds without a message (rank 0
 * pings idle ranks). Waits on rank 0 poll, so they can notice. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "serve/request.h"
#include "serve/server.h"

enum { TAG_DOWN = 7101, TAG_UP = 7102 };
enum { D_JOB = 1, D_CANCEL, D_STOP, D_PING };
#define PING_S  5.0    /* rank 0 → an idle rank */
#define FRONT_S 60.0   /* a rank that hears nothing from rank 0 this long ends */
enum { U_STEP = 1, U_DONE, U_FAIL };
/* what each rank tells the others at the start (the handshake) */
typedef struct {
    char    device[64];
    char    host[256];
    int64_t pid;
} hello_t;

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

/* Every rank's hello, gathered (the workers' half is in tdm_serve_worker). */
static tdm_status exchange_hello(tdm_comm_t *c, const char *device, hello_t *all) {
    hello_t me;
    memset(&me, 0, sizeof me);
    snprintf(me.device, sizeof me.device, "%s", device ? device : "");
    snprintf(me.host, sizeof me.host, "%.255s", c->host);
    me.pid = (int64_t)getpid();
    return tdm_comm_allgather(c, &me, all, (int64_t)sizeof me, TDM_U8, NULL);
}

tdm_status remote_start(server_t *s, int first) {
    const int n = tdm_comm_size(s->comm);
    hello_t *all = calloc((size_t)n, sizeof *all);
    if (!all) return tdm_errorf(TDM_ERR_NOMEM, "serve: out of memory");
    tdm_status st = exchange_hello(s->comm, s->w[0].device, all);
    for (int r = 1; st == TDM_OK && r < n; r++) {
        worker_t *w = &s->w[first + r - 1];
        all[r].device[sizeof all[r].device - 1] = all[r].host[sizeof all[r].host - 1] = 0;
        w->rank = r;
        w->pid = all[r].pid;
        w->same_host = !strcmp(all[r].host, all[0].host);
        snprintf(w->device, sizeof w->device, "%s", all[r].device);
    }
    free(all);
    return st;
}

int remote_busy(const server_t *s) {
    int n = 0;
    for (int i = 0; s->comm && i < s->nw; i++) n += s->w[i].rank > 0 && s->w[i].j != NULL;
    return n;
}

/* w's rank is lost (why: one line): its image goes back to the queue (or
 * fails, the second time), it gets no more. */
static void lost(server_t *s, worker_t *w, const char *why) {
    char err[512];
    snprintf(err, sizeof err, "worker %d (rank %d, %s) was lost: %s", w->id, w->rank, w->device, why);
    tdm_log(TDM_LOG_WARN, "serve: %s", err);   /* a warning: tandem launch ends a job on an error line */
    if (w->j) jobs_image_retry(&s->q, w->j, w->k, err);
    pthread_mutex_lock(&s->q.mu);
    w->j = NULL;
    w->state = "lost";
    snprintf(w->error, sizeof w->error, "%s", why);
    pthread_mutex_unlock(&s->q.mu);
}

/* A message call to w's rank failed (what: the call). */
static void lost_comm(server_t *s, worker_t *w, const char *what) {
    char why[400];
    snprintf(why, sizeof why, "%s: %s", what, tdm_last_error());
    lost(s, w, why);
}

/* 1 when process pid of this host is gone (or a zombie). */
static int process_gone(int64_t pid) {
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%lld/stat", (long long)pid);
    FILE *f = fopen(path, "re");
    if (!f) return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');   /* the name may hold spaces and ')' */
    return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

/* Whether w's rank still lives: its pid on this host (when `pids`: every
 * half second), or its silence on an image elsewhere. */
static void check_alive(server_t *s, worker_t *w, double now, int pids) {
    if (w->same_host && w->pid > 0) {
        if (pids && process_gone(w->pid)) lost(s, w, "its process ended");
    } else if (w->j && now - w->t_step > s->p->rank_timeout) {
        char why[128];
        snprintf(why, sizeof why, "no word from it for %.0f s (--rank-timeout)", now - w->t_step);
        lost(s, w, why);
    }
}

/* Hands image k of j to w's rank. */
static tdm_status hand_out(server_t *s, worker_t *w, job_t *j, int k) {
    const job_req_t *r = &j->req;
    const int64_t plen = (int64_t)strlen(r->prompt), nlen = r->negative ? (int64_t)strlen(r->negative) : -1;
    const int64_t h[8] = {D_JOB, k, (int64_t)r->seed, r->steps, r->width, r->height,
                          float_bits(r->guidance), plen | ((nlen + 1) << 32)};
    /* then the Stable Diffusion extras: guidance_rescale and SDXL's micro-conditioning */
    const int64_t x[8] = {float_bits(r->guidance_rescale), r->orig_w, r->orig_h, r->tgt_w, r->tgt_h,
                          r->crop_top, r->crop_left, 0};
    tdm_status st = send_h(s->comm, w->rank, TAG_DOWN, h);
    if (st == TDM_OK) st = send_h(s->comm, w->rank, TAG_DOWN, x);
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
            lost_comm(s, w, "probe");
            break;
        }
        if (!ready) break;
        if (tdm_comm_recv(s->comm, h, 8, TDM_I64, w->rank, TAG_UP, NULL) != TDM_OK) {
            lost_comm(s, w, "receive");
            break;
        }
        moved++;
        if (h[0] == U_STEP) {
            const double now = jobs_now();
            jobs_step(&s->q, w->j, w->k, (int)h[1], (int)h[2], now - w->t_step);
            w->t_step = now;
        } else if (h[0] == U_DONE || h[0] == U_FAIL) {
            if (finish(s, w, h) != TDM_OK) lost_comm(s, w, "image");
        } else {
            char why[64];
            snprintf(why, sizeof why, "unknown message %lld", (long long)h[0]);
            lost(s, w, why);
        }
    }
    return moved;
}

int remote_poll(server_t *s) {
    int moved = 0;
    const double now = jobs_now();
    const int pids = now - s->t_alive >= 0.5;
    if (pids) s->t_alive = now;
    for (int i = 0; s->comm && i < s->nw; i++) {
        worker_t *w = &s->w[i];
        if (w->rank <= 0 || worker_gone(w)) continue;
        check_alive(s, w, now, pids);
        if (worker_gone(w)) continue;
        if (!w->j) {
            int k;
            job_t *j = jobs_try_take(&s->q, w->id, &k);
            if (!j && now - w->t_step > PING_S) {   /* an idle rank knows rank 0 still lives */
                const int64_t ping[8] = {D_PING};
                w->t_step = now;
                if (send_h(s->comm, w->rank, TAG_DOWN, ping) != TDM_OK) lost_comm(s, w, "send");
            }
            if (!j) continue;
            pthread_mutex_lock(&s->q.mu);
            w->j = j;
            w->k = k;
            w->state = "busy";
            pthread_mutex_unlock(&s->q.mu);
            w->t0 = w->t_step = jobs_now();
            w->cancel_sent = 0;
            moved++;
            if (hand_out(s, w, j, k) != TDM_OK) {
                lost_comm(s, w, "send");
                continue;
            }
        }
        moved += follow(s, w);
        if (w->j && !w->cancel_sent && jobs_cancelled(&s->q, w->j)) {
            const int64_t h[8] = {D_CANCEL};
            w->cancel_sent = 1;
            moved++;
            if (send_h(s->comm, w->rank, TAG_DOWN, h) != TDM_OK) lost_comm(s, w, "send");
        }
    }
    return moved;
}

void remote_stop(server_t *s) {
    int lost = 0;
    for (int i = 0; i < s->nw; i++) lost |= !strcmp(s->w[i].state, "lost");
    if (s->p->ranks_lost) *s->p->ranks_lost = lost;
    const int64_t h[8] = {D_STOP, lost};   /* lost: every rank ends without MPI's finalize */
    for (int i = 0; i < s->nw; i++) {
        worker_t *w = &s->w[i];
        if (w->rank <= 0) continue;
        if (worker_gone(w)) continue;
        if (send_h(s->comm, w->rank, TAG_DOWN, h) != TDM_OK)
            tdm_log(TDM_LOG_ERROR, "serve: rank %d: %s", w->rank, tdm_last_error());
        pthread_mutex_lock(&s->q.mu);
        w->state = "stopped";
        pthread_mutex_unlock(&s->q.mu);
    }
}

/* ---- a worker rank -------------------------------------------------------- */

/* A worker rank's view of rank 0. */
typedef struct {
    int64_t pid;        /* rank 0's process, when same_host */
    int     same_host;
} front_t;

/* Waits for rank 0's next message into h (polling: 1 to 10 ms apart), or
 * fails once rank 0 is gone. */
static tdm_status await_front(tdm_comm_t *c, front_t *f, int64_t h[8]) {
    int ms = 1;
    const double t0 = jobs_now();
    for (double t_check = 0;;) {
        int ready = 0;
        const tdm_status st = tdm_comm_probe(c, 0, TAG_DOWN, &ready);
        if (st != TDM_OK) return st;
        const double now = jobs_now();
        if (ready)
            return tdm_comm_recv(c, h, 8, TDM_I64, 0, TAG_DOWN, NULL);
        if (now - t_check > 0.5) {
            t_check = now;
            if ((f->same_host && process_gone(f->pid)) || now - t0 > FRONT_S)
                return tdm_errorf(TDM_ERR_IO, "serve: rank %d: rank 0 (the server's front) is gone; "
                                  "this worker ends", c->world_rank);
        }
        pause_ms(ms);
        if (ms < 10) ms++;
    }
}

typedef struct {
    tdm_comm_t *c;
    int         cancel;   /* rank 0 sent a CANCEL */
    tdm_status  st;       /* the first message that failed */
} rank_run_t;

static void rank_step(void *user, int step, int total) {
    rank_run_t *r = user;
    const int64_t h[8] = {U_STEP, step, total};
    if (r->st == TDM_OK) r->st = send_h(r->c, 0, TAG_UP, h);
}

/* At each step: has rank 0 sent a CANCEL? (Nothing else comes during an
 * image: pings go to idle ranks only.) */
static int rank_cancel(void *user) {
    rank_run_t *r = user;
    int ready = 0;
    while (r->st == TDM_OK && !r->cancel && (r->st = tdm_comm_probe(r->c, 0, TAG_DOWN, &ready)) == TDM_OK &&
           ready) {
        int64_t h[8];
        if ((r->st = tdm_comm_recv(r->c, h, 8, TDM_I64, 0, TAG_DOWN, NULL)) != TDM_OK) break;
        if (h[0] == D_CANCEL) r->cancel = 1;
        else if (h[0] != D_PING)
            r->st = tdm_errorf(TDM_ERR_INTERNAL, "serve: rank %d got message %lld during an image",
                               r->c->world_rank, (long long)h[0]);
    }
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
    uint8_t *png = NULL;
    size_t len = 0;
    char *params = NULL;
    const char *err = NULL;
    tdm_status st = TDM_OK;
    if (!q.prompt || (nlen >= 0 && !q.negative)) {   /* bytes of a request body: this rank is done for */
        st = tdm_errorf(TDM_ERR_NOMEM, "serve: rank %d: out of memory for a prompt", c->world_rank);
        goto out;
    }
    int64_t x[8];
    if ((st = tdm_comm_recv(c, x, 8, TDM_I64, 0, TAG_DOWN, NULL)) != TDM_OK) goto out;
    q.guidance_rescale = bits_float((uint32_t)x[0]);
    q.orig_w = (int)x[1];
    q.orig_h = (int)x[2];
    q.tgt_w = (int)x[3];
    q.tgt_h = (int)x[4];
    q.crop_top = (int)x[5];
    q.crop_left = (int)x[6];
    if ((st = recv_bytes(c, 0, TAG_DOWN, q.prompt, plen)) != TDM_OK ||
        (nlen > 0 && (st = recv_bytes(c, 0, TAG_DOWN, q.negative, nlen)) != TDM_OK))
        goto out;   /* the channel is gone: nothing more can be sent */
    rank_run_t r = {c, 0, TDM_OK};
    const tdm_status gst = serve_make_image(pipe, &q, k, info->scheduler, p->model, rank_step, rank_cancel,
                                            &r, &png, &len, &params, &err);
    if (r.st != TDM_OK) {   /* a message to rank 0 failed */
        st = r.st;
        goto out;
    }
    int64_t mem[2] = {0, 0};
    tdm_pipeline_memory(pipe, &mem[0], &mem[1]);
    if (gst == TDM_OK) {
        const int64_t e[8] = {U_DONE, (int64_t)len, mem[0], mem[1]};
        if ((st = send_h(c, 0, TAG_UP, e)) == TDM_OK) st = send_bytes(c, 0, TAG_UP, png, (int64_t)len);
    } else {
        const int64_t e[8] = {U_FAIL, gst == TDM_ERR_CANCELLED, mem[0], mem[1], (int64_t)strlen(err)};
        if ((st = send_h(c, 0, TAG_UP, e)) == TDM_OK) st = send_bytes(c, 0, TAG_UP, err, e[4]);
    }
out:
    free(q.prompt);
    free(q.negative);
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
    hello_t *all = calloc((size_t)tdm_comm_size(c), sizeof *all);
    if (!all) return tdm_errorf(TDM_ERR_NOMEM, "serve: out of memory");
    tdm_status st = exchange_hello(c, p->devices ? p->devices[0] : NULL, all);
    front_t f = {all[0].pid, 0};
    all[0].host[sizeof all[0].host - 1] = 0;
    f.same_host = !strcmp(all[0].host, all[c->rank].host);
    free(all);
    while (st == TDM_OK) {
        int64_t h[8];
        if ((st = await_front(c, &f, h)) != TDM_OK) break;
        if (h[0] == D_STOP) {
            if (p->ranks_lost) *p->ranks_lost = h[1] != 0;
            break;
        }
        if (h[0] == D_PING || h[0] == D_CANCEL) continue;   /* a cancel that came after the image ended */
        if (h[0] != D_JOB)
            return tdm_errorf(TDM_ERR_INTERNAL, "serve: rank %d got message %lld where a job was due",
                              c->world_rank, (long long)h[0]);
        st = rank_image(pipe, p, &info, h);
    }
    return st;
}
