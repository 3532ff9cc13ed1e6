/* launch.c — `tandem launch`: N ranks of this binary through Open MPI's
 * mpirun, run as a supervised child. What it adds to mpirun:
 *  - the generate flags and the model are checked once here, before any
 *    rank starts (a bad --model fails at once, whatever -n is);
 *  - no more ranks than this host has CPUs (or --gpus lists GPUs) unless
 *    --oversubscribe is given;
 *  - mpirun's stderr is filtered: the first rank's "tandem: error: ..." line
 *    is the only error line the user sees (Open MPI's MPI_ABORT banners and
 *    the other ranks' copies are dropped); when no rank said anything, the
 *    gist of mpirun's own message becomes one "tandem: error: launch: ..." line;
 *  - a failing job ends within seconds: GRACE_S after the first rank error
 *    (or a signal to tandem launch) mpirun gets SIGTERM, and KILL_S later it
 *    and every process below it (ranks included, also those mpirun left
 *    behind: this process is their subreaper) get SIGKILL.
 * It is not a process manager of its own: mpirun starts and wires the ranks. */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

#define GRACE_S 3.0   /* after the first rank error: time for mpirun to end the job itself */
#define KILL_S  2.0   /* after SIGTERM to mpirun: time before SIGKILL to everything below us */

static volatile sig_atomic_t g_signal;

static void on_signal(int sig) { g_signal = sig; }

/* CPUs this process may run on (its affinity mask, as nproc and hwloc see it). */
static long host_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? n : 1;
}

/* Entries of a --gpus list (already checked to be digits and commas). */
static long count_list(const char *list) {
    long n = 0;
    for (const char *p = list; *p;) {
        while (*p == ',') p++;
        if (!*p) break;
        n++;
        while (*p && *p != ',') p++;
    }
    return n;
}

/* The generate flags and the model, checked as a rank would before it
 * starts work (device-specific checks stay with the ranks); --parallel
 * against the n ranks and the pipeline's guidance. */
static void preflight(const char *cmd, int argc, char **argv, int n) {
    args_t a;
    if (!strcmp(cmd, "serve")) serve_preflight(argc, argv);
    parse_args(&a, cmd, argc, argv);
    tdm_log_set_level(TDM_LOG_ERROR);   /* the ranks give the model's warnings; errors come back as die_status */
    tdm_pipeline_params_t pp;
    tdm_pipeline_params_init(&pp);
    pp.scheduler = a.scheduler;
    pp.variant = a.variant;
    pp.config = a.config;
    pp.vae_file = a.vae_file;
    pp.text_encoder_file = a.te_file;
    pp.text_encoder_2_file = a.te2_file;
    tdm_pipeline_t *pipe = NULL;
    if (tdm_pipeline_open(&pipe, a.model, &pp) != TDM_OK) die_status();
    tdm_parallel_t deg;
    if (!strcmp(cmd, "serve") || (a.parallel && !strcmp(a.parallel, "auto"))) {
        /* serve checks its own flags; with auto the ranks choose, and the choice passes these checks */
        tdm_pipeline_close(pipe);
        args_free(&a);
        return;
    }
    if (tdm_parallel_parse(a.parallel, n, &deg) != TDM_OK) die(2, "%s", tdm_last_error());
    tdm_pipeline_info_t info;
    tdm_pipeline_info(pipe, &info);
    check_parallel_guidance(&a, &deg, isnan(a.guidance) ? info.default_guidance : a.guidance);
    check_parallel_vae(&a, &deg);
    tdm_pipeline_close(pipe);
    args_free(&a);
}

/* ---- the processes below this one ------------------------------------------ */

/* Parent of `pid` from /proc/PID/stat, or -1. */
static pid_t parent_of(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    const char *p = strrchr(buf, ')');   /* the command name may hold spaces and ')' */
    int ppid;
    if (!p || sscanf(p + 1, " %*c %d", &ppid) != 1) return -1;
    return (pid_t)ppid;
}

/* Sends `sig` to every process below this one (children, theirs, ...);
 * returns how many there were. */
static int signal_descendants(int sig) {
    enum { MAXP = 1 << 16 };
    static pid_t pid[MAXP], ppid[MAXP];
    static char mine[MAXP];
    int n = 0;
    DIR *d = opendir("/proc");
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < MAXP) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        pid_t p = (pid_t)atoi(e->d_name), pp = parent_of(p);
        if (pp > 0) { pid[n] = p; ppid[n] = pp; mine[n] = 0; n++; }
    }
    closedir(d);
    const pid_t self = getpid();
    int count = 0;
    for (int changed = 1; changed;) {   /* grow the set from our children down */
        changed = 0;
        for (int i = 0; i < n; i++) {
            if (mine[i]) continue;
            int below = ppid[i] == self;
            for (int j = 0; j < n && !below; j++) below = mine[j] && pid[j] == ppid[i];
            if (below) { mine[i] = 1; changed = 1; count++; }
        }
    }
    for (int i = 0; i < n; i++)
        if (mine[i]) kill(pid[i], sig);
    return count;
}

