/* png.h — PNG output through libpng, written atomically. */
#ifndef TDM_PNG_H
#define TDM_PNG_H

#include "core/core.h"

/* Writes an 8-bit RGB image (h*w*3 bytes, row-major) to `path` via a
 * temporary file in the same folder and a rename; nothing is left at `path`
 * on failure. `ntext` tEXt chunks from key/value pairs (may be 0). */
tdm_status tdm_png_write(const char *path, const uint8_t *rgb, int w, int h,
                         int ntext, const char *const *text_kv);
/* The same PNG in memory: *out (malloc'd, *len bytes; free it). */
tdm_status tdm_png_encode(const uint8_t *rgb, int w, int h, int ntext,
                          const char *const *text_kv, uint8_t **out, size_t *len);
/* Reads an 8-bit RGB or RGBA PNG (for tests): *rgb malloc'd, h*w*3 bytes. */
tdm_status tdm_png_read(const char *path, uint8_t **rgb, int *w, int *h);

#endif
