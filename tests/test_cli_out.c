/* test_cli_out.c — what `tandem generate` leaves in --out: files written
 * through exclusive temporary names (planted symlinks are never followed),
 * no silent overwrite, the folder lock, the manifest schema (version, exact
 * 64-bit seeds), the PNG parameters text (no empty negative line, long and
 * non-Latin prompts whole), appended part files, and --resume after a kill
 * (persisted latents, lost manifest lines). Uses the tiny SD pipeline. */
// label: unit
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "test_files.h"
#include "test_cli.h"

#include "tandem.h"

/* A formatted path in one of 16 rotating buffers (enough for one check). */
static char *pathf(const char *fmt, ...) {
    static char bufs[16][1024];
    static int k;
    char *b = bufs[k++ % 16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof bufs[0], fmt, ap);
    va_end(ap);
    return b;
}

/* Number of entries of `dir` whose name contains `part` (hidden ones too). */
static int count_names(const char *dir, const char *part) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, part)) n++;
    closedir(d);
    return n;
}

static int is_symlink_to(const char *link, const char *target) {
    char buf[1024];
    ssize_t n = readlink(link, buf, sizeof buf - 1);
    if (n < 0) return 0;
    buf[n] = 0;
    return !strcmp(buf, target);
}

/* ---- 18: temporary files are exclusive and never follow a link --------------- */

TEST(atomic_writer_never_follows_links) {
    char dir[512], victim[512];
    snprintf(dir, sizeof dir, "%s/aw", tmpdir);
    snprintf(victim, sizeof victim, "%s/victim", tmpdir);
    CHECK(mkdir(dir, 0777) == 0);
    test_spill(victim, "victim");
    /* the final name is a link: the link is replaced, its target untouched */
    char *link = pathf("%s/aw/file.txt", tmpdir);
    CHECK(symlink(victim, link) == 0);
    CHECK(tdm_file_write_atomic(link, "new", 3) == TDM_OK);
    char *v = test_slurp(victim), *n = test_slurp(link);
    CHECK_MSG(v && !strcmp(v, "victim"), "victim now: %s", v ? v : "(gone)");
    CHECK(n && !strcmp(n, "new"));
    struct stat sb;
    CHECK(lstat(link, &sb) == 0 && S_ISREG(sb.st_mode));
    free(v);
    free(n);
    CHECK_MSG(count_names(dir, "tmp") == 0, "temporary file left behind");
    /* appending refuses a link */
    char *rec = pathf("%s/aw/records.jsonl", tmpdir);
    CHECK(symlink(victim, rec) == 0);
    CHECK(tdm_file_append_sync(rec, "x\n", 2) != TDM_OK);
    v = test_slurp(victim);
    CHECK(v && !strcmp(v, "victim"));
    free(v);
    /* no folder: an error naming the folder, nothing created */
    CHECK(tdm_file_write_atomic(pathf("%s/aw/nodir/f", tmpdir), "x", 1) != TDM_OK);
    CHECK(strstr(tdm_last_error(), "nodir") != NULL);
}

TEST(planted_temp_links_untouched) {
    char out[512], victim[512];
    snprintf(out, sizeof out, "%s/planted", tmpdir);
    snprintf(victim, sizeof victim, "%s/victim2", tmpdir);
    CHECK(mkdir(out, 0777) == 0);
    test_spill(victim, "victim");
    const char *names[] = {"manifest.jsonl.tmp", "000000.png.tmp", ".manifest.jsonl.tmp", "000000.png.tmp.XXXXXX"};
    for (int i = 0; i < 4; i++) CHECK(symlink(victim, pathf("%s/%s", out, names[i])) == 0);
    int rc = run("generate --model '%s' --prompt 'a cat' --steps 1 --quiet --out '%s'", PIPE, out);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, errtext);
    char *v = test_slurp(victim);
    CHECK_MSG(v && !strcmp(v, "victim"), "the link's target was written: %s", v ? v : "(gone)");
    free(v);
    for (int i = 0; i < 4; i++)
        CHECK_MSG(is_symlink_to(pathf("%s/%s", out, names[i]), victim), "%s was replaced", names[i]);
    struct stat sb;
    CHECK(lstat(pathf("%s/manifest.jsonl", out), &sb) == 0 && S_ISREG(sb.st_mode));
    CHECK(lstat(pathf("%s/000000.png", out), &sb) == 0 && S_ISREG(sb.st_mode));
    CHECK_MSG(count_names(out, ".tmp-") == 0, "temporary file left behind");
}

int main(void) {
    if (!cli_setup()) return 1;
    (void)same_pixels;
    (void)exists;
    RUN(atomic_writer_never_follows_links);
    RUN(planted_temp_links_untouched);
    if (!cli_teardown()) return 1;
    return test_summary();
}