/* ---- mpirun's stderr -------------------------------------------------------- */

typedef struct {
    char   line[8192];
    size_t len;
    int    in_banner;        /* between two lines of dashes (an Open MPI help message) */
    int    errors;           /* "tandem: error:" lines seen (the first is printed) */
    char   gist[1024];       /* mpirun's message in one line, for when no rank spoke */
    int    gist_done;        /* the paragraph in gist has ended */
    int    gist_noticed;     /* gist is mpirun's "noticed that process rank ..." */
} filter_t;

static int is_dashes(const char *s) {
    size_t n = 0;
    while (s[n] == '-') n++;
    return n >= 20 && s[n] == 0;
}

/* "[host:1234] ..." (Open MPI's own notes) */
static int is_mpi_note(const char *s) {
    if (s[0] != '[') return 0;
    const char *c = strchr(s, ']');
    const char *colon = strchr(s, ':');
    return c && colon && colon < c && isdigit((unsigned char)c[-1]);
}

/* "[warn] ..." (the libevent inside Open MPI, e.g. "Epoll MOD(1) on fd 26
 * failed" while a job with a failed rank is torn down) */
static int is_libevent_note(const char *s) {
    return !strncmp(s, "[warn] ", 7) || !strncmp(s, "[msg] ", 6) || !strncmp(s, "[debug] ", 8);
}

static void gist_add(filter_t *f, const char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t len = strlen(f->gist);
    if (*s && len + 2 < sizeof f->gist)
        snprintf(f->gist + len, sizeof f->gist - len, "%s%s", len ? " " : "", s);
}

static void write_all(const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

/* One line of mpirun's stderr (without its newline). */
static void filter_line(filter_t *f, char *s) {
    if (!strncmp(s, "tandem: error: ", 15)) {
        if (f->errors++ == 0) { write_all(s, strlen(s)); write_all("\n", 1); }
        return;
    }
    if (!strncmp(s, "tandem: ", 8)) { write_all(s, strlen(s)); write_all("\n", 1); return; }
    if (is_dashes(s)) {
        f->in_banner = !f->in_banner;
        if (f->gist[0]) f->gist_done = 1;
        return;
    }
    if (f->in_banner) {
        /* keep the first paragraph, or the one naming the process that failed */
        if (!strncmp(s, "mpirun noticed that", 19) && !f->gist_noticed) {
            f->gist[0] = 0;
            f->gist_done = 0;
            f->gist_noticed = 1;
        }
        if (!s[0] && f->gist[0]) f->gist_done = 1;
        else if (!f->gist_done) gist_add(f, s);
        return;
    }
    if (is_mpi_note(s) || is_libevent_note(s) || !strncmp(s, "mpirun: Forwarding signal", 25)) return;
    write_all(s, strlen(s));   /* the ranks' own output (sanitizer reports, ...) */
    write_all("\n", 1);
}

static void filter_feed(filter_t *f, const char *buf, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\n' || f->len == sizeof f->line - 1) {
            f->line[f->len] = 0;
            filter_line(f, f->line);
            f->len = 0;
            if (buf[i] == '\n') continue;
        }
        f->line[f->len++] = buf[i];
    }
}

/* ---- tandem launch -------------------------------------------------------------- */
/* The launch flags and what they make of the mpirun command line. */
typedef struct {
    long        n;               /* -n: ranks */
    const char *gpus;            /* --gpus LIST, or NULL */
    int         oversubscribe;
    int         sep;             /* argv index of "--" (argv[sep + 1] is "generate" or "serve") */
    int         serve;           /* -- serve: a stop is SIGUSR1 to the ranks (rank 0 ends the server) */
    double      stop_wait;       /* serve: seconds the ranks get to stop before SIGTERM (--grace + 10) */
    char        self[4096];      /* this program's path */
    char        np[32];          /* n as text */
    char        gpu_env[512];    /* CUDA_VISIBLE_DEVICES=LIST */
} launch_t;

/* Parses the flags before "--" and checks the rank count against this
 * host's CPUs and the --gpus list. */
