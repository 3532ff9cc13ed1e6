// label: unit
/* test_cli_mem.c — an image whose working memory cannot fit fails at once
 * with one error line naming the size's source (the --width/--height flags,
 * or the config key of the default size) and the GiB it needs, instead of
 * running for minutes; and an --embeddings file whose prompts metadata is
 * not UTF-8 text is refused naming the file and the prompt. Each command runs
 * under `timeout 60`, so a regression fails instead of hanging. The sizes
 * start at the ones of the issue and double while the machine could hold
 * them (the estimate comes from tdm_pipeline_work_bytes). */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <sys/time.h>

#include "test.h"
#include "test_files.h"
#include "test_cli.h"
#include "core/core.h"
#include "tandem.h"

static const char *FLUX = TDM_FIXTURES "/flux_pipelines/flux-dev-tiny";

static double now_s(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

/* The larger of the two stages' estimates for a size x size image. */
static int64_t need(const char *dir, int size) {
    tdm_pipeline_t *p = NULL;
    tdm_pipeline_params_t pp;
    tdm_generate_params_t g;
    int64_t a = 0, b = 0;
    tdm_pipeline_params_init(&pp);
    tdm_generate_params_init(&g);
    g.width = g.height = size;
    if (tdm_pipeline_open(&p, dir, &pp) != TDM_OK) return 0;
    if (tdm_pipeline_work_bytes(p, TDM_STAGE_DENOISE, &g, 0, &a) != TDM_OK ||
        tdm_pipeline_work_bytes(p, TDM_STAGE_DECODE, &g, 0, &b) != TDM_OK)
        a = b = 0;
    tdm_pipeline_close(p);
    return a > b ? a : b;
}

/* `size`, doubled while this machine has more memory available than it needs. */
static int too_big(const char *dir, int size) {
    const int64_t have = tdm_host_memory_available();
    while (size < (1 << 24) && need(dir, size) <= have) size *= 2;
    return size;
}

/* `tandem generate` of one size x size image under `timeout 60`: the error
 * line names the flags and who needs how much, and comes within seconds. */
static void refused_fast(const char *dir, int size, const char *who) {
    char want[128], cmd[4096], errf[600];
    snprintf(errf, sizeof errf, "%s/stderr.txt", tmpdir);
    snprintf(cmd, sizeof cmd, "timeout 60 \"%s\" generate --model '%s' --prompt x --steps 1 "
             "--width %d --height %d --out '%s/big'", TDM_TANDEM_BIN, dir, size, size, tmpdir);
    const double t0 = now_s();
    const int rc = sh_capture(cmd, errf, errtext, sizeof errtext);
    const double secs = now_s() - t0;
    snprintf(want, sizeof want, "--width %d --height %d: %s needs ", size, size, who);
    expect_error(rc, want);
    CHECK_MSG(strstr(errtext, " GiB of working memory for this image (cpu has ") != NULL, "%s", errtext);
    CHECK_MSG(secs < 20, "took %.1f s", secs);
}

TEST(sd_image_too_big) { refused_fast(PIPE, too_big(PIPE, 16384), "the UNet"); }

/* FLUX at 8192x8192 fits in ~15 GiB (transformer 0.9, VAE decoder 14.5):
 * it is only slow, which is not refused; 16384 is the first size that does
 * not fit a 24 GB machine (the VAE decoder needs 58 GiB). */
TEST(flux_image_too_big) { refused_fast(FLUX, too_big(FLUX, 16384), "the VAE decoder"); }

/* The default size comes from the configs: the message names them, no flag. */
TEST(default_size_too_big) {
    char path[1024];
    copy_pipe("wide");
    /* a 4-level VAE: scale factor 8; with sample_size 2048 the default is 16384 px */
    set_key("wide", "unet", "sample_size", "2048");
    set_key("wide", "vae", "block_out_channels", "[8, 16, 16, 16]");
    set_key("wide", "vae", "down_block_types", "[\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", "
            "\"DownEncoderBlock2D\", \"DownEncoderBlock2D\"]");
    set_key("wide", "vae", "up_block_types", "[\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", "
            "\"UpDecoderBlock2D\", \"UpDecoderBlock2D\"]");
    snprintf(path, sizeof path, "%s/wide", tmpdir);
    const int64_t n = need(path, 16384), have = tdm_host_memory_available();
    if (n <= have) {   /* this machine could run it (slowly): nothing to refuse */
        printf("  skipped: the default 16384 px image needs %.1f GiB, %.1f GiB available\n",
               n / 1073741824.0, have / 1073741824.0);
        return;
    }
    int rc = run("generate --model '%s' --prompt x --steps 1 --out '%s/def'", path, tmpdir);
    expect_error(rc, "unet/config.json sample_size 2048");
    CHECK_MSG(strstr(errtext, "the default size 16384x16384") && strstr(errtext, " GiB of working memory"),
              "%s", errtext);
    CHECK_MSG(!strstr(errtext, "--width"), "names a flag: %s", errtext);
}

/* tmpdir/name: tmpdir/emb.safetensors with metadata "prompts" set to the
 * JSON text `prompts`. */
static void rewrite_prompts(const char *name, const char *prompts) {
    char src[512], dst[512];
    snprintf(src, sizeof src, "%s/emb.safetensors", tmpdir);
    snprintf(dst, sizeof dst, "%s/%s", tmpdir, name);
    FILE *f = fopen(src, "rb");
    CHECK(f != NULL);
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n);
    CHECK(b && fread(b, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | b[i];
    cJSON *h = cJSON_ParseWithLength((const char *)b + 8, (size_t)hl);
    cJSON *m = cJSON_GetObjectItem(h, "__metadata__");
    CHECK(m != NULL);
    cJSON_ReplaceItemInObject(m, "prompts", cJSON_CreateString(prompts));
    char *text = cJSON_PrintUnformatted(h);
    uint64_t nl = strlen(text);
    f = fopen(dst, "wb");
    for (int i = 0; i < 8; i++) fputc((int)(nl >> (8 * i) & 0xff), f);
    fwrite(text, 1, nl, f);
    fwrite(b + 8 + hl, 1, (size_t)(n - 8 - (long)hl), f);
    fclose(f);
    free(text);
    cJSON_Delete(h);
    free(b);
}

TEST(embeddings_prompts_not_text) {
    char want[600];
    int rc = run("encode --model '%s' --prompt hello --out '%s/emb.safetensors'", PIPE, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    rewrite_prompts("nul.safetensors", "[\"he\\u0000llo\"]");      /* a NUL cuts the prompt */
    rewrite_prompts("sur.safetensors", "[\"he\\udc80llo\"]");      /* a lone surrogate */
    rewrite_prompts("ok.safetensors", "[\"h\\u00e9llo\"]");
    rc = run("generate --model '%s' --embeddings '%s/nul.safetensors' --steps 1 --out '%s/e1'", PIPE,
             tmpdir, tmpdir);
    snprintf(want, sizeof want, "%s/nul.safetensors: metadata \"prompts\" prompt 0 holds a NUL", tmpdir);
    expect_error(rc, want);
    rc = run("generate --model '%s' --embeddings '%s/sur.safetensors' --steps 1 --out '%s/e2'", PIPE,
             tmpdir, tmpdir);
    snprintf(want, sizeof want, "%s/sur.safetensors: metadata \"prompts\" is not a JSON array of 1 "
             "strings", tmpdir);
    expect_error(rc, want);
    rc = run("generate --model '%s' --embeddings '%s/ok.safetensors' --steps 1 --out '%s/e3'", PIPE,
             tmpdir, tmpdir);
    CHECK_MSG(rc == 0, "%s", errtext);
    char *man = NULL;
    {
        char mp[512];
        snprintf(mp, sizeof mp, "%s/e3/manifest.jsonl", tmpdir);
        man = test_slurp(mp);
    }
    CHECK_MSG(man && strstr(man, "\"prompt\":\"h\xc3\xa9llo\""), "%s", man ? man : "(no manifest)");
    free(man);
}

int main(void) {
    (void)same_pixels;   /* test_files.h's, unused here */
    (void)exists;
    if (!cli_setup()) { printf("cannot create a temporary folder\n"); return EXIT_FAILURE; }
    RUN(sd_image_too_big);
    RUN(flux_image_too_big);
    RUN(default_size_too_big);
    RUN(embeddings_prompts_not_text);
    if (!cli_teardown()) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
