/* test_cli_ux.c — what a user meets first, through the `tandem` binary:
 * per-command help, the unknown-command and unknown-flag errors (with the
 * nearest flag), strict --seed, --scheduler names, --prompts-file checks,
 * --device-map duplicates, missing --out folders of encode/decode, the
 * --variant fallback warning and embeddings made for another pipeline.
 * Uses the tiny pipelines in tests/fixtures. */
// label: unit
#define _GNU_SOURCE   /* memmem */
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "test_files.h"
#include "test_cli.h"

static const char *FLUX = TDM_FIXTURES "/flux_pipelines/flux-dev-tiny";

/* The stdout of `tandem <args>` (exit code in *rc), malloc'd. */
static char *run_out(int *rc, const char *args) {
    char path[512];
    snprintf(path, sizeof path, "%s/stdout.txt", tmpdir);
    *rc = run("%s > '%s'", args, path);
    char *s = test_slurp(path);
    return s ? s : strdup("");
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

TEST(command_help) {
    static const char *cmds[] = {"generate", "encode", "decode", "launch", "plan"};
    for (int i = 0; i < 5; i++) {
        char args[64], want[64];
        snprintf(want, sizeof want, "\n  tandem %s ", cmds[i]);
        const char *forms[] = {"%s --help", "%s -h", "help %s"};
        for (int f = 0; f < 3; f++) {
            int rc;
            snprintf(args, sizeof args, forms[f], cmds[i]);
            char *out = run_out(&rc, args);
            CHECK_MSG(rc == 0, "tandem %s: rc %d, stderr %s", args, rc, errtext);
            CHECK_MSG(!strncmp(out, "usage:", 6) && strstr(out, want), "tandem %s: %s", args, out);
            CHECK_MSG(errtext[0] == 0, "tandem %s: stderr %s", args, errtext);
            for (int o = 0; o < 5; o++) {   /* only that command's usage */
                char other[64];
                snprintf(other, sizeof other, "\n  tandem %s ", cmds[o]);
                if (o != i) CHECK_MSG(!strstr(out, other), "tandem %s shows %s", args, cmds[o]);
            }
            free(out);
        }
    }
    /* help after other flags still wins over missing required flags */
    int rc;
    char *out = run_out(&rc, "generate --steps 2 --help");
    CHECK_MSG(rc == 0 && strstr(out, "--scheduler"), "rc %d: %s", rc, out);
    free(out);
    /* the overview lists every command with its summary */
    const char *ov[] = {"--help", "-h", "help"};
    for (int f = 0; f < 3; f++) {
        out = run_out(&rc, ov[f]);
        CHECK_MSG(rc == 0, "tandem %s: rc %d", ov[f], rc);
        for (int i = 0; i < 5; i++) {
            char want[64];
            snprintf(want, sizeof want, "  %s ", cmds[i]);
            CHECK_MSG(strstr(out, want) != NULL, "tandem %s lacks %s: %s", ov[f], cmds[i], out);
        }
        free(out);
    }
    out = run_out(&rc, "--version");
    CHECK_MSG(rc == 0 && !strncmp(out, "tandem ", 7), "rc %d: %s", rc, out);
    free(out);
    expect_error(run("help nosuch"), "nosuch");
}

TEST(unknown_command_and_flags) {
    int rc = run("nosuch");
    expect_error(rc, "commands: generate, encode, decode, launch, plan");
    CHECK_MSG(rc == 2, "rc %d", rc);
    expect_error(run("genrate"), "did you mean generate?");
    /* the nearest flag of that command */
    struct { const char *args, *want; } cases[] = {
        {"generate --model x --promt y", "--promt: unknown flag for tandem generate (did you mean --prompt?)"},
        {"generate --model x --negative-promt y", "did you mean --negative-prompt?"},
        {"generate --model x --sedd 1", "did you mean --seed?"},
        {"generate --model x --schedular euler", "did you mean --scheduler?"},
        {"encode --model x --outt f", "did you mean --out?"},
        {"encode --model x --steps 2", "--steps: unknown flag for tandem encode"},
        {"decode --model x --latent f", "did you mean --latents?"},
        {"plan --model x --max-memmory 0=1GB", "did you mean --max-memory?"},
        {"plan --model x --onyl unet", "did you mean --only?"},
        {"launch --gpu 0", "did you mean --gpus?"},
        {"launch --bogus", "--bogus: unknown flag for tandem launch"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rc = run("%s", cases[i].args);
        expect_error(rc, cases[i].want);
        CHECK_MSG(rc == 2, "%s: rc %d", cases[i].args, rc);
    }
    /* nothing close: no guess */
    expect_error(run("generate --model x --zzzzzzzzzzzz 1"), "see tandem generate --help");
    CHECK(!strstr(errtext, "did you mean"));
}

TEST(seed_range) {
    const char *bad[] = {"' -1'", "-1", "+5", "0x10", "' 5'", "'5 '", "18446744073709551616", "99999999999999999999",
                         "1e3", "''"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = run("generate --model '%s' --prompt x --seed %s --out '%s/s'", PIPE, bad[i], tmpdir);
        expect_error(rc, "0..18446744073709551615");
        CHECK_MSG(rc == 2, "--seed %s: rc %d", bad[i], rc);
    }
    /* the largest seed parses (the run itself is checked elsewhere) */
    int rc = run("generate --model '%s' --prompt x --seed 18446744073709551615 --steps 1 --output-type latent "
                 "--quiet --out '%s/s'", PIPE, tmpdir);
    CHECK_MSG(!strstr(errtext, "--seed"), "rc %d: %s", rc, errtext);
    /* other integers: plain digits too */
    expect_error(run("generate --model '%s' --prompt x --steps ' 2' --out '%s/s'", PIPE, tmpdir), "--steps");
    expect_error(run("generate --model '%s' --prompt x --steps +2 --out '%s/s'", PIPE, tmpdir), "--steps");
}

TEST(scheduler_names) {
    /* unknown: names the flag and lists only this pipeline's schedulers */
    int rc = run("generate --model '%s' --prompt x --scheduler Foo --steps 1 --out '%s/sc'", PIPE, tmpdir);
    expect_error(rc, "--scheduler Foo: unknown scheduler");
    CHECK_MSG(strstr(errtext, "DPMSolverMultistepScheduler (dpmpp_2m)") && !strstr(errtext, "FlowMatch") &&
              !strstr(errtext, "scheduler_config.json"), "%s", errtext);
    rc = run("generate --model '%s' --prompt x --scheduler Foo --steps 1 --out '%s/sc'", FLUX, tmpdir);
    expect_error(rc, "--scheduler Foo: unknown scheduler");
    CHECK_MSG(strstr(errtext, "FlowMatchEulerDiscreteScheduler (flow_euler)") && !strstr(errtext, "PNDM"), "%s",
              errtext);
    /* a scheduler of the other family */
    expect_error(run("generate --model '%s' --prompt x --scheduler flow_euler --out '%s/sc'", PIPE, tmpdir),
                 "--scheduler flow_euler: StableDiffusionPipeline does not run FlowMatchEulerDiscreteScheduler");
    expect_error(run("generate --model '%s' --prompt x --scheduler euler --out '%s/sc'", FLUX, tmpdir),
                 "--scheduler euler: FluxPipeline does not run EulerDiscreteScheduler");
    CHECK(!exists("%s/sc", tmpdir));
    /* short and any-case names run, recorded under the canonical class name */
    struct { const char *name, *cls; } ok[] = {
        {"euler_a", "EulerAncestralDiscreteScheduler"},
        {"DPMPP_2M", "DPMSolverMultistepScheduler"},
        {"ddimscheduler", "DDIMScheduler"},
    };
    for (int i = 0; i < 3; i++) {
        rc = run("generate --model '%s' --prompt x --scheduler %s --steps 2 --quiet --out '%s/sc%d'", PIPE,
                 ok[i].name, tmpdir, i);
        CHECK_MSG(rc == 0, "--scheduler %s: rc %d %s", ok[i].name, rc, errtext);
        char p[512], want[128];
        snprintf(p, sizeof p, "%s/sc%d/manifest.jsonl", tmpdir, i);
        char *m = test_slurp(p);
        snprintf(want, sizeof want, "\"scheduler\":\"%s\"", ok[i].cls);
        CHECK_MSG(m && strstr(m, want), "--scheduler %s: manifest %s", ok[i].name, m ? m : "(none)");
        free(m);
        snprintf(p, sizeof p, "%s/sc%d/000000.png", tmpdir, i);
        m = test_slurp(p);   /* PNG text chunk (uncompressed): "Sampler: <class>" */
        struct stat sb;
        snprintf(want, sizeof want, "Sampler: %s", ok[i].cls);
        CHECK_MSG(m && stat(p, &sb) == 0 && memmem(m, (size_t)sb.st_size, want, strlen(want)),
                  "--scheduler %s: PNG parameters", ok[i].name);
        free(m);
    }
    rc = run("generate --model '%s' --prompt x --scheduler flow_euler --steps 1 --quiet --output-type latent "
             "--out '%s/scf'", FLUX, tmpdir);
    CHECK_MSG(rc == 0, "flow_euler on FLUX: rc %d %s", rc, errtext);
}

TEST(prompts_file_checks) {
    char p[512];
    /* a NUL byte cuts a line: refused naming the file and line */
    snprintf(p, sizeof p, "%s/nul.txt", tmpdir);
    FILE *f = fopen(p, "wb");
    CHECK(f != NULL);
    if (f) {
        fwrite("a cat\nbad\0tail\n", 1, 15, f);
        fclose(f);
    }
    int rc = run("generate --model '%s' --prompts-file '%s' --out '%s/pf'", PIPE, p, tmpdir);
    expect_error(rc, "line 2 contains a NUL byte");
    CHECK(strstr(errtext, "nul.txt") != NULL);
    expect_error(run("encode --model '%s' --prompts-file '%s' --out '%s/pf.safetensors'", PIPE, p, tmpdir),
                 "line 2 contains a NUL byte");
    /* invalid UTF-8 names the line */
    snprintf(p, sizeof p, "%s/utf.txt", tmpdir);
    test_spill(p, "ok\n\ncaf\303(\n");
    expect_error(run("generate --model '%s' --prompts-file '%s' --out '%s/pf'", PIPE, p, tmpdir),
                 "line 3: invalid UTF-8");
    /* a directory */
    expect_error(run("generate --model '%s' --prompts-file '%s' --out '%s/pf'", PIPE, tmpdir, tmpdir),
                 "is a directory");
    /* a FIFO without a writer: an error, not a hang */
    snprintf(p, sizeof p, "%s/fifo", tmpdir);
    CHECK(mkfifo(p, 0600) == 0);
    char cmd[2048], errf[512];
    snprintf(cmd, sizeof cmd, "timeout 20 \"%s\" generate --model '%s' --prompts-file '%s' --out '%s/pf'",
             TDM_TANDEM_BIN, PIPE, p, tmpdir);
    snprintf(errf, sizeof errf, "%s/stderr.txt", tmpdir);
    rc = sh_capture(cmd, errf, errtext, sizeof errtext);
    CHECK_MSG(rc != 124, "a FIFO hangs --prompts-file");
    expect_error(rc, "not a regular file");
    expect_error(run("generate --model '%s' --prompts-file /dev/null --out '%s/pf'", PIPE, tmpdir),
                 "not a regular file");
    expect_error(run("generate --model '%s' --prompts-file '%s/none.txt' --out '%s/pf'", PIPE, tmpdir, tmpdir),
                 "none.txt");
    CHECK(!exists("%s/pf", tmpdir));
}

TEST(device_map_duplicates) {
    expect_error(run("plan --model '%s' --max-memory 0=1GB,cpu=1GB --device-map unet=balanced,unet=sequential",
                     PIPE), "component unet is given twice");
    expect_error(run("plan --model '%s' --max-memory 0=1GB,cpu=1GB --device-map unet=balanced --device-map "
                     "vae=auto --device-map unet=auto", PIPE), "component unet is given twice");
    expect_error(run("generate --model '%s' --prompt x --devices cpu:0 --max-memory 0=1GB,cpu=1GB "
                     "--device-map unet=balanced --device-map unet=sequential --out '%s/dm'", PIPE, tmpdir),
                 "component unet is given twice");
    int rc = run("plan --model '%s' --max-memory 0=1GB,cpu=1GB --device-map unet=balanced --device-map vae=auto",
                 PIPE);
    CHECK_MSG(rc == 0, "distinct components: rc %d %s", rc, errtext);
}

TEST(stage_out_folders) {
    int rc = run("encode --model '%s' --prompt x --quiet --out '%s/e1/e2/emb.safetensors'", PIPE, tmpdir);
    CHECK_MSG(rc == 0 && exists("%s/e1/e2/emb.safetensors", tmpdir), "encode: rc %d %s", rc, errtext);
    rc = run("generate --model '%s' --prompt x --steps 1 --output-type latent --quiet --out '%s/lat'", PIPE, tmpdir);
    CHECK_MSG(rc == 0, "latents: rc %d %s", rc, errtext);
    rc = run("decode --model '%s' --latents '%s/lat/000000.safetensors' --quiet --out '%s/d1/d2/x.png'", PIPE,
             tmpdir, tmpdir);
    CHECK_MSG(rc == 0 && exists("%s/d1/d2/x.png", tmpdir), "decode: rc %d %s", rc, errtext);
    char f[512];
    snprintf(f, sizeof f, "%s/plain", tmpdir);
    test_spill(f, "x");
    expect_error(run("decode --model '%s' --latents '%s/lat/000000.safetensors' --out '%s/plain/x.png'", PIPE,
                     tmpdir, tmpdir), "is not a directory");
}

TEST(variant_fallback_warning) {
    copy_pipe("var");
    int rc = run("encode --model '%s/var' --prompt x --variant fp16 --quiet --out '%s/v.safetensors'", tmpdir,
                 tmpdir);
    CHECK_MSG(rc == 0, "rc %d %s", rc, errtext);
    CHECK_MSG(strstr(errtext, "tandem: warning: unet: no diffusion_pytorch_model.fp16.safetensors; using "
                              "diffusion_pytorch_model.safetensors\n") &&
              strstr(errtext, "tandem: warning: text_encoder: no model.fp16.safetensors; using model.safetensors") &&
              strstr(errtext, "tandem: warning: vae: "), "%s", errtext);
    CHECK_MSG(count_lines(errtext) == 3, "one line per component: %s", errtext);
    /* a component that has the variant: no warning for it */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp '%s/var/unet/diffusion_pytorch_model.safetensors' "
             "'%s/var/unet/diffusion_pytorch_model.fp16.safetensors'", tmpdir, tmpdir);
    CHECK(system(cmd) == 0);
    rc = run("generate --model '%s/var' --prompt x --variant fp16 --steps 1 --quiet --out '%s/vo'", tmpdir, tmpdir);
    CHECK_MSG(rc == 0, "rc %d %s", rc, errtext);
    CHECK_MSG(!strstr(errtext, "unet:") && count_lines(errtext) == 2, "%s", errtext);
    /* without --variant: silent */
    rc = run("encode --model '%s/var' --prompt x --quiet --out '%s/v.safetensors'", tmpdir, tmpdir);
    CHECK_MSG(rc == 0 && errtext[0] == 0, "rc %d %s", rc, errtext);
}

TEST(embeddings_of_another_pipeline) {
    int rc = run("encode --model '%s' --prompt x --quiet --out '%s/sd.safetensors'", PIPE, tmpdir);
    CHECK_MSG(rc == 0, "rc %d %s", rc, errtext);
    rc = run("encode --model '%s' --prompt x --quiet --out '%s/fx.safetensors'", FLUX, tmpdir);
    CHECK_MSG(rc == 0, "rc %d %s", rc, errtext);
    expect_error(run("generate --model '%s' --embeddings '%s/sd.safetensors' --steps 1 --out '%s/em'", FLUX, tmpdir,
                     tmpdir),
                 "sd.safetensors: embeddings were made for StableDiffusionPipeline, this model is FluxPipeline");
    expect_error(run("generate --model '%s' --embeddings '%s/fx.safetensors' --guidance 1 --steps 1 --out '%s/em'",
                     PIPE, tmpdir, tmpdir),
                 "fx.safetensors: embeddings were made for FluxPipeline, this model is StableDiffusionPipeline");
    CHECK(!exists("%s/em", tmpdir));
    rc = run("generate --model '%s' --embeddings '%s/sd.safetensors' --steps 1 --quiet --out '%s/em2'", PIPE, tmpdir,
             tmpdir);
    CHECK_MSG(rc == 0, "same pipeline: rc %d %s", rc, errtext);
}

int main(void) {
    (void)same_pixels;
    if (!cli_setup()) return 1;
    RUN(command_help);
    RUN(unknown_command_and_flags);
    RUN(seed_range);
    RUN(scheduler_names);
    RUN(prompts_file_checks);
    RUN(device_map_duplicates);
    RUN(stage_out_folders);
    RUN(variant_fallback_warning);
    RUN(embeddings_of_another_pipeline);
    if (!cli_teardown()) return 1;
    return test_summary();
}
