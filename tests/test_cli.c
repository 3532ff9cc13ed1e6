/* test_cli.c — `tandem generate` end to end through the binary: bad input
 * gives one `tandem: error:` line naming the flag/file/tensor, a nonzero
 * exit and no output files; good runs write images, latents and the
 * manifest. Uses the tiny pipeline in tests/fixtures/pipelines/sd15-tiny. */
// label: unit
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "test_files.h"
#include "test_cli.h"

TEST(flags_rejected) {
    expect_error(run("generate --model '%s' --prompt x --width 60 --out '%s/o1'", PIPE, tmpdir), "--width 60");
    expect_error(run("generate --model '%s' --prompt x --height 33 --out '%s/o1'", PIPE, tmpdir), "--height 33");
    expect_error(run("generate --model '%s' --prompt x --steps 0 --out '%s/o1'", PIPE, tmpdir), "--steps 0");
    expect_error(run("generate --model '%s' --prompt x --steps abc --out '%s/o1'", PIPE, tmpdir), "--steps abc");
    expect_error(run("generate --model '%s' --out '%s/o1'", PIPE, tmpdir), "--prompt");
    expect_error(run("generate --prompt x --out '%s/o1'", tmpdir), "--model");
    expect_error(run("generate --model '%s' --prompt x --bogus 1", PIPE), "--bogus");
    expect_error(run("generate --model '%s' --prompt x --output-type jpg", PIPE), "--output-type jpg");
    expect_error(run("generate --model '%s' --prompt \"$(printf 'caf\\303(')\" --out '%s/o1'", PIPE, tmpdir), "invalid UTF-8");
    expect_error(run("generate --model '%s' --prompt x --scheduler NoSuchScheduler --out '%s/o1'", PIPE, tmpdir),
                 "NoSuchScheduler");
    expect_error(run("generate --model '%s/nonexistent' --prompt x --out '%s/o1'", tmpdir, tmpdir), "nonexistent");
    expect_error(run("generate --model '%s' --prompt x --device cuda:0 --out '%s/o1'", PIPE, tmpdir), "cuda:0");
    CHECK(!exists("%s/o1", tmpdir));
}

TEST(unwritable_output) {
    char f[512];
    snprintf(f, sizeof f, "%s/plainfile", tmpdir);
    test_spill(f, "x");
    expect_error(run("generate --model '%s' --prompt x --steps 1 --out '%s/sub'", PIPE, f), "--out");
}

TEST(bad_model_folders) {
    char p[512];
    copy_pipe("badclass");
    snprintf(p, sizeof p, "%s/badclass/model_index.json", tmpdir);
    test_spill(p, "{\"_class_name\": \"KandinskyPipeline\", \"unet\": [\"diffusers\", \"UNet2DConditionModel\"]}");
    expect_error(run("generate --model '%s/badclass' --prompt x --steps 1 --out '%s/o2'", tmpdir, tmpdir),
                 "KandinskyPipeline");

    copy_pipe("badjson");
    snprintf(p, sizeof p, "%s/badjson/unet/config.json", tmpdir);
    test_spill(p, "{\"in_channels\": 4,, }");
    expect_error(run("generate --model '%s/badjson' --prompt x --steps 1 --out '%s/o2'", tmpdir, tmpdir),
                 "unet/config.json");

    copy_pipe("truncated");
    snprintf(p, sizeof p, "%s/truncated/unet/diffusion_pytorch_model.safetensors", tmpdir);
    CHECK(truncate(p, 1000) == 0);
    expect_error(run("generate --model '%s/truncated' --prompt x --steps 1 --out '%s/o2'", tmpdir, tmpdir),
                 "diffusion_pytorch_model.safetensors");

    copy_pipe("empty");
    snprintf(p, sizeof p, "%s/empty/vae/diffusion_pytorch_model.safetensors", tmpdir);
    test_spill(p, "");
    /* the VAE fails after denoising: the denoised latent is kept for --resume */
    expect_error(run("generate --model '%s/empty' --prompt x --steps 1 --out '%s/o2v'", tmpdir, tmpdir),
                 "vae/diffusion_pytorch_model.safetensors");
    CHECK(exists("%s/o2v/.tandem-latents/000000.safetensors", tmpdir));

    /* a file instead of a folder: a pickle is refused with how to convert it, a single
     * .safetensors file with how to make a folder of it (nothing written) */
    snprintf(p, sizeof p, "%s/model.ckpt", tmpdir);
    test_spill(p, "not a pickle");
    expect_error(run("generate --model '%s/model.ckpt' --prompt x --steps 1 --out '%s/o3'", tmpdir, tmpdir),
                 "a pickle checkpoint; tandem reads only safetensors");
    CHECK(strstr(errtext, "from_single_file") && strstr(errtext, "save_pretrained"));
    snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
    test_spill(p, "{}");
    expect_error(run("generate --model '%s/model.safetensors' --prompt x --steps 1 --out '%s/o3'", tmpdir,
                     tmpdir), "model.safetensors: 2 bytes is too short for a safetensors file");
    expect_error(run("plan --model '%s/model.safetensors' --max-memory 0=1GiB", tmpdir),
                 "model.safetensors: 2 bytes is too short for a safetensors file");
    CHECK(!exists("%s/o3", tmpdir));

    /* a config that disagrees with the stored tensors */
    copy_pipe("shape");
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "sed -i 's/\"layers_per_block\": [0-9]*/\"layers_per_block\": 3/' '%s/shape/unet/config.json'",
             tmpdir);
    CHECK(system(cmd) == 0);
    expect_error(run("generate --model '%s/shape' --prompt x --steps 1 --out '%s/o2'", tmpdir, tmpdir), "unet");
    CHECK(!exists("%s/o2", tmpdir));
}