static void launch_parse(launch_t *l, int argc, char **argv) {
    memset(l, 0, sizeof *l);
    int i = 0;
    for (; i < argc && strcmp(argv[i], "--"); i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            cli_command_usage(CLI_LAUNCH, stdout);
            exit(0);
        }
        if (!strcmp(argv[i], "-n") || !strcmp(argv[i], "--np")) {
            if (i + 1 >= argc) die(2, "%s: missing value", argv[i]);
            l->n = parse_int("-n", argv[++i], 1, 100000);
        } else if (!strcmp(argv[i], "--gpus")) {
            if (i + 1 >= argc) die(2, "--gpus: missing value");
            l->gpus = argv[++i];
            for (const char *c = l->gpus; *c; c++)
                if (!(*c >= '0' && *c <= '9') && *c != ',')
                    die(2, "--gpus %s: expected a list like 0,1,2", l->gpus);
            if (count_list(l->gpus) == 0) die(2, "--gpus %s: expected a list like 0,1,2", l->gpus);
        } else if (!strcmp(argv[i], "--oversubscribe")) {
            l->oversubscribe = 1;
        } else {
            die_unknown_flag(CLI_LAUNCH, argv[i]);
        }
    }
    l->sep = i;
    if (l->n < 1) die(2, "launch: -n N is required");
    if (i >= argc - 1 || (strcmp(argv[i + 1], "generate") && strcmp(argv[i + 1], "serve")))
        die(2, "launch: expected -- generate ... or -- serve ... after the launch flags");
    l->serve = !strcmp(argv[i + 1], "serve");
    l->stop_wait = 30 + 10;
    for (int j = i + 2; l->serve && j + 1 < argc; j++)   /* serve checks the value itself */
        if (!strcmp(argv[j], "--grace")) l->stop_wait = atof(argv[j + 1]) + 10;
    /* one rank per CPU (each gets its share of the cores), or per listed GPU */
    const long cpus = host_cpus(), ngpus = l->gpus ? count_list(l->gpus) : 0;
    if (!l->oversubscribe && l->gpus && l->n > ngpus && ngpus <= cpus)
        die(2, "launch -n %ld: more ranks than the %ld GPU(s) of --gpus %s; give --oversubscribe to run "
            "several ranks per GPU", l->n, ngpus, l->gpus);
    if (!l->oversubscribe && l->n > cpus)
        die(2, "launch -n %ld: more ranks than the %ld CPUs of this host; give --oversubscribe to run "
            "them anyway", l->n, cpus);
}

/* The mpirun command line (malloc'd, NULL-terminated; its strings point into
 * l and argv): N ranks of this program with the generate arguments after
 * "--", the environment tandem reads forwarded. */
static const char **mpirun_argv(launch_t *l, int argc, char **argv) {
    ssize_t sl = readlink("/proc/self/exe", l->self, sizeof l->self - 1);
    if (sl <= 0) die(1, "launch: cannot find this program's path");
    l->self[sl] = 0;
    snprintf(l->np, sizeof l->np, "%ld", l->n);
    const char **mv = calloc((size_t)(argc + 64), sizeof *mv);
    if (!mv) die(1, "out of memory");
    int k = 0;
    mv[k++] = "mpirun";
    mv[k++] = "-n";
    mv[k++] = l->np;
    mv[k++] = "--use-hwthread-cpus";       /* slots = CPUs, as counted above */
    if (l->oversubscribe) mv[k++] = "--oversubscribe";
    if (l->serve) mv[k++] = "--enable-recovery";   /* a lost worker rank does not end the server */
    mv[k++] = "--bind-to";
    mv[k++] = "none";                      /* ranks share cores/GPUs as tandem assigns them */
    if (geteuid() == 0) mv[k++] = "--allow-run-as-root";
    static const char *fwd[] = {"HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME", "TANDEM_LOG", "OMP_WAIT_POLICY",
                                "OPENBLAS_CORETYPE", "LD_LIBRARY_PATH", "PATH"};
    for (size_t f = 0; f < sizeof fwd / sizeof fwd[0]; f++)
        if (getenv(fwd[f])) { mv[k++] = "-x"; mv[k++] = fwd[f]; }
    if (l->gpus) {
        snprintf(l->gpu_env, sizeof l->gpu_env, "CUDA_VISIBLE_DEVICES=%s", l->gpus);
        mv[k++] = "-x";
        mv[k++] = l->gpu_env;
    }
    mv[k++] = l->self;
    for (int j = l->sep + 1; j < argc; j++) mv[k++] = argv[j];
    mv[k] = NULL;
    return mv;
}

/* Starts mpirun (command line mv) with its stderr into a pipe whose read end
 * goes to *errfd; makes this process the subreaper of the ranks and catches
 * SIGINT/SIGTERM/SIGHUP. */
static pid_t mpirun_spawn(const char **mv, int *errfd) {
    /* ranks that outlive mpirun become our children, so they can be found and ended */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) die(1, "launch: cannot create a pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) die(1, "launch: cannot start mpirun: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);   /* launch killed (SIGKILL too): mpirun ends the job */
        dup2(fds[1], STDERR_FILENO);   /* dup2 clears close-on-exec on fd 2 */
        execvp("mpirun", (char *const *)mv);
        dprintf(STDERR_FILENO, "tandem: error: launch: cannot run mpirun: %s (install Open MPI: "
                "apt-get install openmpi-bin)\n", strerror(errno));
        _exit(1);
    }
    close(fds[1]);
    *errfd = fds[0];
    return pid;
}

