/* test_launch_parallel.c — `tandem launch ... generate --parallel` on the
 * tiny fixtures. Stable Diffusion: cfg=2 (the guidance batch split over two
 * ranks) gives PNG and latents files byte-identical to one process, with
 * the text encoders run once per image group; DP × CFG (-n 4, cfg=2) makes
 * the same set of images as a data-parallel job, each written once, with
 * both schedules. FLUX.1-dev: ulysses=2 and 3 (3 does not divide the 2
 * heads: the padding path; uneven text and image shares) give PNG and
 * latents files byte-identical to one process, encoding once; DP × Ulysses
 * (-n 4, ulysses=2) makes the data-parallel job's set. FLUX ring=2, ring=3
 * and ulysses=2,ring=2 (USP): latents within 1e-5 relative of one process
 * (ring attention merges key blocks in another order: float tolerance, not
 * bits; the measured errors are printed); DP × ring (-n 4, ring=2) makes the
 * same set of images as -n 2 (same files and manifest lines, latents within
 * 1e-5). FLUX tp=2 (-n 2) and tp=2,ulysses=2 (-n 4): latents within 1e-5
 * of one process (the partial sums add in another order), DP × TP (-n 4,
 * tp=2) the data-parallel job's set. --parallel-vae (SD cfg=2, FLUX ulysses=3: every rank of the image
 * decodes a band) gives PNGs within 1 per channel of one process's, the
 * same image set and manifest. Bad specs, degrees that do not divide the
 * ranks, cfg=2 without guidance or on FLUX, ulysses or ring on Stable
 * Diffusion, tp on Stable Diffusion or not dividing the heads, tp with
 * ring (not implemented yet) and --parallel-vae without an image group each
 * fail with one error line naming the flag. Skipped (exit 77)
 * without MPI or mpirun. */
// label: dist
#define _GNU_SOURCE
#include <sched.h>
#include <stdarg.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "test.h"
#include "test_launch.h"
#include "test_files.h"

static const char *PIPE = TDM_FIXTURES "/pipelines/sd15-tiny";
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

static const char *JOB = "--prompt 'a red fox' --prompt 'a lighthouse' --prompt 'a bowl of ramen' "
                         "--num-images-per-prompt 2 --steps 3 --seed 5 --quiet";
static const char *FPIPE = TDM_FIXTURES "/flux_pipelines/flux-dev-tiny";
static const char *FJOB = "--prompt 'a red fox' --prompt 'a lighthouse' --num-images-per-prompt 2 "
                          "--steps 2 --seed 5 --width 64 --height 64 --max-sequence-length 32 --quiet";
enum { NIMG = 6, FNIMG = 4 };

static long cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    return sysconf(_SC_NPROCESSORS_ONLN);
}

static const char *over(int n) { return n > cpus() ? "--oversubscribe" : ""; }

/* generate (n == 0: one process; else launch -n n) of `job` on `model`
 * plus `extra` into tmpdir/tag; with TANDEM_LOG=info when `log`. Returns
 * the exit code. */
static int run_job(const char *model, const char *job, int n, const char *extra, const char *tag, int log) {
    const char *env = log ? "TANDEM_LOG=info " : "";
    if (n == 0)
        return sh("%s'%s' generate --model '%s' %s %s --out '%s/%s'", env, TDM_TANDEM_BIN, model, job, extra,
                  tmpdir, tag);
    return sh("%s'%s' launch %s -n %d -- generate --model '%s' %s %s --out '%s/%s'", env, TDM_TANDEM_BIN,
              over(n), n, model, job, extra, tmpdir, tag);
}

/* the Stable Diffusion job, and the FLUX one */
static int run(int n, const char *extra, const char *tag, int log) { return run_job(PIPE, JOB, n, extra, tag, log); }
static int frun(int n, const char *extra, const char *tag, int log) {
    return run_job(FPIPE, FJOB, n, extra, tag, log);
}

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

/* tmpdir/a and tmpdir/b hold the same nimg files (ext) byte for byte, the
 * same manifest lines (one per image), and nothing else of the job's. */
