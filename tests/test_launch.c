/* test_launch.c — data-parallel runs through `tandem launch` (Open MPI):
 * the same files for 1, 2 and 3 ranks and for both schedules, uneven
 * splits, --resume, and a killed rank ending the job with kept outputs.
 * Skipped (exit 77) when the build has no MPI or mpirun is missing. */
// label: dist
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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



/* manifest lines without the per-run fields (seconds, rank) */
static int manifest_norm(const char *dir, char *out, size_t cap) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "sed -e 's/\"seconds\":[0-9.e+-]*,//' -e 's/\"rank\":[0-9]*//' '%s/manifest.jsonl'", dir);
    FILE *p = popen(cmd, "r");
    if (!p) return 0;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    pclose(p);
    return (int)n;
}

static const char *JOB = "--prompt 'a red fox' --prompt 'a lighthouse' --prompt 'a bowl of ramen' "
                         "--prompt 'a mountain lake' --prompt 'a city at night' --steps 2 --seed 3 --quiet";

/* CPUs of this host as tandem launch counts them: more ranks need --oversubscribe */
static long cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    return sysconf(_SC_NPROCESSORS_ONLN);
}

static const char *over(int n) { return n > cpus() ? "--oversubscribe" : ""; }

static void run_ranks(int n, const char *extra, const char *tag, int nimg_prompts) {
    (void)nimg_prompts;
    int rc;
    if (n == 0)
        rc = sh("'%s' generate --model '%s' %s %s --out '%s/%s'", TDM_TANDEM_BIN, PIPE, JOB, extra, tmpdir, tag);
    else
        rc = sh("'%s' launch %s -n %d -- generate --model '%s' %s %s --out '%s/%s'", TDM_TANDEM_BIN, over(n), n,
                PIPE, JOB, extra, tmpdir, tag);
    CHECK_MSG(rc == 0, "%s: rc %d: %s", tag, rc, errtext);
}

static void same_outputs(const char *a, const char *b, int nimages) {
    char pa[1024], pb[1024];
    for (int i = 0; i < nimages; i++) {
        snprintf(pa, sizeof pa, "%s/%s/%06d.png", tmpdir, a, i);
        snprintf(pb, sizeof pb, "%s/%s/%06d.png", tmpdir, b, i);
        CHECK_MSG(same_pixels(pa, pb), "%s vs %s: image %d differs or is missing", a, b, i);
    }
    CHECK_MSG(!exists("%s/%s/%06d.png", tmpdir, b, nimages), "%s: extra image", b);
    static char ma[65536], mb[65536];
    snprintf(pa, sizeof pa, "%s/%s", tmpdir, a);
    snprintf(pb, sizeof pb, "%s/%s", tmpdir, b);
    CHECK(manifest_norm(pa, ma, sizeof ma) > 0 && manifest_norm(pb, mb, sizeof mb) > 0);
    CHECK_MSG(!strcmp(ma, mb), "%s vs %s: manifests differ:\n%s\n---\n%s", a, b, ma, mb);
    CHECK_MSG(!exists("%s/%s/manifest.rank0.jsonl", tmpdir, b), "%s: part files left", b);
}

TEST(same_files_any_rank_count) {
    run_ranks(0, "", "one", 5);
    run_ranks(1, "", "l1", 5);
    run_ranks(2, "", "l2", 5);           /* 5 over 2: 3 + 2 */
    run_ranks(3, "", "l3", 5);           /* 5 over 3: 2 + 2 + 1 */
    run_ranks(2, "--schedule dynamic", "d2", 5);
    run_ranks(3, "--schedule dynamic --num-images-per-prompt 1", "d3", 5);
    same_outputs("one", "l1", 5);
    same_outputs("one", "l2", 5);
    same_outputs("one", "l3", 5);
    same_outputs("one", "d2", 5);
    same_outputs("one", "d3", 5);
}

