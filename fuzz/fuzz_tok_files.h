/* fuzz_tok_files.h — shared by the tokenizer fuzz targets: the input is cut
 * at 0xFF bytes (never in UTF-8 text, so JSON seeds stay readable) into
 * parts; part k becomes file names[k] of one scratch folder (a missing or
 * empty part: no such file), the part after the files is the prompt. */
#ifndef TDM_FUZZ_TOK_FILES_H
#define TDM_FUZZ_TOK_FILES_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_dir[64];

/* The scratch folder, made once per process (in /dev/shm when there). */
static const char *fuzz_tok_dir(void) {
    if (fuzz_dir[0]) return fuzz_dir;
    snprintf(fuzz_dir, sizeof fuzz_dir, "/dev/shm/tdm_fuzz_tok_XXXXXX");
    if (!mkdtemp(fuzz_dir)) {
        snprintf(fuzz_dir, sizeof fuzz_dir, "/tmp/tdm_fuzz_tok_XXXXXX");
        if (!mkdtemp(fuzz_dir)) abort();
    }
    return fuzz_dir;
}

/* Writes the parts of data[0..size) to the folder as names[0..nnames) and
 * copies the rest (after the last file part) as a NUL-terminated prompt
 * into *prompt (malloc'd; embedded NULs end it early, as a C string). */
static void fuzz_tok_write(const uint8_t *data, size_t size, const char *const *names, int nnames,
                           char **prompt) {
    const char *dir = fuzz_tok_dir();
    size_t p = 0;
    for (int k = 0; k < nnames; k++) {
        size_t e = p;
        while (e < size && data[e] != 0xFF) e++;
        char path[128];
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        unlink(path);
        if (e > p) {
            FILE *f = fopen(path, "wb");
            if (!f) abort();
            fwrite(data + p, 1, e - p, f);
            fclose(f);
        }
        p = e < size ? e + 1 : size;
    }
    *prompt = malloc(size - p + 1);
    if (!*prompt) abort();
    memcpy(*prompt, data + p, size - p);
    (*prompt)[size - p] = 0;
}

#endif
