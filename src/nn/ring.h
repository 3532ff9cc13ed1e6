/* ring.h — ring attention and USP (Ulysses × ring) context-parallel
 * attention over nn groups (nn/group.h). Not here: the projections, norms
 * and rotary embedding around the attention (per row: a rank runs them on
 * its rows), causal masks (ring attention here is non-causal, as FLUX's
 * joint attention), allocation (the caller gives the workspace).
 *
 * Ring. R ranks each hold their rows of q, k, v, split per segment exactly
 * as nn/ulysses.h splits them (tdm_nn_ulysses_split: rank r of R holds
 * [begin, begin + count) of every segment, its rows [seg 0 share; seg 1
 * share; ...]). A rank's K/V rows travel around the ring as one block
 * padded to the largest share (rows_pad = Σ ceil(seg / R) rows; the padding
 * is sent, never read): R - 1 shifts with tdm_nn_group_sendrecv (to rank
 * r + 1, from rank r - 1), so step t holds rank (r - t) mod R's keys. Each
 * step runs the attention_lse op of this rank's queries against the block in
 * hand and merges it into a float32 output and log-sum-exp (running max and
 * rescale, backend/ops_list.h); at the end the float32 output is the
 * attention over the whole sequence, cast to the activation type. The shift
 * of the next block is issued before the block in hand is computed on; with
 * a blocking group (dist's MPI group) the two simply alternate.
 *
 * Not bit-identical to one device: the merge sums each row's keys in
 * another order (block by block, rank by rank) than one attention call, so
 * results agree within float tolerance (about 1e-6 relative in float32).
 * R = 1 runs the attention op itself: one device's bits.
 *
 * USP. A 2-D grid: a Ulysses group of U ranks (nn/ulysses.h) inside each
 * of R ring slots. Rank (r, u) holds, per segment, the Ulysses share u of
 * the ring share r (tdm_nn_usp_split). One all_to_all in the Ulysses group
 * gives each rank the whole ring slot's rows for heads_local = ceil(H / U)
 * heads (padded heads as Ulysses pads them); ring attention over the ring
 * group (the ranks of the same u in every slot: the same heads) gives the
 * slot's rows the attention over the whole sequence; the second all_to_all
 * returns each rank its own rows with all heads. R = 1 is exactly
 * tdm_nn_ulysses_attention (bit for bit); U = 1 is ring attention. */
#ifndef TDM_NN_RING_H
#define TDM_NN_RING_H

#include <stdint.h>

#include "core/core.h"
#include "nn/group.h"
#include "nn/ulysses.h"

typedef struct {
    int64_t S;                                /* full sequence: Σ seg */
    int64_t begin[TDM_NN_ULYSSES_MAX_SEG];    /* this rank's share of segment s: rows */
    int64_t count[TDM_NN_ULYSSES_MAX_SEG];    /*   [begin, begin + count) of it */
    int64_t rows;        /* this rank's rows: Σ count */
    int64_t rows_pad;    /* rows of a rotating K/V block: Σ ceil(seg / R) */
    int64_t ws_bytes;    /* workspace of tdm_nn_ring_attention */
} tdm_nn_ring_sizes_t;

/* Fills *n for shape s (H heads of D, the segments' full lengths) on rank
 * `rank` of R, activation type at. TDM_ERR_INVALID_ARG for a bad shape,
 * rank or R, or sizes that overflow. */
tdm_status tdm_nn_ring_sizes(const tdm_nn_ulysses_shape_t *s, int rank, int R, tdm_dtype at,
                             tdm_nn_ring_sizes_t *n);

/* o (B, rows, H·D) = attention of this rank's rows over the whole sequence
 * (non-causal), from its rows of q, k, v (B, rows, H·D), all of type at on
 * dev: softmax(q kᵀ · scale) v per head. g: the ring (rank r of R; NULL:
 * one rank). Collective: every rank of g calls it with the same shape, at
 * and scale. ws: ws_bytes >= n.ws_bytes of tdm_nn_ring_sizes on dev
 * (scratch). o may be k or v, not q; nothing else may overlap. The
 * attention_lse op's own scratch is at most tdm_op_attention_scratch_bytes(
 * dev, at, B, rows, rows_pad, H, D). Errors: bad arguments, a too small
 * workspace, the group's. */
tdm_status tdm_nn_ring_attention(tdm_device_t *dev, const tdm_nn_group_t *g, tdm_dtype at, void *o,
                                 const void *q, const void *k, const void *v,
                                 const tdm_nn_ulysses_shape_t *s, float scale, void *ws,
                                 int64_t ws_bytes);

/* The share of a segment of L rows rank (r, u) of the R × U grid holds:
 * the Ulysses share u of U of the ring share r of R (each by
 * tdm_nn_ulysses_split), in segment coordinates. */
void tdm_nn_usp_split(int64_t L, int r, int R, int u, int U, int64_t *begin, int64_t *count);

typedef struct {
    int64_t S;                                /* full sequence: Σ seg */
    int64_t begin[TDM_NN_ULYSSES_MAX_SEG];    /* this rank's share of segment s */
    int64_t count[TDM_NN_ULYSSES_MAX_SEG];    /*   (tdm_nn_usp_split) */
    int64_t rows;          /* this rank's rows: Σ count */
    int64_t slot[TDM_NN_ULYSSES_MAX_SEG];     /* its ring slot's share of each segment */
    int64_t slot_rows;     /* Σ slot: the rows it attends for heads_local heads */
    int64_t heads_local;   /* ceil(H / U) */
    int64_t ws_bytes;      /* workspace of tdm_nn_usp_attention */
} tdm_nn_usp_sizes_t;

/* Fills *n for shape s on rank r of the ring (R ranks) and rank u of the
 * Ulysses group (U ranks), activation type at. TDM_ERR_INVALID_ARG for a
 * bad shape, ranks or sizes, or sizes that overflow. */
tdm_status tdm_nn_usp_sizes(const tdm_nn_ulysses_shape_t *s, int r, int R, int u, int U,
                            tdm_dtype at, tdm_nn_usp_sizes_t *n);

/* o (B, rows, H·D) = attention of this rank's rows (tdm_nn_usp_split) over
 * the whole sequence (non-causal), from its rows of q, k, v (B, rows, H·D)
 * of type at on dev. gu: the Ulysses group (rank u of U), gr: the ring
 * group (rank r of R), either NULL for one rank. Collective over both
 * groups: every rank of the grid calls it with the same shape, at and
 * scale. ws: ws_bytes >= n.ws_bytes of tdm_nn_usp_sizes (scratch). o may
 * be q, k or v; nothing else may overlap. Errors: bad arguments, a too
 * small workspace, the groups'. */
tdm_status tdm_nn_usp_attention(tdm_device_t *dev, const tdm_nn_group_t *gu,
                                const tdm_nn_group_t *gr, tdm_dtype at, void *o, const void *q,
                                const void *k, const void *v, const tdm_nn_ulysses_shape_t *s,
                                float scale, void *ws, int64_t ws_bytes);

#endif
