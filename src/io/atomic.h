/* atomic.h — every file tandem writes goes through here: a new file is built
 * under a unique temporary name in its destination folder, created
 * exclusively (O_CREAT|O_EXCL|O_NOFOLLOW: a planted file or symlink at that
 * name is never opened or followed), flushed to disk, then renamed over the
 * final name, so a reader sees the old file or the whole new one. Also the
 * appender for record files (one fsync'd record per call, never through a
 * symlink). Not a general file library. */
#ifndef TDM_ATOMIC_H
#define TDM_ATOMIC_H

#include <stdio.h>

#include "core/core.h"

typedef struct tdm_atomic_file tdm_atomic_file_t;

/* Creates the temporary file for `path` (".NAME.tmp-RANDOM" in path's
 * folder, mode 0666 less the umask). OUT: *af; write through
 * tdm_atomic_stream, then _commit or _abort (exactly one of them). Errors
 * name `path` and the folder. */
tdm_status tdm_atomic_open(tdm_atomic_file_t **af, const char *path);
/* The stream to write the contents to (owned by af). */
FILE *tdm_atomic_stream(tdm_atomic_file_t *af);
/* Flushes and fsyncs the temporary file, renames it over the final path and
 * fsyncs the folder; frees af. On failure the temporary file is removed and
 * the final path is untouched. NULL: no-op returning TDM_OK. */
tdm_status tdm_atomic_commit(tdm_atomic_file_t *af);
/* Removes the temporary file and frees af (NULL: no-op). */
void tdm_atomic_abort(tdm_atomic_file_t *af);

/* Writes `len` bytes as the whole new content of `path`, atomically as above. */
tdm_status tdm_atomic_write(const char *path, const void *data, size_t len);

/* Appends `len` bytes to `path` (created 0666 less the umask when missing;
 * a symlink at `path` is refused, not followed) in one write, then fsyncs. */
tdm_status tdm_append_sync(const char *path, const void *data, size_t len);

#endif