/* Data parallelism combined with sharding: every rank runs the UNet split over
 * its own two virtual GPUs and host RAM (each rank plans for its own device
 * set); the images and manifest are those of one unsplit process. */
TEST(ranks_with_split_models) {
    const char *split = "--devices cpu:0,cpu:1 --device-map unet=sequential "
                        "--max-memory 0=450KB,1=300KB,cpu=700KB,disk=1GB";
    run_ranks(0, "", "s-one", 5);
    run_ranks(2, split, "s2", 5);
    same_outputs("s-one", "s2", 5);
}

TEST(fewer_images_than_ranks) {
    int rc = sh("'%s' launch %s -n 3 -- generate --model '%s' --prompt 'a cat' --steps 2 --seed 9 --quiet "
                "--out '%s/few'", TDM_TANDEM_BIN, over(3), PIPE, tmpdir);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, errtext);
    rc = sh("'%s' generate --model '%s' --prompt 'a cat' --steps 2 --seed 9 --quiet --out '%s/few1'",
            TDM_TANDEM_BIN, PIPE, tmpdir);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, errtext);
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/few/000000.png", tmpdir);
    snprintf(b, sizeof b, "%s/few1/000000.png", tmpdir);
    CHECK(same_pixels(a, b));
    CHECK(!exists("%s/few/000001.png", tmpdir));
}

