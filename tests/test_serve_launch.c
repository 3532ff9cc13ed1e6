/* test_serve_launch.c — `tandem launch -n N -- serve` (Open MPI): every rank
 * a worker with the model resident, rank 0 the HTTP front. The images of
 * one request shared by the ranks and equal to `tandem generate`'s; a job
 * cancelled while other ranks make its images; a stop signal to launch
 * ending the server gracefully (exit 0); a bad flag as one error line.
 * Skipped (exit 77) when the build has no MPI or tandem serve, or mpirun is
 * missing. */
// label: dist
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "test_launch.h"

#include "serve_client.h"

/* The number of each image's worker in job JSON o (-1: none) into w[n]. */
static void image_workers(const cJSON *o, int *w, int n) {
    const cJSON *a = cJSON_GetObjectItem(o, "image_workers");
    for (int k = 0; k < n; k++) {
        const cJSON *x = cJSON_GetArrayItem(a, k);
        w[k] = cJSON_IsNumber(x) ? x->valueint : -1;
    }
}

/* Three ranks: /health lists three workers (ranks 0, 1, 2); one request of
 * 6 images is made by all of them, every image the CLI's byte for byte;
 * then SIGTERM to launch: the server ends with exit 0. */
TEST(ranks_share_a_request) {
    server_t s;
    const char *args[] = {"--steps", "4", NULL};
    if (server_start_ranks(&s, 3, args)) return;
    cJSON *o = http_json(&s, "GET", "/health", NULL, 200);
    const cJSON *ws = cJSON_GetObjectItem(o, "workers");
    CHECK_MSG(cJSON_GetArraySize(ws) == 3, "%d workers", cJSON_GetArraySize(ws));
    for (int i = 0; i < cJSON_GetArraySize(ws); i++) {
        const cJSON *r = cJSON_GetObjectItem(cJSON_GetArrayItem(ws, i), "rank");
        CHECK_MSG(cJSON_IsNumber(r) && r->valueint == i, "worker %d: rank %d", i, r ? r->valueint : -1);
    }
    cJSON_Delete(o);
    enum { N = 6 };
    o = http_json(&s, "POST", "/v1/jobs", "{\"prompt\":\"a red fox\",\"n\":6,\"seed\":5}", 202);
    char id[40];
    snprintf(id, sizeof id, "%s", jstr(o, "id"));
    cJSON_Delete(o);
    o = wait_job(&s, id);
    CHECK_MSG(!strcmp(jstr(o, "state"), "done"), "state %s", jstr(o, "state"));
    int w[N], used[3] = {0, 0, 0};
    image_workers(o, w, N);
    for (int k = 0; k < N; k++)
        if (w[k] >= 0 && w[k] < 3) used[w[k]]++;
    CHECK_MSG(used[0] + used[1] + used[2] == N && used[1] > 0 && used[2] > 0,
              "images per worker: %d %d %d", used[0], used[1], used[2]);
    cJSON_Delete(o);
    cli_images("cli", "--prompt 'a red fox' --seed 5 --steps 4 --num-images-per-prompt 6");
    for (int k = 0; k < N; k++) {
        char f[512];
        snprintf(f, sizeof f, "%s/cli/%06d.png", g_tmp, k);
        same_png(&s, id, k, f);
    }
    /* the A1111 route through the ranks too: two images, seeds 9 and 10 */
    o = http_json(&s, "POST", "/sdapi/v1/txt2img",
                  "{\"prompt\":\"a red fox\",\"seed\":9,\"steps\":4,\"batch_size\":2}", 200);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(o, "images")) == 2);
    cJSON_Delete(o);
    CHECK_MSG(server_stop(&s) == 0, "exit code of launch after SIGTERM");
}

/* A job whose images run on rank 0 and rank 1 is cancelled mid-denoise: it
 * ends cancelled within seconds (rank 1 stops at its next step), and the
 * ranks serve the next job. */
