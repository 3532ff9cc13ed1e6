/* safetensors.h — read-only access to .safetensors files through mmap,
 * with every byte of the header validated, and to sharded checkpoints
 * (*.safetensors.index.json). Not a writer except tdm_safetensors_write. */
#ifndef TDM_SAFETENSORS_H
#define TDM_SAFETENSORS_H

#include "core/core.h"

typedef struct {
    char       *name;
    tdm_dtype   dtype;
    int         ndim;
    int64_t     shape[TDM_MAX_DIMS];
    const void *data;      /* points into the mapping */
    int64_t     nbytes;
    const char *file;      /* path of the file holding it */
} tdm_st_tensor_t;

typedef struct tdm_safetensors tdm_safetensors_t;   /* one mapped file */

/* Maps and validates `path`: 8-byte little-endian header length within
 * the file, JSON header (an object from its first byte, valid UTF-8 without
 * raw control characters, then only spaces 0x20 up to the header length),
 * known dtypes, shapes with <= TDM_MAX_DIMS dims, offsets [begin, end)
 * inside the data section, end - begin == numel * dtype size
 * (overflow-checked), and the tensors' ranges tiling the data section
 * without overlap, gap or trailing bytes (as the reference loader).
 * OUT: *st. Errors name the file and the tensor. */
tdm_status tdm_safetensors_open(tdm_safetensors_t **st, const char *path);
void       tdm_safetensors_close(tdm_safetensors_t *st);
int        tdm_safetensors_count(const tdm_safetensors_t *st);
const tdm_st_tensor_t *tdm_safetensors_at(const tdm_safetensors_t *st, int i);
const tdm_st_tensor_t *tdm_safetensors_find(const tdm_safetensors_t *st, const char *name);
/* "__metadata__" value for key, or NULL. */
const char *tdm_safetensors_meta(const tdm_safetensors_t *st, const char *key);

/* Validates a header held in memory (the fuzz entry point): `buf` holds the
 * whole file image of `len` bytes. */
tdm_status tdm_safetensors_parse(tdm_safetensors_t **st, const uint8_t *buf, size_t len,
                                 const char *name_for_errors);

/* A set of files that together hold one component's weights: a single
 * file, or the shards listed by an index.json. */
typedef struct tdm_st_set tdm_st_set_t;

/* Opens `path`: a .safetensors file or a .safetensors.index.json (every
 * shard in its weight_map is opened; a tensor listed in the map must be in
 * the shard the map names). OUT: *set. */
tdm_status tdm_st_set_open(tdm_st_set_t **set, const char *path);
void       tdm_st_set_close(tdm_st_set_t *set);
const tdm_st_tensor_t *tdm_st_set_find(const tdm_st_set_t *set, const char *name);

/* Renamed sets: a checkpoint in another key layout (a single-file SD/SDXL
 * checkpoint) seen under the names a model binds. tdm_st_set_open_renamed
 * opens `path` as tdm_st_set_open does, but tdm_st_set_find (and every load)
 * then finds only the views added to it; the file's own tensors are reached
 * with the raw functions. */
tdm_status tdm_st_set_open_renamed(tdm_st_set_t **set, const char *path);
int        tdm_st_set_raw_count(const tdm_st_set_t *set);
const tdm_st_tensor_t *tdm_st_set_raw_at(const tdm_st_set_t *set, int i);
const tdm_st_tensor_t *tdm_st_set_raw_find(const tdm_st_set_t *set, const char *name);
/* The views of a renamed set, in the order added. */
int        tdm_st_set_view_count(const tdm_st_set_t *set);
const tdm_st_tensor_t *tdm_st_set_view_at(const tdm_st_set_t *set, int i);
/* Adds view `name`: rows [row0, row0 + rows) of file tensor src (along its
 * first dimension; the bytes stay in the mapping) with shape[0..ndim) (the
 * same number of elements: a fused q/k/v weight's third, a 1x1 conv weight
 * as a matrix). A second view of the same name is an error. */
tdm_status tdm_st_set_add_view(tdm_st_set_t *set, const char *name, const tdm_st_tensor_t *src,
                               int64_t row0, int64_t rows, int ndim, const int64_t *shape);
/* Adds view `name`: the transpose of matrix src, copied (owned by the set). */
tdm_status tdm_st_set_add_transposed(tdm_st_set_t *set, const char *name, const tdm_st_tensor_t *src);
/* Adds view `name`: src with the two halves of its first dimension swapped,
 * copied (BFL FLUX's final modulation: shift, scale → scale, shift). */
