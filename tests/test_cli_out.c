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
#include <signal.h>
#include <sys/file.h>
#include <time.h>
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

/* ---- helpers: files of an output folder ----------------------------------------- */

static int same_file(const char *a, const char *b) {
    char *x = test_slurp(a), *y = test_slurp(b);
    int same = x && y && !strcmp(x, y);
    free(x);
    free(y);
    return same;
}

static int count_lines(const char *path) {
    char *t = test_slurp(path);
    int n = 0;
    for (char *p = t; p && *p; p++) n += *p == '\n';
    free(t);
    return t ? n : -1;
}

/* The text of the tEXt or iTXt chunk `key` of a PNG (malloc'd), or NULL;
 * *itxt = 1 when it came from an iTXt chunk. */
static char *png_text(const char *path, const char *key, int *itxt) {
    long n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    char *out = NULL;
    for (long pos = 8; !out && pos + 12 <= n;) {
        unsigned long len = (unsigned long)b[pos] << 24 | b[pos + 1] << 16 | b[pos + 2] << 8 | b[pos + 3];
        const char *type = (const char *)b + pos + 4;
        const char *d = (const char *)b + pos + 8, *e = d + len;
        if (pos + 12 + (long)len > n) break;
        size_t kl = strnlen(d, len);
        if (kl < len && !strcmp(d, key)) {
            const char *t = NULL;
            if (!memcmp(type, "tEXt", 4)) {
                t = d + kl + 1;
                *itxt = 0;
            } else if (!memcmp(type, "iTXt", 4) && d + kl + 3 < e && d[kl + 1] == 0) {
                const char *q = d + kl + 3;                       /* language tag */
                q += strnlen(q, (size_t)(e - q)) + 1;              /* translated keyword */
                if (q < e) q += strnlen(q, (size_t)(e - q)) + 1;
                if (q <= e) t = q;
                *itxt = 1;
            }
            if (t && (out = malloc((size_t)(e - t) + 1))) {
                memcpy(out, t, (size_t)(e - t));
                out[e - t] = 0;
            }
        }
        pos += 12 + (long)len;
    }
    free(b);
    return out;
}

/* The value of "key": in the line of a JSON text, as its raw token. */
static int json_token(const char *line, const char *key, char *tok, size_t cap) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = line ? strstr(line, k) : NULL;
    if (!p) return 0;
    p += strlen(k);
    size_t n = strcspn(p, ",}");
    if (n >= cap) return 0;
    memcpy(tok, p, n);
    tok[n] = 0;
    return 1;
}

/* ---- 13: no silent overwrite ---------------------------------------------------- */

