/* test_launch_ulysses.c — `tandem launch ... generate --parallel ulysses=U`
 * on the tiny FLUX.1-dev fixture: Ulysses 2 and 3 (3 does not divide the 2
 * heads: the padding path; uneven text and image shares) against a
 * one-process run of the same job (latents within relative error 1e-6 and
 * pixels within 1, not byte-identical: see close_latents), with the text
 * encoders run once per image group; DP × Ulysses (-n 4, ulysses=2) makes the same set of images
 * as a data-parallel job, each written once; ulysses on a Stable Diffusion
 * pipeline and a degree that does not divide the ranks each fail with one
 * error line naming --parallel. Skipped (exit 77) without MPI or mpirun. */
// label: dist
#define _GNU_SOURCE
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <unistd.h>

#include "test.h"
#include "test_files.h"
#include "tandem.h"

static const char *PIPE = TDM_FIXTURES "/flux_pipelines/flux-dev-tiny";
static char tmpdir[256];
static char errtext[16384];

static int sh(const char *fmt, ...) {
    char cmd[8192], errf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(errf, sizeof errf, "%s/stderr.txt", tmpdir);
    return sh_capture(cmd, errf, errtext, sizeof errtext);
}

static const char *JOB = "--prompt 'a red fox' --prompt 'a lighthouse' --num-images-per-prompt 2 "
                         "--steps 2 --seed 5 --width 64 --height 64 --max-sequence-length 32 --quiet";
enum { NIMG = 4 };

static long cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    return sysconf(_SC_NPROCESSORS_ONLN);
}

static const char *over(int n) { return n > cpus() ? "--oversubscribe" : ""; }

/* generate (n == 0: one process; else launch -n n) of JOB plus `extra` on
 * `model` into tmpdir/tag; with TANDEM_LOG=info when `log`. Returns the
 * exit code. */
static int run_on(const char *model, int n, const char *extra, const char *tag, int log) {
    const char *env = log ? "TANDEM_LOG=info " : "";
    if (n == 0)
        return sh("%s'%s' generate --model '%s' %s %s --out '%s/%s'", env, TDM_TANDEM_BIN, model, JOB, extra,
                  tmpdir, tag);
    return sh("%s'%s' launch %s -n %d -- generate --model '%s' %s %s --out '%s/%s'", env, TDM_TANDEM_BIN,
              over(n), n, model, JOB, extra, tmpdir, tag);
}

static int run(int n, const char *extra, const char *tag, int log) { return run_on(PIPE, n, extra, tag, log); }

/* 1 when both files exist and hold the same bytes. */
static int same_bytes(const char *a, const char *b) {
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    return system(cmd) == 0;
}

/* The manifest lines without the per-run fields (seconds, rank). */
static char *manifest_norm(const char *tag) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "sed -e 's/\"seconds\":[0-9.e+-]*,//' -e 's/\"rank\":[0-9]*//' '%s/%s/manifest.jsonl'",
             tmpdir, tag);
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    static char buf[2][65536];
    static int k;
    char *out = buf[k++ & 1];
    size_t n = fread(out, 1, sizeof buf[0] - 1, p);
    out[n] = 0;
    pclose(p);
    return out;
}

/* tmpdir/b holds NIMG files (ext), one manifest line each, nothing else of
 * the job's, and the same manifest lines as tmpdir/a. */
static void same_set(const char *a, const char *b, const char *ext) {
    for (int i = 0; i < NIMG; i++) CHECK_MSG(exists("%s/%s/%06d.%s", tmpdir, b, i, ext), "%s: %06d.%s missing", b, i, ext);
    CHECK_MSG(!exists("%s/%s/%06d.%s", tmpdir, b, NIMG, ext), "%s: an extra image", b);
    CHECK_MSG(!exists("%s/%s/manifest.rank1.jsonl", tmpdir, b), "%s: part files left", b);
    CHECK_MSG(!exists("%s/%s/.tandem-latents", tmpdir, b), "%s: hidden latents left", b);
    const char *ma = manifest_norm(a), *mb = manifest_norm(b);
    int lines = 0;
    for (const char *p = mb ? mb : ""; *p; p++) lines += *p == '\n';
    CHECK_MSG(ma && mb && !strcmp(ma, mb), "%s vs %s: manifests differ:\n%s\n---\n%s", a, b, ma, mb);
    CHECK_MSG(lines == NIMG, "%s: %d manifest lines for %d images", b, lines, NIMG);
}

/* The largest difference of one 8-bit channel between the PNGs of image
 * i of tmpdir/a and tmpdir/b (256 when either cannot be read or the sizes
 * differ); *npix: the pixels that differ; *identical: 1 when the files are
 * byte for byte the same. */
