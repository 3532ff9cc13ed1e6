/* serve.c — `tandem serve`: opens the pipeline with every stage resident,
 * loads it once, then serves HTTP (src/serve/) until SIGTERM or SIGINT,
 * after which it stops accepting, lets the running job finish within
 * --grace and exits 0. The first line on stdout says where it listens. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#ifdef TDM_HAVE_SERVE
#include "serve/serve.h"

#define MAX_WORKERS 64

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

typedef struct {
    const args_t *a;
    const char   *host;
} ready_t;

static void on_ready(void *user, int port) {
    const ready_t *r = user;
    const int v6 = strchr(r->host, ':') != NULL;
    printf("tandem: serving %s on http://%s%s%s:%d\n", r->a->model, v6 ? "[" : "", r->host,
           v6 ? "]" : "", port);
    fflush(stdout);
}

int cmd_serve(int argc, char **argv) {
    args_t a;
    parse_args(&a, "serve", argc, argv);
    tdm_serve_params_t sp;
    tdm_serve_params_init(&sp);
    sp.model = a.model;
    if (a.host) sp.host = a.host;
    sp.token = a.token;
    if (a.port >= 0) sp.port = a.port;
    if (a.queue > 0) sp.queue = a.queue;
    if (a.max_steps > 0) sp.max_steps = a.max_steps;
    if (a.max_images > 0) sp.max_images = a.max_images;
    if (a.max_pixels > 0) sp.max_pixels = a.max_pixels;
    if (a.keep >= 0) sp.keep = a.keep;
    if (a.keep_mib >= 0) sp.keep_bytes = (int64_t)a.keep_mib << 20;
    if (a.grace >= 0) sp.grace = a.grace;
    sp.negative = a.negative;
    sp.steps = a.steps;
    sp.width = a.width;
    sp.height = a.height;
    sp.guidance = a.guidance;
    sp.seed = a.seed;
    if (a.steps > sp.max_steps)
        die(2, "--steps %d: above --max-steps %d", a.steps, sp.max_steps);
    if (tdm_serve_check(&sp) != TDM_OK) die(2, "%s", tdm_last_error());
    a.keep_resident = 1;   /* the point of a server: every stage stays loaded */
    /* --device A,B,...: one worker (a resident pipeline) per device */
    char devs[1024];
    const char *dev[MAX_WORKERS];
    int nw = 0;
    snprintf(devs, sizeof devs, "%s", a.device ? a.device : "");
    for (char *t = devs, *save = NULL; (t = strtok_r(t, ",", &save)) != NULL; t = NULL) {
        if (nw == MAX_WORKERS) die(2, "--device: at most %d devices", MAX_WORKERS);
        dev[nw++] = t;
    }
    if (nw == 0) dev[nw++] = NULL;   /* the default device */
    tdm_pipeline_t *pipes[MAX_WORKERS];
    const double t0 = now();
    for (int i = 0; i < nw; i++) {
        a.device = dev[i];
        pipes[i] = open_pipeline(&a);
        for (int s = TDM_STAGE_ENCODE; s <= TDM_STAGE_DECODE; s++)
            if (tdm_pipeline_load_stage(pipes[i], (tdm_stage)s) != TDM_OK) die_status();
    }
    if (!a.quiet)
        fprintf(stderr, "tandem: model loaded in %.2fs (%d worker%s)\n", now() - t0, nw, nw > 1 ? "s" : "");
    sp.devices = dev;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);   /* a client gone mid-answer is not the server's end */
    ready_t r = {&a, sp.host};
    if (tdm_serve_run(pipes, nw, &sp, &g_stop, on_ready, &r) != TDM_OK) die_status();
    for (int i = 0; i < nw; i++) tdm_pipeline_close(pipes[i]);
    args_free(&a);
    if (!a.quiet) fprintf(stderr, "tandem: stopped\n");
    return 0;
}

#else /* built without libmicrohttpd */

int cmd_serve(int argc, char **argv) {
    (void)argc;
    (void)argv;
    die(1, "this build has no HTTP server: install libmicrohttpd (Debian: libmicrohttpd-dev) and "
        "rebuild with -DTDM_SERVE=ON");
}

#endif