TEST(resume_fills_the_gaps) {
    run_ranks(2, "", "res", 5);
    CHECK(sh("rm -f '%s/res/000001.png' '%s/res/000004.png'", tmpdir, tmpdir) == 0);
    char keep[1024];
    snprintf(keep, sizeof keep, "%s/res/000000.png", tmpdir);
    struct stat before, after;
    CHECK(stat(keep, &before) == 0);
    run_ranks(3, "--resume", "res", 5);
    CHECK(stat(keep, &after) == 0);
    CHECK_MSG(before.st_mtim.tv_sec == after.st_mtim.tv_sec && before.st_mtim.tv_nsec == after.st_mtim.tv_nsec,
              "an existing image was made again");
    same_outputs("one", "res", 5);
    /* all done: nothing left for any rank (N = 0 per rank) */
    run_ranks(2, "--resume", "res", 5);
    same_outputs("one", "res", 5);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Runs `launch -n n -- generate --model model job --out tmpdir/tag`, kills one
 * rank (a "tandem" process, not mpirun) once the first image is written,
 * and checks the job ends soon, nonzero, naming the failure, with the
 * finished output kept and the job not run to the end (image `last`). */
static void kill_one_rank(const char *tag, const char *model, int n, const char *job, int last) {
    char out[512], cmd[4096], script[8192];
    snprintf(out, sizeof out, "%s/%s", tmpdir, tag);
    snprintf(cmd, sizeof cmd, "'%s' launch -n %d %s -- generate --model '%s' %s --output-type latent --quiet --out '%s'",
             TDM_TANDEM_BIN, n, over(n), model, job, out);
    snprintf(script, sizeof script,
             "(%s) & job=$!; for i in $(seq 1 600); do [ -e '%s/000000.safetensors' ] && break; sleep 0.05; done; "
             "victim=''; for p in $(pgrep -f '%s'); do [ \"$(ps -o comm= -p $p)\" = tandem ] && "
             "! ps -o args= -p $p | grep -q ' launch ' && victim=$p && break; done; "
             "[ -n \"$victim\" ] && kill -9 $victim; wait $job",
             cmd, out, out);
    double t0 = now();
    int rc = sh("%s", script);
    double dt = now() - t0;
    CHECK_MSG(rc != 0, "%s: the job exited 0 after a rank was killed: %s", tag, errtext);
    CHECK_MSG(dt < 120, "%s: the job took %.1fs to end", tag, dt);
    CHECK_MSG(exists("%s/000000.safetensors", out), "%s: finished output lost", tag);
    CHECK_MSG(!exists("%s/%06d.safetensors", out, last), "%s: the job ran to the end: was a rank killed?", tag);
    CHECK_MSG(strstr(errtext, "rank") != NULL || strstr(errtext, "signal") != NULL || strstr(errtext, "exited") != NULL,
              "%s: no word of the failed rank: %s", tag, errtext);
}

/* many images, written as each finishes (latents), so the job is still
 * running when a rank dies */
TEST(killed_rank_ends_the_job) {
    kill_one_rank("killed", PIPE, 2, "--prompt a --prompt b --prompt c --prompt d --num-images-per-prompt 8 --steps 50",
                  31);
}

/* A rank of a Ulysses pair killed mid-image: its partner, waiting in the
 * all-to-all, must not hang the job. */
TEST(killed_ulysses_rank_ends_the_job) {
    kill_one_rank("killed-uly", TDM_FIXTURES "/flux_pipelines/flux-dev-tiny", 2,
                  "--prompt a --prompt b --num-images-per-prompt 16 --steps 40 --width 64 --height 64 "
                  "--max-sequence-length 32 --parallel ulysses=2", 31);
}

/* A folder locked by another job: the launched job fails naming it, and
 * writes nothing; the ranks of one job share the lock (the runs above). */
TEST(locked_folder_refused) {
    char out[512], lock[600];
    snprintf(out, sizeof out, "%s/locked", tmpdir);
    snprintf(lock, sizeof lock, "%s/.tandem.lock", out);
    CHECK(mkdir(out, 0777) == 0);
    int fd = open(lock, O_RDWR | O_CREAT, 0666);
    CHECK(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0);
    int rc = sh("'%s' launch -n 2 -- generate --model '%s' --prompt a --prompt b --steps 2 --quiet --out '%s'",
                TDM_TANDEM_BIN, PIPE, out);
    CHECK_MSG(rc != 0, "a second job ran in a locked folder");
    CHECK_MSG(strstr(errtext, "tandem: error: ") && strstr(errtext, "another tandem job") && strstr(errtext, out),
              "%s", errtext);
    CHECK(!exists("%s/000000.png", out) && !exists("%s/000001.png", out));
    close(fd);
}

/* A job killed while denoising (2 ranks) keeps each rank's finished
 * latents; --resume with 3 ranks decodes them and makes the rest: the same
 * files as one uninterrupted process. */
TEST(killed_while_denoising_resumes) {
    char out[512];
    snprintf(out, sizeof out, "%s/kd", tmpdir);
    const char *job = "--prompt 'a red fox' --prompt 'a lighthouse' --prompt 'a bowl of ramen' "
                      "--prompt 'a mountain lake' --prompt 'a city at night' --seed 3 --quiet";
    /* the reference: JOB's prompts and seed with the same steps */
    int rc = sh("'%s' generate --model '%s' %s --steps 40 --out '%s/kd-one'", TDM_TANDEM_BIN, PIPE, job, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    char script[8192];
    snprintf(script, sizeof script,
             "('%s' launch -n 2 -- generate --model '%s' %s --steps 40 --out '%s') & job=$!; "
             "for i in $(seq 1 6000); do [ -e '%s/.tandem-latents/000000.safetensors' ] && "
             "[ -e '%s/.tandem-latents/000003.safetensors' ] && break; sleep 0.01; done; "
             "victim=''; for p in $(pgrep -f '%s'); do [ \"$(ps -o comm= -p $p)\" = tandem ] && "
             "! ps -o args= -p $p | grep -q ' launch ' && victim=$p && break; done; "
             "[ -n \"$victim\" ] && kill -9 $victim; wait $job",
             TDM_TANDEM_BIN, PIPE, job, out, out, out, out);
    rc = sh("%s", script);
    CHECK_MSG(rc != 0, "the job was not killed: %s", errtext);
    CHECK_MSG(exists("%s/.tandem-latents/000000.safetensors", out) || exists("%s/000000.png", out),
              "rank 0's denoised latent was lost");
    CHECK_MSG(exists("%s/.tandem-latents/000003.safetensors", out) || exists("%s/000003.png", out),
              "rank 1's denoised latent was lost");
    rc = sh("'%s' launch -n 3 %s -- generate --model '%s' %s --steps 40 --resume --out '%s'", TDM_TANDEM_BIN,
            over(3), PIPE, job, out);
    CHECK_MSG(rc == 0, "resume: rc %d: %s", rc, errtext);
    same_outputs("kd-one", "kd", 5);
    CHECK(!exists("%s/.tandem-latents", out));
}

/* A failure as the user sees it: nonzero exit, exactly one stderr line,
 * starting "tandem: error: " and holding `needle`. */
static void one_error_line(int rc, const char *needle) {
    CHECK_MSG(rc != 0, "exit code 0, stderr: %s", errtext);
    CHECK_MSG(!strncmp(errtext, "tandem: error: ", 15), "stderr: %s", errtext);
    CHECK_MSG(strstr(errtext, needle) != NULL, "wanted \"%s\" in: %s", needle, errtext);
    int lines = 0;
    for (const char *p = errtext; *p; p++) lines += *p == '\n';
    CHECK_MSG(lines == 1, "%d lines: %s", lines, errtext);
}

/* More ranks than CPUs (or than --gpus lists) is refused before mpirun
 * starts, naming the limit and --oversubscribe. */
TEST(too_many_ranks_refused) {
    double t0 = now();
    int rc = sh("'%s' launch -n %ld -- generate --model '%s' --prompt a --out '%s/many'", TDM_TANDEM_BIN,
                cpus() + 1, PIPE, tmpdir);
    one_error_line(rc, "--oversubscribe");
    char want[64];
    snprintf(want, sizeof want, "the %ld CPUs", cpus());
    CHECK_MSG(strstr(errtext, want) != NULL, "wanted \"%s\" in: %s", want, errtext);
    rc = sh("'%s' launch -n 1000 -- generate --model '%s' --prompt a --out '%s/many'", TDM_TANDEM_BIN, PIPE, tmpdir);
    one_error_line(rc, "--oversubscribe");
    if (cpus() >= 2) {
        rc = sh("'%s' launch --gpus 0 -n 2 -- generate --model '%s' --prompt a --out '%s/many'", TDM_TANDEM_BIN,
                PIPE, tmpdir);
        one_error_line(rc, "--oversubscribe");
        CHECK_MSG(strstr(errtext, "--gpus 0") != NULL, "%s", errtext);
    }
    CHECK_MSG(now() - t0 < 10, "refusing took %.1fs", now() - t0);
    CHECK(!exists("%s/many", tmpdir));
}

/* A failed launch shows one line: the failing rank's (or the launcher's own
 * check), not Open MPI's MPI_ABORT banner nor every rank's copy. */
TEST(failed_launch_one_line) {
    int rc = sh("'%s' launch -n 2 -- generate --model '%s/no-such-model' --prompt a --steps 2 --out '%s/f1'",
                TDM_TANDEM_BIN, tmpdir, tmpdir);
    one_error_line(rc, "--model");
    /* a failure inside the ranks: --out under a regular file */
    CHECK(sh("touch '%s/plainfile'", tmpdir) == 0);
    rc = sh("'%s' launch -n 2 -- generate --model '%s' --prompt a --steps 2 --quiet --out '%s/plainfile/out'",
            TDM_TANDEM_BIN, PIPE, tmpdir);
    one_error_line(rc, "--out");
    CHECK_MSG(!strncmp(errtext, "tandem: error: rank ", 20), "not a rank's line: %s", errtext);
    CHECK_MSG(!strstr(errtext, "MPI_ABORT"), "%s", errtext);
}

/* --comm: mpi runs a Ulysses pair as auto does on the CPU (the same bytes);
 * nccl is refused on CPU buffers with one line naming --comm; a bad value
 * fails before any rank starts. */
TEST(comm_flag) {
    const char *job = "--prompt a --steps 2 --width 64 --height 64 --max-sequence-length 32 --parallel ulysses=2 "
                      "--quiet --output-type latent";
    const char *fl = TDM_FIXTURES "/flux_pipelines/flux-dev-tiny";
    int rc = sh("'%s' launch -n 2 %s -- generate --model '%s' %s --out '%s/c-auto'", TDM_TANDEM_BIN, over(2), fl,
                job, tmpdir);
    CHECK_MSG(rc == 0, "auto: rc %d: %s", rc, errtext);
    rc = sh("'%s' launch -n 2 %s -- generate --model '%s' %s --comm mpi --out '%s/c-mpi'", TDM_TANDEM_BIN, over(2),
            fl, job, tmpdir);
    CHECK_MSG(rc == 0, "mpi: rc %d: %s", rc, errtext);
    CHECK_MSG(sh("cmp '%s/c-auto/000000.safetensors' '%s/c-mpi/000000.safetensors'", tmpdir, tmpdir) == 0,
              "--comm mpi and auto differ");
    rc = sh("'%s' launch -n 2 %s -- generate --model '%s' %s --comm nccl --out '%s/c-nccl'", TDM_TANDEM_BIN,
            over(2), fl, job, tmpdir);
    one_error_line(rc, "--comm nccl");
    rc = sh("'%s' launch -n 2 %s -- generate --model '%s' %s --comm tcp --out '%s/c-bad'", TDM_TANDEM_BIN,
            over(2), fl, job, tmpdir);
    one_error_line(rc, "--comm tcp");
    CHECK(!exists("%s/c-nccl/000000.safetensors", tmpdir) && !exists("%s/c-bad", tmpdir));
}

/* Warnings of a launched job: each rank's whole lines (one write a line, so
 * lines of two ranks never run into each other), and none from the
 * launcher's own check of the model: a missing --variant gives one warning
 * per component per rank. */
TEST(launch_warnings_whole_lines) {
    int rc = sh("'%s' launch -n 2 -- generate --model '%s' --prompt a --prompt b --steps 1 --variant fp99 "
                "--quiet --out '%s/w1'", TDM_TANDEM_BIN, PIPE, tmpdir);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, errtext);
    int lines = 0, unet = 0;
    for (const char *p = errtext; *p;) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        CHECK_MSG(n > 17 && !strncmp(p, "tandem: warning: ", 17) && !memmem(p + 17, n - 17, "tandem:", 7),
                  "line %d: %.*s", lines + 1, (int)n, p);
        static const char want[] = "unet: no diffusion_pytorch_model.fp99.safetensors";
        unet += memmem(p, n, want, sizeof want - 1) != NULL;
        lines++;
        p += n + (e != NULL);
    }
    CHECK_MSG(lines == 6 && unet == 2, "%d lines, %d about the unet (want 6 and 2): %s", lines, unet, errtext);
}

