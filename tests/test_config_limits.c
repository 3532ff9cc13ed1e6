// label: unit
/* test_config_limits.c — every count and size a model config gives is
 * bounded: an absurd value (1e9 layers, a 3e8 sample_size, 16 VAE levels)
 * is one error naming the file, the key and the range, found before any
 * allocation; and the bounds admit the real models (SD1.5, SD2.1, SDXL,
 * FLUX.1-dev, CLIP-L/bigG, T5-XXL), checked by listing their parameters
 * from configs with the real sizes. Configs are the tiny fixtures with
 * keys replaced, written to a scratch folder. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "models/clip_text.h"
#include "models/flux.h"
#include "models/t5.h"
#include "models/unet2d.h"
#include "models/vae.h"

static char tmpdir[256];

typedef tdm_status (*plist_fn)(const char *config_path, tdm_dtype dt, tdm_plist_t *out);

typedef struct {
    const char *name;
    const char *base;      /* fixture config */
    plist_fn    plist;
} model_t;

static const model_t MODELS[] = {
    {"unet", TDM_FIXTURES "/pipelines/sd15-tiny/unet/config.json", tdm_unet_plist},
    {"vae", TDM_FIXTURES "/pipelines/sd15-tiny/vae/config.json", tdm_vae_plist},
    {"clip", TDM_FIXTURES "/pipelines/sd15-tiny/text_encoder/config.json", tdm_clip_text_plist},
    {"flux", TDM_FIXTURES "/flux/dev/transformer/config.json", tdm_flux_plist},
    {"t5", TDM_FIXTURES "/t5/gg_sharded/text_encoder_2/config.json", tdm_t5_plist},
};

/* Writes model m's fixture config with the keys of `patch` (a JSON object)
 * replaced to a scratch file; returns its path (static buffer). */
static const char *patched(const model_t *m, const char *patch) {
    static char path[512];
    char *text = test_slurp(m->base);
    cJSON *root = text ? cJSON_Parse(text) : NULL, *p = cJSON_Parse(patch);
    free(text);
    CHECK_MSG(root && p, "%s / patch %s", m->base, patch);
    for (cJSON *e = p ? p->child : NULL; e; e = e->next) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, e->string);
        cJSON_AddItemToObject(root, e->string, cJSON_Duplicate(e, 1));
    }
    snprintf(path, sizeof path, "%s/%s-config.json", tmpdir, m->name);
    char *out = root ? cJSON_Print(root) : NULL;
    if (out) test_spill(path, out);
    free(out);
    cJSON_Delete(root);
    cJSON_Delete(p);
    return path;
}

static const model_t *model(const char *name) {
    for (size_t i = 0; i < sizeof MODELS / sizeof MODELS[0]; i++)
        if (!strcmp(MODELS[i].name, name)) return &MODELS[i];
    return NULL;
}

/* Listing `name` with `patch` fails with one line naming the file and each
 * of the needles. */
static void expect_bad(const char *name, const char *patch, const char *n1, const char *n2) {
    const model_t *m = model(name);
    const char *path = patched(m, patch);
    tdm_plist_t pl;
    tdm_status st = m->plist(path, TDM_F32, &pl);
    const char *e = tdm_last_error();
    CHECK_MSG(st != TDM_OK && strstr(e, path) && strstr(e, n1) && (!n2 || strstr(e, n2)) && !strchr(e, '\n'),
              "%s %s: status %d, \"%s\"", name, patch, (int)st, st == TDM_OK ? "" : e);
    if (st == TDM_OK) tdm_plist_free(&pl);
}

static void expect_ok(const char *name, const char *patch) {
    const model_t *m = model(name);
    const char *path = patched(m, patch);
    tdm_plist_t pl;
    tdm_status st = m->plist(path, TDM_BF16, &pl);
    CHECK_MSG(st == TDM_OK, "%s %s: %s", name, patch, tdm_last_error());
    if (st == TDM_OK) tdm_plist_free(&pl);
}

