/* groups.h — single-image parallelism in src/dist: the degrees of
 * `--parallel ulysses=U,ring=R,tp=T,cfg=C` (tdm_parallel_t, public in
 * include/tandem.h), where each rank sits in the DP × CFG × ring × Ulysses ×
 * TP grid, and one sub-communicator per dimension of that grid.
 *
 * Rank layout (xDiT's order: TP innermost, DP outermost):
 *
 *   rank = (((dp · C + cfg) · R + ring) · U + ulysses) · T + tp
 *
 * so the ranks of one image (C · R · U · T of them, the "image group") are
 * consecutive, TP peers are neighbours, and DP rank d holds ranks
 * d · C·R·U·T .. (d + 1) · C·R·U·T - 1. A rank's group along one dimension
 * is the ranks that differ from it in that coordinate only, ordered by it;
 * its rank in that group is its coordinate. Not here: what the groups
 * compute (src/pipe). */
#ifndef TDM_DIST_GROUPS_H
#define TDM_DIST_GROUPS_H

#include "core/core.h"
#include "dist/comm.h"

/* The sub-communicators of tdm_groups_t.comm. */
typedef enum {
    TDM_GROUP_DP = 0,   /* the ranks with this rank's place in an image group, one per image group */
    TDM_GROUP_CFG,
    TDM_GROUP_RING,
    TDM_GROUP_ULYSSES,
    TDM_GROUP_TP,
    TDM_GROUP_IMAGE,    /* every rank of this rank's image (cfg × ring × ulysses × tp) */
    TDM_GROUP_COUNT
} tdm_group_dim;

/* Ranks one image takes: cfg · ring · ulysses · tp. */
int tdm_parallel_per_image(const tdm_parallel_t *deg);
/* The coordinates of world rank `rank` under degrees `deg` (each field of
 * *at the index along that dimension, 0 .. degree - 1); rank must be in
 * 0 .. deg->dp · per_image - 1. */
void tdm_parallel_coords(const tdm_parallel_t *deg, int rank, tdm_parallel_t *at);
/* The inverse: the world rank at coordinates *at. */
int tdm_parallel_rank(const tdm_parallel_t *deg, const tdm_parallel_t *at);

typedef struct {
    tdm_parallel_t deg;                    /* the degrees (deg.dp: world size / per image) */
    tdm_parallel_t at;                     /* this rank's coordinates */
    tdm_comm_t    *comm[TDM_GROUP_COUNT];  /* owned; size 1 where the degree is 1 */
} tdm_groups_t;

/* Collective over `world`: splits it into the groups of `deg` (from
 * tdm_parallel_parse with world's size; deg->dp · per_image must equal it).
 * OUT: *out, freed with tdm_groups_free before world. */
tdm_status tdm_groups_create(tdm_comm_t *world, const tdm_parallel_t *deg, tdm_groups_t **out);
/* NULL is a no-op. */
void tdm_groups_free(tdm_groups_t *g);

#endif