tdm_status tdm_st_set_add_halves_swapped(tdm_st_set_t *set, const char *name, const tdm_st_tensor_t *src);

/* Loads tensor `name` as a new float32 tensor on `dev`, converting F16/BF16/
 * F64. If ndim > 0 the stored shape must equal shape[0..ndim) (error names
 * tensor, file, expected and found shapes); a missing tensor is an error
 * naming it and the files searched. OUT: *out. */
tdm_status tdm_st_set_load_f32(const tdm_st_set_t *set, const char *name, tdm_device_t *dev,
                               int ndim, const int64_t *shape, tdm_tensor_t **out);
/* Same for an optional tensor: *out = NULL when absent (no error). */
tdm_status tdm_st_set_load_f32_opt(const tdm_st_set_t *set, const char *name, tdm_device_t *dev,
                                   int ndim, const int64_t *shape, tdm_tensor_t **out);

/* The dtype GEMM weights are stored in on `dev`: its gemm_dtype (F16 or BF16)
 * on a non-host device, TDM_F32 otherwise (host devices always compute in
 * float32, whatever gemm_dtype says). */
tdm_dtype tdm_st_gemm_weight_dtype(const tdm_device_t *dev);
/* What a weight of kind `gemm` (nn/weights.h: 0 float32, 1 a GEMM weight,
 * 2 a row-scaled FP8 Linear weight) is stored as on dev: TDM_F32,
 * tdm_st_gemm_weight_dtype(dev) or TDM_F8E4M3. */
tdm_dtype tdm_st_weight_dtype(const tdm_device_t *dev, int gemm);

/* Loads a weight that only ever feeds a GEMM (a Linear weight (out, in) or a
 * Conv weight (out, in, kh, kw) — never a bias, norm, embedding/gather table
 * or position table): with the same checks and errors as
 * tdm_st_set_load_f32, but stored in tdm_st_gemm_weight_dtype(dev), each
 * element converted to float32 and then rounded to nearest even. (*out)->dtype
 * says what is stored; tdm_f32(*out) is then the `W` pointer that
 * tdm_op_linear / conv2d / gemm take (see backend/ops_list.h). On host devices
 * it is exactly tdm_st_set_load_f32. With gemm 2 (TDM_WEIGHT_F8) a 2-D
 * weight is stored as a row-scaled FP8 matrix instead (core.h's tdm_f8_*,
 * quantized on the host from the float32 values), on any device. OUT: *out. */
tdm_status tdm_st_set_load_gemm_weight(const tdm_st_set_t *set, const char *name,
                                       tdm_device_t *dev, int gemm, int ndim,
                                       const int64_t *shape, tdm_tensor_t **out);

/* A part of tensor `name` (stored shape shape[0..ndim), checked as
 * tdm_st_set_load_f32 checks it): along dimension `dim` the nr index ranges
 * [begin[i], begin[i] + count[i]) one after another, every other dimension
 * whole — a tensor of that shape with dimension dim of sum(count) on `dev`,
 * stored as tdm_st_weight_dtype(dev, gemm) says. How a tensor-parallel rank loads its rows
 * (dim 0) or columns (dim 1) of a Linear weight. A range outside the
 * dimension is TDM_ERR_INVALID_ARG naming the tensor. OUT: *out. */
tdm_status tdm_st_set_load_slice(const tdm_st_set_t *set, const char *name, tdm_device_t *dev,
                                 int gemm, int ndim, const int64_t *shape, int dim, int nr,
                                 const int64_t *begin, const int64_t *count, tdm_tensor_t **out);

/* The host copy of a GEMM weight that a split model keeps in host RAM and
 * streams to the device `exec` block by block: stored in
 * tdm_st_gemm_weight_dtype(exec) (bf16 / fp16 for a half GPU: half the host
 * RAM and the bytes to move, and uploaded as it is), on the host device
 * `host`. Never computed on where it lies. Checks as tdm_st_set_load_f32. */
tdm_status tdm_st_set_load_gemm_host_copy(const tdm_st_set_t *set, const char *name,
                                          tdm_device_t *host, const tdm_device_t *exec, int gemm,
                                          int ndim, const int64_t *shape, tdm_tensor_t **out);

/* Writes a safetensors file of float32 tensors atomically (temporary name,
 * then rename). names[i], shapes[i] (ndims[i] dims), data[i]; metadata is
 * `nmeta` key/value pairs (may be 0). */
tdm_status tdm_safetensors_write_f32(const char *path, int n, const char *const *names,
                                     const int *ndims, const int64_t *const *shapes,
                                     const float *const *data,
                                     int nmeta, const char *const *meta_kv);

#endif