/* Filters mpirun's stderr (errfd, closed here) through flt until mpirun has
 * exited and the pipe is drained; ends the job when a rank failed and
 * mpirun did not end it within GRACE_S, or on a signal (*stopping: 0, or 1
 * after SIGTERM, 2 after SIGKILL); then kills whatever is left below this
 * process. Returns mpirun's wait status. */
static int mpirun_supervise(const launch_t *l, pid_t pid, int errfd, filter_t *flt, int *stopping) {
    int status = 0, exited = 0, eof = 0;
    double t_error = 0, t_term = 0, t_exit = 0, t_usr = 0;
    char buf[4096];
    *stopping = 0;
    for (;;) {
        const double t = now();
        if (l->serve && g_signal && !t_usr && !flt->errors) {
            t_usr = t;   /* rank 0 stops the server (and then the other ranks) */
            kill(pid, SIGUSR1);   /* mpirun forwards it to every rank, */
            signal_descendants(SIGUSR1);   /* but not always once a rank is gone: this host's directly */
        }
        if (!*stopping && ((g_signal && (!t_usr || t - t_usr > l->stop_wait)) ||
                           (flt->errors && t - t_error > GRACE_S))) {
            *stopping = 1;   /* mpirun did not end the job (or we were told to stop): end it */
            t_term = t;
            kill(pid, SIGTERM);
        }
        if (*stopping == 1 && t - t_term > KILL_S) {
            *stopping = 2;
            kill(pid, SIGKILL);
            signal_descendants(SIGKILL);
        }
        if (exited && (eof || t - t_exit > 1.0)) break;
        struct pollfd p = {.fd = errfd, .events = POLLIN};
        int pr = eof ? 0 : poll(&p, 1, 100);
        if (eof) usleep(100 * 1000);
        if (pr > 0) {
            ssize_t r = read(errfd, buf, sizeof buf);
            if (r > 0) {
                const int before = flt->errors;
                filter_feed(flt, buf, (size_t)r);
                if (!before && flt->errors) t_error = now();
            } else if (r == 0 || errno != EINTR) {
                eof = 1;
            }
        }
        if (!exited && waitpid(pid, &status, WNOHANG) == pid) {
            exited = 1;
            t_exit = now();
        }
    }
    close(errfd);
    if (flt->len) {   /* a last line without its newline */
        flt->line[flt->len] = 0;
        filter_line(flt, flt->line);
    }
    /* nothing of the job may outlive it (ranks mpirun lost track of) */
    if (signal_descendants(SIGKILL) > 0) usleep(100 * 1000);
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
    return status;
}

/* The exit code of the job from mpirun's wait status, printing the one
 * error line when no rank printed one. */
static int job_exit_code(int status, int stopping, const filter_t *flt) {
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
    if (stopping && !flt->errors) {
        fprintf(stderr, "tandem: error: launch: stopped by signal %d (%s); the job's ranks were ended\n",
                (int)g_signal, strsignal((int)g_signal));
        code = 128 + (int)g_signal;
    } else if (stopping) {
        code = 1;   /* a rank failed and mpirun had to be killed */
    } else if (code != 0 && !flt->errors) {
        if (flt->gist[0]) fprintf(stderr, "tandem: error: launch: %s (mpirun exit %d)\n", flt->gist, code);
        else fprintf(stderr, "tandem: error: launch: mpirun exited with status %d\n", code);
    } else if (code == 0 && flt->errors) {
        code = 1;
    }
    return code;
}

/* tandem launch -n N [--gpus LIST] [--oversubscribe] -- generate ...: runs N
 * ranks of this binary through mpirun, forwarding the environment tandem
 * reads; exits with the job's status (the failing rank's code when mpirun
 * reports it, 1 when the job had to be killed). */
int cmd_launch(int argc, char **argv) {
    launch_t l;
    launch_parse(&l, argc, argv);
    preflight(argv[l.sep + 1], argc - l.sep - 2, argv + l.sep + 2, (int)l.n);
    const char **mv = mpirun_argv(&l, argc, argv);
    int errfd = -1;
    const pid_t pid = mpirun_spawn(mv, &errfd);
    free(mv);

    filter_t *flt = calloc(1, sizeof *flt);
    if (!flt) die(1, "out of memory");
    int stopping = 0;
    const int status = mpirun_supervise(&l, pid, errfd, flt, &stopping);
    const int code = job_exit_code(status, stopping, flt);
    free(flt);
    return code;
}
