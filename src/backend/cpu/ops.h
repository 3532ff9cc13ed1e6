/* ops.h — the CPU backend's kernels, tdm_cpu_<name> for every op of
 * backend/ops_list.h (contracts there), with the op's parameters: float32,
 * contiguous row-major host buffers, `dev` a host device or NULL (its
 * opts.conv_tile_bytes sizes the convolution's im2col tiles; NULL: the
 * default). The readable spec every other backend is checked against. GEMMs
 * go to OpenBLAS; element-wise, norm and softmax kernels are threaded with
 * OpenMP. Models call tdm_op_* (backend/ops.h), which lands here for host
 * devices; tests call these directly as the reference. */
#ifndef TDM_OPS_CPU_H
#define TDM_OPS_CPU_H

#include "backend/ops.h"

#define TDM_OP(name, params, args) void tdm_cpu_##name params;
#define TDM_OPV(type, name, params, args) type tdm_cpu_##name params;
#include "backend/ops_list.h"
#undef TDM_OP
#undef TDM_OPV

/* Row-wise softmax of x (rows, n) in place. */
void tdm_cpu_softmax(float *x, int64_t rows, int64_t n);

/* The attention op's result without BLAS and without any allocation (dot
 * products in double, two passes over the keys per query): slow, the
 * readable spec; tdm_cpu_attention falls back to it when its per-thread
 * score tiles (64 query rows × Tk floats each, from malloc) cannot be had.
 * tdm_cpu_attention switches OpenBLAS to one thread for its duration
 * (process-wide). */
void tdm_cpu_attention_ref(float *o, const float *q, const float *k, const float *v,
                           int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D,
                           float scale, int causal);

#endif
