/* folder.h — diffusers model folders: resolving `--model` (a directory or
 * ORG/NAME in the Hugging Face cache), reading model_index.json, and finding
 * each component's config and weight files (variants, sharded indexes). */
#ifndef TDM_FOLDER_H
#define TDM_FOLDER_H

#include "core/core.h"

#define TDM_PATH_MAX 4096

/* Resolves `model` to a directory: an existing directory is used as is;
 * otherwise "ORG/NAME" is looked up offline as
 * $HF_HUB_CACHE or $HF_HOME/hub or ~/.cache/huggingface/hub, then
 * models--ORG--NAME/snapshots/<rev>/ with rev from refs/main when present,
 * else the only (or newest) snapshot. Error lists the places tried. */
tdm_status tdm_folder_resolve(const char *model, char *out, size_t cap);

/* Finds the weights of component `sub` (e.g. "unet") in `dir`:
 * with variant V: diffusion_pytorch_model.V.safetensors / model.V.safetensors
 * (or their .safetensors.index.json) before the plain names; without one,
 * the plain names. Writes the path (file or index.json) into out. Error
 * names the folder and the names tried (and notes .bin files are not read). */
tdm_status tdm_folder_weights(const char *dir, const char *sub, const char *variant,
                              char *out, size_t cap);
/* Same search for weights that may be absent (a folder of configs only):
 * out = "" when none of the names exists, no error. Errors only when a path
 * does not fit in out. */
tdm_status tdm_folder_weights_opt(const char *dir, const char *sub, const char *variant,
                                  char *out, size_t cap);

/* 1 when `variant` is given, component `sub` has no weights of that variant
 * and the search of tdm_folder_weights falls back to the plain ones: the
 * variant name that was missing (e.g. diffusion_pytorch_model.fp16.safetensors)
 * goes to wanted and the file used to used (names, not paths). Else 0 (no
 * variant asked, the variant file exists, or no weights at all). */
int tdm_folder_variant_fallback(const char *dir, const char *sub, const char *variant, char *wanted,
                                size_t wcap, char *used, size_t ucap);

/* Longest component name of a model folder (a folder name, bytes). */
#define TDM_COMPONENT_NAME_MAX 63

/* Checks every component of a parsed model_index.json (`index`: each key
 * whose value is an array, ["library", "Class"]): its name is a folder
 * inside the model folder — not empty, not "." or "..", no '/' or '\',
 * not absolute, no control characters, at most TDM_COMPONENT_NAME_MAX
 * bytes. The error names model_index.json and the key. */
struct cJSON;
tdm_status tdm_folder_components_check(const struct cJSON *index, const char *index_path);

/* Joins dir/sub/file into out; error if it does not fit. */
tdm_status tdm_path_join(char *out, size_t cap, const char *dir, const char *sub,
                         const char *file);
int tdm_file_exists(const char *path);

/* Every file tandem reads from a model folder goes through these two, so a
 * FIFO, a device, a directory or a symlink loop where a file should be is
 * named as such (one line, the path first: "PATH: is a FIFO, not a regular
 * file", "PATH: is a directory", "PATH: symlink loop", "PATH: is a
 * character device, not a regular file") and never blocks or reads
 * forever. Symlinks to regular files are followed. */

/* Whether `path` is a regular file: *present = 1; nothing there (no such
 * file, a dangling link, a missing folder on the way): *present = 0 and
 * TDM_OK; anything else there: the error above (TDM_ERR_IO). Opens
 * nothing. */
tdm_status tdm_file_probe(const char *path, int *present);
/* Opens `path` for reading, only if it is a regular file: the descriptor is
 * opened non-blocking (a FIFO cannot stall the open), checked with fstat,
 * then set blocking. Errors as above, or "PATH: cannot open: REASON".
 * OUT: *fd (close() it). */
tdm_status tdm_file_open(const char *path, int *fd);

/* Reads a whole regular file (tdm_file_open; at most max_bytes) into a
 * NUL-terminated malloc'd buffer. OUT: *buf (free()), *len. Errors name
 * the file. */
tdm_status tdm_file_read(const char *path, int64_t max_bytes, char **buf, int64_t *len);

#endif
