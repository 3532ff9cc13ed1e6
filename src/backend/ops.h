/* ops.h — the backend interface: one tdm_backend_t per device kind (its
 * devices' lifecycle and memory plus the op table of backend/ops_list.h),
 * devices opened by name, and the dispatchers tdm_op_<name>(dev, ...) every
 * model calls. The CPU backend (backend/cpu/) serves host devices; the CUDA
 * backend (backend/cuda/, in CUDA builds) serves GPUs. Code above this layer
 * never names a backend: it opens devices by name and calls tdm_op_*. */
#ifndef TDM_OPS_H
#define TDM_OPS_H

#include "core/core.h"

/* Element-wise activations of the typed op act_t. */
typedef enum { TDM_FN_RELU = 0, TDM_FN_GELU, TDM_FN_GELU_TANH, TDM_FN_SILU } tdm_act_fn;

/* The op table: one function per op of backend/ops_list.h (contracts there). */
typedef struct tdm_backend_ops {
#define TDM_OP(name, params, args) void (*name) params;
#define TDM_OPV(type, name, params, args) type (*name) params;
#include "backend/ops_list.h"
#undef TDM_OP
#undef TDM_OPV
} tdm_backend_ops_t;

typedef struct tdm_backend {
    const char     *name;     /* "cpu", "cuda": the name devices are opened by */
    tdm_device_kind kind;
    /* Devices of this kind present (the CPU: 1; CUDA: 0 without driver or GPU). */
    int        (*device_count)(void);
    /* Makes *d device `index` of this backend with the switches p (copied;
     * NULL: tdm_backend_params_init's defaults): its memory functions, queue
     * and handles. Errors name the device. */
    tdm_status (*device_init)(tdm_device_t *d, int index, const tdm_backend_params_t *p);
    /* Releases what device_init made (after tdm_dev_trim); may be NULL. */
    void       (*device_free)(tdm_device_t *d);
    /* Bytes free on d's memory now (host: MemAvailable; CUDA: the GPU's free
     * memory plus what its pool holds unused); -1 when unknown. */
    int64_t    (*mem_free)(tdm_device_t *d);
    tdm_backend_ops_t ops;
} tdm_backend_t;

/* The CPU backend: host devices (d->backend NULL) use it. */
extern const tdm_backend_t tdm_backend_cpu;

/* The backend called `name` ("cpu", "cuda"), NULL when this build has none. */
const tdm_backend_t *tdm_backend_find(const char *name);
/* Devices the backend called `name` has here (0 when the build lacks it). */
int        tdm_backend_device_count(const char *name);
/* Opens the device named `spec` into *d: "cpu" (host memory), "cpu:N" (a
 * logical CPU device N with its own counters, standing for GPU N in device
 * maps), "cuda" (= "cuda:0") or "cuda:N", with the switches p (NULL:
 * defaults). Errors name `spec`: an unknown kind, a bad index, a backend
 * this build lacks, a device that is not there (*d is then a plain host
 * device, which tdm_backend_device_close takes). Close with
 * tdm_backend_device_close. */
tdm_status tdm_backend_device_open(tdm_device_t *d, const char *spec,
                                   const tdm_backend_params_t *p);
/* Releases a device opened by tdm_backend_device_open (no-op for host
 * devices and for a zeroed *d); *d becomes a plain host device. */
void       tdm_backend_device_close(tdm_device_t *d);

static inline const tdm_backend_ops_t *tdm_ops_of(const tdm_device_t *d) {
    return d && d->backend ? &d->backend->ops : &tdm_backend_cpu.ops;
}

/* tdm_op_<name>(dev, ...): the op on dev's backend. */
#define TDM_OP(name, params, args) \
    static inline void tdm_op_##name params { tdm_ops_of(dev)->name args; }
#define TDM_OPV(type, name, params, args) \
    static inline type tdm_op_##name params { return tdm_ops_of(dev)->name args; }
#include "backend/ops_list.h"
#undef TDM_OP
#undef TDM_OPV

/* The activation type models should use on dev: its gemm_dtype on a CUDA
 * device whose gemm_dtype is F16 / BF16 (unless its opts.act_f32 is set, an
 * A/B switch), TDM_F32 otherwise. A model sizes its buffers with
 * tdm_dtype_size of it. */
tdm_dtype tdm_op_act_dtype(const tdm_device_t *dev);
/* p advanced by n elements of type at. */
static inline void *tdm_act_at(const void *p, tdm_dtype at, int64_t n) {
    return (char *)p + n * (int64_t)tdm_dtype_size(at);
}
/* Bytes a new allocation on dev can take now: its backend's mem_free plus
 * the freed blocks its reuse cache keeps; with a cap (cap_bytes > 0) at most
 * what is left under it. -1 when unknown. */
int64_t tdm_op_mem_available(tdm_device_t *dev);

#endif
