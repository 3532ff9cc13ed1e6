/* config.h — JSON config files (config.json, model_index.json, scheduler
 * configs) read through cJSON, with typed getters whose errors name the
 * file and the key. */
#ifndef TDM_CONFIG_H
#define TDM_CONFIG_H

#include <cjson/cJSON.h>
#include "core/core.h"

typedef struct {
    cJSON *root;
    char   path[1024];     /* for messages */
} tdm_json_t;

/* Reads and parses `path` (must be a JSON object). Errors: missing file,
 * malformed JSON (with the byte offset), not an object. */
tdm_status tdm_json_load(tdm_json_t *j, const char *path);
/* tdm_json_load into a tree the caller owns (cJSON_Delete); with
 * `optional`, an absent file gives *root = NULL and TDM_OK (anything else
 * there — a FIFO, a folder — is an error naming it). */
tdm_status tdm_json_load_tree(const char *path, int optional, cJSON **root);
/* Parses JSON text (fuzz entry point). */
tdm_status tdm_json_parse(tdm_json_t *j, const char *text, size_t len, const char *name);
void       tdm_json_free(tdm_json_t *j);

/* Getters: absent key (or JSON null) → default; wrong type → TDM_ERR_FORMAT
 * naming file and key. */
tdm_status tdm_json_int(const tdm_json_t *j, const char *key, int64_t def, int64_t *out);
tdm_status tdm_json_float(const tdm_json_t *j, const char *key, double def, double *out);
tdm_status tdm_json_bool(const tdm_json_t *j, const char *key, int def, int *out);
/* Copies the string into out (cap bytes); error if longer. */
tdm_status tdm_json_str(const tdm_json_t *j, const char *key, const char *def, char *out,
                        size_t cap);
/* Integer array (a scalar is accepted as a 1-element array when
 * scalar_ok); *n receives the count, at most cap. Absent → *n = 0. */
tdm_status tdm_json_int_array(const tdm_json_t *j, const char *key, int scalar_ok,
                              int64_t *out, int cap, int *n);
/* Largest config sample_size (a latent side; 16x SDXL's 128) and largest
 * image side in pixels (the CLI's --width/--height bound). */
#define TDM_MAX_SAMPLE_SIZE 2048
#define TDM_MAX_IMAGE_SIDE  16384

/* Config sizes are bounded so that every product of them fits 64 bits and
 * an absurd value is named instead of ending in an allocator failure. The
 * error for a value `v` of `key` outside [lo, hi]: TDM_ERR_MODEL,
 * "<file>: <key> <v> is out of range [lo, hi]". */
tdm_status tdm_json_range_error(const tdm_json_t *j, const char *key, int64_t v, int64_t lo, int64_t hi);
/* tdm_json_int, then the value must lie in [lo, hi] (the default too). */
tdm_status tdm_json_int_range(const tdm_json_t *j, const char *key, int64_t def, int64_t lo, int64_t hi,
                              int64_t *out);
/* String array; each string copied into out[i] (each `cap` bytes). */
tdm_status tdm_json_str_array(const tdm_json_t *j, const char *key, char (*out)[64], int cap,
                              int *n);

#endif