TEST(unet_limits) {
    expect_bad("unet", "{\"layers_per_block\": 1000000000}", "layers_per_block 1000000000", "out of range [1, 64]");
    expect_bad("unet", "{\"layers_per_block\": [2, 1000000000]}", "layers_per_block 1000000000", NULL);
    expect_bad("unet", "{\"sample_size\": 300000000}", "sample_size 300000000", "out of range");
    expect_bad("unet", "{\"sample_size\": 1000000000}", "sample_size 1000000000", NULL);
    expect_bad("unet", "{\"transformer_layers_per_block\": 1e9}", "transformer_layers_per_block", NULL);
    expect_bad("unet", "{\"attention_head_dim\": 1e9}", "attention_head_dim", NULL);
    expect_bad("unet", "{\"cross_attention_dim\": 1e12}", "cross_attention_dim", NULL);
    expect_bad("unet", "{\"block_out_channels\": [32, 1e12, 64]}", "block_out_channels", NULL);
    expect_bad("unet", "{\"in_channels\": 1e9}", "in_channels", NULL);
    expect_bad("unet", "{\"norm_num_groups\": 1e9}", "norm_num_groups", NULL);
}

TEST(flux_limits) {
    expect_bad("flux", "{\"num_layers\": 1000000000}", "num_layers 1000000000", "out of range [0, 1024]");
    expect_bad("flux", "{\"num_single_layers\": 1e9}", "num_single_layers", NULL);
    expect_bad("flux", "{\"num_attention_heads\": 1e9}", "num_attention_heads", NULL);
    expect_bad("flux", "{\"joint_attention_dim\": 1e9}", "joint_attention_dim", NULL);
    expect_bad("flux", "{\"pooled_projection_dim\": 1e9}", "pooled_projection_dim", NULL);
    expect_bad("flux", "{\"in_channels\": 1e9}", "in_channels", NULL);
    expect_bad("flux", "{\"num_attention_heads\": 1000, \"attention_head_dim\": 128, \"axes_dims_rope\": [16, 56, 56]}",
               "num_attention_heads 1000 x attention_head_dim 128", NULL);
}

TEST(vae_limits) {
    expect_bad("vae", "{\"block_out_channels\": [32,32,32,32,32,32,32,32,32,32,32,32,32,32,32,32], "
               "\"down_block_types\": [], \"up_block_types\": []}", "block_out_channels has 16 levels", NULL);
    expect_bad("vae", "{\"layers_per_block\": 1000000000}", "layers_per_block 1000000000", NULL);
    expect_bad("vae", "{\"latent_channels\": 1e9}", "latent_channels", NULL);
    expect_bad("vae", "{\"block_out_channels\": [32, 1e10]}", "block_out_channels", NULL);
    expect_bad("vae", "{\"sample_size\": 1000000000}", "sample_size 1000000000", NULL);
    expect_bad("vae", "{\"norm_num_groups\": 1e9}", "norm_num_groups", NULL);
}

TEST(text_encoder_limits) {
    expect_bad("clip", "{\"num_hidden_layers\": 1000000000}", "num_hidden_layers 1000000000", NULL);
    expect_bad("clip", "{\"hidden_size\": 1e9}", "hidden_size", NULL);
    expect_bad("clip", "{\"vocab_size\": 2147483647}", "vocab_size", NULL);
    expect_bad("clip", "{\"max_position_embeddings\": 1e9}", "max_position_embeddings", NULL);
    expect_bad("t5", "{\"num_layers\": 1000000000}", "num_layers 1000000000", NULL);
    expect_bad("t5", "{\"d_ff\": 1e12}", "d_ff", NULL);
    expect_bad("t5", "{\"vocab_size\": 1e9}", "vocab_size", NULL);
}

/* The bounds admit the real models: their parameter lists build from
 * configs with the real sizes (no weights are read). */