/* A failing job of many ranks ends in bounded time with one line. */
TEST(big_failing_job_ends_quickly) {
    double t0 = now();
    int rc = sh("'%s' launch --oversubscribe -n 8 -- generate --model '%s/no-such-model' --prompt a --out '%s/b1'",
                TDM_TANDEM_BIN, tmpdir, tmpdir);
    double dt = now() - t0;
    one_error_line(rc, "--model");
    CHECK_MSG(dt < 30, "bad --model with 8 ranks took %.1fs", dt);
    t0 = now();
    rc = sh("'%s' launch --oversubscribe -n 8 -- generate --model '%s' --prompt a --steps 2 --quiet "
            "--out '%s/plainfile/out'", TDM_TANDEM_BIN, PIPE, tmpdir);
    dt = now() - t0;
    one_error_line(rc, "--out");
    CHECK_MSG(dt < 30, "a rank error with 8 ranks took %.1fs to end the job", dt);
}

/* With a stand-in mpirun: launch passes --oversubscribe only when given it,
 * and when mpirun does not end the job after a rank's error (and ignores
 * SIGTERM), launch ends it and everything below it within seconds. */
TEST(stuck_mpirun_is_ended) {
    char bin[512], script[2048];
    snprintf(bin, sizeof bin, "%s/fakebin", tmpdir);
    CHECK(sh("mkdir -p '%s'", bin) == 0);
    snprintf(script, sizeof script,
             "#!/bin/sh\n"
             "echo \"$*\" > '%s/args.txt'\n"
             "[ \"$TDM_FAKE\" = ok ] && exit 0\n"
             "trap '' TERM INT\n"
             "sleep 300 &\n"
             "echo $! > '%s/child.pid'\n"
             "echo 'tandem: error: rank 0 (h): first' >&2\n"
             "echo '--------------------------------------------------------------------------' >&2\n"
             "echo 'MPI_ABORT was invoked on rank 0 in communicator MPI_COMM_WORLD' >&2\n"
             "echo '--------------------------------------------------------------------------' >&2\n"
             "echo '[h:123] 1 more process has sent help message help-mpi-api.txt / mpi-abort' >&2\n"
             "echo 'tandem: error: rank 1 (h): second' >&2\n"
             "wait\n",
             tmpdir, tmpdir);
    char path[600];
    snprintf(path, sizeof path, "%s/mpirun", bin);
    test_spill(path, script);
    CHECK(chmod(path, 0755) == 0);
    const char *gen = "-- generate --model";
    int rc = sh("TDM_FAKE=ok PATH='%s':\"$PATH\" '%s' launch -n 1 %s '%s' --prompt a", bin, TDM_TANDEM_BIN, gen, PIPE);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, errtext);
    char *args = NULL;
    snprintf(path, sizeof path, "%s/args.txt", tmpdir);
    CHECK((args = test_slurp(path)) != NULL);
    CHECK_MSG(args && !strstr(args, "--oversubscribe"), "mpirun got: %s", args);
    free(args);
    rc = sh("TDM_FAKE=ok PATH='%s':\"$PATH\" '%s' launch --oversubscribe -n 1 %s '%s' --prompt a", bin,
            TDM_TANDEM_BIN, gen, PIPE);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, errtext);
    CHECK((args = test_slurp(path)) != NULL);
    CHECK_MSG(args && strstr(args, "--oversubscribe"), "mpirun got: %s", args);
    free(args);

    double t0 = now();
    rc = sh("PATH='%s':\"$PATH\" '%s' launch -n 2 %s '%s' --prompt a", bin, TDM_TANDEM_BIN, gen, PIPE);
    double dt = now() - t0;
    one_error_line(rc, "rank 0 (h): first");
    CHECK_MSG(dt < 20, "the stuck job took %.1fs to end", dt);
    snprintf(path, sizeof path, "%s/child.pid", tmpdir);
    char *pid = test_slurp(path);
    CHECK(pid != NULL);
    if (pid) {
        usleep(200 * 1000);
        int alive = kill(atoi(pid), 0) == 0;
        CHECK_MSG(!alive, "a process of the stuck job (pid %d) is still running", atoi(pid));
        if (alive) kill(atoi(pid), SIGKILL);
    }
    free(pid);
}

int main(void) {
    const int mpi = launch_test_setup();
    if (mpi != 0) return mpi;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tdm_launch_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    RUN(same_files_any_rank_count);
    RUN(ranks_with_split_models);
    RUN(fewer_images_than_ranks);
    RUN(resume_fills_the_gaps);
    RUN(killed_rank_ends_the_job);
    RUN(killed_ulysses_rank_ends_the_job);
    RUN(locked_folder_refused);
    RUN(killed_while_denoising_resumes);
    RUN(too_many_ranks_refused);
    RUN(failed_launch_one_line);
    RUN(comm_flag);
    RUN(launch_warnings_whole_lines);
    RUN(big_failing_job_ends_quickly);
    RUN(stuck_mpirun_is_ended);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) return 1;
    return test_summary();
}
