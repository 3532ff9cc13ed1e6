/* env.c — the environment variables the `tandem` command reads, mapped onto
 * the library's parameters. The library reads no environment (the Hugging
 * Face cache paths aside): every switch below is a field the CLI fills.
 *
 *   TANDEM_LOG=error|warn|info|debug   log level (default warn)
 *   TDM_ACT_F32=1          float32 activations on fp16/bf16 CUDA devices
 *   TDM_LT_TUNE=1          time cuBLASLt's candidate algorithms per shape
 *   TDM_ATTN_TC=1          16-row flash-attention kernel for every head dim
 *   TDM_CONV_IGEMM=0|1|2   implicit-GEMM 3x3 conv: never, auto, always
 *   TDM_CONV_IGEMM_BK=32   its K step (default 64)
 *   TDM_CUDA_GRAPH=0       no CUDA graph replay
 *   TDM_PROFILE=1          per-op CUDA timings to stderr
 *
 * and, set by MPI launchers, OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK and
 * MV2_COMM_WORLD_SIZE (any of them: this process is a rank of an MPI job).
 *
 * The bench programs link this file too, so they take the same variables. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

void cli_env_log_level(void) {
    const char *e = getenv("TANDEM_LOG");
    tdm_log_level lv = TDM_LOG_WARN;
    if (e && !strcasecmp(e, "error")) lv = TDM_LOG_ERROR;
    else if (e && !strcasecmp(e, "info")) lv = TDM_LOG_INFO;
    else if (e && !strcasecmp(e, "debug")) lv = TDM_LOG_DEBUG;
    tdm_log_set_level(lv);
}

/* "1" exactly: on; anything else (or unset): off */
static int env_is_1(const char *name) {
    const char *e = getenv(name);
    return e && !strcmp(e, "1");
}

/* a number when set and non-empty, else `dflt` */
static int env_int(const char *name, int dflt) {
    const char *e = getenv(name);
    return e && *e ? atoi(e) : dflt;
}

void cli_env_backend(tdm_backend_params_t *b) {
    const char *e;
    b->act_f32 = env_is_1("TDM_ACT_F32");
    b->lt_tune = env_is_1("TDM_LT_TUNE");
    b->attn_tc_16row = env_is_1("TDM_ATTN_TC");
    b->conv_igemm = env_int("TDM_CONV_IGEMM", b->conv_igemm);
    b->conv_igemm_bk = env_int("TDM_CONV_IGEMM_BK", b->conv_igemm_bk);
    b->conv_winograd = env_int("TDM_CONV_WINOGRAD", b->conv_winograd);
    e = getenv("TDM_CUDA_GRAPH");
    if (e && !strcmp(e, "0")) b->cuda_graph = 0;
    e = getenv("TDM_PROFILE");
    if (e && *e && strcmp(e, "0") != 0) b->profile = 1;
}

void cli_env_dist(tdm_dist_params_t *d) {
    static const char *const vars[] = {
        "OMPI_COMM_WORLD_SIZE",   /* Open MPI mpirun */
        "PMI_SIZE",               /* MPICH/Hydra, Intel MPI, srun --mpi=pmi2 */
        "PMIX_RANK",              /* PMIx launchers (srun --mpi=pmix, prterun) */
        "MV2_COMM_WORLD_SIZE",    /* MVAPICH2 */
    };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *e = getenv(vars[i]);
        if (e && *e) d->mpi_launched = 1;
    }
}
