/* ulysses.h — Ulysses (all-to-all) context-parallel attention: U ranks of a
 * group (nn/group.h) each hold a share of the sequence's rows of q, k, v;
 * one all_to_all gives every rank the whole sequence for U-th of the heads,
 * it runs the attention op on that, and a second all_to_all gives each rank
 * its own rows back with all heads. Not here: the projections, norms and
 * rotary embedding around it (they are per row: a rank runs them on its
 * rows), ring attention (nn/ring.h, which wraps this exchange for USP),
 * allocation (the caller gives the workspace).
 *
 * Sequence and split. The sequence is nseg segments laid end to end (FLUX's
 * joint attention: [text; image], nseg = 2; a plain self-attention: one).
 * Each segment of L rows is split on its own: rank r of U holds rows
 * [begin, begin + count) of it with count = L / U + (r < L mod U), begin =
 * r·(L / U) + min(r, L mod U) — the first L mod U ranks one row more (the
 * rule of dist's tdm_split_between_processes). A rank's q, k, v and o are
 * its shares of the segments in sequence order: rows [seg 0 share; seg 1
 * share; ...]. So a FLUX rank keeps its slice of the text tokens and its
 * slice of the image tokens, computes their projections from its rows of
 * each stream, and concatenates them as the one-device forward concatenates
 * [text; image]; the exchange puts every head's rows back into the full
 * [text; image] order. Why per segment: a rank then holds text rows and
 * image rows in the same proportion, so the per-stream work (the context
 * and image projections, norms and MLPs of FLUX's double blocks) is shared
 * evenly, and any lengths work (no divisibility of either segment).
 *
 * Heads. H heads are padded to heads_pad = U·ceil(H / U) and rank j attends
 * heads [j·hl, (j+1)·hl), hl = heads_pad / U. Padding heads get zero q, k, v
 * and their outputs are dropped: heads are independent, so they change no
 * output (FLUX.1's 24 heads work with U = 5 or 16).
 *
 * Same bits as one device. Every head's attention runs on the whole
 * sequence, rows in the one-device order, by the same op; only the number
 * of heads per call changes. With a kernel whose result per head does not
 * depend on the other heads (the CPU kernel works per batch, head and
 * 64-row query tile) the output equals the one-device output bit for bit.
 *
 * Exchange blocks are equal (all_to_all): rows_pad = Σ ceil(L / U) rows per
 * rank; shorter shares are padded (the padding rows are sent, never read). */
#ifndef TDM_NN_ULYSSES_H
#define TDM_NN_ULYSSES_H

#include <stdint.h>

#include "core/core.h"
#include "nn/group.h"

#define TDM_NN_ULYSSES_MAX_SEG 4

typedef struct {
    int64_t B;          /* batch */
    int64_t H, D;       /* heads, head dim: rows of q, k, v, o are H·D wide */
    int     nseg;       /* segments, 1 .. TDM_NN_ULYSSES_MAX_SEG */
    int64_t seg[TDM_NN_ULYSSES_MAX_SEG];   /* full rows of each segment, in sequence order */
} tdm_nn_ulysses_shape_t;

typedef struct {
    int64_t S;                                /* full sequence: Σ seg */
    int64_t begin[TDM_NN_ULYSSES_MAX_SEG];    /* this rank's share of segment s: rows */
    int64_t count[TDM_NN_ULYSSES_MAX_SEG];    /*   [begin, begin + count) of it */
    int64_t rows;         /* this rank's rows: Σ count */
    int64_t rows_pad;     /* rows of every rank's exchange block: Σ ceil(seg / U) */
    int64_t heads_pad;    /* H rounded up to a multiple of U */
    int64_t heads_local;  /* heads_pad / U: heads this rank attends */
    int64_t ws_bytes;     /* workspace of tdm_nn_ulysses_attention */
} tdm_nn_ulysses_sizes_t;

/* The share of a segment of L rows rank r of U holds (rule above). */
void tdm_nn_ulysses_split(int64_t L, int r, int U, int64_t *begin, int64_t *count);

/* Fills *n for shape s on rank `rank` of U, activation type at.
 * TDM_ERR_INVALID_ARG for a bad shape (B, H, D < 1, negative segment,
 * nseg out of range), rank or U, or sizes that overflow. */
tdm_status tdm_nn_ulysses_sizes(const tdm_nn_ulysses_shape_t *s, int rank, int U, tdm_dtype at,
                                tdm_nn_ulysses_sizes_t *n);

/* o (B, rows, H·D) = attention of this rank's rows over the whole sequence,
 * from its rows of q, k, v (B, rows, H·D), all of type at on dev, rows as
 * the header says; softmax(q kᵀ · scale [+ causal mask over the full
 * sequence]) v per head, as tdm_op_attention_t on the full sequence. g: the
 * group (rank r of U; NULL: one rank). Collective: every rank of g calls it
 * with the same shape, at, scale and causal. ws: ws_bytes >= n.ws_bytes of
 * tdm_nn_ulysses_sizes on dev (its content is scratch); o may be q, k or v,
 * nothing else may overlap. The attention kernel's own scratch is
 * tdm_op_attention_scratch_bytes(dev, at, B, S, S, heads_local, D). Errors:
 * bad arguments, a too small workspace, the group's. */
tdm_status tdm_nn_ulysses_attention(tdm_device_t *dev, const tdm_nn_group_t *g, tdm_dtype at,
                                    void *o, const void *q, const void *k, const void *v,
                                    const tdm_nn_ulysses_shape_t *s, float scale, int causal,
                                    void *ws, int64_t ws_bytes);

/* The attention a Ulysses exchange runs between its two all_to_alls: o (B,
 * S, heads·D) from the full-sequence q, k, v (B, S, heads·D) of this rank's
 * heads (heads_local of them, padding heads zero), all of type at on dev; o
 * overlaps none of them. tdm_nn_ulysses_attention runs the attention op;
 * USP (nn/ring.h) runs ring attention over a second group here. */
typedef tdm_status (*tdm_nn_ulysses_inner_fn)(void *ctx, tdm_device_t *dev, tdm_dtype at,
                                              void *o, const void *q, const void *k,
                                              const void *v, int64_t B, int64_t S,
                                              int64_t heads, int64_t D);

/* tdm_nn_ulysses_attention with `inner(ctx, ...)` in place of the attention
 * op on the full sequence (scale and causal are then inner's business).
 * Same contract otherwise; inner's error is returned after this rank has
 * left the exchange (the group's other ranks block or fail in theirs). */
tdm_status tdm_nn_ulysses_attention_with(tdm_device_t *dev, const tdm_nn_group_t *g, tdm_dtype at,
                                         void *o, const void *q, const void *k, const void *v,
                                         const tdm_nn_ulysses_shape_t *s,
                                         tdm_nn_ulysses_inner_fn inner, void *ctx, void *ws,
                                         int64_t ws_bytes);

#endif
