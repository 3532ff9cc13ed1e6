/* test_cli_place.c — placement and model-folder hygiene through the
 * `tandem` binary: budgets without "disk" overflow to an implicit unlimited
 * disk (as accelerate) and run bit-identical to one device; the decode
 * stage plans only what decode runs; files of the model folder that are not
 * regular files are named as such (never a hang); model_index.json
 * component names cannot leave the folder. Uses the tiny pipelines in
 * tests/fixtures. */
// label: unit
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "test_files.h"
#include "test_cli.h"

static char FLUX[512];

/* 1 if two files have the same bytes. */
static int same_file(const char *a, const char *b) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    return system(cmd) == 0;
}

/* The text of file tmpdir/name (malloc'd, "" when unreadable). */
static char *slurp_tmp(const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    char *s = test_slurp(p);
    return s ? s : strdup("");
}

/* --max-memory 0=200KB,cpu=200KB holds neither tiny pipeline: what fits
 * nowhere goes to the implicit unlimited disk (streamed from the
 * safetensors), the printed plans say so, and the images and latents are
 * the one-device ones byte for byte. An explicit disk= cap that is too
 * small is still an error naming it. */
TEST(implicit_disk_runs) {
    const char *models[2] = {PIPE, FLUX};
    const char *flags[2] = {"--prompt 'a red cube' --steps 2 --seed 5 --quiet",
                            "--prompt 'a red cube' --steps 2 --width 64 --height 64 --seed 5 --quiet"};
    const char *maps[2][2] = {{"balanced", "unet=auto"}, {"balanced", "transformer=sequential"}};
    char a[1024], b[1024];
    for (int i = 0; i < 2; i++) {
        int rc = run("generate --model '%s' %s --out '%s/id-one%d'", models[i], flags[i], tmpdir, i);
        CHECK_MSG(rc == 0, "%s", errtext);
        rc = run("generate --model '%s' %s --output-type latent --out '%s/id-one%d-l'", models[i],
                 flags[i], tmpdir, i);
        CHECK_MSG(rc == 0, "%s", errtext);
        for (int k = 0; k < 2; k++) {
            rc = run("generate --model '%s' %s --devices cpu:0,cpu:1 --device-map %s --max-memory "
                     "0=200KB,cpu=200KB --print-device-map --out '%s/id%d%d' > '%s/id%d%d.json'",
                     models[i], flags[i], maps[i][k], tmpdir, i, k, tmpdir, i, k);
            CHECK_MSG(rc == 0, "%s %s: %s", models[i], maps[i][k], errtext);
            snprintf(b, sizeof b, "id%d%d.json", i, k);
            char *plan = slurp_tmp(b);
            CHECK_MSG(strstr(plan, "\"disk\": \"unlimited\"") && strstr(plan, ": \"disk\""),
                      "%s %s: no implicit disk in the printed plans: %s", models[i], maps[i][k], plan);
            free(plan);
            snprintf(a, sizeof a, "%s/id-one%d/000000.png", tmpdir, i);
            snprintf(b, sizeof b, "%s/id%d%d/000000.png", tmpdir, i, k);
            CHECK_MSG(same_pixels(a, b), "%s differs from %s", b, a);
            rc = run("generate --model '%s' %s --output-type latent --devices cpu:0,cpu:1 --device-map "
                     "%s --max-memory 0=200KB,cpu=200KB --out '%s/id%d%d-l'", models[i], flags[i],
                     maps[i][k], tmpdir, i, k);
            CHECK_MSG(rc == 0, "%s", errtext);
            snprintf(a, sizeof a, "%s/id-one%d-l/000000.safetensors", tmpdir, i);
            snprintf(b, sizeof b, "%s/id%d%d-l/000000.safetensors", tmpdir, i, k);
            CHECK_MSG(same_file(a, b), "%s differs from %s", b, a);
        }
        /* an explicit cap: the error names it, nothing is written */
        expect_error(run("generate --model '%s' %s --devices cpu:0,cpu:1 --device-map balanced "
                         "--max-memory 0=200KB,cpu=200KB,disk=1KB --out '%s/id-e'", models[i], flags[i],
                         tmpdir),
                     "disk=1000 bytes cap is too small");
        CHECK(!exists("%s/id-e", tmpdir));
    }
    /* tandem plan: the same, with the overflow counted on disk */
    int rc = run("plan --model '%s' --device-map balanced --max-memory 0=200KB,cpu=200KB > '%s/idp.json'",
                 PIPE, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    char *plan = slurp_tmp("idp.json");
    CHECK_MSG(strstr(plan, "\"max_memory\": {\"0\": 200000, \"cpu\": 200000, \"disk\": \"unlimited\"}"),
              "%s", plan);
    free(plan);
    expect_error(run("plan --model '%s' --device-map balanced --max-memory 0=200KB,cpu=200KB,disk=0",
                     PIPE), "disk=0 bytes cap is too small");
}

/* tandem plan --parallel auto prints the candidates and the choice; it
 * needs --ranks; plan takes no hand-given degrees; --ranks without it fails. */
TEST(plan_parallel_auto) {
    int rc = run("plan --model '%s' --parallel auto --ranks 2 --device cpu > '%s/par.json'", PIPE, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    char *plan = slurp_tmp("par.json");
    CHECK_MSG(plan && strstr(plan, "\"chosen\"") && strstr(plan, "\"layout\":\t\"dp=2\"") &&
                  strstr(plan, "\"layout\":\t\"dp=1,cfg=2\"") && strstr(plan, "defaults for the CPU"),
              "%s", plan);
    free(plan);
    expect_error(run("plan --model '%s' --parallel auto", PIPE), "--ranks");
    expect_error(run("plan --model '%s' --parallel cfg=2 --ranks 2", PIPE), "takes --parallel auto");
    expect_error(run("plan --model '%s' --ranks 2 --max-memory 0=1GB", PIPE), "--ranks and --images go with");
}

/* Replaces tmpdir/name/rel by what `make` (a shell command on $F) makes. */
static void plant(const char *name, const char *rel, const char *make) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "F='%s/%s/%s' && rm -rf \"$F\" && %s", tmpdir, name, rel, make);
    CHECK_MSG(system(cmd) == 0, "%s", cmd);
}