TEST(generate_png_and_latents) {
    int rc = run("generate --model '%s' --prompt 'a cat' --prompt 'a dog' --num-images-per-prompt 2 "
                 "--steps 2 --seed 5 --quiet --out '%s/good'", PIPE, tmpdir);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, errtext);
    for (int i = 0; i < 4; i++) CHECK(exists("%s/good/%06d.png", tmpdir, i));
    CHECK(!exists("%s/good/%06d.png", tmpdir, 4));
    char p[512];
    snprintf(p, sizeof p, "%s/good/manifest.jsonl", tmpdir);
    FILE *f = fopen(p, "r");
    CHECK(f != NULL);
    int lines = 0;
    char line[4096];
    while (f && fgets(line, sizeof line, f)) {
        char want[64];
        snprintf(want, sizeof want, "\"seed\":%d", 5 + lines);
        CHECK_MSG(strstr(line, want) != NULL, "line %d: %s", lines, line);
        CHECK(strstr(line, lines < 2 ? "\"prompt\":\"a cat\"" : "\"prompt\":\"a dog\"") != NULL);
        lines++;
    }
    if (f) fclose(f);
    CHECK(lines == 4);

    snprintf(p, sizeof p, "%s/prompts.txt", tmpdir);
    test_spill(p, "first prompt\r\n\nsecond prompt\n");
    rc = run("generate --model '%s' --prompts-file '%s' --steps 1 --quiet --out '%s/pf'", PIPE, p, tmpdir);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, errtext);
    CHECK(exists("%s/pf/000001.png", tmpdir) && !exists("%s/pf/000002.png", tmpdir));
    snprintf(p, sizeof p, "%s/pf/manifest.jsonl", tmpdir);
    f = fopen(p, "r");
    CHECK(f && fgets(line, sizeof line, f) && strstr(line, "\"prompt\":\"first prompt\""));
    CHECK(f && fgets(line, sizeof line, f) && strstr(line, "\"prompt\":\"second prompt\""));
    if (f) fclose(f);

    rc = run("generate --model '%s' --prompt 'a cat' --steps 2 --seed 5 --quiet --output-type latent "
             "--out '%s/lat'", PIPE, tmpdir);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, errtext);
    CHECK(exists("%s/lat/000000.safetensors", tmpdir));
    CHECK(!exists("%s/lat/000000.png", tmpdir));
}

static unsigned char *read_all(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)*len + 1);
    if (b && fread(b, 1, (size_t)*len, f) != (size_t)*len) { free(b); b = NULL; }
    fclose(f);
    return b;
}

/* The data section of a safetensors file (after the header). */
static int same_tensor_data(const char *a, const char *b) {
    long la = 0, lb = 0;
    unsigned char *x = read_all(a, &la), *y = read_all(b, &lb);
    int same = 0;
    if (x && y && la > 8 && lb > 8) {
        unsigned long ha = 0, hb = 0;
        for (int i = 7; i >= 0; i--) { ha = ha << 8 | x[i]; hb = hb << 8 | y[i]; }
        same = (long)(la - 8 - (long)ha) == (long)(lb - 8 - (long)hb) &&
               !memcmp(x + 8 + ha, y + 8 + hb, (size_t)(la - 8 - (long)ha));
    }
    free(x);
    free(y);
    return same;
}


/* encode → generate --embeddings → decode equals one-shot generate, bit for bit. */
static void staged_equals_oneshot(const char *pipe, const char *extra, const char *enc_extra, const char *tag) {
    int rc = run("generate --model '%s' --prompt 'a lighthouse' --prompt 'a fox' --steps 3 --seed 11 %s "
                 "--quiet --out '%s/%s-one'", pipe, extra, tmpdir, tag);
    CHECK_MSG(rc == 0, "%s one-shot png: %s", tag, errtext);
    rc = run("generate --model '%s' --prompt 'a lighthouse' --prompt 'a fox' --steps 3 --seed 11 %s "
             "--output-type latent --quiet --out '%s/%s-onel'", pipe, extra, tmpdir, tag);
    CHECK_MSG(rc == 0, "%s one-shot latent: %s", tag, errtext);
    rc = run("encode --model '%s' --prompt 'a lighthouse' --prompt 'a fox' %s --quiet --out '%s/%s-emb.safetensors'",
             pipe, enc_extra, tmpdir, tag);
    CHECK_MSG(rc == 0, "%s encode: %s", tag, errtext);
    rc = run("generate --model '%s' --embeddings '%s/%s-emb.safetensors' --steps 3 --seed 11 %s "
             "--output-type latent --report-memory --quiet --out '%s/%s-staged'", pipe, tmpdir, tag, extra, tmpdir, tag);
    CHECK_MSG(rc == 0, "%s generate --embeddings: %s", tag, errtext);
    CHECK_MSG(strstr(errtext, "denoise stage peak") && !strstr(errtext, "encode stage"), "%s: %s", tag, errtext);
    char a[512], b[512];
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/%s-onel/%06d.safetensors", tmpdir, tag, i);
        snprintf(b, sizeof b, "%s/%s-staged/%06d.safetensors", tmpdir, tag, i);
        CHECK_MSG(same_tensor_data(a, b), "%s: latents %d differ between one-shot and staged", tag, i);
        rc = run("decode --model '%s' --latents '%s' --report-memory --quiet --out '%s/%s-dec%d.png'", pipe, b,
                 tmpdir, tag, i);
        CHECK_MSG(rc == 0, "%s decode: %s", tag, errtext);
        CHECK_MSG(strstr(errtext, "decode stage peak") != NULL, "%s", errtext);
        snprintf(a, sizeof a, "%s/%s-one/%06d.png", tmpdir, tag, i);
        snprintf(b, sizeof b, "%s/%s-dec%d.png", tmpdir, tag, i);
        CHECK_MSG(same_pixels(a, b), "%s: image %d differs between one-shot and staged", tag, i);
    }
}

TEST(staged_sd) { staged_equals_oneshot(PIPE, "--guidance 5", "", "sd"); }

