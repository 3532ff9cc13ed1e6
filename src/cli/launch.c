/* launch.c — `tandem launch`: N ranks of this binary through Open MPI's mpirun. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* tandem launch -n N [--gpus LIST] -- generate ...: runs N ranks of this
 * binary through Open MPI's mpirun (the process engine), forwarding the
 * environment tandem reads. */
int cmd_launch(int argc, char **argv) {
    long n = 0;
    const char *gpus = NULL;
    int i = 0;
    for (; i < argc && strcmp(argv[i], "--"); i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            cli_command_usage(CLI_LAUNCH, stdout);
            exit(0);
        }
        if (!strcmp(argv[i], "-n") || !strcmp(argv[i], "--np")) {
            if (i + 1 >= argc) die(2, "%s: missing value", argv[i]);
            n = parse_int("-n", argv[++i], 1, 100000);
        } else if (!strcmp(argv[i], "--gpus")) {
            if (i + 1 >= argc) die(2, "--gpus: missing value");
            gpus = argv[++i];
            for (const char *c = gpus; *c; c++)
                if (!(*c >= '0' && *c <= '9') && *c != ',') die(2, "--gpus %s: expected a list like 0,1,2", gpus);
        } else {
            die_unknown_flag(CLI_LAUNCH, argv[i]);
        }
    }
    if (n < 1) die(2, "launch: -n N is required");
    if (i >= argc - 1 || strcmp(argv[i + 1], "generate"))
        die(2, "launch: expected -- generate ... after the launch flags");
    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) die(1, "launch: cannot find this program's path");
    self[sl] = 0;
    char np[32], gpu_env[512];
    snprintf(np, sizeof np, "%ld", n);
    const char **mv = calloc((size_t)(argc + 64), sizeof *mv);
    if (!mv) die(1, "out of memory");
    int k = 0;
    mv[k++] = "mpirun";
    mv[k++] = "-n";
    mv[k++] = np;
    mv[k++] = "--oversubscribe";          /* more ranks than cores is fine on small CPU boxes */
    mv[k++] = "--bind-to";
    mv[k++] = "none";                      /* ranks share cores/GPUs as tandem assigns them */
    if (geteuid() == 0) mv[k++] = "--allow-run-as-root";
    static const char *fwd[] = {"HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME", "TANDEM_LOG", "OMP_WAIT_POLICY",
                                "OPENBLAS_CORETYPE", "LD_LIBRARY_PATH", "PATH"};
    for (size_t f = 0; f < sizeof fwd / sizeof fwd[0]; f++)
        if (getenv(fwd[f])) { mv[k++] = "-x"; mv[k++] = fwd[f]; }
    if (gpus) {
        snprintf(gpu_env, sizeof gpu_env, "CUDA_VISIBLE_DEVICES=%s", gpus);
        mv[k++] = "-x";
        mv[k++] = gpu_env;
    }
    mv[k++] = self;
    for (int j = i + 1; j < argc; j++) mv[k++] = argv[j];
    mv[k] = NULL;
    execvp("mpirun", (char *const *)mv);
    die(1, "launch: cannot run mpirun: %s (install Open MPI: apt-get install openmpi-bin)", strerror(errno));
}
