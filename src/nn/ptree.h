/* ptree.h — the parameter list of a model, as the placement planner sees it:
 * every parameter and buffer of the PyTorch module (diffusers /
 * transformers) the model reproduces, by its full dotted name, in the
 * module's registration order (the order of torch's named_parameters()
 * followed by named_buffers(), tied parameters once under their first
 * name), with its shape and dtype, plus the module classes the planner must
 * never split ("no-split" units: _no_split_modules of the PyTorch class) and
 * the tied-parameter groups. Made from config.json alone (no weights), so
 * `tandem plan` works on a folder of configs (and checks it against the
 * weight files' headers where there are some). The planner (place/place.h) builds
 * the module tree from these names. */
#ifndef TDM_PTREE_H
#define TDM_PTREE_H

#include <stdint.h>

#include "core/core.h"

#define TDM_PTREE_MAX_DIMS 5

typedef struct {
    char     *name;                      /* full dotted name, e.g. "transformer_blocks.0.attn.to_q.weight" */
    int       ndim;
    int64_t   shape[TDM_PTREE_MAX_DIMS];
    tdm_dtype dtype;                     /* the dtype PyTorch would hold (see tdm_plist_t.dtype) */
    int       is_buffer;                 /* a registered buffer (e.g. CLIP's position_ids) */
} tdm_pentry_t;

typedef struct {
    tdm_pentry_t *e;
    int64_t       n, cap;
    /* Module paths ("transformer_blocks.0", ...) whose class is a no-split
     * unit, in registration order, and that class ("FluxTransformerBlock"):
     * the balanced strategies size their margin from the first module of
     * each no-split class, as accelerate does. */
    char        **nosplit;
    char        **nosplit_class;
    int64_t       nnosplit, capnosplit;
    /* Tied groups: names of parameters sharing one tensor. The list above
     * holds only the first name of a group; tied[i] lists the others'
     * names, "first=other" (e.g. "shared.weight=encoder.embed_tokens.weight"). */
    char        **tied;
    int64_t       ntied, captied;
    /* Floating parameters are entered as `dtype` (the float dtype the
     * caller asked for); integer buffers keep their own dtype. tdm_plan then
     * sets a floating entry's dtype to its weight file's, where the folder
     * has weights and no --dtype was given. */
    tdm_dtype     dtype;
    int64_t       bytes;                 /* sum of tdm_pentry_bytes over e */
} tdm_plist_t;

/* Bounds of a parameter list (a config describing more is refused, so a
 * corrupt or hostile config.json cannot make `tandem plan` run away). */
#define TDM_PLIST_MAX_ENTRIES (1 << 20)
#define TDM_PLIST_MAX_BYTES   ((int64_t)1 << 56)

void       tdm_plist_init(tdm_plist_t *l, tdm_dtype float_dtype);
void       tdm_plist_free(tdm_plist_t *l);
/* Appends a parameter (is_buffer 0) or buffer; shape has ndim entries.
 * Floating entries get l->dtype, except where `own` is an integer or bool
 * dtype (buffers such as position ids), which is kept. printf-style name. */
tdm_status tdm_plist_add(tdm_plist_t *l, int is_buffer, tdm_dtype own, int ndim,
                         const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Records the module at `path` (printf-style), of PyTorch class `cls`, as a
 * no-split unit. */
tdm_status tdm_plist_nosplit(tdm_plist_t *l, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Records that `other` is tied to the already-added parameter `first`. */
tdm_status tdm_plist_tie(tdm_plist_t *l, const char *first, const char *other);
/* Bytes of entry i (numel × element size; bool counts 1/8 byte, rounded
 * up over the tensor as accelerate's dtype_byte_size does). */
int64_t    tdm_pentry_bytes(const tdm_pentry_t *e);

#endif