/* SDXL through the binary: the staged flow with micro-conditioning and
 * guidance_rescale equals one shot (both encoders, and text_encoder_2 alone);
 * the xl_micro_cond golden case given as its CLI flags matches diffusers'
 * PNG within 1; SDXL-only flags on an SD pipeline and bad values are one-line
 * errors. */
static int pixels_within(const char *a, const char *b, int tol) {
    uint8_t *x = NULL, *y = NULL;
    int wa, ha, wb, hb, ok = tdm_png_read(a, &x, &wa, &ha) == TDM_OK &&
                             tdm_png_read(b, &y, &wb, &hb) == TDM_OK && wa == wb && ha == hb;
    for (long k = 0; ok && k < (long)wa * ha * 3; k++) ok = abs((int)x[k] - (int)y[k]) <= tol;
    free(x);
    free(y);
    return ok;
}

TEST(sdxl_cli) {
    char xl[512], te2[512], exp[640];
    snprintf(xl, sizeof xl, "%s/sdxl_pipelines/sdxl-tiny", TDM_FIXTURES);
    snprintf(te2, sizeof te2, "%s/sdxl_pipelines/sdxl-tiny-te2", TDM_FIXTURES);
    staged_equals_oneshot(xl, "--original-size 128x96 --crops-coords-top-left 4,8 --guidance-rescale 0.3",
                          "", "sdxl");
    staged_equals_oneshot(te2, "--guidance 3", "", "sdxl-te2");
    /* diffusers' xl_micro_cond: original_size (128, 96), crop (8, 4), target_size (64, 48) */
    int rc = run("generate --model '%s' --prompt 'a castle on a hill' --negative-prompt 'blurry, low quality' "
                 "--seed 31 --steps 5 --guidance 5.0 --width 32 --height 64 --original-size 96x128 "
                 "--target-size 48x64 --crops-coords-top-left 8,4 --quiet --out '%s/xl-micro'", xl, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    snprintf(exp, sizeof exp, "%s/sdxl_pipelines/expected/sdxl-tiny/xl_micro_cond_0.png", TDM_FIXTURES);
    char got[512];
    snprintf(got, sizeof got, "%s/xl-micro/000000.png", tmpdir);
    CHECK_MSG(pixels_within(exp, got, 1), "%s differs from diffusers' %s", got, exp);
    /* diffusers' xl_prompt2_eulera: both second prompts */
    rc = run("generate --model '%s' --prompt 'a bowl of fruit on a wooden table' --prompt-2 'an oil painting, "
             "dark colours' --negative-prompt ugly --negative-prompt-2 'bright, flat' --seed 7 --steps 6 "
             "--guidance 7.0 --scheduler EulerAncestralDiscreteScheduler --quiet --out '%s/xl-p2'", xl, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    snprintf(exp, sizeof exp, "%s/sdxl_pipelines/expected/sdxl-tiny/xl_prompt2_eulera_0.png", TDM_FIXTURES);
    snprintf(got, sizeof got, "%s/xl-p2/000000.png", tmpdir);
    CHECK_MSG(pixels_within(exp, got, 1), "%s differs from diffusers' %s", got, exp);
    /* --clip-skip through the CLI: diffusers' sd15_skip1 (tests/fixtures/clip_skip) */
    rc = run("generate --model '%s' --prompt 'a photo of an astronaut riding a horse on mars' --negative-prompt "
             "blurry --seed 0 --steps 6 --guidance 7.5 --clip-skip 1 --quiet --out '%s/skip1'", PIPE, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    snprintf(exp, sizeof exp, "%s/clip_skip/expected/sd15-tiny/sd15_skip1_0.png", TDM_FIXTURES);
    snprintf(got, sizeof got, "%s/skip1/000000.png", tmpdir);
    CHECK_MSG(pixels_within(exp, got, 1), "%s differs from diffusers' %s", got, exp);
    expect_error(run("generate --model '%s' --prompt x --clip-skip 5 --quiet --out '%s/e7'", PIPE, tmpdir),
                 "clip skip 5 not in [0, 2)");
    expect_error(run("generate --model '%s' --embeddings x.safetensors --clip-skip 1 --out '%s/e8'", PIPE, tmpdir),
                 "--clip-skip shapes the prompt embeddings");
    expect_error(run("generate --model '%s' --prompt x --original-size 64x64 --quiet --out '%s/e1'", PIPE, tmpdir),
                 "only SDXL pipelines take micro-conditioning");
    expect_error(run("generate --model '%s' --prompt x --negative-prompt-2 y --quiet --out '%s/e2'", PIPE, tmpdir),
                 "--negative-prompt-2");
    expect_error(run("generate --model '%s' --prompt x --original-size 64 --out '%s/e3'", xl, tmpdir),
                 "--original-size 64: expected WIDTHxHEIGHT");
    expect_error(run("generate --model '%s' --prompt x --crops-coords-top-left -1,0 --out '%s/e4'", xl, tmpdir),
                 "--crops-coords-top-left -1,0: expected TOP,LEFT");
    expect_error(run("generate --model '%s' --prompt x --guidance-rescale 1.5 --out '%s/e5'", xl, tmpdir),
                 "--guidance-rescale 1.5");
    char flux[512];
    snprintf(flux, sizeof flux, "%s/flux_pipelines/flux-schnell-tiny", TDM_FIXTURES);
    expect_error(run("generate --model '%s' --prompt x --guidance-rescale 0.5 --quiet --out '%s/e6'", flux, tmpdir),
                 "--guidance-rescale: FluxPipeline has no classifier-free guidance");
    expect_error(run("generate --model '%s' --prompt x --clip-skip 1 --quiet --out '%s/e9'", flux, tmpdir),
                 "--clip-skip 1: FluxPipeline takes no clip_skip");
    struct stat sb;
    CHECK_MSG(stat(tmpdir, &sb) == 0, "tmpdir");
}

/* Single-file checkpoints in the original layout (tools/ref/make_single_files.py,
 * checked there with diffusers' own conversion): with --config the folder
 * they were made from, the folder's images and latents exactly; bad
 * combinations are one-line errors naming the flag, file or tensor. */
static int same_file(const char *a, const char *b);

TEST(single_file) {
    char f15[512], fxl[512], d15[512], dxl[512], a[700], b[700];
    snprintf(f15, sizeof f15, "%s/single_file/sd15-tiny.safetensors", TDM_FIXTURES);
    snprintf(fxl, sizeof fxl, "%s/single_file/sdxl-tiny.safetensors", TDM_FIXTURES);
    snprintf(d15, sizeof d15, "%s/pipelines/sd15-tiny", TDM_FIXTURES);
    snprintf(dxl, sizeof dxl, "%s/sdxl_pipelines/sdxl-tiny", TDM_FIXTURES);
    const char *job = "--prompt 'a red fox' --prompt 'a lighthouse' --negative-prompt dark --steps 3 --seed 4 --quiet";
    int rc = run("generate --model '%s' %s --out '%s/sf-dir'", d15, job, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    rc = run("generate --model '%s' --config '%s' %s --out '%s/sf-file'", f15, d15, job, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/sf-dir/%06d.png", tmpdir, i);
        snprintf(b, sizeof b, "%s/sf-file/%06d.png", tmpdir, i);
        CHECK_MSG(same_pixels(a, b), "sd15 single file: image %d differs from the folder's", i);
    }
    rc = run("generate --model '%s' %s --output-type latent --out '%s/sfx-dir'", dxl, job, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    rc = run("generate --model '%s' --config '%s' %s --output-type latent --out '%s/sfx-file'", fxl, dxl, job, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/sfx-dir/%06d.safetensors", tmpdir, i);
        snprintf(b, sizeof b, "%s/sfx-file/%06d.safetensors", tmpdir, i);
        CHECK_MSG(same_tensor_data(a, b), "sdxl single file: latents %d differ from the folder's", i);
    }
    /* SD 2.x: the text encoder in OpenCLIP's layout (fused q/k/v) */
    char f2[512], d2[512];
    snprintf(f2, sizeof f2, "%s/single_file/sd2-tiny-v.safetensors", TDM_FIXTURES);
    snprintf(d2, sizeof d2, "%s/pipelines/sd2-tiny-v", TDM_FIXTURES);
    rc = run("generate --model '%s' %s --out '%s/sf2-dir'", d2, job, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    rc = run("generate --model '%s' --config '%s' %s --out '%s/sf2-file'", f2, d2, job, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    snprintf(a, sizeof a, "%s/sf2-dir/000001.png", tmpdir);
    snprintf(b, sizeof b, "%s/sf2-file/000001.png", tmpdir);
    CHECK_MSG(same_pixels(a, b), "sd2 single file: the image differs from the folder's");
    /* SDXL's UNet from the file split over two virtual GPUs, the rest streamed from the
     * file on disk (the views stay valid while the set is kept open) */
    rc = run("generate --model '%s' --config '%s' %s --output-type latent --devices cpu:0,cpu:1 "
             "--device-map unet=sequential --max-memory 0=700KB,1=500KB,cpu=200KB,disk=1GB --out '%s/sfx-split'",
             fxl, dxl, job, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    snprintf(a, sizeof a, "%s/sfx-dir/000001.safetensors", tmpdir);
    snprintf(b, sizeof b, "%s/sfx-split/000001.safetensors", tmpdir);
    CHECK_MSG(same_tensor_data(a, b), "sdxl single file split: latents differ from the folder's");
    /* FLUX in the BFL layout (the transformer alone; encoders and VAE from the folder) */
    char ffile[512], fdir[512];
    snprintf(ffile, sizeof ffile, "%s/single_file/flux-dev-tiny.safetensors", TDM_FIXTURES);
    snprintf(fdir, sizeof fdir, "%s/flux_pipelines/flux-dev-tiny", TDM_FIXTURES);
    const char *fjob = "--prompt 'a red fox' --steps 2 --seed 4 --width 64 --height 64 --max-sequence-length 77 --quiet";
    rc = run("generate --model '%s' %s --out '%s/sff-dir'", fdir, fjob, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    rc = run("generate --model '%s' --config '%s' %s --out '%s/sff-file'", ffile, fdir, fjob, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    snprintf(a, sizeof a, "%s/sff-dir/000000.png", tmpdir);
    snprintf(b, sizeof b, "%s/sff-file/000000.png", tmpdir);
    CHECK_MSG(same_pixels(a, b), "flux single file: the image differs from the folder's");
    /* components from files of their own: FLUX's VAE as a bare original-layout ae.safetensors, the
     * encoders as transformers files (T5 sharded) — and a folder model with its VAE given apart */
    char ae[512], te[600], te2[600];
    snprintf(ae, sizeof ae, "%s/single_file/flux-dev-tiny-ae.safetensors", TDM_FIXTURES);
    snprintf(te, sizeof te, "%s/text_encoder/model.safetensors", fdir);
    snprintf(te2, sizeof te2, "%s/text_encoder_2/model.safetensors.index.json", fdir);
    rc = run("generate --model '%s' --config '%s' --vae '%s' --text-encoder '%s' --text-encoder-2 '%s' %s "
             "--out '%s/sff-parts'", ffile, fdir, ae, te, te2, fjob, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    snprintf(b, sizeof b, "%s/sff-parts/000000.png", tmpdir);
    CHECK_MSG(same_pixels(a, b), "flux single file with component files: the image differs from the folder's");
    rc = run("generate --model '%s' --vae '%s' %s --out '%s/sff-vae'", fdir, ae, fjob, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    snprintf(b, sizeof b, "%s/sff-vae/000000.png", tmpdir);
    CHECK_MSG(same_pixels(a, b), "flux folder with --vae: the image differs from the folder's");
    expect_error(run("generate --model '%s' --vae '%s/nope.safetensors' %s --out '%s/sff-e'", fdir, tmpdir, fjob,
                     tmpdir), "nope.safetensors");
    /* tandem plan weighs the file's tensors as the folder's */
    rc = run("plan --model '%s' --max-memory 0=1MB,cpu=1GB --device-map balanced > '%s/plan-dir.json'", dxl, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    rc = run("plan --model '%s' --config '%s' --max-memory 0=1MB,cpu=1GB --device-map balanced > '%s/plan-file.json'",
             fxl, dxl, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    snprintf(a, sizeof a, "%s/plan-dir.json", tmpdir);
    snprintf(b, sizeof b, "%s/plan-file.json", tmpdir);
    CHECK_MSG(same_file(a, b), "the single file's plan differs from the folder's");
    /* the staged commands take it too */
    rc = run("encode --model '%s' --config '%s' --prompt x --quiet --out '%s/sf-emb.safetensors'", fxl, dxl, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    expect_error(run("generate --model '%s' --config '%s' --prompt x --out '%s/sf-e1'", fxl, d15, tmpdir),
                 "conv_in.weight");
    expect_error(run("generate --model '%s' --config '%s' --prompt x --out '%s/sf-e2'", d15, d15, tmpdir),
                 "--config");
    {   /* a file whose conv_norm_out key is misspelled (same length: the header stays valid) */
        long n = 0;
        unsigned char *bytes = read_all(f15, &n);
        const char *key = "model.diffusion_model.out.0.weight";
        unsigned char *at = NULL;
        for (long i = 0; bytes && !at && i + (long)strlen(key) <= n; i++)
            if (!memcmp(bytes + i, key, strlen(key))) at = bytes + i;
        CHECK(at != NULL);
        if (at) {
            at[strlen(key) - 1] = 'X';
            snprintf(a, sizeof a, "%s/broken.safetensors", tmpdir);
            FILE *fp = fopen(a, "wb");
            CHECK(fp && fwrite(bytes, 1, (size_t)n, fp) == (size_t)n);
            if (fp) fclose(fp);
            expect_error(run("generate --model '%s' --config '%s' --prompt x --out '%s/sf-e6'", a, d15, tmpdir),
                         "missing tensor \"conv_norm_out.weight\" (diffusers' name");
        }
        free(bytes);
    }
    snprintf(a, sizeof a, "%s/vae/diffusion_pytorch_model.safetensors", d15);
    expect_error(run("generate --model '%s' --config '%s' --prompt x --out '%s/sf-e3'", a, d15, tmpdir),
                 "not a single-file Stable Diffusion");
    /* without --config, as diffusers: the family's base repo (SD 1.x: stable-diffusion-v1-5/...)
     * from the Hugging Face cache — absent: one line saying how to get its configs; present
     * (configs and tokenizer only, as from_single_file downloads them): the folder's image */
    char hub[600], snap[900], cmd[3000];
    snprintf(hub, sizeof hub, "%s/hub", tmpdir);
    CHECK(setenv("HF_HUB_CACHE", hub, 1) == 0);
    expect_error(run("generate --model '%s' --prompt x --out '%s/sf-e4'", f15, tmpdir),
                 "stable-diffusion-v1-5/stable-diffusion-v1-5 in the Hugging Face cache");
    snprintf(snap, sizeof snap, "%s/models--stable-diffusion-v1-5--stable-diffusion-v1-5/snapshots/0123abc", hub);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cd '%s' && find . \\( -name '*.json' -o -name '*.txt' \\) "
             "-exec cp --parents {} '%s' \\;", snap, d15, snap);
    CHECK_MSG(system(cmd) == 0, "%s", cmd);
    rc = run("generate --model '%s' %s --out '%s/sf-hub'", f15, job, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    snprintf(a, sizeof a, "%s/sf-dir/000000.png", tmpdir);
    snprintf(b, sizeof b, "%s/sf-hub/000000.png", tmpdir);
    CHECK_MSG(same_pixels(a, b), "sd15 single file with the cached configs: the image differs from the folder's");
    expect_error(run("generate --model '%s' --prompt x --out '%s/sf-e5'", fxl, tmpdir),
                 "stabilityai/stable-diffusion-xl-base-1.0 in the Hugging Face cache");
    unsetenv("HF_HUB_CACHE");
}

TEST(staged_flux) {
    char flux[512];
    snprintf(flux, sizeof flux, "%s/flux_pipelines/flux-dev-tiny", TDM_FIXTURES);
    staged_equals_oneshot(flux, "--max-sequence-length 77 --width 64 --height 128", "--max-sequence-length 77", "flux");
    /* schnell defaults: 4 steps, no guidance embedding */
    snprintf(flux, sizeof flux, "%s/flux_pipelines/flux-schnell-tiny", TDM_FIXTURES);
    staged_equals_oneshot(flux, "--width 64 --height 64", "", "schnell");
}

TEST(flux_errors) {
    char flux[512];
    snprintf(flux, sizeof flux, "%s/flux_pipelines/flux-dev-tiny", TDM_FIXTURES);
    expect_error(run("generate --model '%s' --prompt x --max-sequence-length 600 --out '%s/f1'", flux, tmpdir),
                 "--max-sequence-length 600");
    expect_error(run("generate --model '%s' --prompt x --width 72 --height 64 --out '%s/f1'", flux, tmpdir),
                 "multiples of 16");
    expect_error(run("generate --model '%s' --prompt x --negative-prompt y --steps 1 --width 64 --height 64 "
                     "--out '%s/f1'", flux, tmpdir), "--negative-prompt");
    expect_error(run("generate --model '%s' --prompt x --prompt-2 a --prompt-2 b --out '%s/f1'", flux, tmpdir),
                 "--prompt-2");
    CHECK(!exists("%s/f1", tmpdir));
    /* a T5 tokenizer file of the wrong type */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/fbad' && cp -r '%s' '%s/fbad' && "
             "sed -i 's/\"type\": *\"Unigram\"/\"type\": \"BPE\"/' '%s/fbad/tokenizer_2/tokenizer.json'",
             tmpdir, flux, tmpdir, tmpdir);
    CHECK(system(cmd) == 0);
    expect_error(run("encode --model '%s/fbad' --prompt x --out '%s/fe.safetensors'", tmpdir, tmpdir), "BPE");
    CHECK(!exists("%s/fe.safetensors", tmpdir));
    /* a folder missing the component a stage needs */
    snprintf(cmd, sizeof cmd, "rm -rf '%s/fbad/text_encoder_2'", tmpdir);
    CHECK(system(cmd) == 0);
    expect_error(run("encode --model '%s/fbad' --prompt x --out '%s/fe.safetensors'", tmpdir, tmpdir),
                 "text_encoder_2");
    /* embeddings from an SD pipeline are refused by a FLUX model, naming both */
    expect_error(run("generate --model '%s' --embeddings '%s/emb-sd2.safetensors' --width 64 --height 64 "
                     "--out '%s/f2'", flux, tmpdir, tmpdir),
                 "embeddings were made for StableDiffusionPipeline, this model is FluxPipeline");
    /* FLUX latents of the wrong size for --width/--height */
    int rc = run("generate --model '%s' --prompt x --steps 1 --width 64 --height 64 --max-sequence-length 8 "
                 "--output-type latent --quiet --out '%s/fl'", flux, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    expect_error(run("decode --model '%s' --latents '%s/fl/000000.safetensors' --width 64 --height 128 "
                     "--out '%s/fx.png'", flux, tmpdir, tmpdir), "do not fit");
    CHECK(!exists("%s/fx.png", tmpdir));
}

/* 1 if two files have the same bytes. */
static int same_file(const char *a, const char *b) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    return system(cmd) == 0;
}

/* The FLUX transformer split over two virtual devices (standing for GPUs 0
 * and 1) with the last blocks offloaded to host RAM or disk gives the
 * one-device image and latents, byte for byte; bad split flags fail with
 * one line. */
TEST(flux_split) {
    char flux[512], a[1024], b[1024];
    snprintf(flux, sizeof flux, "%s/flux_pipelines/flux-dev-tiny", TDM_FIXTURES);
    const char *common = "--prompt 'a red cube' --steps 2 --width 64 --height 64 --seed 3 --quiet";
    int rc = run("generate --model '%s' %s --out '%s/one'", flux, common, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    rc = run("generate --model '%s' %s --output-type latent --out '%s/one-l'", flux, common, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    /* the transformer over both GPUs (the other components whole on GPU 1), then
     * "auto" with host RAM: see tandem plan; host/disk streaming itself is
     * covered block by block in test_flux */
    const char *maps[2][2] = {{"sequential", "0=200KB,1=3MB"}, {"auto", "0=1MB,1=1MB"}};
    for (int i = 0; i < 2; i++) {
        rc = run("generate --model '%s' %s --devices cpu:0,cpu:1 --device-map transformer=%s "
                 "--max-memory %s --report-memory --out '%s/split%d'", flux, common, maps[i][0],
                 maps[i][1], tmpdir, i);
        CHECK_MSG(rc == 0, "%s", errtext);
        /* virtual GPU 1 was used (its peak counts activations too: budgets cover weights,
         * as accelerate's max_memory does); nothing was offloaded to host RAM */
        const char *m1 = strstr(errtext, "memory: cpu:1 peak ");
        long long peak1 = m1 ? atoll(m1 + 19) : -1;
        CHECK_MSG(peak1 > 0, "cpu:1 peak %lld: %s", peak1, errtext);
        /* and per stage: the split transformer holds blocks on GPU 1 while it denoises */
        const char *dn = "memory: denoise stage peak on cpu:1 ", *d1 = strstr(errtext, dn);
        long long dpeak1 = d1 ? atoll(d1 + strlen(dn)) : -1;
        CHECK_MSG(dpeak1 > 0 && dpeak1 <= peak1, "denoise peak on cpu:1 %lld: %s", dpeak1, errtext);
        CHECK_MSG(strstr(errtext, "memory: host peak 0 bytes") != NULL, "%s", errtext);
        snprintf(a, sizeof a, "%s/one/000000.png", tmpdir);
        snprintf(b, sizeof b, "%s/split%d/000000.png", tmpdir, i);
        CHECK_MSG(same_pixels(a, b), "%s differs from %s", b, a);
        rc = run("generate --model '%s' %s --output-type latent --devices cpu:0,cpu:1 --device-map "
                 "transformer=%s --max-memory %s --out '%s/split%d-l'", flux, common, maps[i][0],
                 maps[i][1], tmpdir, i);
        CHECK_MSG(rc == 0, "%s", errtext);
        snprintf(a, sizeof a, "%s/one-l/000000.safetensors", tmpdir);
        snprintf(b, sizeof b, "%s/split%d-l/000000.safetensors", tmpdir, i);
        CHECK_MSG(same_file(a, b), "%s differs from %s", b, a);
    }
    expect_error(run("generate --model '%s' %s --devices cpu:0,cpu:1 --device-map transformer=auto "
                     "--out '%s/e1'", flux, common, tmpdir), "--max-memory");
    expect_error(run("generate --model '%s' %s --devices cpu:0,cpu:2 --device-map transformer=auto "
                     "--max-memory 0=1MB --out '%s/e1'", flux, common, tmpdir), "--devices cpu:0,cpu:2");
    expect_error(run("generate --model '%s' %s --devices cpu:0,cpu:1 --device-map transformer=auto "
                     "--max-memory 0=1MB,2=1MB --out '%s/e1'", flux, common, tmpdir), "GPU 2 has no device");
    expect_error(run("generate --model '%s' %s --devices cpu:0 --out '%s/e1'", flux, common, tmpdir),
                 "--devices needs --device-map");
    /* --gpus-per-rank: GPUs of each rank's own, so only with --device cuda, and only as many
     * as there are (64 exceed any machine this runs on) */
    expect_error(run("generate --model '%s' %s --gpus-per-rank 2 --out '%s/e1'", flux, common, tmpdir),
                 "needs --device cuda");
    expect_error(run("generate --model '%s' %s --device cuda --gpus-per-rank 64 --device-map "
                     "transformer=auto --max-memory 0=1MB --out '%s/e1'", flux, common, tmpdir),
                 "--gpus-per-rank 64 needs GPUs 0..63");
    /* the VAE split over both GPUs (the rest whole on GPU 1): the same image */
    rc = run("generate --model '%s' %s --device-map vae=sequential --max-memory 0=100KB,1=10MB "
             "--devices cpu:0,cpu:1 --out '%s/vae-split'", flux, common, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    snprintf(a, sizeof a, "%s/one/000000.png", tmpdir);
    snprintf(b, sizeof b, "%s/vae-split/000000.png", tmpdir);
    CHECK_MSG(same_pixels(a, b), "%s differs from %s", b, a);
    expect_error(run("generate --model '%s' --prompt x --device-map transformer=auto --max-memory 0=1MB "
                     "--devices cpu:0 --out '%s/e1'", PIPE, tmpdir), "no model component transformer");
    expect_error(run("generate --model '%s' %s --devices cpu:0,cpu:1 --device-map transformer=auto "
                     "--max-memory 0=10KB,1=10KB,disk=10KB --out '%s/e1'", flux, common, tmpdir),
                 "disk=10000 bytes cap is too small");
    CHECK(!exists("%s/e1", tmpdir));
}

/* Pipeline-level placement (whole components over two virtual GPUs, as
 * diffusers' device_map="balanced") gives the one-device image, SD and FLUX. */
/* The SD UNet split block-wise over two virtual GPUs and host RAM, then disk
 * (CLIP and the VAE whole on GPU 0), then CLIP split too: the same pixels and
 * latents as one device. */
TEST(unet_split) {
    char a[1024], b[1024];
    const char *common = "--prompt 'a red cube' --steps 3 --seed 5 --quiet";
    int rc = run("generate --model '%s' %s --out '%s/us-one'", PIPE, common, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    rc = run("generate --model '%s' %s --output-type latent --out '%s/us-one-l'", PIPE, common,
             tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    const char *mm[3] = {"0=450KB,1=300KB,cpu=700KB,disk=1GB", "0=450KB,1=300KB,cpu=50KB,disk=1GB",
                         "0=350KB,1=300KB,cpu=700KB,disk=1GB"};
    const char *maps[3] = {"unet=sequential", "unet=sequential",
                           "unet=sequential --device-map text_encoder=sequential"};
    for (int i = 0; i < 3; i++) {
        rc = run("generate --model '%s' %s --devices cpu:0,cpu:1 --device-map %s "
                 "--max-memory %s --report-memory --out '%s/us%d'", PIPE, common, maps[i], mm[i],
                 tmpdir, i);
        CHECK_MSG(rc == 0, "%s", errtext);
        const char *m1 = strstr(errtext, "memory: cpu:1 peak ");
        CHECK_MSG(m1 && atoll(m1 + 19) > 0, "virtual GPU 1 unused: %s", errtext);
        snprintf(a, sizeof a, "%s/us-one/000000.png", tmpdir);
        snprintf(b, sizeof b, "%s/us%d/000000.png", tmpdir, i);
        CHECK_MSG(same_pixels(a, b), "%s differs from %s", b, a);
        rc = run("generate --model '%s' %s --output-type latent --devices cpu:0,cpu:1 --device-map "
                 "%s --max-memory %s --out '%s/us%d-l'", PIPE, common, maps[i], mm[i], tmpdir, i);
        CHECK_MSG(rc == 0, "%s", errtext);
        snprintf(a, sizeof a, "%s/us-one-l/000000.safetensors", tmpdir);
        snprintf(b, sizeof b, "%s/us%d-l/000000.safetensors", tmpdir, i);
        CHECK_MSG(same_file(a, b), "%s differs from %s", b, a);
    }
}

TEST(pipeline_balanced) {
    char flux[512], xl[512], a[1024], b[1024];
    snprintf(flux, sizeof flux, "%s/flux_pipelines/flux-dev-tiny", TDM_FIXTURES);
    snprintf(xl, sizeof xl, "%s/sdxl_pipelines/sdxl-tiny", TDM_FIXTURES);
    const char *models[3] = {PIPE, flux, xl};
    const char *flags[3] = {"--prompt 'a red cube' --steps 3 --seed 5 --quiet",
                            "--prompt 'a red cube' --steps 2 --width 64 --height 64 --seed 5 --quiet",
                            "--prompt 'a red cube' --steps 3 --seed 5 --quiet"};
    for (int i = 0; i < 3; i++) {
        int rc = run("generate --model '%s' %s --out '%s/pb-one%d'", models[i], flags[i], tmpdir, i);
        CHECK_MSG(rc == 0, "%s", errtext);
        rc = run("generate --model '%s' %s --devices cpu:0,cpu:1 --device-map balanced "
                 "--max-memory 0=2MB,1=2MB --out '%s/pb-two%d'", models[i], flags[i], tmpdir, i);
        CHECK_MSG(rc == 0, "%s", errtext);
        snprintf(a, sizeof a, "%s/pb-one%d/000000.png", tmpdir, i);
        snprintf(b, sizeof b, "%s/pb-two%d/000000.png", tmpdir, i);
        CHECK_MSG(same_pixels(a, b), "%s differs from %s", b, a);
    }
}

/* Staged residency: each stage's components are planned on their own (only
 * they are loaded together), so 2 x 700 KB runs the tiny FLUX pipeline whose
 * components need 1.6 MB together: same image as one device. With
 * --keep-resident everything stays loaded and the same budgets, capped by
 * an explicit disk=, are refused (need vs budget in one line). */
TEST(staged_plans) {
    char flux[512], a[1024], b[1024];
    snprintf(flux, sizeof flux, "%s/flux_pipelines/flux-dev-tiny", TDM_FIXTURES);
    const char *common = "--prompt 'a blue sphere' --steps 2 --width 64 --height 64 --seed 9 --quiet";
    int rc = run("generate --model '%s' %s --out '%s/st-one'", flux, common, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    rc = run("generate --model '%s' %s --devices cpu:0,cpu:1 --device-map balanced "
             "--max-memory 0=700KB,1=700KB --out '%s/st-two'", flux, common, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    snprintf(a, sizeof a, "%s/st-one/000000.png", tmpdir);
    snprintf(b, sizeof b, "%s/st-two/000000.png", tmpdir);
    CHECK_MSG(same_pixels(a, b), "%s differs from %s", b, a);
    /* 2 x 580 KB: the encode stage splits T5 (shared embedding on GPU 0, the encoder
     * blocks on GPU 1; see tandem plan --only text_encoder,text_encoder_2) */
    rc = run("generate --model '%s' %s --devices cpu:0,cpu:1 --device-map balanced "
             "--max-memory 0=580KB,1=580KB --out '%s/st-t5'", flux, common, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    snprintf(b, sizeof b, "%s/st-t5/000000.png", tmpdir);
    CHECK_MSG(same_pixels(a, b), "%s differs from %s", b, a);
    expect_error(run("generate --model '%s' %s --devices cpu:0,cpu:1 --device-map balanced "
                     "--max-memory 0=700KB,1=700KB,disk=1KB --keep-resident --out '%s/st-e'", flux,
                     common, tmpdir), "max memory too small");
    CHECK(!exists("%s/st-e", tmpdir));
}

/* A plan whose host-RAM part (virtual devices and cpu) exceeds what the machine has is refused
 * before anything loads: a FLUX transformer config of 1000 real-width double blocks (1.36 TB in
 * float32) with a 100 TB cpu budget. The transformer's tiny weights are removed (the plan would
 * refuse them: they do not have the config's shapes), so it is sized from the config. */
TEST(host_ram_check) {
    char flux[512], cmd[2048], cfg[1024];
    snprintf(flux, sizeof flux, "%s/flux_pipelines/flux-dev-tiny", TDM_FIXTURES);
    snprintf(cmd, sizeof cmd, "rm -rf '%s/huge' && cp -r '%s' '%s/huge' && "
             "rm '%s/huge/transformer/'*.safetensors*", tmpdir, flux, tmpdir, tmpdir);
    CHECK(system(cmd) == 0);
    snprintf(cfg, sizeof cfg, "%s/huge/transformer/config.json", tmpdir);
    test_spill(cfg, "{\"_class_name\": \"FluxTransformer2DModel\", \"attention_head_dim\": 128, "
                    "\"axes_dims_rope\": [16, 56, 56], \"guidance_embeds\": true, \"in_channels\": 64, "
                    "\"joint_attention_dim\": 4096, \"num_attention_heads\": 24, \"num_layers\": 1000, "
                    "\"num_single_layers\": 0, \"patch_size\": 1, \"pooled_projection_dim\": 32}");
    expect_error(run("generate --model '%s/huge' --prompt x --steps 1 --width 64 --height 64 "
                     "--devices cpu:0 --device-map balanced --max-memory 0=1GB,cpu=100TB --out '%s/h1'",
                     tmpdir, tmpdir), "bytes in host RAM");
    CHECK_MSG(strstr(errtext, "are available") != NULL, "%s", errtext);
    CHECK(!exists("%s/h1", tmpdir));
}

TEST(staged_errors) {
    /* embeddings whose width does not fit the denoiser */
    char other[512];
    snprintf(other, sizeof other, "%s/pipelines/sd2-tiny-v", TDM_FIXTURES);
    int rc = run("encode --model '%s' --prompt x --quiet --out '%s/emb-sd2.safetensors'", other, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    expect_error(run("generate --model '%s' --embeddings '%s/emb-sd2.safetensors' --steps 1 --out '%s/o3'", PIPE,
                     tmpdir, tmpdir), "prompt_embeds width");
    /* latents of the wrong size for --width/--height */
    rc = run("generate --model '%s' --prompt x --steps 1 --output-type latent --quiet --out '%s/l4'", PIPE, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    expect_error(run("decode --model '%s' --latents '%s/l4/000000.safetensors' --width 32 --height 64 --out '%s/x.png'",
                     PIPE, tmpdir, tmpdir), "do not fit --width 32 --height 64");
    CHECK(!exists("%s/x.png", tmpdir));
    /* a folder without the component a stage needs */
    copy_pipe("novae");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/novae/vae/diffusion_pytorch_model.safetensors'", tmpdir);
    CHECK(system(cmd) == 0);
    expect_error(run("decode --model '%s/novae' --latents '%s/l4/000000.safetensors' --out '%s/y.png'", tmpdir,
                     tmpdir, tmpdir), "vae");
    CHECK(!exists("%s/y.png", tmpdir));
    expect_error(run("generate --model '%s' --embeddings '%s/emb-sd2.safetensors' --prompt x --out '%s/o3'", PIPE,
                     tmpdir, tmpdir), "--embeddings");
    expect_error(run("encode --model '%s' --prompt x --prompt-2 y --out '%s/e.safetensors'", PIPE, tmpdir),
                 "--prompt-2");
}

int main(void) {
    if (!cli_setup()) return 1;
    RUN(flags_rejected);
    RUN(unwritable_output);
    RUN(bad_model_folders);
    RUN(generate_png_and_latents);
    RUN(staged_sd);
    RUN(staged_errors);
    RUN(staged_flux);
    RUN(sdxl_cli);
    RUN(single_file);
    RUN(flux_errors);
    RUN(flux_split);
    RUN(unet_split);
    RUN(pipeline_balanced);
    RUN(staged_plans);
    RUN(host_ram_check);
    if (!cli_teardown()) return 1;
    return test_summary();
}
