/* serve.c — `tandem serve`: opens the pipeline with every stage resident,
 * loads it once, then serves HTTP (src/serve/) until SIGTERM or SIGINT,
 * after which it stops accepting, lets the running images finish within
 * --grace and exits 0. The first line on stdout says where it listens.
 * Under `tandem launch -n N -- serve` (or mpirun/srun) every rank loads the
 * pipeline on its own device(s) and makes images; rank 0 is also the HTTP
 * front and the queue. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#ifdef TDM_HAVE_SERVE
#include "dist/dist.h"
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

/* After a lost rank MPI_Finalize would wait for it: end here, exit 0 (with
 * tandem launch's --enable-recovery, mpirun accepts it). */
static void __attribute__((noreturn)) end_without_mpi(void) {
    fflush(NULL);
    _exit(0);
}

/* The server's parameters from the flags; a bad one exits 2. */
static void serve_params(const args_t *ap, tdm_serve_params_t *out) {
    const args_t a = *ap;
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
    if (a.rank_timeout > 0) sp.rank_timeout = a.rank_timeout;
    sp.negative = a.negative;
    sp.steps = a.steps;
    sp.width = a.width;
    sp.height = a.height;
    sp.guidance = a.guidance;
    sp.seed = a.seed;
    if (a.steps > sp.max_steps)
        die(2, "--steps %d: above --max-steps %d", a.steps, sp.max_steps);
    if (tdm_serve_check(&sp) != TDM_OK) die(2, "%s", tdm_last_error());
    if (a.parallel)
        die(2, "--parallel: tandem serve makes each image on one rank (its --gpus-per-rank GPUs); "
            "groups of ranks per image are not served yet");
    *out = sp;
}

void serve_preflight(int argc, char **argv) {
    args_t a;
    tdm_serve_params_t sp;
    parse_args(&a, "serve", argc, argv);
    serve_params(&a, &sp);
    args_free(&a);
}

int cmd_serve(int argc, char **argv) {
    args_t a;
    parse_args(&a, "serve", argc, argv);
    tdm_serve_params_t sp;
    serve_params(&a, &sp);
    a.keep_resident = 1;   /* the point of a server: every stage stays loaded */
    /* the ranks of a launch: each a worker, rank 0 the front too */
    tdm_dist_params_t dp;
    tdm_dist_params_init(&dp);
    cli_env_dist(&dp);
    if (tdm_dist_init(&g_dist, &dp) != TDM_OK) die_status();
    const int rank = tdm_dist_rank(g_dist), size = tdm_dist_size(g_dist);
    if (size > 1 && a.device && strchr(a.device, ','))
        die(2, "--device %s: under tandem launch each rank serves one device (give --gpus to launch, "
            "or --gpus-per-rank)", a.device);
    char devbuf[32];
    map_rank_device(&a, rank, size, devbuf, sizeof devbuf);
    sp.comm = tdm_dist_world(g_dist);
    /* --device A,B,...: one worker (a resident pipeline) per device */
    char devs[1024];
    const char *dev[MAX_WORKERS];
    int nw = 0;
    snprintf(devs, sizeof devs, "%s", a.device ? a.device : "");
    for (char *t = devs, *save = NULL; (t = strtok_r(t, ",", &save)) != NULL; t = NULL) {
        if (nw == MAX_WORKERS) die(2, "--device: at most %d devices", MAX_WORKERS);
        dev[nw++] = t;
    }
    if (nw == 0) dev[nw++] = "cpu";   /* the pipeline's default device */
    tdm_pipeline_t *pipes[MAX_WORKERS];
    const double t0 = now();
    for (int i = 0; i < nw; i++) {
        a.device = dev[i];
        pipes[i] = open_pipeline(&a);
        for (int s = TDM_STAGE_ENCODE; s <= TDM_STAGE_DECODE; s++)
            if (tdm_pipeline_load_stage(pipes[i], (tdm_stage)s) != TDM_OK) die_status();
    }
    sp.devices = dev;
    struct sigaction sa;   /* a worker rank ignores them too: rank 0 tells it when to end */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);   /* what tandem launch sends (mpirun forwards it to the ranks) */
    signal(SIGPIPE, SIG_IGN);   /* a client gone mid-answer is not the server's end */
    int lost = 0;
    sp.ranks_lost = &lost;
    if (rank > 0) {   /* a worker rank: makes what rank 0 hands it until rank 0 stops */
        if (tdm_serve_worker(pipes[0], &sp) != TDM_OK) die_status();
        if (lost) end_without_mpi();
        tdm_pipeline_close(pipes[0]);
        args_free(&a);
        tdm_dist_free(g_dist);
        g_dist = NULL;
        return 0;
    }
    if (!a.quiet && size > 1)
        fprintf(stderr, "tandem: model loaded in %.2fs on rank 0; %d workers (%d here, one on each of "
                "the %d other rank%s)\n", now() - t0, nw + size - 1, nw, size - 1, size > 2 ? "s" : "");
    else if (!a.quiet)
        fprintf(stderr, "tandem: model loaded in %.2fs (%d worker%s)\n", now() - t0, nw, nw > 1 ? "s" : "");
    ready_t r = {&a, sp.host};
    if (tdm_serve_run(pipes, nw, &sp, &g_stop, on_ready, &r) != TDM_OK) die_status();
    if (lost) {
        if (!a.quiet) fprintf(stderr, "tandem: stopped (with a worker rank lost)\n");
        end_without_mpi();
    }
    for (int i = 0; i < nw; i++) tdm_pipeline_close(pipes[i]);
    const int quiet = a.quiet;
    args_free(&a);
    tdm_dist_free(g_dist);
    g_dist = NULL;
    if (!quiet) fprintf(stderr, "tandem: stopped\n");
    return 0;
}

#else /* built without libmicrohttpd */

void serve_preflight(int argc, char **argv) { cmd_serve(argc, argv); }

int cmd_serve(int argc, char **argv) {
    (void)argc;
    (void)argv;
    die(1, "this build has no HTTP server: install libmicrohttpd (Debian: libmicrohttpd-dev) and "
        "rebuild with -DTDM_SERVE=ON");
}

#endif