static void same_n_outputs(const char *a, const char *b, const char *ext, int nimg) {
    char pa[1024], pb[1024];
    for (int i = 0; i < nimg; i++) {
        snprintf(pa, sizeof pa, "%s/%s/%06d.%s", tmpdir, a, i, ext);
        snprintf(pb, sizeof pb, "%s/%s/%06d.%s", tmpdir, b, i, ext);
        CHECK_MSG(same_bytes(pa, pb), "%s vs %s: %06d.%s differs or is missing%s", a, b, i, ext,
                  strcmp(ext, "png") ? "" : same_pixels(pa, pb) ? " (same pixels)" : " (pixels differ)");
    }
    CHECK_MSG(!exists("%s/%s/%06d.%s", tmpdir, b, nimg, ext), "%s: an extra image", b);
    CHECK_MSG(!exists("%s/%s/manifest.rank1.jsonl", tmpdir, b), "%s: part files left", b);
    CHECK_MSG(!exists("%s/%s/.tandem-latents", tmpdir, b), "%s: hidden latents left", b);
    const char *ma = manifest_norm(a), *mb = manifest_norm(b);
    int lines = 0;
    for (const char *p = mb ? mb : ""; *p; p++) lines += *p == '\n';
    CHECK_MSG(ma && mb && !strcmp(ma, mb), "%s vs %s: manifests differ:\n%s\n---\n%s", a, b, ma, mb);
    CHECK_MSG(lines == nimg, "%s: %d manifest lines for %d images", b, lines, nimg);
}

static void same_outputs(const char *a, const char *b, const char *ext) { same_n_outputs(a, b, ext, NIMG); }

/* The largest difference of a channel of a pixel between PNGs a and b; -1
 * when either cannot be read or their sizes differ. */
static int max_pixel_diff(const char *a, const char *b) {
    uint8_t *x = NULL, *y = NULL;
    int wa, ha, wb, hb, d = -1;
    if (tdm_png_read(a, &x, &wa, &ha) == TDM_OK && tdm_png_read(b, &y, &wb, &hb) == TDM_OK &&
        wa == wb && ha == hb) {
        d = 0;
        for (size_t i = 0; i < (size_t)wa * ha * 3; i++) {
            int e = abs((int)x[i] - (int)y[i]);
            if (e > d) d = e;
        }
    }
    free(x);
    free(y);
    return d;
}

/* tmpdir/a and tmpdir/b hold the same nimg PNGs up to 1 per channel (the
 * measured largest difference printed), the same manifest lines and
 * nothing else of the job's. */
static void near_n_pngs(const char *a, const char *b, int nimg) {
    char pa[1024], pb[1024];
    int worst = 0;
    for (int i = 0; i < nimg; i++) {
        snprintf(pa, sizeof pa, "%s/%s/%06d.png", tmpdir, a, i);
        snprintf(pb, sizeof pb, "%s/%s/%06d.png", tmpdir, b, i);
        const int d = max_pixel_diff(pa, pb);
        CHECK_MSG(d >= 0 && d <= 1, "%s vs %s: %06d.png: max channel difference %d (-1: missing "
                  "or another size)", a, b, i, d);
        if (d < 0 || worst < 0) worst = -1;
        else if (d > worst) worst = d;
    }
    printf("  %s vs %s: %d PNGs, max channel difference %d\n", a, b, nimg, worst);
    CHECK_MSG(!exists("%s/%s/%06d.png", tmpdir, b, nimg), "%s: an extra image", b);
    CHECK_MSG(!exists("%s/%s/manifest.rank1.jsonl", tmpdir, b), "%s: part files left", b);
    CHECK_MSG(!exists("%s/%s/.tandem-latents", tmpdir, b), "%s: hidden latents left", b);
    const char *ma = manifest_norm(a), *mb = manifest_norm(b);
    CHECK_MSG(ma && mb && !strcmp(ma, mb), "%s vs %s: manifests differ:\n%s\n---\n%s", a, b, ma, mb);
}

/* max|a - b| / max|a| of the tensor "latents" of tmpdir/a/NNNNNN.safetensors
 * (a) and tmpdir/b's (b); -1 when either cannot be read or their shapes
 * differ. */
