/* ops.c — the backends this build has, devices opened by name, and the op
 * helpers that are the same on every backend. The dispatch itself is the
 * inline tdm_op_* of backend/ops.h. */
#include "backend/ops.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef TDM_HAVE_CUDA
#include "backend/cuda/cuda_ops.h"
#endif

static const tdm_backend_t *const g_backends[] = {
    &tdm_backend_cpu,
#ifdef TDM_HAVE_CUDA
    &tdm_backend_cuda,
#endif
};

const tdm_backend_t *tdm_backend_find(const char *name) {
    for (size_t i = 0; i < sizeof g_backends / sizeof *g_backends; i++)
        if (name && !strcmp(g_backends[i]->name, name)) return g_backends[i];
    return NULL;
}

int tdm_backend_device_count(const char *name) {
    const tdm_backend_t *b = tdm_backend_find(name);
    return b ? b->device_count() : 0;
}

tdm_status tdm_backend_device_open(tdm_device_t *d, const char *spec,
                                   const tdm_backend_params_t *p) {
    char kind[16];
    long index = 0;
    const char *colon = spec ? strchr(spec, ':') : NULL;
    size_t n = colon ? (size_t)(colon - spec) : spec ? strlen(spec) : 0;
    tdm_device_init(d, TDM_DEV_CPU, 0);   /* closing a device that failed to open is safe */
    if (!spec || n == 0 || n >= sizeof kind)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "device \"%s\": expected cpu, cpu:N or cuda:N",
                          spec ? spec : "");
    memcpy(kind, spec, n);
    kind[n] = 0;
    if (colon) {
        char *end;
        errno = 0;
        index = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || *end || errno || index < 0 || index > 4095)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "device \"%s\": the index after ':' must be "
                              "a number from 0 to 4095", spec);
    }
    const tdm_backend_t *b = tdm_backend_find(kind);
    if (!b) {
        if (!strcmp(kind, "cuda"))
            return tdm_errorf(TDM_ERR_UNSUPPORTED, "device \"%s\": this build has only the CPU "
                              "backend (rebuild with the CUDA toolkit installed)", spec);
        return tdm_errorf(TDM_ERR_INVALID_ARG, "device \"%s\": expected cpu, cpu:N or cuda:N",
                          spec);
    }
    return b->device_init(d, (int)index, p);
}

void tdm_backend_device_close(tdm_device_t *d) {
    if (!d) return;
    tdm_dev_trim(d);
    if (d->backend && d->backend->device_free) d->backend->device_free(d);
    tdm_device_init(d, TDM_DEV_CPU, 0);
}

tdm_dtype tdm_op_act_dtype(const tdm_device_t *dev) {
    if (tdm_dev_is_host(dev) || (dev->gemm_dtype != TDM_F16 && dev->gemm_dtype != TDM_BF16))
        return TDM_F32;
    return dev->opts.act_f32 ? TDM_F32 : dev->gemm_dtype;
}

int64_t tdm_op_mem_available(tdm_device_t *dev) {
    const tdm_backend_t *b = dev && dev->backend ? dev->backend : &tdm_backend_cpu;
    int64_t have = b->mem_free(dev);
    if (dev && have >= 0)   /* freed blocks the device's reuse cache keeps are this process's */
        for (int i = 0; i < dev->ncache; i++) have += dev->cache_n[i];
    if (dev && dev->cap_bytes > 0) {
        const int64_t left = dev->cap_bytes > dev->cur_bytes ? dev->cap_bytes - dev->cur_bytes : 0;
        if (have < 0 || left < have) have = left;
    }
    return have;
}
