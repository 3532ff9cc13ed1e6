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
    const char *args[] = {"--grace", "1", NULL};
    if (server_start_ranks(&s, 2, args)) return;
    cJSON *o = http_json(&s, "POST", "/v1/jobs",
                         "{\"prompt\":\"slow\",\"n\":2,\"steps\":150,\"width\":256,\"height\":256}", 202);
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
                  "{\"prompt\":\"slow\",\"n\":2,\"steps\":150,\"width\":256,\"height\":256}", 202);
    cJSON_Delete(o);
    usleep(500000);
    const double t1 = mono();
    CHECK_MSG(server_stop(&s) == 0, "exit code of launch after SIGTERM");
    CHECK_MSG(mono() - t1 < 20, "stopping took %.1f s", mono() - t1);
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
#ifndef TDM_HAVE_MPI
    return test_skip("built without MPI (libopenmpi-dev not found at configure time)");
#endif
    if (system("command -v mpirun > /dev/null 2>&1") != 0) return test_skip("mpirun not found on PATH");
    char probe[1024], out[512] = "";
    snprintf(probe, sizeof probe, "\"%s\" serve --model /nonexistent 2>&1", TDM_TANDEM_BIN);
    FILE *pp = popen(probe, "r");
    size_t pn = pp ? fread(out, 1, sizeof out - 1, pp) : 0;
    out[pn] = 0;
    if (pp) pclose(pp);
    if (strstr(out, "no HTTP server")) return test_skip("this build has no tandem serve (no libmicrohttpd)");
    /* Open MPI's components leak at exit under ASan (see test_launch.c) */
    char asan[1024];
    snprintf(asan, sizeof asan, "%s%sdetect_leaks=0", getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "",
             getenv("ASAN_OPTIONS") ? ":" : "");
    setenv("ASAN_OPTIONS", asan, 1);
    if (!mkdtemp(g_tmp)) {
        printf("mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    RUN(ranks_share_a_request);
    RUN(cancel_across_ranks);
    RUN(bad_flag_one_line);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) printf("could not remove %s\n", g_tmp);
    return test_summary();
}