static double latents_rel_err(const char *a, const char *b, int i) {
    char pa[1024], pb[1024];
    tdm_st_set_t *sa = NULL, *sb = NULL;
    tdm_tensor_t *ta = NULL, *tb = NULL;
    tdm_device_t host;
    double err = -1.0;
    tdm_device_init(&host, TDM_DEV_CPU, 0);
    snprintf(pa, sizeof pa, "%s/%s/%06d.safetensors", tmpdir, a, i);
    snprintf(pb, sizeof pb, "%s/%s/%06d.safetensors", tmpdir, b, i);
    if (tdm_st_set_open(&sa, pa) == TDM_OK && tdm_st_set_open(&sb, pb) == TDM_OK &&
        tdm_st_set_load_f32(sa, "latents", &host, 0, NULL, &ta) == TDM_OK &&
        tdm_st_set_load_f32(sb, "latents", &host, 0, NULL, &tb) == TDM_OK &&
        ta->nbytes == tb->nbytes && ta->ndim == tb->ndim &&
        !memcmp(ta->shape, tb->shape, sizeof ta->shape)) {
        const float *x = tdm_f32(ta), *y = tdm_f32(tb);
        double num = 0.0, den = 0.0;
        for (int64_t k = 0; k < tdm_tensor_numel(ta); k++) {
            const double d = isfinite(y[k]) ? fabs((double)x[k] - (double)y[k]) : INFINITY;
            if (d > num) num = d;
            if (fabs((double)x[k]) > den) den = fabs((double)x[k]);
        }
        err = den > 0.0 ? num / den : num;
    }
    tdm_tensor_free(ta);
    tdm_tensor_free(tb);
    tdm_st_set_close(sa);
    tdm_st_set_close(sb);
    return err;
}

/* tmpdir/b holds latents files within relative error `tol` of tmpdir/a's
 * (the largest printed), the same manifest lines and nothing else. */
static void near_n_latents(const char *a, const char *b, int nimg, double tol) {
    double worst = 0.0;
    for (int i = 0; i < nimg; i++) {
        const double e = latents_rel_err(a, b, i);
        CHECK_MSG(e >= 0.0 && e <= tol, "%s vs %s: %06d.safetensors: relative error %.3g (limit "
                  "%.0e; -1: missing or another shape)", a, b, i, e, tol);
        if (e < 0.0 || worst < 0.0) worst = -1.0;
        else if (e > worst) worst = e;
    }
    printf("  %s vs %s: %d latents, max|a-b|/max|a| = %.3g\n", a, b, nimg, worst);
    CHECK_MSG(!exists("%s/%s/%06d.safetensors", tmpdir, b, nimg), "%s: an extra image", b);
    CHECK_MSG(!exists("%s/%s/manifest.rank1.jsonl", tmpdir, b), "%s: part files left", b);
    const char *ma = manifest_norm(a), *mb = manifest_norm(b);
    CHECK_MSG(ma && mb && !strcmp(ma, mb), "%s vs %s: manifests differ:\n%s\n---\n%s", a, b, ma, mb);
}

