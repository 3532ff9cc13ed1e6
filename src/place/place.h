/* place.h — the placement planner: a model's parameter list (nn/ptree.h) and
 * per-device memory budgets in, a device map (nn/devmap.h) out (module path -> GPU id,
 * "cpu" or "disk"), shaped like accelerate's hf_device_map. A pure library:
 * no devices, no weights, no I/O except the JSON printer.
 *
 * It reproduces accelerate's get_balanced_memory + infer_auto_device_map
 * (offload_buffers=False, fallback_allocation=False, clean_result=True) as
 * diffusers' from_pretrained(device_map=...) runs them. With
 * TDM_PLACE_ACCELERATE_COMPAT it is exact, bugs included; by default it
 * applies the fixes of spec (h): balanced_low_0 keyed by GPU id (#4297),
 * "disk" allowed with balanced (#3480), zero-budget GPUs are no devices
 * (#1933), the max_layer reserve only when something is offloaded (#3041),
 * and tied groups matched on dot boundaries. As in accelerate, budgets
 * without a "disk" key get an unlimited disk after the others (tandem's
 * disk offload reads the mmapped safetensors: nothing is written), so only
 * an explicit disk= cap can make a plan fail for room.
 *
 * The module tree is built from the dotted tensor names: a tensor's module is
 * its name minus the last component; children in first-appearance order. A
 * module holding no tensor is invisible (accelerate lists such modules —
 * activations, FluxPosEmbed — in its map; their weights are nothing). */
#ifndef TDM_PLACE_H
#define TDM_PLACE_H

#include <stdint.h>
#include <stdio.h>

#include "core/core.h"
#include "nn/devmap.h"
#include "nn/ptree.h"

/* Parses a size: a non-negative integer (bytes), or a number (decimal
 * fraction and exponent allowed, spaces allowed: "1.5GB", "16 GB") with a
 * unit, case-insensitive: KiB MiB GiB TiB (2^10..2^40) or KB MB GB TB
 * (10^3..10^12), truncated to whole bytes as accelerate's
 * convert_file_size_to_int does. A unit ending in a lower-case 'b'
 * ("16gb", "16Gb", "16Mb", "16Gib") is rejected: accelerate reads some of
 * those as bits; write GB or GiB for bytes. Rejects empty, negative, unknown
 * units ("16G"), inf/nan and values past INT64_MAX. OUT: *bytes. */
tdm_status tdm_size_parse(const char *s, int64_t *bytes);

typedef struct {
    int     n;
    int     dev[TDM_PLACE_MAX_DEVICES];       /* GPU id, TDM_PLACE_CPU or TDM_PLACE_DISK */
    int64_t bytes[TDM_PLACE_MAX_DEVICES];
} tdm_max_memory_t;

/* Parses "0=16GiB,1=16GiB,cpu=64GiB,disk=1TB": keys are GPU ids
 * (non-negative integers), "cpu", "disk"; values as tdm_size_parse. Errors
 * name the bad key or value; a repeated key is an error. The result is in
 * accelerate's order: GPU ids ascending, then cpu, then disk. OUT: *mm. */
tdm_status tdm_max_memory_parse(const char *s, tdm_max_memory_t *mm);
/* Adds or replaces one budget, keeping accelerate's order. */
tdm_status tdm_max_memory_set(tdm_max_memory_t *mm, int dev, int64_t bytes);

typedef enum {
    TDM_PLACE_SEQUENTIAL = 0,     /* fill GPU 0, then GPU 1, ..., cpu, disk */
    TDM_PLACE_BALANCED,           /* "auto" / "balanced": even share per GPU */
    TDM_PLACE_BALANCED_LOW_0      /* balanced, with the first GPU as light as possible */
} tdm_place_strategy;

/* "sequential", "auto", "balanced", "balanced_low_0" -> strategy. */
tdm_status tdm_place_strategy_parse(const char *s, tdm_place_strategy *out);

#define TDM_PLACE_ACCELERATE_COMPAT 1u   /* exact accelerate 1.15, bugs included */

/* Plans where every tensor of `pl` goes under budgets `mm` (see the file
 * comment for the rules; `flags` = 0 or TDM_PLACE_ACCELERATE_COMPAT).
 * `nosplit_class` (may be NULL) gives the class name of each pl->nosplit
 * path; the balanced strategies size their margin from the first module of
 * each no-split class, as accelerate does. With NULL, paths that differ only
 * in their numeric components count as one class (an approximation).
 * Errors: invalid budgets; in compat mode the errors accelerate raises
 * (balanced with a "disk" key; balanced_low_0 on GPU ids that are not
 * 0..n-1); by default, a plan needing more than the budgets (possible only
 * with an explicit "disk" budget), with a message naming the piece that did
 * not fit, each device's use and budget, and the disk= cap.
 * OUT: *out (free with tdm_place_map_free; zeroed on failure). */
tdm_status tdm_place_plan_ex(const tdm_plist_t *pl, const char *const *nosplit_class,
                             const tdm_max_memory_t *mm, tdm_place_strategy strategy,
                             unsigned flags, tdm_place_map_t *out);
/* tdm_place_plan_ex with the classes the parameter list records
 * (pl->nosplit_class). */
tdm_status tdm_place_plan(const tdm_plist_t *pl, const tdm_max_memory_t *mm,
                          tdm_place_strategy strategy, unsigned flags, tdm_place_map_t *out);
/* Writes the map as one JSON object, e.g. {"transformer_blocks.0": 0,
 * "norm_out": "cpu"}; with `prefix` (may be NULL) keys become
 * "prefix.key", and the whole-model key "" becomes "prefix". */
tdm_status tdm_place_map_json(const tdm_place_map_t *m, const char *prefix, FILE *f);

#endif
