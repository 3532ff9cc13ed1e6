/* bench_env.h — the CLI's environment mapping (src/cli/env.c, linked into
 * every bench program): TANDEM_LOG and the TDM_* backend switches work for
 * the benchmarks as they do for `tandem`. */
#ifndef TDM_BENCH_ENV_H
#define TDM_BENCH_ENV_H

#include "tandem.h"

void cli_env_log_level(void);
void cli_env_backend(tdm_backend_params_t *b);

#endif