/* A FIFO as config.json, tokenizer file or weights; a symlink loop, a
 * folder or /dev/zero as weights: one line naming the file and what it is,
 * from generate and plan, never a hang or "no weights found". */
TEST(not_regular_files) {
    copy_pipe("nr-cfg");
    plant("nr-cfg", "unet/config.json", "mkfifo \"$F\"");
    expect_error(run_t("plan --model '%s/nr-cfg' --device-map auto --max-memory 0=1GB", tmpdir),
                 "unet/config.json: is a FIFO, not a regular file");
    expect_error(run_t("generate --model '%s/nr-cfg' --prompt x --steps 1 --out '%s/nr-o'", tmpdir, tmpdir),
                 "unet/config.json: is a FIFO, not a regular file");
    copy_pipe("nr-idx");
    plant("nr-idx", "model_index.json", "mkfifo \"$F\"");
    expect_error(run_t("plan --model '%s/nr-idx' --max-memory 0=1GB", tmpdir),
                 "model_index.json: is a FIFO, not a regular file");
    copy_pipe("nr-tok");
    plant("nr-tok", "tokenizer/vocab.json", "mkfifo \"$F\"");
    expect_error(run_t("generate --model '%s/nr-tok' --prompt x --steps 1 --out '%s/nr-o'", tmpdir, tmpdir),
                 "tokenizer/vocab.json: is a FIFO, not a regular file");
    static const struct { const char *make, *want; } w[] = {
        {"ln -s \"$F\" \"$F\"", "symlink loop"},
        {"mkdir \"$F\"", "is a directory"},
        {"ln -s /dev/zero \"$F\"", "is a character device, not a regular file"},
        {"mkfifo \"$F\"", "is a FIFO, not a regular file"},
    };
    for (size_t i = 0; i < sizeof w / sizeof *w; i++) {
        copy_pipe("nr-w");
        plant("nr-w", "vae/diffusion_pytorch_model.safetensors", w[i].make);
        char want[256];
        snprintf(want, sizeof want, "vae/diffusion_pytorch_model.safetensors: %s", w[i].want);
        expect_error(run_t("generate --model '%s/nr-w' --prompt x --steps 1 --overwrite --out '%s/nr-o'", tmpdir, tmpdir),
                     want);
        expect_error(run_t("plan --model '%s/nr-w' --max-memory 0=1GB", tmpdir), want);
    }
    CHECK(!exists("%s/nr-o/000000.png", tmpdir));
}

