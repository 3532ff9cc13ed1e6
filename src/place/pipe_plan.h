/* pipe_plan.h — the placement of a whole pipeline folder as data: which
 * device each component, or each block of a split component, goes to
 * (pipe_plan.c has the rules). tdm_plan (`tandem plan`) prints it as JSON;
 * the pipeline executes it. Not public API. */
#ifndef TDM_PIPE_PLAN_H
#define TDM_PIPE_PLAN_H

#include <stdint.h>

#include "core/core.h"
#include "place/place.h"

/* "fp32" | "fp16" | "bf16" -> *out; anything else is an error naming --dtype. */
tdm_status tdm_dtype_parse(const char *s, tdm_dtype *out);
/* "fp32", "fp16" or "bf16" for one of the three dtypes. */
const char *tdm_dtype_flag(tdm_dtype t);
/* The dtype a pipeline's GEMMs compute in when none is given: float32 on the
 * CPU; on a GPU bf16 for FLUX, fp16 for Stable Diffusion. */
tdm_dtype  tdm_dtype_default(int flux, int gpu);
/* The GEMM dtype of a device (tdm_device_t.gemm_dtype) for pipeline dtype t:
 * TDM_F32 on the CPU, bf16 for fp8 (whose FP8 Linears are a model's own:
 * tdm_device_t.fp8_linears), else t. */
tdm_dtype  tdm_dtype_gemm(tdm_dtype t, int gpu);

typedef struct {
    char            name[64];   /* model_index.json key, e.g. "text_encoder" */
    int             dev;        /* whole-component device, or TDM_PLACE_DISK - 1 when split */
    int64_t         bytes;      /* the component's bytes as planned */
    tdm_place_map_t map;        /* when split: its blocks (names without the component) */
} tdm_pipe_plan_comp_t;

typedef struct {
    int                   strategy;   /* pipeline-level tdm_place_strategy */
    tdm_max_memory_t      mm;         /* the budgets as given */
    int                   nc;
    tdm_pipe_plan_comp_t *c;          /* in model_index.json order */
} tdm_pipe_plan_t;

/* What to plan: the folder `root` (resolved), components `only` (comma list,
 * NULL: all), `device_map` as tdm_plan_params_t, budgets `mm`, `dtype` for
 * every floating tensor or -1 (the weight files' dtypes, else
 * tdm_dtype_default for a GPU), `variant` (NULL: none). */
typedef struct {
    const char             *root;
    const char             *only;
    const char             *device_map;
    const tdm_max_memory_t *mm;
    int                     dtype;
    const char             *variant;
} tdm_pipe_plan_req_t;

/* Plans as tdm_plan does. OUT: *out (free with tdm_pipe_plan_free; zeroed on
 * failure). */
tdm_status tdm_pipe_plan_make(const tdm_pipe_plan_req_t *r, tdm_pipe_plan_t *out);
void       tdm_pipe_plan_free(tdm_pipe_plan_t *p);

/* Bytes the plan puts on each budget of its JSON "max_memory" (the given
 * budgets plus, when they have no "disk", an unlimited one): *all gets
 * those budgets, used[i] the bytes on all->dev[i]. */
tdm_status tdm_pipe_plan_used(const tdm_pipe_plan_t *p, tdm_max_memory_t *all, int *disk_implicit,
                              int64_t used[TDM_PLACE_MAX_DEVICES]);

/* The plan as tdm_plan prints it: one JSON object {"strategy",
 * "max_memory", "device_map", "bytes"} and a newline. OUT: *json (free()). */
tdm_status tdm_pipe_plan_json(const tdm_pipe_plan_t *p, char **json);

#endif
