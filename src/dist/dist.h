/* dist.h — the process-group layer (data parallelism). Its API is public
 * and documented in include/tandem.h; this header is the internal include
 * point for src/dist. */
#ifndef TDM_DIST_H
#define TDM_DIST_H

#include "core/core.h"

#endif
