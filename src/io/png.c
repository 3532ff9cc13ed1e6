/* png.c — PNG output (8-bit RGB, tEXt/iTXt chunks) through libpng, written
 * atomically through io/atomic (an exclusive temporary file in the
 * destination folder, renamed over `path` once complete; on any failure
 * `path` is untouched).
 * Also a reader for tests (any PNG converted to 8-bit RGB). This is not an
 * image library: no other formats, no colour management. */
#include "io/png.h"

#include "io/atomic.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Largest image either direction handles: 2 GiB of RGB bytes. */
#define TDM_PNG_MAX_BYTES ((int64_t)1 << 31)

/* libpng error context: the message of the first libpng error. */
typedef struct {
    char msg[256];
} png_err_t;

static void png_err_fn(png_structp png, png_const_charp msg) {
    png_err_t *e = (png_err_t *)png_get_error_ptr(png);
    if (e) snprintf(e->msg, sizeof e->msg, "%s", msg ? msg : "libpng error");
    png_longjmp(png, 1);
}

static void png_warn_fn(png_structp png, png_const_charp msg) {
    (void)png;
    tdm_log(TDM_LOG_DEBUG, "libpng: %s", msg ? msg : "");
}

/* ---- writing --------------------------------------------------------- */

/* Encodes the image into `f`. Everything libpng needs is allocated before
 * setjmp so a longjmp leaves nothing to track. Returns 0, or -1 with the
 * libpng message in e->msg. */
static int png_encode(FILE *f, const uint8_t *rgb, int w, int h, png_textp text, int ntext,
                      png_err_t *e) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, e, png_err_fn,
                                              png_warn_fn);
    if (!png) {
        snprintf(e->msg, sizeof e->msg, "out of memory creating the libpng writer");
        return -1;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(e->msg, sizeof e->msg, "out of memory creating the libpng info");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (ntext > 0) png_set_text(png, info, text, ntext);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, (png_const_bytep)(rgb + (size_t)y * (size_t)w * 3));
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return 0;
}

/* Checks a tEXt/iTXt keyword: 1..79 bytes of printable Latin-1, no leading,
 * trailing or double spaces (PNG spec 11.3.4.2). */
static int png_key_ok(const char *k) {
    size_t n = strlen(k);
    if (n < 1 || n > 79) return 0;
    if (k[0] == ' ' || k[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if (!((c >= 32 && c <= 126) || c >= 161)) return 0;
        if (c == ' ' && k[i + 1] == ' ') return 0;
    }
    return 1;
}

static int is_ascii(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return 0;
    return 1;
}

/* Checks the size and builds the text chunks of an image called `what` in
 * messages: *text (malloc'd, NULL for none) from the key/value pairs. Values
 * that are plain ASCII go into tEXt chunks, others (UTF-8) into uncompressed
 * iTXt chunks, as PIL's PngInfo.add_text does. */
static tdm_status png_prepare(const char *what, const uint8_t *rgb, int w, int h, int ntext,
                              const char *const *text_kv, png_textp *text) {
    *text = NULL;
    if (!rgb) return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: no pixel data", what);
    int64_t bytes;
    if (w <= 0 || h <= 0 || !tdm_mul_ok((int64_t)w, (int64_t)h, &bytes) ||
        !tdm_mul_ok(bytes, 3, &bytes) || bytes > TDM_PNG_MAX_BYTES)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: invalid image size %dx%d", what, w, h);
    if (ntext < 0 || (ntext > 0 && !text_kv))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: invalid text chunk list (%d)", what, ntext);
    if (ntext == 0) return TDM_OK;
    png_textp t = calloc((size_t)ntext, sizeof *t);
    if (!t) return tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", what);
    for (int i = 0; i < ntext; i++) {
        const char *k = text_kv[2 * i], *v = text_kv[2 * i + 1];
        if (!k || !png_key_ok(k)) {
            free(t);
            return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: text chunk key '%s' is not a PNG keyword "
                              "(1-79 printable Latin-1 bytes)", what, k ? k : "(null)");
        }
        if (!v) v = "";
        t[i].key = (png_charp)k;
        t[i].text = (png_charp)v;
        if (is_ascii(v)) {
            t[i].compression = PNG_TEXT_COMPRESSION_NONE;
            t[i].text_length = strlen(v);
        } else {
            t[i].compression = PNG_ITXT_COMPRESSION_NONE;
            t[i].itxt_length = strlen(v);
            t[i].lang = (png_charp)"";
            t[i].lang_key = (png_charp)"";
        }
    }
    *text = t;
    return TDM_OK;
}

