// label: unit
/* test_cli_limits.c — absurd sizes in a model folder's configs or in a
 * latents file end `tandem` with one error line naming that file and key,
 * never a flag the user did not pass, an allocator abort or a bare "out of
 * memory". Each case runs on a copy of the tiny SD pipeline with one config
 * key replaced. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "test_files.h"
#include "test_cli.h"
#include "io/safetensors.h"

/* No "--width"/"--height" in the message: no such flag was given. */
static void no_flag(void) {
    CHECK_MSG(!strstr(errtext, "--width") && !strstr(errtext, "--height"), "names a flag: %s", errtext);
}

TEST(config_sizes) {
    copy_pipe("ss");
    set_key("ss", "unet", "sample_size", "1000000000");
    expect_error(run("generate --model '%s/ss' --prompt x --steps 1 --out '%s/o'", tmpdir, tmpdir),
                 "unet/config.json: sample_size 1000000000 is out of range");
    no_flag();

    copy_pipe("ss3");
    set_key("ss3", "unet", "sample_size", "300000000");
    expect_error(run("generate --model '%s/ss3' --prompt x --steps 1 --out '%s/o'", tmpdir, tmpdir),
                 "sample_size 300000000");
    no_flag();

    copy_pipe("lpb");
    set_key("lpb", "unet", "layers_per_block", "1000000000");
    expect_error(run("generate --model '%s/lpb' --prompt x --steps 1 --out '%s/o'", tmpdir, tmpdir),
                 "unet/config.json: layers_per_block 1000000000 is out of range [1, 64]");

    copy_pipe("lev");
    set_key("lev", "vae", "block_out_channels", "[32,32,32,32,32,32,32,32,32,32,32,32,32,32,32,32]");
    expect_error(run("generate --model '%s/lev' --prompt x --steps 1 --out '%s/o'", tmpdir, tmpdir),
                 "vae/config.json: block_out_channels has 16 levels");
    no_flag();

    copy_pipe("clip");
    set_key("clip", "text_encoder", "num_hidden_layers", "1000000000");
    expect_error(run("generate --model '%s/clip' --prompt x --steps 1 --out '%s/o'", tmpdir, tmpdir),
                 "text_encoder/config.json: num_hidden_layers 1000000000 is out of range");

    CHECK(!exists("%s/o/000000.png", tmpdir));

    /* `plan` reads the same configs */
    expect_error(run("plan --model '%s/lpb' --max-memory cpu=64GiB", tmpdir), "layers_per_block 1000000000");
}

/* A latents file whose shape implies an image side past the limit names
 * the file, not --width. */
TEST(latents_sizes) {
    char path[512];
    snprintf(path, sizeof path, "%s/wide.safetensors", tmpdir);
    const int64_t shape[4] = {1, 4, 1, 5000};
    float *z = calloc(4 * 5000, sizeof *z);
    const char *names[1] = {"latents"};
    const int nd[1] = {4};
    const int64_t *shapes[1] = {shape};
    const float *data[1] = {z};
    CHECK(tdm_safetensors_write_f32(path, 1, names, nd, shapes, data, 0, NULL) == TDM_OK);
    free(z);
    expect_error(run("decode --model '%s' --latents '%s' --out '%s/x.png'", PIPE, path, tmpdir), "wide.safetensors");
    no_flag();
}

int main(void) {
    (void)same_pixels;   /* test_files.h's, unused here */
    if (!cli_setup()) { printf("cannot create a temporary folder\n"); return EXIT_FAILURE; }
    RUN(config_sizes);
    RUN(latents_sizes);
    if (!cli_teardown()) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