/* A model_index.json whose component names leave the folder ("../x",
 * "/abs", "a/b", "", "..") is refused by plan and generate with one line
 * naming model_index.json and the key; the file outside is never read (a
 * FIFO there would hang a reader: the timeout turns that into a failure). */
TEST(component_names_stay_inside) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/outside' && rm -f '%s/outside/config.json' && "
             "mkfifo '%s/outside/config.json'", tmpdir, tmpdir, tmpdir);
    CHECK(system(cmd) == 0);
    static const char *keys[] = {"../outside", "/etc", "unet/..", "", "..", "."};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        copy_pipe("cn");
        char idx[1024], json[1024];
        snprintf(idx, sizeof idx, "%s/cn/model_index.json", tmpdir);
        snprintf(json, sizeof json, "{\"_class_name\": \"StableDiffusionPipeline\", \"%s\": [\"diffusers\", "
                 "\"UNet2DConditionModel\"], \"unet\": [\"diffusers\", \"UNet2DConditionModel\"], "
                 "\"vae\": [\"diffusers\", \"AutoencoderKL\"], \"text_encoder\": [\"transformers\", "
                 "\"CLIPTextModel\"], \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"]}", keys[i]);
        test_spill(idx, json);
        char want[256];
        snprintf(want, sizeof want, "model_index.json: component name \"%s\"", keys[i]);
        expect_error(run_t("plan --model '%s/cn' --max-memory 0=1GB", tmpdir), want);
        expect_error(run_t("plan --model '%s/cn' --only unet --max-memory 0=1GB", tmpdir), want);
        expect_error(run_t("generate --model '%s/cn' --prompt x --steps 1 --out '%s/cn-o'", tmpdir, tmpdir),
                     want);
    }
    CHECK(!exists("%s/cn-o/000000.png", tmpdir));
}

/* The decode stage plans and loads only what decode runs (the VAE decoder
 * and post_quant_conv): the printed decode plan and `tandem plan --only
 * vae` have no vae.encoder or vae.quant_conv entry, so a small GPU 0 holds
 * decoder blocks, and the image is the one-device one. */
TEST(decode_plans_decoder_only) {
    const char *common = "--prompt 'a red cube' --steps 2 --seed 5 --quiet";
    int rc = run("generate --model '%s' %s --out '%s/dd-one'", PIPE, common, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    rc = run("generate --model '%s' %s --devices cpu:0,cpu:1 --device-map vae=sequential --max-memory "
             "0=60KB,1=10MB --print-device-map --out '%s/dd' > '%s/dd.json'", PIPE, common, tmpdir, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    char *plan = slurp_tmp("dd.json");
    CHECK_MSG(strstr(plan, "\"vae.decoder.conv_in\": 0") && !strstr(plan, "vae.encoder") &&
                  !strstr(plan, "vae.quant_conv") && strstr(plan, "vae.post_quant_conv"),
              "decode plan: %s", plan);
    free(plan);
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/dd-one/000000.png", tmpdir);
    snprintf(b, sizeof b, "%s/dd/000000.png", tmpdir);
    CHECK_MSG(same_pixels(a, b), "%s differs from %s", b, a);
    rc = run("plan --model '%s' --only vae --device-map vae=sequential --max-memory 0=60KB,1=10MB "
             "> '%s/dd-plan.json'", PIPE, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    plan = slurp_tmp("dd-plan.json");
    CHECK_MSG(strstr(plan, "\"vae.decoder.conv_in\": 0") && !strstr(plan, "vae.encoder") &&
                  !strstr(plan, "vae.quant_conv"), "plan --only vae: %s", plan);
    free(plan);
}

int main(void) {
    if (!cli_setup()) return 1;
    snprintf(FLUX, sizeof FLUX, "%s/flux_pipelines/flux-dev-tiny", TDM_FIXTURES);
    RUN(implicit_disk_runs);
    RUN(not_regular_files);
    RUN(component_names_stay_inside);
    RUN(decode_plans_decoder_only);
    RUN(plan_parallel_auto);
    if (!cli_teardown()) return 1;
    return test_summary();
}