TEST(real_sizes_pass) {
    /* SD1.5, SD2.1, SDXL UNets */
    expect_ok("unet", "{\"block_out_channels\": [320, 640, 1280, 1280], \"layers_per_block\": 2, "
              "\"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", "
              "\"DownBlock2D\"], \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", "
              "\"CrossAttnUpBlock2D\"], "
              "\"attention_head_dim\": 8, \"cross_attention_dim\": 768, \"sample_size\": 64, \"norm_num_groups\": 32}");
    expect_ok("unet", "{\"block_out_channels\": [320, 640, 1280, 1280], \"attention_head_dim\": [5, 10, 20, 20], "
              "\"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", "
              "\"DownBlock2D\"], \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", "
              "\"CrossAttnUpBlock2D\"], "
              "\"cross_attention_dim\": 1024, \"sample_size\": 96, \"norm_num_groups\": 32, "
              "\"use_linear_projection\": true}");
    expect_ok("unet", "{\"block_out_channels\": [320, 640, 1280], \"attention_head_dim\": [5, 10, 20], "
              "\"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\"], "
              "\"up_block_types\": [\"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"UpBlock2D\"], "
              "\"transformer_layers_per_block\": [1, 2, 10], \"cross_attention_dim\": 2048, \"sample_size\": 128, "
              "\"norm_num_groups\": 32, \"use_linear_projection\": true}");
    /* FLUX.1-dev */
    expect_ok("flux", "{\"num_layers\": 19, \"num_single_layers\": 38, \"attention_head_dim\": 128, "
              "\"num_attention_heads\": 24, \"joint_attention_dim\": 4096, \"pooled_projection_dim\": 768, "
              "\"in_channels\": 64, \"axes_dims_rope\": [16, 56, 56], \"guidance_embeds\": true}");
    /* SD/SDXL VAE, FLUX VAE */
    expect_ok("vae", "{\"block_out_channels\": [128, 256, 512, 512], \"layers_per_block\": 2, \"latent_channels\": 4, "
              "\"norm_num_groups\": 32, \"sample_size\": 1024, "
              "\"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\", "
              "\"DownEncoderBlock2D\"], \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", "
              "\"UpDecoderBlock2D\", \"UpDecoderBlock2D\"]}");
    expect_ok("vae", "{\"block_out_channels\": [128, 256, 512, 512], \"latent_channels\": 16, "
              "\"norm_num_groups\": 32, \"use_quant_conv\": false, \"use_post_quant_conv\": false, "
              "\"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\", "
              "\"DownEncoderBlock2D\"], \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", "
              "\"UpDecoderBlock2D\", \"UpDecoderBlock2D\"]}");
    /* CLIP-L, OpenCLIP bigG */
    expect_ok("clip", "{\"hidden_size\": 768, \"intermediate_size\": 3072, \"num_hidden_layers\": 12, "
              "\"num_attention_heads\": 12, \"max_position_embeddings\": 77, \"vocab_size\": 49408}");
    expect_ok("clip", "{\"hidden_size\": 1280, \"intermediate_size\": 5120, \"num_hidden_layers\": 32, "
              "\"num_attention_heads\": 20, \"max_position_embeddings\": 77, \"vocab_size\": 49408, "
              "\"projection_dim\": 1280, \"hidden_act\": \"gelu\"}");
    /* T5-XXL (FLUX's text_encoder_2) */
    expect_ok("t5", "{\"d_model\": 4096, \"d_ff\": 10240, \"d_kv\": 64, \"num_layers\": 24, \"num_heads\": 64, "
              "\"vocab_size\": 32128}");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tdm_cfglim_XXXXXX");
    if (!mkdtemp(tmpdir)) { printf("cannot create a temporary folder\n"); return EXIT_FAILURE; }
    RUN(unet_limits);
    RUN(flux_limits);
    RUN(vae_limits);
    RUN(text_encoder_limits);
    RUN(real_sizes_pass);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
