/* offload.h — running a model whose tensors a device map (devmap.h) spreads
 * over devices, host RAM and disk: where each tensor is loaded, and the
 * offloaded ones brought to the execution device while their block runs.
 *
 * A model loader asks tdm_placement_where for each tensor: resident tensors
 * are loaded onto their device as usual; "cpu" ones onto the host device and
 * recorded here; "disk" ones only recorded (read from the safetensors file on
 * use, so nothing is copied to disk). Each record knows the model's pointer
 * to the tensor (a float * or a tdm_tensor_t * field) and the block it
 * belongs to; before block b runs, tdm_offload_in(b) copies (or reads and
 * converts) its records onto the execution device and points the fields at
 * the copies; tdm_offload_out(b) frees them and clears the fields. Block -1
 * is the model's top level, brought in for a whole forward. The copies are
 * exactly what a one-device load makes, so results are bit-identical. */
#ifndef TDM_OFFLOAD_H
#define TDM_OFFLOAD_H

#include "core/core.h"
#include "io/safetensors.h"

/* Host copies of at least the running device's opts.pin_min_bytes (default
 * TDM_OFFLOAD_PIN_MIN) are page-locked for DMA at load. */

struct tdm_place_map;

/* A device map and the devices it names: GPU id g is gpu[g] (g < ngpu),
 * "cpu" is `host`, and `main` runs every offloaded block. */
typedef struct tdm_placement {
    const struct tdm_place_map *map;
    tdm_device_t              **gpu;
    int                         ngpu;
    tdm_device_t               *host;
    tdm_device_t               *main;
} tdm_placement_t;

enum { TDM_PLACED_RESIDENT = 0, TDM_PLACED_HOST = 1, TDM_PLACED_DISK = 2 };

/* Checks pl (map, main and host given): either every device a host device
 * (virtual devices), or GPUs with GPU 0 the main device (blocks resident on
 * another GPU are copied to GPU 0 as they run) and host RAM. `what` names the
 * model in messages. */
tdm_status tdm_placement_check(const tdm_placement_t *pl, const char *what);
/* Where tensor `name` goes: *where one of TDM_PLACED_*, *dev the device to
 * load it onto (NULL for disk). Errors name the tensor: not covered by the
 * map, or on a GPU id without a device. */
tdm_status tdm_placement_where(const tdm_placement_t *pl, const char *what, const char *name,
                               tdm_device_t **dev, int *where);

typedef struct {
    void         *slot;          /* address of the model's field (a float * or a tdm_tensor_t *) */
    int           tensor_slot;   /* 1: *slot is a tdm_tensor_t *, 0: a float * */
    tdm_tensor_t *host;          /* the copy in host RAM (or on a peer GPU), or NULL ("disk") */
    tdm_tensor_t *tmp;           /* the copy on the execution device while in use */
    char          name[192];
    int           ndim, gemm;    /* gemm: a Linear/Conv weight (the device's GEMM dtype) */
    int64_t       shape[4];      /* ndim 1..4 (Linear, Conv weights) */
    int64_t       blk;
    /* the execution device whose side queue copies `host` by DMA: page-locked
     * host RAM (a host device's tensor: unpinned by tdm_offload_free), or a
     * tensor resident on another GPU (a peer); NULL: staged uploads */
    tdm_device_t *dma_dev;
    int           pending;       /* tmp's copy queued (prefetch), the field not set yet */
} tdm_offload_entry_t;

typedef struct {
    tdm_offload_entry_t *e;
    int64_t              n, cap;
    tdm_st_set_t        *set;    /* kept open while any entry is on disk (tdm_offload_keep_set) */
    int                  owns_host;   /* 1: tdm_offload_free frees the host copies too */
    /* the order blocks were brought in: next[i] followed from[i] (learned
     * within a forward, i.e. between two tdm_offload_in of block -1) */
    int64_t             *from, *next;
    int64_t              nnext, capnext;
    int64_t              last;        /* the block brought in last, when has_last */
    int                  has_last;
} tdm_offload_t;

/* Records one offloaded tensor (host copy `host`, or NULL for disk); the
 * field *slot is cleared until the tensor is brought in. */
tdm_status tdm_offload_add(tdm_offload_t *o, void *slot, int tensor_slot, tdm_tensor_t *host,
                           const char *name, int ndim, const int64_t *shape, int gemm,
                           int64_t blk);
/* One tensor of a model loader: `name` read from `set` (gemm: a Linear/Conv
 * weight, stored in the GEMM dtype) as the placement puts it — pl NULL or
 * resident: onto `dev` or the map's device, *out the tensor; "cpu": a host
 * copy (in the execution device's GEMM dtype), recorded for streaming, *out
 * the copy; "disk": only recorded, *out NULL. `map_name` is the name the map
 * uses (NULL: `name`), `what` names the model in errors, slot / tensor_slot /
 * blk as for tdm_offload_add: the field points at a resident tensor and is
 * cleared for offloaded ones. */
tdm_status tdm_offload_load(tdm_offload_t *o, const tdm_placement_t *pl, const tdm_st_set_t *set,
                            tdm_device_t *dev, const char *what, const char *name,
                            const char *map_name, int ndim, const int64_t *shape, int gemm,
                            void *slot, int tensor_slot, int64_t blk, tdm_tensor_t **out);
/* Takes ownership of `set` when an entry needs the files (returns 1), else
 * returns 0 and the caller closes it. */
int        tdm_offload_keep_set(tdm_offload_t *o, tdm_st_set_t *set);
/* Brings block blk's entries onto `exec` (see above). Pinned host copies go
 * by DMA on exec's side copy queue, and the work queued after this waits
 * for them (not the host). Then prefetches (tdm_offload_prefetch) the block
 * that followed blk the last time: every model that runs its blocks in the
 * same order each call gets its next block's copies overlapped with the
 * current block from the second call on. Block -1 starts a forward (the
 * order is learned between two of them). */
tdm_status tdm_offload_in(tdm_offload_t *o, tdm_device_t *exec, int64_t blk);
/* Starts block blk's pinned host copies early: allocated on exec now, their
 * DMA queued on exec's side queue, so it runs while the work queued next
 * (the current block) computes; tdm_offload_in(blk) then only orders the
 * block's work after the copies. Disk entries and unpinned copies wait for
 * tdm_offload_in. A no-op on devices without a side queue (host devices). */
tdm_status tdm_offload_prefetch(tdm_offload_t *o, tdm_device_t *exec, int64_t blk);
/* Drops block blk's copies (no-op for entries not brought in). */
void       tdm_offload_out(tdm_offload_t *o, int64_t blk);
/* Drops every copy still brought in (after a failed forward). */
void       tdm_offload_out_all(tdm_offload_t *o);
/* Frees the copies, the records, the kept file set and, with owns_host, the
 * host copies (else they belong to the model). */
void       tdm_offload_free(tdm_offload_t *o);

#endif