static int png_max_diff(const char *a, const char *b, int i, int *npix, int *identical) {
    char pa[1024], pb[1024];
    uint8_t *x = NULL, *y = NULL;
    int wa, ha, wb, hb, worst = 256;
    snprintf(pa, sizeof pa, "%s/%s/%06d.png", tmpdir, a, i);
    snprintf(pb, sizeof pb, "%s/%s/%06d.png", tmpdir, b, i);
    *identical = same_bytes(pa, pb);
    *npix = 0;
    if (tdm_png_read(pa, &x, &wa, &ha) == TDM_OK && tdm_png_read(pb, &y, &wb, &hb) == TDM_OK && wa == wb &&
        ha == hb) {
        worst = 0;
        for (int64_t k = 0; k < (int64_t)wa * ha; k++) {
            int d = 0;
            for (int c = 0; c < 3; c++) d = abs(x[3 * k + c] - y[3 * k + c]) > d ? abs(x[3 * k + c] - y[3 * k + c]) : d;
            *npix += d > 0;
            worst = d > worst ? d : worst;
        }
    }
    free(x);
    free(y);
    CHECK_MSG(worst == 256 || (*npix == 0) == same_pixels(pa, pb), "%s vs %s: pixel counts disagree", pa, pb);
    return worst;
}

/* The PNGs of tmpdir/b against tmpdir/a's: every channel within 1 of 255
 * (the latents within 1e-6, see close_latents, decode to pixels that can
 * round the other way), and the same set. The measured differences are
 * printed. */
static void close_pngs(const char *a, const char *b) {
    int worst = 0, npix = 0, nident = 0;
    for (int i = 0; i < NIMG; i++) {
        int n, ident;
        const int d = png_max_diff(a, b, i, &n, &ident);
        CHECK_MSG(d <= 1, "%s vs %s: %06d.png: a channel differs by %d (> 1) or is missing", a, b, i, d);
        worst = d > worst ? d : worst;
        npix += n;
        nident += ident;
    }
    printf("  %s vs %s: PNGs: max channel difference %d, %d pixels differ, %d of %d files byte-identical\n", a,
           b, worst, npix, nident, NIMG);
    same_set(a, b, "png");
}

/* max |x - y| / max |x| over the latents of image i of tmpdir/a and
 * tmpdir/b (INFINITY when either cannot be read or the shapes differ);
 * *identical: 1 when the files are byte for byte the same. */
static double latent_rel_err(tdm_pipeline_t *pipe, const char *a, const char *b, int i, int *identical) {
    char pa[1024], pb[1024];
    float *x = NULL, *y = NULL;
    int wa = 0, ha = 0, wb = 0, hb = 0;
    snprintf(pa, sizeof pa, "%s/%s/%06d.safetensors", tmpdir, a, i);
    snprintf(pb, sizeof pb, "%s/%s/%06d.safetensors", tmpdir, b, i);
    *identical = same_bytes(pa, pb);
    double err = INFINITY;
    if (tdm_latents_load(pipe, pa, &wa, &ha, &x, NULL) == TDM_OK &&
        tdm_latents_load(pipe, pb, &wb, &hb, &y, NULL) == TDM_OK && wa == wb && ha == hb) {
        int64_t shape[4] = {1, 1, 1, 1}, n = 1;
        int nd = 0;
        if (tdm_pipeline_latent_shape(pipe, wa, ha, shape, &nd) != TDM_OK) nd = 0;
        for (int d = 0; d < nd; d++) n *= shape[d];
        double dmax = 0, xmax = 0;
        for (int64_t k = 0; nd > 0 && k < n; k++) {
            dmax = fmax(dmax, fabs((double)x[k] - y[k]));
            xmax = fmax(xmax, fabs((double)x[k]));
        }
        err = xmax > 0 ? dmax / xmax : dmax;
    }
    free(x);
    free(y);
    return err;
}

/* The latents of tmpdir/b against tmpdir/a's, within relative error 1e-6
 * (max |a - b| / max |a|), not byte for byte. Why: on the CPU the GEMMs go
 * to OpenBLAS, which picks its kernel by the shape of the call, row count
 * included (measured by test_flux_cp: below about 18 rows the same row can
 * come out 1-2 ulp apart when the call's row count changes), and a Ulysses
 * rank multiplies its share of the text and image rows, not all of them.
 * On the tiny fixture at this size every call is a few rows tall, so
 * Ulysses 2 and 3 both land about 1e-7 away from one process (the
 * 384-wide model of test_flux_cp is bit-identical). Row-count-independent
 * GEMMs for small calls on the CPU are issue 14 item 8, still open; then
 * this check becomes byte identity. The measured error is printed. */
static void close_latents(const char *a, const char *b) {
    tdm_pipeline_t *pipe = NULL;
    CHECK_MSG(tdm_pipeline_open(&pipe, PIPE, NULL) == TDM_OK, "open %s: %s", PIPE, tdm_last_error());
    if (!pipe) return;
    double worst = 0;
    int nident = 0;
    for (int i = 0; i < NIMG; i++) {
        int ident;
        const double e = latent_rel_err(pipe, a, b, i, &ident);
        CHECK_MSG(e <= 1e-6, "%s vs %s: %06d.safetensors: relative error %.3g > 1e-6", a, b, i, e);
        worst = fmax(worst, e);
        nident += ident;
    }
    printf("  %s vs %s: latents max relative error %.3g, %d of %d files byte-identical\n", a, b, worst,
           nident, NIMG);
    tdm_pipeline_close(pipe);
    same_set(a, b, "safetensors");
}