TEST(refuses_to_overwrite) {
    char out[512], keep[512], man[512];
    snprintf(out, sizeof out, "%s/ow", tmpdir);
    snprintf(keep, sizeof keep, "%s/ow-keep.png", tmpdir);
    snprintf(man, sizeof man, "%s/ow/manifest.jsonl", tmpdir);
    int rc = run("generate --model '%s' --prompt a --prompt b --steps 1 --seed 1 --quiet --out '%s'", PIPE, out);
    CHECK_MSG(rc == 0, "%s", errtext);
    CHECK(system(pathf("cp '%s/000000.png' '%s' && cp '%s' '%s.keep'", out, keep, man, man)) == 0);
    expect_error(run("generate --model '%s' --prompt c --steps 1 --seed 2 --quiet --out '%s'", PIPE, out),
                 "000000.png");
    CHECK_MSG(strstr(errtext, "--overwrite") && strstr(errtext, "--resume") && strstr(errtext, out), "%s", errtext);
    CHECK_MSG(same_pixels(keep, pathf("%s/000000.png", out)), "the earlier image was replaced");
    CHECK_MSG(same_file(man, pathf("%s.keep", man)), "the earlier manifest was replaced");
    /* the manifest alone counts too */
    CHECK(system(pathf("rm -f '%s'/0*.png", out)) == 0);
    expect_error(run("generate --model '%s' --prompt c --steps 1 --quiet --out '%s'", PIPE, out), "manifest.jsonl");
    expect_error(run("generate --model '%s' --prompt c --steps 1 --overwrite --resume --out '%s'", PIPE, out),
                 "--overwrite");
    /* --overwrite: that job's files go, the new job's are there */
    CHECK(system(pathf("cp '%s' '%s/000001.png' && touch '%s/notes.txt'", keep, out, out)) == 0);
    rc = run("generate --model '%s' --prompt c --steps 1 --seed 2 --overwrite --quiet --out '%s'", PIPE, out);
    CHECK_MSG(rc == 0, "%s", errtext);
    CHECK(exists("%s/000000.png", out) && !exists("%s/000001.png", out) && exists("%s/notes.txt", out));
    CHECK_MSG(count_lines(man) == 1, "%d lines", count_lines(man));
    char *m = test_slurp(man);
    CHECK(m && strstr(m, "\"prompt\":\"c\"") && strstr(m, "\"seed\":2,"));
    free(m);
    /* other files alone are no reason to refuse */
    CHECK(mkdir(pathf("%s/other", tmpdir), 0777) == 0);
    test_spill(pathf("%s/other/readme.txt", tmpdir), "x");
    rc = run("generate --model '%s' --prompt c --steps 1 --quiet --out '%s/other'", PIPE, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
}

/* ---- 19: one job per output folder ---------------------------------------------- */

TEST(locked_folder_refused) {
    char out[512];
    snprintf(out, sizeof out, "%s/locked", tmpdir);
    CHECK(mkdir(out, 0777) == 0);
    int fd = open(pathf("%s/.tandem.lock", out), O_RDWR | O_CREAT, 0666);
    CHECK(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0);
    expect_error(run("generate --model '%s' --prompt a --steps 1 --quiet --out '%s'", PIPE, out), out);
    CHECK_MSG(strstr(errtext, "another tandem job"), "%s", errtext);
    CHECK(!exists("%s/000000.png", out) && !exists("%s/manifest.jsonl", out));
    expect_error(run("generate --model '%s' --prompt a --steps 1 --resume --quiet --out '%s'", PIPE, out), out);
    close(fd);   /* released: the folder is free again */
    int rc = run("generate --model '%s' --prompt a --steps 1 --quiet --out '%s'", PIPE, out);
    CHECK_MSG(rc == 0, "%s", errtext);
    CHECK(exists("%s/000000.png", out));
    /* a failed run into a new folder leaves no trace (no lock file either) */
    expect_error(run("generate --model '%s' --prompt a --steps 1 --width 60 --out '%s/new'", PIPE, tmpdir), "--width");
    CHECK(!exists("%s/new", tmpdir));
}

/* ---- 15, 23: the parameters text ----------------------------------------------- */

TEST(parameters_text) {
    char out[512];
    snprintf(out, sizeof out, "%s/par", tmpdir);
    int rc = run("generate --model '%s' --prompt 'a cat' --steps 1 --seed 4 --quiet --out '%s'", PIPE, out);
    CHECK_MSG(rc == 0, "%s", errtext);
    int itxt = -1;
    char *t = png_text(pathf("%s/000000.png", out), "parameters", &itxt);
    CHECK_MSG(t && !strncmp(t, "a cat\nSteps: 1, ", 16), "parameters: %s", t ? t : "(none)");
    CHECK_MSG(t && !strstr(t, "Negative prompt"), "an empty negative prompt line: %s", t ? t : "");
    CHECK(itxt == 0);
    free(t);
    rc = run("generate --model '%s' --prompt 'a cat' --negative-prompt blurry --steps 1 --quiet --out '%s/parn'",
             PIPE, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    t = png_text(pathf("%s/parn/000000.png", tmpdir), "parameters", &itxt);
    CHECK_MSG(t && !strncmp(t, "a cat\nNegative prompt: blurry\nSteps: 1, ", 38), "parameters: %s", t ? t : "");
    free(t);
}

/* A ~20 kB prompt of Latin and non-Latin text is stored whole and valid in
 * the PNG (iTXt, UTF-8), the manifest and the latents metadata. */
TEST(long_prompt_whole) {
    static char prompt[24000];
    size_t n = 0;
    while (n < 20000) n += (size_t)snprintf(prompt + n, sizeof prompt - n, "a cat %zu 猫 ", n);
    prompt[--n] = 0;   /* no trailing space */
    char pf[512];
    snprintf(pf, sizeof pf, "%s/long-prompt.txt", tmpdir);
    test_spill(pf, prompt);
    int rc = run("generate --model '%s' --prompts-file '%s' --steps 1 --seed 3 --quiet --out '%s/long'", PIPE, pf,
                 tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    int itxt = 0;
    char *t = png_text(pathf("%s/long/000000.png", tmpdir), "parameters", &itxt);
    CHECK_MSG(t && !strncmp(t, prompt, n) && t[n] == '\n', "the PNG text is cut (%zu bytes)", t ? strlen(t) : 0);
    CHECK_MSG(t && strstr(t + n, "\nSteps: 1, ") && strstr(t + n, "Seed: 3,"), "no settings line");
    CHECK(itxt == 1);
    free(t);
    /* the manifest line holds the whole prompt */
    char *m = test_slurp(pathf("%s/long/manifest.jsonl", tmpdir));
    CHECK_MSG(m && strstr(m, prompt), "the manifest prompt is cut");
    free(m);
    /* latents: the metadata is valid JSON with the whole text */
    rc = run("generate --model '%s' --prompts-file '%s' --steps 1 --seed 3 --output-type latent --quiet "
             "--out '%s/longl'", PIPE, pf, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    rc = run("decode --model '%s' --latents '%s/longl/000000.safetensors' --quiet --out '%s/longl.png'", PIPE,
             tmpdir, tmpdir);
    CHECK_MSG(rc == 0, "the latents file does not read back: %s", errtext);
    t = png_text(pathf("%s/longl.png", tmpdir), "parameters", &itxt);
    CHECK_MSG(t && !strncmp(t, prompt, n) && strstr(t + n, "Seed: 3,"), "the latents parameters are cut");
    free(t);
}

/* ---- 24, 2: exact seeds, the manifest schema ----------------------------------- */

TEST(seeds_exact) {
    int rc = run("generate --model '%s' --prompt a --steps 1 --seed 18446744073709551615 --quiet --out '%s/s1'",
                 PIPE, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    char *m = test_slurp(pathf("%s/s1/manifest.jsonl", tmpdir));
    char tok[64] = "";
    CHECK_MSG(json_token(m, "seed", tok, sizeof tok) && !strcmp(tok, "18446744073709551615"), "seed %s", tok);
    free(m);
    int itxt;
    char *t = png_text(pathf("%s/s1/000000.png", tmpdir), "parameters", &itxt);
    CHECK(t && strstr(t, "Seed: 18446744073709551615,"));
    free(t);
    expect_error(run("generate --model '%s' --prompt a --num-images-per-prompt 2 --steps 1 "
                     "--seed 18446744073709551615 --out '%s/s2'", PIPE, tmpdir), "--seed 18446744073709551615");
    CHECK_MSG(strstr(errtext, "2 images"), "%s", errtext);
    CHECK(!exists("%s/s2", tmpdir));
    expect_error(run("generate --model '%s' --prompt a --prompt b --prompt c --steps 1 "
                     "--seed 18446744073709551614 --out '%s/s2'", PIPE, tmpdir), "3 images");
    rc = run("generate --model '%s' --prompt a --prompt b --steps 1 --seed 9007199254740993 --output-type latent "
             "--quiet --out '%s/s3'", PIPE, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    m = test_slurp(pathf("%s/s3/manifest.jsonl", tmpdir));
    CHECK_MSG(m && strstr(m, "\"seed\":9007199254740993,") && strstr(m, "\"seed\":9007199254740994,"), "%s", m);
    free(m);
    t = test_slurp(pathf("%s/s3/000001.safetensors", tmpdir));
    CHECK(t && strstr(t + 8, "Seed: 9007199254740994,"));   /* after the header length */
    free(t);
}

TEST(manifest_schema) {
    int rc = run("generate --model '%s' --prompt 'a \"quoted\" cat' --negative-prompt dull --steps 2 --seed 7 "
                 "--guidance 5 --quiet --out '%s/schema'", PIPE, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    char *m = test_slurp(pathf("%s/schema/manifest.jsonl", tmpdir));
    const char *want = "{\"version\":1,\"index\":0,\"file\":\"000000.png\",\"prompt\":\"a \\\"quoted\\\" cat\","
                       "\"negative_prompt\":\"dull\",\"seed\":7,\"steps\":2,\"guidance\":5,\"width\":64,"
                       "\"height\":64,\"scheduler\":\"PNDMScheduler\",\"model\":";
    CHECK_MSG(m && !strncmp(m, want, strlen(want)), "line: %s", m ? m : "(none)");
    CHECK(m && strstr(m, "\"output_type\":\"png\",\"seconds\":") && strstr(m, ",\"rank\":0}\n"));
    free(m);
}

/* ---- 20, 21, 22: part files, lost lines, kill and --resume ----------------------- */

/* Starts `tandem <args>` in the background (output discarded); its pid. */
static pid_t spawn(const char *fmt, ...) {
    char args[4096], cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "exec \"%s\" %s > /dev/null 2>&1", TDM_TANDEM_BIN, args);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Waits until `path` exists with at least `lines` newlines (0: exists). */
static int wait_for(const char *path, int lines, double timeout) {
    for (double t0 = now_s(); now_s() - t0 < timeout; usleep(2000))
        if (exists("%s", path) && (lines == 0 || count_lines(path) >= lines)) return 1;
    return 0;
}

/* manifest.jsonl without the per-run fields (seconds, rank). */
static char *manifest_norm(const char *dir) {
    char *m = test_slurp(pathf("%s/manifest.jsonl", dir));
    if (!m) return NULL;
    char *w = m;
    for (char *r = m; *r;) {
        if (!strncmp(r, ",\"seconds\":", 11) || !strncmp(r, ",\"rank\":", 8)) {
            r++;
            while (*r && *r != ',' && *r != '}') r++;
            continue;
        }
        *w++ = *r++;
    }
    *w = 0;
    return m;
}

static const char *KJOB = "--prompt 'a red fox' --prompt 'a lake' --num-images-per-prompt 4 --steps 60 --seed 21 --quiet";

/* The latents of a job killed while denoising are kept; --resume decodes
 * them without denoising again and the images equal an uninterrupted run. */
TEST(killed_job_resumes) {
    char ref[512], kd[512], kd2[512];
    snprintf(ref, sizeof ref, "%s/k-ref", tmpdir);
    snprintf(kd, sizeof kd, "%s/k-run", tmpdir);
    snprintf(kd2, sizeof kd2, "%s/k-run2", tmpdir);
    int rc = run("generate --model '%s' %s --out '%s'", PIPE, KJOB, ref);
    CHECK_MSG(rc == 0, "%s", errtext);
    pid_t pid = spawn("generate --model '%s' %s --out '%s'", PIPE, KJOB, kd);
    CHECK_MSG(wait_for(pathf("%s/.tandem-latents/000001.safetensors", kd), 0, 300), "no latent persisted");
    /* a second job into the busy folder */
    rc = run("generate --model '%s' --prompt x --steps 1 --out '%s'", PIPE, kd);
    int st = 0;
    if (waitpid(pid, &st, WNOHANG) == 0) {
        expect_error(rc, "another tandem job");
        CHECK(kill(pid, SIGKILL) == 0);
        CHECK(waitpid(pid, &st, 0) == pid);
        CHECK_MSG(!exists("%s/000007.png", kd), "the job ended before it was killed");
    } else {
        CHECK_MSG(0, "the job ended before it was killed");
    }
    int hidden = count_names(pathf("%s/.tandem-latents", kd), ".safetensors");
    CHECK_MSG(hidden >= 2, "%d latents kept", hidden);
    /* a copy whose first kept latent is replaced by zeros: --resume must
     * decode the file, not denoise again */
    CHECK(system(pathf("cp -a '%s' '%s'", kd, kd2)) == 0);
    const char *lat = pathf("%s/.tandem-latents/000000.safetensors", kd2);
    FILE *f = fopen(lat, "r+b");
    unsigned char le[8] = {0};
    CHECK(f && fread(le, 1, 8, f) == 8);
    long hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | le[i];
    if (f) {
        fseek(f, 0, SEEK_END);
        long end = ftell(f);
        fseek(f, 8 + hl, SEEK_SET);
        for (long k = 8 + hl; k < end; k++) fputc(0, f);
        fclose(f);
    }
    rc = run("generate --model '%s' %s --resume --out '%s'", PIPE, KJOB, kd);
    CHECK_MSG(rc == 0, "%s", errtext);
    for (int i = 0; i < 8; i++)
        CHECK_MSG(same_pixels(pathf("%s/%06d.png", ref, i), pathf("%s/%06d.png", kd, i)), "image %d differs", i);
    char *a = manifest_norm(ref), *b = manifest_norm(kd);
    CHECK_MSG(a && b && !strcmp(a, b), "manifests differ:\n%s---\n%s", a, b);
    free(a);
    free(b);
    CHECK(!exists("%s/.tandem-latents", kd) && !exists("%s/manifest.rank0.jsonl", kd));
    rc = run("generate --model '%s' %s --resume --out '%s'", PIPE, KJOB, kd2);
    CHECK_MSG(rc == 0, "%s", errtext);
    CHECK_MSG(!same_pixels(pathf("%s/000000.png", ref), pathf("%s/000000.png", kd2)),
              "image 0 was denoised again instead of decoded from its kept latent");
    for (int i = 1; i < 8; i++)
        CHECK_MSG(same_pixels(pathf("%s/%06d.png", ref, i), pathf("%s/%06d.png", kd2, i)), "image %d differs", i);
}

/* One line appended per image to the part file (the same file grows: no
 * rewrite), manifest.jsonl written once at the end. */
TEST(manifest_lines_appended) {
    char out[512];
    snprintf(out, sizeof out, "%s/app", tmpdir);
    const char *part = pathf("%s/app/manifest.rank0.jsonl", tmpdir);
    char partp[1024];
    snprintf(partp, sizeof partp, "%s", part);
    pid_t pid = spawn("generate --model '%s' %s --output-type latent --out '%s'", PIPE, KJOB, out);
    struct stat s1 = {0}, s2 = {0};
    CHECK_MSG(wait_for(partp, 1, 300) && stat(partp, &s1) == 0, "no part file");
    CHECK_MSG(wait_for(partp, 3, 300) && stat(partp, &s2) == 0, "part file did not grow");
    CHECK_MSG(s1.st_ino == s2.st_ino, "the part file was rewritten, not appended to");
    CHECK_MSG(!exists("%s/manifest.jsonl", out) || exists("%s/000007.safetensors", out),
              "manifest.jsonl written before the end");
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(count_lines(pathf("%s/manifest.jsonl", out)) == 8);
    CHECK(!exists("%s", partp));
}

/* An output whose manifest line was lost is made again and gets its line;
 * a part file cut inside a line does not swallow the next one. */
TEST(resume_restores_lost_lines) {
    char out[512], keep[512];
    snprintf(out, sizeof out, "%s/lost", tmpdir);
    snprintf(keep, sizeof keep, "%s/lost-keep.png", tmpdir);
    int rc = run("generate --model '%s' --prompt a --prompt b --prompt c --steps 2 --seed 5 --quiet --out '%s'",
                 PIPE, out);
    CHECK_MSG(rc == 0, "%s", errtext);
    char *ref = manifest_norm(out);
    CHECK(system(pathf("cp '%s/000001.png' '%s'", out, keep)) == 0);
    CHECK(system(pathf("cd '%s' && grep -v '\"index\":[12],' manifest.jsonl > m && mv m manifest.jsonl && "
                       "printf '{\"version\":1,\"index\":2,\"fi' > manifest.rank0.jsonl && "
                       "echo x > .000002.png.tmp-0123456789ab && mkdir .tandem-latents && echo x > .tandem-latents/.000001.safetensors.tmp-00000000000a",
                       out)) == 0);
    CHECK(count_lines(pathf("%s/manifest.jsonl", out)) == 1);
    struct stat before, after;
    CHECK(stat(pathf("%s/000000.png", out), &before) == 0);
    rc = run("generate --model '%s' --prompt a --prompt b --prompt c --steps 2 --seed 5 --resume --quiet --out '%s'",
             PIPE, out);
    CHECK_MSG(rc == 0, "%s", errtext);
    char *got = manifest_norm(out);
    CHECK_MSG(ref && got && !strcmp(ref, got), "manifest:\n%s---\nwanted:\n%s", got, ref);
    free(ref);
    free(got);
    CHECK(same_pixels(keep, pathf("%s/000001.png", out)));
    CHECK_MSG(count_names(out, ".tmp-") == 0, "a killed run's temporary file is left");
    CHECK(!exists("%s/.tandem-latents", out));
    CHECK(stat(pathf("%s/000000.png", out), &after) == 0);
    CHECK_MSG(before.st_mtim.tv_sec == after.st_mtim.tv_sec && before.st_mtim.tv_nsec == after.st_mtim.tv_nsec,
              "an image with its line was made again");
}

int main(void) {
    if (!cli_setup()) return 1;
    RUN(atomic_writer_never_follows_links);
    RUN(planted_temp_links_untouched);
    RUN(refuses_to_overwrite);
    RUN(locked_folder_refused);
    RUN(parameters_text);
    RUN(long_prompt_whole);
    RUN(seeds_exact);
    RUN(manifest_schema);
    RUN(killed_job_resumes);
    RUN(manifest_lines_appended);
    RUN(resume_restores_lost_lines);
    if (!cli_teardown()) return 1;
    return test_summary();
}
