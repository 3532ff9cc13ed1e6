/* backend.cu — the CUDA backend (tdm_backend_cuda): its devices' lifecycle
 * and memory (device.cu) and its op table, each op the launcher
 * tdm_cuda_<name> inside a profile bracket named after the op (a no-op
 * bracket unless the device's opts.profile; see profile.cu). */
#include "backend/cuda/cuda_common.cuh"

#define TDM_OP(name, params, args)        \
    static void prof_##name params {      \
        tdm_cuda_prof_begin(dev);         \
        tdm_cuda_##name args;             \
        tdm_cuda_prof_end(dev, #name);    \
    }
#define TDM_OPV(type, name, params, args)
#include "backend/ops_list.h"
#undef TDM_OP
#undef TDM_OPV

/* Size queries and graph control are not profiled. */
static tdm_backend_t make_cuda_backend(void) {
    tdm_backend_t b = {};
    b.name = "cuda";
    b.kind = TDM_DEV_CUDA;
    b.device_count = tdm_cuda_device_count;
    b.device_init = tdm_cuda_device_init;
    b.device_free = tdm_cuda_device_free;
    b.mem_free = tdm_cuda_mem_free;
#define TDM_OP(name, params, args) b.ops.name = prof_##name;
#define TDM_OPV(type, name, params, args) b.ops.name = tdm_cuda_##name;
#include "backend/ops_list.h"
#undef TDM_OP
#undef TDM_OPV
    return b;
}

extern "C" const tdm_backend_t tdm_backend_cuda = make_cuda_backend();
