/* dist.h — the process-group layer (data parallelism and the --parallel
 * groups). Its API is public and documented in include/tandem.h; this
 * header is the internal include point for src/dist and gives layers above
 * (pipe) the world communicator and the --parallel groups. */
#ifndef TDM_DIST_H
#define TDM_DIST_H

#include "core/core.h"
#include "dist/comm.h"
#include "dist/groups.h"

/* The communicator of all ranks of d (owned by d; valid until
 * tdm_dist_free). NULL for NULL. */
tdm_comm_t *tdm_dist_world(tdm_dist_t *d);
/* The --parallel groups of d (owned by d; every rank has them, all of size
 * 1 but the DP group's without a spec). NULL for NULL. */
tdm_groups_t *tdm_dist_groups(tdm_dist_t *d);

#endif