/* Writes an 8-bit RGB image atomically; see png.h. */
tdm_status tdm_png_write(const char *path, const uint8_t *rgb, int w, int h,
                         int ntext, const char *const *text_kv) {
    tdm_status st = TDM_OK;
    tdm_atomic_file_t *af = NULL;
    png_textp text = NULL;

    if (!path || !*path) return tdm_errorf(TDM_ERR_INVALID_ARG, "png: empty output path");
    TDM_TRY(png_prepare(path, rgb, w, h, ntext, text_kv, &text));
    TDM_TRY(tdm_atomic_open(&af, path));
    png_err_t e = {{0}};
    if (png_encode(tdm_atomic_stream(af), rgb, w, h, text, ntext, &e) != 0) {
        st = tdm_errorf(ferror(tdm_atomic_stream(af)) ? TDM_ERR_IO : TDM_ERR_INTERNAL,
                        "%s: writing PNG failed: %s", path, e.msg);
        goto fail;
    }
    st = tdm_atomic_commit(af);
    af = NULL;
    if (st != TDM_OK) goto fail;
    free(text);
    return TDM_OK;

fail:
    tdm_atomic_abort(af);
    free(text);
    return st;
}

tdm_status tdm_png_encode(const uint8_t *rgb, int w, int h, int ntext,
                          const char *const *text_kv, uint8_t **out, size_t *len) {
    tdm_status st = TDM_OK;
    png_textp text = NULL;
    char *buf = NULL;
    size_t n = 0;
    *out = NULL;
    *len = 0;
    TDM_TRY(png_prepare("png (memory)", rgb, w, h, ntext, text_kv, &text));
    FILE *f = open_memstream(&buf, &n);
    if (!f) {
        st = tdm_errorf(TDM_ERR_NOMEM, "png (memory): %s", strerror(errno));
        goto fail;
    }
    png_err_t e = {{0}};
    const int bad = png_encode(f, rgb, w, h, text, ntext, &e) != 0;
    if (fclose(f) != 0 || bad) {
        st = tdm_errorf(TDM_ERR_NOMEM, "png (memory): encoding failed: %s",
                        bad ? e.msg : strerror(errno));
        goto fail;
    }
    *out = (uint8_t *)buf;
    *len = n;
    free(text);
    return TDM_OK;
fail:
    free(buf);
    free(text);
    return st;
}

/* ---- reading --------------------------------------------------------- */

typedef struct {
    FILE    *f;
    uint8_t *buf;    /* h*w*3 output, handed to the caller on success */
    uint8_t **rows;
    int      w, h;
    png_err_t e;
} png_rd_t;

/* Decodes r->f into r->buf as 8-bit RGB. State that must survive a longjmp
 * lives in *r, not in locals. Returns 0 or -1 (message in r->e.msg). */
static int png_decode(png_rd_t *r) {
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r->e, png_err_fn,
                                             png_warn_fn);
    if (!png) {
        snprintf(r->e.msg, sizeof r->e.msg, "out of memory creating the libpng reader");
        return -1;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        snprintf(r->e.msg, sizeof r->e.msg, "out of memory creating the libpng info");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    png_init_io(png, r->f);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), ct = png_get_color_type(png, info);
    int64_t bytes;
    if (w == 0 || h == 0 || !tdm_mul_ok((int64_t)w, (int64_t)h, &bytes) ||
        !tdm_mul_ok(bytes, 3, &bytes) || bytes > TDM_PNG_MAX_BYTES) {
        snprintf(r->e.msg, sizeof r->e.msg, "image size %ux%u is too large", (unsigned)w,
                 (unsigned)h);
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    if (depth == 16) png_set_strip_16(png);
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    if (ct & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    (void)png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3) {
        snprintf(r->e.msg, sizeof r->e.msg, "cannot convert colour type %d depth %d to RGB",
                 ct, depth);
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    r->buf = malloc((size_t)bytes);
    r->rows = malloc((size_t)h * sizeof *r->rows);
    if (!r->buf || !r->rows) {
        snprintf(r->e.msg, sizeof r->e.msg, "out of memory for %ux%u pixels", (unsigned)w,
                 (unsigned)h);
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    for (png_uint_32 y = 0; y < h; y++) r->rows[y] = r->buf + (size_t)y * w * 3;
    png_read_image(png, r->rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    r->w = (int)w;
    r->h = (int)h;
    return 0;
}

/* Reads a PNG as 8-bit RGB; see png.h. Any colour type and depth is
 * converted (16-bit stripped, palette/gray expanded, alpha dropped). */
tdm_status tdm_png_read(const char *path, uint8_t **rgb, int *w, int *h) {
    tdm_status st = TDM_OK;
    png_rd_t r;
    memset(&r, 0, sizeof r);
    *rgb = NULL;
    *w = *h = 0;

    r.f = fopen(path, "rb");
    if (!r.f) return tdm_errorf(TDM_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    uint8_t sig[8];
    if (fread(sig, 1, 8, r.f) != 8 || png_sig_cmp(sig, 0, 8) != 0) {
        st = tdm_errorf(TDM_ERR_FORMAT, "%s: not a PNG file (bad signature)", path);
        goto fail;
    }
    rewind(r.f);
    if (png_decode(&r) != 0) {
        st = tdm_errorf(TDM_ERR_FORMAT, "%s: %s", path, r.e.msg);
        goto fail;
    }
    fclose(r.f);
    free(r.rows);
    *rgb = r.buf;
    *w = r.w;
    *h = r.h;
    return TDM_OK;

fail:
    if (r.f) fclose(r.f);
    free(r.rows);
    free(r.buf);
    return st;
}