TEST(cancel_across_ranks) {
    server_t s;
    /* long jobs of small steps: a step (the cancel's latency) stays short on a loaded 2-core
     * machine under ASan, the job long */
    const char *args[] = {"--grace", "1", "--max-steps", "600", NULL};
    if (server_start_ranks(&s, 2, args)) return;
    cJSON *o = http_json(&s, "POST", "/v1/jobs",
                         "{\"prompt\":\"slow\",\"n\":2,\"steps\":600,\"width\":128,\"height\":128}", 202);
    char id[40], path[128];
    snprintf(id, sizeof id, "%s", jstr(o, "id"));
    cJSON_Delete(o);
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    int w[2] = {-1, -1};
    double progress = 0;
    for (int i = 0; i < 300 && !(w[0] >= 0 && w[1] >= 0 && progress > 0); i++) {   /* both ranks on it */
        usleep(50000);
        o = http_json(&s, "GET", path, NULL, 200);
        image_workers(o, w, 2);
        const cJSON *p = cJSON_GetObjectItem(o, "progress");
        progress = cJSON_IsNumber(p) ? p->valuedouble : 0;
        cJSON_Delete(o);
    }
    CHECK_MSG(w[0] >= 0 && w[1] >= 0 && w[0] != w[1], "image workers %d %d", w[0], w[1]);
    const double t0 = mono();
    o = http_json(&s, "DELETE", path, NULL, 200);
    cJSON_Delete(o);
    o = wait_job(&s, id);
    const double took = mono() - t0;
    CHECK_MSG(!strcmp(jstr(o, "state"), "cancelled") &&
              cJSON_GetObjectItem(o, "images_done")->valueint == 0,
              "state %s, %d images", jstr(o, "state"), cJSON_GetObjectItem(o, "images_done")->valueint);
    CHECK_MSG(took < 10, "cancel took %.1f s", took);
    cJSON_Delete(o);
    o = http_json(&s, "POST", "/v1/jobs", "{\"prompt\":\"next\",\"n\":2,\"steps\":2}", 202);
    snprintf(id, sizeof id, "%s", jstr(o, "id"));
    cJSON_Delete(o);
    o = wait_job(&s, id);
    CHECK_MSG(!strcmp(jstr(o, "state"), "done"), "after a cancel: %s", jstr(o, "state"));
    cJSON_Delete(o);
    /* SIGTERM with an image running on rank 1: --grace 1, then it is cancelled; exit 0 */
    o = http_json(&s, "POST", "/v1/jobs",
                  "{\"prompt\":\"slow\",\"n\":2,\"steps\":600,\"width\":128,\"height\":128}", 202);
    cJSON_Delete(o);
    usleep(500000);
    const double t1 = mono();
    CHECK_MSG(server_stop(&s) == 0, "exit code of launch after SIGTERM");
    CHECK_MSG(mono() - t1 < 20, "stopping took %.1f s", mono() - t1);
}

/* kill -9 of a worker rank while it makes an image of a job: the image is
 * made again by another worker (the same bytes as the CLI's), the other
 * jobs finish, /health names the lost worker, the server goes on serving and
 * ends with exit 0. */
TEST(killed_rank_image_retried) {
    server_t s;
    const char *args[] = {"--steps", "10", "--width", "128", "--height", "128", NULL};
    if (server_start_ranks(&s, 3, args)) return;
    cJSON *o = http_json(&s, "GET", "/health", NULL, 200);
    const cJSON *w1 = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "workers"), 1);
    const cJSON *pidj = cJSON_GetObjectItem(w1, "pid"), *rk = cJSON_GetObjectItem(w1, "rank");
    const pid_t pid = cJSON_IsNumber(pidj) ? (pid_t)pidj->valuedouble : 0;
    CHECK_MSG(pid > 0 && cJSON_IsNumber(rk) && rk->valueint == 1 && pid != s.pid, "worker 1: pid %d", (int)pid);
    cJSON_Delete(o);
    if (pid <= 0) {
        server_stop(&s);
        return;
    }
    char a[40], b[40], path[128];
    o = http_json(&s, "POST", "/v1/jobs", "{\"prompt\":\"a blue cup\",\"n\":4,\"seed\":11}", 202);
    snprintf(a, sizeof a, "%s", jstr(o, "id"));
    cJSON_Delete(o);
    o = http_json(&s, "POST", "/v1/jobs", "{\"prompt\":\"a green hat\",\"n\":2,\"seed\":3,\"steps\":4}", 202);
    snprintf(b, sizeof b, "%s", jstr(o, "id"));
    cJSON_Delete(o);
    snprintf(path, sizeof path, "/v1/jobs/%s", a);
    int on1 = 0;   /* worker 1 (rank 1) is making an image of job a, some steps in, not near its end */
    for (int i = 0; i < 3000 && !on1; i++) {
        o = http_json(&s, "GET", path, NULL, 200);
        int w[4];
        image_workers(o, w, 4);
        const cJSON *steps = cJSON_GetObjectItem(o, "image_steps");
        for (int k = 0; k < 4; k++) {
            const cJSON *st = cJSON_GetArrayItem(steps, k);
            on1 |= w[k] == 1 && cJSON_IsNumber(st) && st->valueint >= 1 && st->valueint <= 6;
        }
        cJSON_Delete(o);
        if (!on1) usleep(10000);
    }
    CHECK_MSG(on1, "rank 1 never took an image of job %s", a);
    CHECK(kill(pid, SIGKILL) == 0);
    o = wait_job_s(&s, a, 300);   /* sanitizer builds on 2 cores are slow */
    const cJSON *re = cJSON_GetObjectItem(o, "images_retried");
    CHECK_MSG(!strcmp(jstr(o, "state"), "done") && cJSON_GetObjectItem(o, "images_done")->valueint == 4 &&
              cJSON_IsNumber(re) && re->valueint == 1, "job a after the kill: %s (%s), %d image(s) retried",
              jstr(o, "state"), jstr(o, "error"), re ? re->valueint : -1);
    cJSON_Delete(o);
    o = wait_job_s(&s, b, 300);
    CHECK_MSG(!strcmp(jstr(o, "state"), "done"), "job b after the kill: %s", jstr(o, "state"));
    cJSON_Delete(o);
    o = http_json(&s, "GET", "/health", NULL, 200);
    w1 = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "workers"), 1);
    CHECK_MSG(!strcmp(jstr(w1, "state"), "lost") && strstr(jstr(w1, "error"), "process ended"),
              "worker 1: %s (%s)", jstr(w1, "state"), jstr(w1, "error"));
    CHECK(!strcmp(jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "workers"), 2), "state"), "idle"));
    cJSON_Delete(o);
    resp_t m;   /* what an alert would watch */
    CHECK(http(&s, "GET", "/metrics", NULL, NULL, 0, &m) == 0 && m.status == 200);
    CHECK_MSG(m.body && strstr(m.body, "tandem_worker_up{worker=\"1\",rank=\"1\"} 0\n") &&
              strstr(m.body, "tandem_worker_up{worker=\"2\",rank=\"2\"} 1\n") &&
              strstr(m.body, "tandem_worker_up{worker=\"0\",rank=\"0\"} 1\n"), "%s", m.body ? m.body : "");
    resp_free(&m);
    cli_images("cli3", "--prompt 'a blue cup' --seed 11 --steps 10 --width 128 --height 128 "
               "--num-images-per-prompt 4");
    for (int k = 0; k < 4; k++) {
        char f[512];
        snprintf(f, sizeof f, "%s/cli3/%06d.png", g_tmp, k);
        same_png(&s, a, k, f);
    }
    o = http_json(&s, "POST", "/v1/jobs", "{\"prompt\":\"next\",\"n\":3,\"steps\":2,\"width\":64,\"height\":64}", 202);
    snprintf(b, sizeof b, "%s", jstr(o, "id"));
    cJSON_Delete(o);
    o = wait_job(&s, b);
    int w[3];
    image_workers(o, w, 3);
    CHECK_MSG(!strcmp(jstr(o, "state"), "done") && w[0] != 1 && w[1] != 1 && w[2] != 1,
              "after the loss: %s, workers %d %d %d", jstr(o, "state"), w[0], w[1], w[2]);
    cJSON_Delete(o);
    CHECK_MSG(server_stop(&s) == 0, "exit code of launch after a lost rank and SIGTERM");
}