/* How many times `needle` occurs in the captured stderr. */
static int count_in_err(const char *needle) {
    int n = 0;
    for (const char *p = errtext; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

TEST(cfg2_identical_to_one_process) {
    int rc = run(0, "", "one", 0);
    CHECK_MSG(rc == 0, "one process: rc %d: %s", rc, errtext);
    rc = run(2, "--parallel cfg=2", "cfg2", 1);
    CHECK_MSG(rc == 0, "-n 2 cfg=2: rc %d: %s", rc, errtext);
    same_outputs("one", "cfg2", "png");
    /* the text encoders ran on the image group's first rank only */
    CHECK_MSG(count_in_err("encoded 3 prompt(s) for the 2 ranks of its image") == 1 &&
                  count_in_err("rank 0 encoded") == 1,
              "want one encode, by rank 0: %s", errtext);
    rc = run(0, "--output-type latent", "one-lat", 0);
    CHECK_MSG(rc == 0, "one process, latents: rc %d: %s", rc, errtext);
    rc = run(2, "--parallel cfg=2 --output-type latent", "cfg2-lat", 0);
    CHECK_MSG(rc == 0, "-n 2 cfg=2, latents: rc %d: %s", rc, errtext);
    same_outputs("one-lat", "cfg2-lat", "safetensors");
}

/* SDXL under cfg=2: each rank passes its half's pooled embeddings and time
 * ids to the UNet; the latents and the guidance_rescale (computed from both
 * halves after the exchange) are the bytes of one process. */
TEST(sdxl_cfg2_identical_to_one_process) {
    const char *xl = TDM_FIXTURES "/sdxl_pipelines/sdxl-tiny";
    const char *job = "--prompt 'a red fox' --prompt 'a lighthouse' --steps 3 --seed 5 --original-size 96x32 "
                      "--guidance-rescale 0.4 --quiet --output-type latent";
    int rc = run_job(xl, job, 0, "", "xl-one", 0);
    CHECK_MSG(rc == 0, "one process: rc %d: %s", rc, errtext);
    rc = run_job(xl, job, 2, "--parallel cfg=2", "xl-cfg2", 0);
    CHECK_MSG(rc == 0, "-n 2 cfg=2: rc %d: %s", rc, errtext);
    same_n_outputs("xl-one", "xl-cfg2", "safetensors", 2);
}

/* -n 4 with cfg=2: two image groups (DP 2) split the job as a 2-rank
 * data-parallel job does; each image is written once. */
TEST(dp2_cfg2_same_set_as_dp) {
    int rc = run(2, "", "dp2", 0);
    CHECK_MSG(rc == 0, "-n 2: rc %d: %s", rc, errtext);
    rc = run(4, "--parallel cfg=2", "dp2cfg2", 1);
    CHECK_MSG(rc == 0, "-n 4 cfg=2: rc %d: %s", rc, errtext);
    same_outputs("dp2", "dp2cfg2", "png");
    CHECK_MSG(count_in_err("encoded 3 prompt(s) for the 2 ranks of its image") == 2 &&
                  count_in_err("rank 0 encoded") == 1 && count_in_err("rank 2 encoded") == 1,
              "want one encode per group, by ranks 0 and 2: %s", errtext);
    rc = run(4, "--parallel cfg=2 --schedule dynamic", "dyn", 0);
    CHECK_MSG(rc == 0, "-n 4 cfg=2 dynamic: rc %d: %s", rc, errtext);
    same_outputs("dp2", "dyn", "png");
    /* --resume after two images went missing: made again, once */
    CHECK(sh("rm -f '%s/dyn/000001.png' '%s/dyn/000004.png'", tmpdir, tmpdir) == 0);
    rc = run(4, "--parallel cfg=2 --resume", "dyn", 0);
    CHECK_MSG(rc == 0, "-n 4 cfg=2 --resume: rc %d: %s", rc, errtext);
    same_outputs("dp2", "dyn", "png");
}

/* FLUX under Ulysses 2 and 3: PNGs and latents byte for byte those of one
 * process (every per-row op, GEMMs included, gives a row the same bits
 * whatever rows a rank holds), the text encoders run once, by rank 0. */
TEST(ulysses2_and_3_identical_to_one_process) {
    int rc = frun(0, "", "f-one", 0);
    CHECK_MSG(rc == 0, "one process: rc %d: %s", rc, errtext);
    rc = frun(0, "--output-type latent", "f-one-lat", 0);
    CHECK_MSG(rc == 0, "one process, latents: rc %d: %s", rc, errtext);
    for (int u = 2; u <= 3; u++) {
        char par[64], tag[32], tagl[32], want[96];
        snprintf(par, sizeof par, "--parallel ulysses=%d", u);
        snprintf(tag, sizeof tag, "f-u%d", u);
        snprintf(tagl, sizeof tagl, "f-u%d-lat", u);
        rc = frun(u, par, tag, 1);
        CHECK_MSG(rc == 0, "-n %d ulysses=%d: rc %d: %s", u, u, rc, errtext);
        snprintf(want, sizeof want, "encoded 2 prompt(s) for the %d ranks of its image", u);
        CHECK_MSG(count_in_err(want) == 1 && count_in_err("rank 0 encoded") == 1,
                  "want one encode, by rank 0: %s", errtext);
        same_n_outputs("f-one", tag, "png", FNIMG);
        strcat(par, " --output-type latent");
        rc = frun(u, par, tagl, 0);
        CHECK_MSG(rc == 0, "-n %d ulysses=%d, latents: rc %d: %s", u, u, rc, errtext);
        same_n_outputs("f-one-lat", tagl, "safetensors", FNIMG);
    }
}

/* -n 4 with ulysses=2: two image groups (DP 2) split the job as a 2-rank
 * data-parallel job does; each image is written once. */
TEST(dp2_ulysses2_same_set_as_dp) {
    int rc = frun(2, "", "f-dp2", 0);
    CHECK_MSG(rc == 0, "-n 2: rc %d: %s", rc, errtext);
    rc = frun(4, "--parallel ulysses=2", "f-dp2u2", 1);
    CHECK_MSG(rc == 0, "-n 4 ulysses=2: rc %d: %s", rc, errtext);
    same_n_outputs("f-dp2", "f-dp2u2", "png", FNIMG);
    CHECK_MSG(count_in_err("encoded 2 prompt(s) for the 2 ranks of its image") == 2 &&
                  count_in_err("rank 0 encoded") == 1 && count_in_err("rank 2 encoded") == 1,
              "want one encode per group, by ranks 0 and 2: %s", errtext);
}

/* FLUX under ring 2, ring 3 and USP (ulysses 2 × ring 2): latents within
 * 1e-5 relative of one process, the text encoders run once, by rank 0. */
TEST(ring_and_usp_latents_within_1e5_of_one_process) {
    static const struct { int n; const char *par, *tag; } jobs[] = {
        { 2, "--parallel ring=2", "f-r2-lat" }, { 3, "--parallel ring=3", "f-r3-lat" },
        { 4, "--parallel ulysses=2,ring=2", "f-u2r2-lat" } };
    int rc = exists("%s/f-one-lat/%06d.safetensors", tmpdir, FNIMG - 1) ? 0
             : frun(0, "--output-type latent", "f-one-lat", 0);
    CHECK_MSG(rc == 0, "one process, latents: rc %d: %s", rc, errtext);
    for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++) {
        char extra[128], want[96];
        snprintf(extra, sizeof extra, "%s --output-type latent", jobs[i].par);
        rc = frun(jobs[i].n, extra, jobs[i].tag, 1);
        CHECK_MSG(rc == 0, "-n %d %s: rc %d: %s", jobs[i].n, jobs[i].par, rc, errtext);
        snprintf(want, sizeof want, "encoded 2 prompt(s) for the %d ranks of its image", jobs[i].n);
        CHECK_MSG(count_in_err(want) == 1 && count_in_err("rank 0 encoded") == 1,
                  "want one encode, by rank 0: %s", errtext);
        near_n_latents("f-one-lat", jobs[i].tag, FNIMG, 1e-5);
    }
}

/* The latents of the 2-rank data-parallel job (f-dp2-lat), made by the first
 * test that needs them; the exit code of that run (0 when already made). */
static int dp2_latents(void) {
    return exists("%s/f-dp2-lat/%06d.safetensors", tmpdir, FNIMG - 1)
               ? 0 : frun(2, "--output-type latent", "f-dp2-lat", 0);
}

/* -n 4 with ring=2: two image groups (DP 2) make the set of images a 2-rank
 * data-parallel job makes: the same PNG files and manifest lines, each
 * written once, and latents within 1e-5. */
TEST(dp2_ring2_same_set_as_dp) {
    int rc = exists("%s/f-dp2/%06d.png", tmpdir, FNIMG - 1) ? 0 : frun(2, "", "f-dp2", 0);
    CHECK_MSG(rc == 0, "-n 2: rc %d: %s", rc, errtext);
    rc = frun(4, "--parallel ring=2", "f-dp2r2", 1);
    CHECK_MSG(rc == 0, "-n 4 ring=2: rc %d: %s", rc, errtext);
    CHECK_MSG(count_in_err("encoded 2 prompt(s) for the 2 ranks of its image") == 2 &&
                  count_in_err("rank 0 encoded") == 1 && count_in_err("rank 2 encoded") == 1,
              "want one encode per group, by ranks 0 and 2: %s", errtext);
    for (int i = 0; i < FNIMG; i++)
        CHECK_MSG(exists("%s/f-dp2r2/%06d.png", tmpdir, i), "f-dp2r2: %06d.png missing", i);
    CHECK_MSG(!exists("%s/f-dp2r2/%06d.png", tmpdir, FNIMG), "f-dp2r2: an extra image");
    const char *ma = manifest_norm("f-dp2"), *mb = manifest_norm("f-dp2r2");
    CHECK_MSG(ma && mb && !strcmp(ma, mb), "manifests differ:\n%s\n---\n%s", ma, mb);
    rc = dp2_latents();
    CHECK_MSG(rc == 0, "-n 2, latents: rc %d: %s", rc, errtext);
    rc = frun(4, "--parallel ring=2 --output-type latent", "f-dp2r2-lat", 0);
    CHECK_MSG(rc == 0, "-n 4 ring=2, latents: rc %d: %s", rc, errtext);
    near_n_latents("f-dp2-lat", "f-dp2r2-lat", FNIMG, 1e-5);
}

/* DP on top of the 2-D layouts: -n 8 as two image groups of USP 2 x 2 and
 * of tp 2 x ulysses 2 make the latents of a 2-rank data-parallel job
 * (within 1e-5), each image once, the same manifest. */
TEST(dp2_over_usp_and_tp_ulysses) {
    int rc = dp2_latents();
    CHECK_MSG(rc == 0, "-n 2, latents: rc %d: %s", rc, errtext);
    rc = frun(8, "--parallel ulysses=2,ring=2 --output-type latent", "f-dp2usp-lat", 0);
    CHECK_MSG(rc == 0, "-n 8 ulysses=2,ring=2: rc %d: %s", rc, errtext);
    near_n_latents("f-dp2-lat", "f-dp2usp-lat", FNIMG, 1e-5);
    rc = frun(8, "--parallel tp=2,ulysses=2 --output-type latent", "f-dp2tpu-lat", 0);
    CHECK_MSG(rc == 0, "-n 8 tp=2,ulysses=2: rc %d: %s", rc, errtext);
    near_n_latents("f-dp2-lat", "f-dp2tpu-lat", FNIMG, 1e-5);
}

/* FLUX under tp=2 (2 ranks) and tp=2,ulysses=2 (4 ranks; one head a TP
 * rank, padded over the Ulysses pair): latents within relative error 1e-5
 * of one process's, the text encoders run once, by rank 0. */
TEST(tp2_and_tp2_ulysses2_within_tolerance) {
    int rc = exists("%s/f-one-lat/000000.safetensors", tmpdir)
                 ? 0 : frun(0, "--output-type latent", "f-one-lat", 0);
    CHECK_MSG(rc == 0, "one process, latents: rc %d: %s", rc, errtext);
    rc = frun(2, "--parallel tp=2 --output-type latent", "f-tp2-lat", 1);
    CHECK_MSG(rc == 0, "-n 2 tp=2, latents: rc %d: %s", rc, errtext);
    CHECK_MSG(count_in_err("encoded 2 prompt(s) for the 2 ranks of its image") == 1 &&
                  count_in_err("rank 0 encoded") == 1,
              "want one encode, by rank 0: %s", errtext);
    near_n_latents("f-one-lat", "f-tp2-lat", FNIMG, 1e-5);
    rc = frun(4, "--parallel tp=2,ulysses=2 --output-type latent", "f-tp2u2-lat", 0);
    CHECK_MSG(rc == 0, "-n 4 tp=2,ulysses=2, latents: rc %d: %s", rc, errtext);
    near_n_latents("f-one-lat", "f-tp2u2-lat", FNIMG, 1e-5);
}

/* -n 4 with tp=2: two image groups (DP 2) make the set of a 2-rank
 * data-parallel job, each image once (latents within 1e-5 of its). */
TEST(dp2_tp2_same_set_as_dp) {
    int rc = dp2_latents();
    CHECK_MSG(rc == 0, "-n 2, latents: rc %d: %s", rc, errtext);
    rc = frun(4, "--parallel tp=2 --output-type latent", "f-dp2tp2-lat", 1);
    CHECK_MSG(rc == 0, "-n 4 tp=2, latents: rc %d: %s", rc, errtext);
    CHECK_MSG(count_in_err("encoded 2 prompt(s) for the 2 ranks of its image") == 2 &&
                  count_in_err("rank 0 encoded") == 1 && count_in_err("rank 2 encoded") == 1,
              "want one encode per group, by ranks 0 and 2: %s", errtext);
    near_n_latents("f-dp2-lat", "f-dp2tp2-lat", FNIMG, 1e-5);
}

/* --parallel-vae: SD cfg=2 (2 ranks) and FLUX ulysses=3 (3 ranks, a
 * latent height 3 does not divide) decode each image together (every rank
 * logs its band), PNGs within 1 of one process's. */
TEST(parallel_vae_within_one_of_one_process) {
    int rc = exists("%s/one/000000.png", tmpdir) ? 0 : run(0, "", "one", 0);
    CHECK_MSG(rc == 0, "one process: rc %d: %s", rc, errtext);
    rc = run(2, "--parallel cfg=2 --parallel-vae", "pvae", 1);
    CHECK_MSG(rc == 0, "-n 2 cfg=2 --parallel-vae: rc %d: %s", rc, errtext);
    CHECK_MSG(count_in_err("decoded its band of the image with the 2 ranks") == 2 * NIMG,
              "want %d band decodes: %s", 2 * NIMG, errtext);
    near_n_pngs("one", "pvae", NIMG);
    rc = exists("%s/f-one/000000.png", tmpdir) ? 0 : frun(0, "", "f-one", 0);
    CHECK_MSG(rc == 0, "one process: rc %d: %s", rc, errtext);
    rc = frun(3, "--parallel ulysses=3 --parallel-vae", "f-pvae", 1);
    CHECK_MSG(rc == 0, "-n 3 ulysses=3 --parallel-vae: rc %d: %s", rc, errtext);
    CHECK_MSG(count_in_err("decoded its band of the image with the 3 ranks") == 3 * FNIMG,
              "want %d band decodes: %s", 3 * FNIMG, errtext);
    near_n_pngs("f-one", "f-pvae", FNIMG);
}

/* --parallel auto on 2 ranks: rank 0 picks a layout with the cost model
 * (every layout tandem runs for Stable Diffusion, dp=2 or cfg=2, makes the
 * bytes of one process), says which and what it predicted, then what it
 * measured. */
TEST(auto_layout_same_files) {
    int rc = exists("%s/one/%06d.png", tmpdir, NIMG - 1) ? 0 : run(0, "", "one", 0);
    CHECK_MSG(rc == 0, "one process: rc %d: %s", rc, errtext);
    rc = run(2, "--parallel auto", "auto", 0);
    CHECK_MSG(rc == 0, "-n 2 --parallel auto: rc %d: %s", rc, errtext);
    same_outputs("one", "auto", "png");
    /* one image, not quiet: the choice (cfg=2 halves a step) and both times */
    rc = sh("'%s' launch %s -n 2 -- generate --model '%s' --prompt a --steps 2 --parallel auto --out "
            "'%s/auto1'", TDM_TANDEM_BIN, over(2), PIPE, tmpdir);
    CHECK_MSG(rc == 0, "one image: rc %d: %s", rc, errtext);
    CHECK_MSG(strstr(errtext, "--parallel auto: 2 ranks as cfg=2,ring=1,ulysses=1,tp=1 (predicted") &&
                  strstr(errtext, "measured"), "%s", errtext);
    /* the probe's numbers were cached for this host and world size, and a
     * second run takes them (no new probe: the same numbers), --reprobe too */
    CHECK_MSG(system("ls \"$XDG_CACHE_HOME\"/tandem/probe-*-cpu-default-auto-n2.json >/dev/null 2>&1") == 0,
              "no probe cache under %s/cache", tmpdir);
    const char *m = strstr(errtext, "measured "), *e = m ? strstr(m, " a rank;") : NULL;
    char first[256] = "";
    if (m && e) snprintf(first, sizeof first, "%.*s", (int)(e - m), m);
    rc = sh("'%s' launch %s -n 2 -- generate --model '%s' --prompt a --steps 2 --parallel auto --overwrite --out "
            "'%s/auto1'", TDM_TANDEM_BIN, over(2), PIPE, tmpdir);
    CHECK_MSG(rc == 0 && first[0] && strstr(errtext, first), "second run: not the cached numbers \"%s\": %s", first,
              errtext);
    rc = sh("'%s' launch %s -n 2 -- generate --model '%s' --prompt a --steps 2 --parallel auto --reprobe --overwrite "
            "--out '%s/auto1'", TDM_TANDEM_BIN, over(2), PIPE, tmpdir);
    CHECK_MSG(rc == 0 && strstr(errtext, "--parallel auto: 2 ranks as"), "--reprobe: rc %d: %s", rc, errtext);
    /* the pair is one image group: no per-rank line for its second rank */
    CHECK_MSG(!strstr(errtext, "rank 1 (") && !strstr(errtext, "ranks 0-1 ("), "%s", errtext);
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
    one_error_line(run(2, "--parallel cfg=2,tp=2", "e1", 0), "does not divide the world size 2");
    one_error_line(run(3, "--parallel cfg=2", "e2", 0), "does not divide the world size 3");
    one_error_line(run(2, "--parallel pp=2", "e3", 0), "unknown degree \"pp\"");
    one_error_line(run(0, "--parallel cfg=2,cfg=2", "e4", 0), "cfg is given twice");
    one_error_line(run(2, "--parallel cfg=2 --guidance 1", "e5", 0), "needs classifier-free guidance");
    one_error_line(run(2, "--parallel ulysses=2", "e6", 0), "for transformer pipelines (FLUX)");
    one_error_line(run(2, "--parallel ring=2", "e7", 0), "ring (context) parallelism is for transformer");
    one_error_line(run(2, "--parallel tp=2", "e8", 0), "tensor parallelism is for transformer pipelines");
    one_error_line(run(2, "--parallel auto --max-memory 0=1KB", "e9", 0), "no layout of 2 ranks");
    one_error_line(run(0, "--parallel cfg=2", "e10", 0), "world size 1");
    int rc = sh("'%s' launch %s -n 2 -- generate --model '%s/flux_pipelines/flux-dev-tiny' --prompt a "
                "--steps 1 --quiet --parallel cfg=2 --out '%s/e11'", TDM_TANDEM_BIN, over(2), TDM_FIXTURES,
                tmpdir);
    one_error_line(rc, "no classifier-free guidance batch");
    one_error_line(frun(3, "--parallel ulysses=2", "e12", 0), "does not divide the world size 3");
    one_error_line(frun(2, "--parallel ulysses=2,ring=1,tp=2", "e13", 0), "does not divide the world size 2");
    one_error_line(frun(2, "--parallel ring=3", "e14", 0), "does not divide the world size 2");
    one_error_line(run(2, "--parallel-vae", "e15", 0), "--parallel-vae: each image has one rank");
    one_error_line(run(0, "--parallel-vae", "e16", 0), "--parallel-vae: each image has one rank");
    one_error_line(frun(3, "--parallel tp=3", "e17", 0), "num_attention_heads=2");
    one_error_line(frun(4, "--parallel tp=2,ring=2", "e18", 0), "with ring attention is not implemented");
    for (int k = 1; k <= 18; k++) CHECK_MSG(!exists("%s/e%d/000000.png", tmpdir, k), "e%d: an image", k);
}

int main(void) {
    const int mpi = launch_test_setup();
    if (mpi != 0) return mpi;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tdm_launch_par_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    char cache[300];   /* --parallel auto's probe cache, not the user's */
    snprintf(cache, sizeof cache, "%s/cache", tmpdir);
    setenv("XDG_CACHE_HOME", cache, 1);
    RUN(cfg2_identical_to_one_process);
    RUN(dp2_cfg2_same_set_as_dp);
    RUN(sdxl_cfg2_identical_to_one_process);
    RUN(ulysses2_and_3_identical_to_one_process);
    RUN(dp2_ulysses2_same_set_as_dp);
    RUN(ring_and_usp_latents_within_1e5_of_one_process);
    RUN(dp2_ring2_same_set_as_dp);
    RUN(tp2_and_tp2_ulysses2_within_tolerance);
    RUN(dp2_tp2_same_set_as_dp);
    RUN(dp2_over_usp_and_tp_ulysses);
    RUN(parallel_vae_within_one_of_one_process);
    RUN(auto_layout_same_files);
    RUN(errors_name_the_flag);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("could not remove %s\n", tmpdir);
    return test_summary();
}