/* How many times `needle` occurs in the captured stderr. */
static int count_in_err(const char *needle) {
    int n = 0;
    for (const char *p = errtext; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

TEST(ulysses2_and_3_against_one_process) {
    int rc = run(0, "", "one", 0);
    CHECK_MSG(rc == 0, "one process: rc %d: %s", rc, errtext);
    rc = run(0, "--output-type latent", "one-lat", 0);
    CHECK_MSG(rc == 0, "one process, latents: rc %d: %s", rc, errtext);
    for (int u = 2; u <= 3; u++) {
        char par[64], tag[32], tagl[32];
        snprintf(par, sizeof par, "--parallel ulysses=%d", u);
        snprintf(tag, sizeof tag, "u%d", u);
        snprintf(tagl, sizeof tagl, "u%d-lat", u);
        rc = run(u, par, tag, 1);
        CHECK_MSG(rc == 0, "-n %d ulysses=%d: rc %d: %s", u, u, rc, errtext);
        char want[96];
        snprintf(want, sizeof want, "encoded 2 prompt(s) for the %d ranks of its image", u);
        CHECK_MSG(count_in_err(want) == 1 && count_in_err("rank 0 encoded") == 1,
                  "want one encode, by rank 0: %s", errtext);
        close_pngs("one", tag);
        strcat(par, " --output-type latent");
        rc = run(u, par, tagl, 0);
        CHECK_MSG(rc == 0, "-n %d ulysses=%d, latents: rc %d: %s", u, u, rc, errtext);
        close_latents("one-lat", tagl);
    }
}

/* -n 4 with ulysses=2: two image groups (DP 2) split the job as a 2-rank
 * data-parallel job does; each image is written once. */
TEST(dp2_ulysses2_same_set_as_dp) {
    int rc = run(2, "", "dp2", 0);
    CHECK_MSG(rc == 0, "-n 2: rc %d: %s", rc, errtext);
    rc = run(4, "--parallel ulysses=2", "dp2u2", 1);
    CHECK_MSG(rc == 0, "-n 4 ulysses=2: rc %d: %s", rc, errtext);
    close_pngs("dp2", "dp2u2");
    CHECK_MSG(count_in_err("encoded 2 prompt(s) for the 2 ranks of its image") == 2 &&
                  count_in_err("rank 0 encoded") == 1 && count_in_err("rank 2 encoded") == 1,
              "want one encode per group, by ranks 0 and 2: %s", errtext);
}

/* A failure as the user sees it: nonzero exit, exactly one stderr line,
 * starting "tandem: error: " and holding --parallel and `needle`. */
static void one_error_line(int rc, const char *needle) {
    CHECK_MSG(rc != 0, "exit code 0, stderr: %s", errtext);
    CHECK_MSG(!strncmp(errtext, "tandem: error: ", 15), "stderr: %s", errtext);
    CHECK_MSG(strstr(errtext, "--parallel") && strstr(errtext, needle), "wanted \"%s\" in: %s", needle,
              errtext);
    int lines = 0;
    for (const char *p = errtext; *p; p++) lines += *p == '\n';
    CHECK_MSG(lines == 1, "%d lines: %s", lines, errtext);
}

TEST(errors_name_the_flag) {
    one_error_line(run_on(TDM_FIXTURES "/pipelines/sd15-tiny", 2, "--parallel ulysses=2", "e1", 0),
                   "for transformer pipelines (FLUX)");
    one_error_line(run(3, "--parallel ulysses=2", "e2", 0), "does not divide the world size 3");
    one_error_line(run(2, "--parallel ulysses=2,ring=1,tp=2", "e3", 0), "does not divide the world size 2");
    one_error_line(run(4, "--parallel ulysses=2,ring=2", "e4", 0), "not implemented yet");
    for (int k = 1; k <= 4; k++) CHECK_MSG(!exists("%s/e%d/000000.png", tmpdir, k), "e%d: an image", k);
}

int main(void) {
#ifndef TDM_HAVE_MPI
    return test_skip("built without MPI (libopenmpi-dev not found at configure time)");
#endif
    if (system("command -v mpirun > /dev/null 2>&1") != 0) return test_skip("mpirun not found on PATH");
    /* as test_launch: no leak checks in the MPI ranks under ASan */
    char asan[1024];
    snprintf(asan, sizeof asan, "%s%sdetect_leaks=0", getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "",
             getenv("ASAN_OPTIONS") ? ":" : "");
    setenv("ASAN_OPTIONS", asan, 1);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tdm_launch_uly_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    RUN(ulysses2_and_3_against_one_process);
    RUN(dp2_ulysses2_same_set_as_dp);
    RUN(errors_name_the_flag);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("could not remove %s\n", tmpdir);
    return test_summary();
}