/* kill -9 of rank 0 (the front): the worker ranks notice and end, and
 * launch exits nonzero within seconds — nothing is left running. */
TEST(killed_front_ends_launch) {
    server_t s;
    if (server_start_ranks(&s, 2, NULL)) return;
    cJSON *o = http_json(&s, "GET", "/health", NULL, 200);
    const cJSON *pj = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "workers"), 0), "pid");
    const pid_t front = cJSON_IsNumber(pj) ? (pid_t)pj->valuedouble : 0;
    cJSON_Delete(o);
    CHECK_MSG(front > 0 && front != s.pid, "rank 0 pid %d", (int)front);
    if (front > 0) kill(front, SIGKILL);
    int st = 0, ended = 0;
    const double t0 = mono();
    while (!ended && mono() - t0 < 30) {
        ended = waitpid(s.pid, &st, WNOHANG) == s.pid;
        if (!ended) usleep(100000);
    }
    CHECK_MSG(ended && WIFEXITED(st) && WEXITSTATUS(st) != 0, "launch %s (status %d) %.1f s after rank 0 died",
              ended ? "exited" : "still running", st, mono() - t0);
    if (!ended) {
        kill(-s.pid, SIGKILL);
        waitpid(s.pid, &st, 0);
    }
}

/* A flag every rank refuses gives one error line and exit 2. */
TEST(bad_flag_one_line) {
    char cmd[1024], err[4096];
    snprintf(cmd, sizeof cmd, "\"%s\" launch -n 2 --oversubscribe -- serve --model \"%s\" --host 0.0.0.0 "
             "--port 0", TDM_TANDEM_BIN, MODEL);
    char errf[512];
    snprintf(errf, sizeof errf, "%s/err.txt", g_tmp);
    char full[2048];
    snprintf(full, sizeof full, "%s 2> '%s'", cmd, errf);
    const int st = system(full), rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    long n = 0;
    char *e = test_slurp_len(errf, &n);
    snprintf(err, sizeof err, "%s", e ? e : "");
    free(e);
    CHECK_MSG(rc == 2, "exit %d: %s", rc, err);
    int lines = 0;
    for (const char *p = err; (p = strstr(p, "tandem: error:")) != NULL; p++) lines++;
    CHECK_MSG(lines == 1 && strstr(err, "--host 0.0.0.0") && strstr(err, "--token"), "%s", err);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const int mpi = launch_test_setup();
    if (mpi != 0) return mpi;
    const int ready = serve_test_setup();
    if (ready != 0) return ready;
    RUN(ranks_share_a_request);
    RUN(cancel_across_ranks);
    RUN(killed_rank_image_retried);
    RUN(killed_front_ends_launch);
    RUN(bad_flag_one_line);
    serve_test_cleanup();
    return test_summary();
}
