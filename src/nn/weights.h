/* weights.h — a model's weights bound by name: the one loader every model
 * walks its parameters with. A walk names each tensor (printf-style), its
 * shape, whether it feeds only a GEMM and the model field it belongs in; the
 * loader either reads it from the model's safetensors files onto the device
 * the placement gives it (resident, host copy or disk, through offload.h) or,
 * in list mode, appends it to a parameter list for the planner (ptree.h)
 * together with the walk's no-split marks. The same walk thus loads and
 * lists, and the two cannot drift apart.
 *
 * A tdm_weights_t lives inside the model for its whole life: it owns every
 * tensor it loaded (resident ones and host copies), the offload records of
 * the split ones and, while any tensor is on disk, the open files. Not the
 * planner, not the streaming itself (offload.h), not config parsing. */
#ifndef TDM_WEIGHTS_H
#define TDM_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "io/safetensors.h"
#include "nn/offload.h"
#include "nn/ptree.h"

/* The streaming unit of tensor `name` (offload.h's block: -1 the model's top
 * level); ctx is tdm_weights_t.ctx. */
typedef int64_t (*tdm_weights_unit_fn)(const void *ctx, const char *name);
/* The name the device map uses for file tensor `name`, written to out (cap
 * bytes, NUL-terminated). */
typedef void (*tdm_weights_map_fn)(const void *ctx, char *out, size_t cap, const char *name);

typedef struct tdm_weights {
    const char            *what;      /* the model in messages ("unet") */
    tdm_device_t          *dev;       /* load: the device of unplaced tensors */
    const tdm_placement_t *place;     /* load, during a walk: the device map (NULL: all on dev) */
    tdm_plist_t           *list;      /* list mode when not NULL (during a walk) */
    /* set by the model around the layers it quantizes: Linear weights bound
     * through tdm_nn_linear_bind load as row-scaled FP8 (TDM_WEIGHT_F8) */
    int                    f8;
    tdm_st_set_t          *set;       /* load: the weight files, from tdm_weights_open to _finish */
    /* optional hooks, NULL for the default: every tensor in unit -1; map
     * names equal to the file names */
    tdm_weights_unit_fn    unit_of;
    tdm_weights_map_fn     map_name;
    const void            *ctx;       /* passed to the hooks */
    /* what a load keeps */
    tdm_offload_t          off;       /* the tensors held in host RAM, on another GPU or on disk */
    tdm_tensor_t         **owned;     /* every tensor loaded (resident, or the host copy) */
    int64_t                nowned, capowned;
    int64_t                bytes;     /* sum of the owned tensors' nbytes */
} tdm_weights_t;

/* Load mode: tensors go onto `dev`, or where `place` (may be NULL) puts
 * them; `what` (a static string) names the model in messages. Zeroes *w
 * first, so it must hold nothing yet. */
void       tdm_weights_init(tdm_weights_t *w, const char *what, tdm_device_t *dev,
                            const tdm_placement_t *place);
/* List mode: every bound tensor is appended to `list` (as float32 of the
 * list's dtype) and no file is read; slots are set to NULL. */
void       tdm_weights_init_list(tdm_weights_t *w, const char *what, tdm_plist_t *list);
/* Load mode: opens the weights of component `sub` of folder `root`
 * (tdm_folder_weights: the `variant` files first, may be NULL) as w->set. */
tdm_status tdm_weights_open(tdm_weights_t *w, const char *root, const char *sub,
                            const char *variant);
/* The `gemm` argument of the binds: 0 a float32 tensor, TDM_WEIGHT_GEMM a
 * Linear/Conv weight feeding only a GEMM (the device's GEMM dtype),
 * TDM_WEIGHT_F8 a 2-D Linear weight stored as a row-scaled FP8 matrix
 * (core.h's tdm_f8_*; quantized from the file's values at load, on every
 * device), for the op linear_f8. */
#define TDM_WEIGHT_GEMM 1
#define TDM_WEIGHT_F8 2

/* Binds tensor `fmt...` of shape (shape[0..ndim-1], ndim 1..4) to the
 * model's field *slot, a float * (tdm_weights_bind) or a tdm_tensor_t *
 * (tdm_weights_bind_tensor). gemm: a Linear/Conv weight feeding only a GEMM,
 * stored in the device's GEMM dtype (tdm_st_set_load_gemm_weight); else
 * float32. Load mode: read from w->set as the placement says — resident: the
 * field points at it; host or disk: recorded in w->off for unit
 * unit_of(name) and the field cleared until tdm_offload_in. List mode:
 * appended to w->list, *slot (when slot is not NULL) set to NULL. Errors
 * name the model and the tensor (missing, wrong shape, not in the map). */
tdm_status tdm_weights_bind(tdm_weights_t *w, const float **slot, int gemm, int ndim,
                            const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
tdm_status tdm_weights_bind_tensor(tdm_weights_t *w, tdm_tensor_t **slot, int gemm, int ndim,
                                   const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Binds a part of tensor `fmt...` (stored shape shape[0..ndim)) to the
 * float * field *slot: along dimension `dim` the nr index ranges
 * [begin[i], begin[i] + count[i]) one after another (tdm_st_set_load_slice),
 * every other dimension whole — a tensor-parallel rank's shard of a weight.
 * gemm as tdm_weights_bind. Load mode: resident on w->dev (a device map is
 * TDM_ERR_UNSUPPORTED naming the tensor: shards are not offloaded). List
 * mode: appended with the part's shape. */
tdm_status tdm_weights_bind_slice(tdm_weights_t *w, const float **slot, int gemm, int ndim,
                                  const int64_t *shape, int dim, int nr, const int64_t *begin,
                                  const int64_t *count, const char *fmt, ...)
    __attribute__((format(printf, 10, 11)));
/* List mode: records module `fmt...` of PyTorch class `cls` as a no-split
 * unit (tdm_plist_nosplit). Load mode: does nothing. */
tdm_status tdm_weights_nosplit(tdm_weights_t *w, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Ends a walk that succeeded: the files go to w->off when a tensor is read
 * from disk on use, else they are closed; place and list are forgotten. */
void       tdm_weights_finish(tdm_weights_t *w);
/* Frees the offload records and copies, every owned tensor and the files
 * (after a failed walk too) and zeroes *w; NULL is a no-op. */
void       tdm_weights_free(tdm_weights_t *w);

#endif
