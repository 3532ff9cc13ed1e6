/* stages.c — `tandem encode` (text encoders only: prompts → embeddings
 * file) and `tandem decode` (VAE only: latents file → PNG). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

int cmd_encode(int argc, char **argv) {
    args_t a;
    parse_args(&a, "encode", argc, argv);
    if (!a.out) die(2, "--out: required (a .safetensors file)");
    if (a.nprompts == 0) die(2, "--prompt: at least one prompt is required (or --prompts-file)");
    tdm_pipeline_t *pipe = open_pipeline(&a);
    tdm_pipeline_info_t info;
    tdm_pipeline_info(pipe, &info);
    tdm_encode_params_t ep;
    fill_encode_params(&a, &info, &ep, 1);   /* SD: always keep the negative, for any later guidance */
    tdm_embeddings_t *emb = NULL;
    if (tdm_pipeline_encode(pipe, &ep, &emb) != TDM_OK) die_status();
    stage_memory(pipe, &a, TDM_STAGE_ENCODE);
    const char *meta[] = {"model", a.model, "pipeline", info.class_name};
    prepare_out_parent("--out", a.out);
    if (tdm_embeddings_save(emb, a.out, 2, meta) != TDM_OK) die_status();
    if (!a.quiet) fprintf(stderr, "tandem: %d prompt embedding%s -> %s\n", a.nprompts, a.nprompts == 1 ? "" : "s", a.out);
    tdm_embeddings_free(emb);
    tdm_pipeline_close(pipe);
    args_free(&a);
    return 0;
}

/* ---- tandem decode ------------------------------------------------------------- */

int cmd_decode(int argc, char **argv) {
    args_t a;
    parse_args(&a, "decode", argc, argv);
    if (!a.latents) die(2, "--latents: required");
    if (!a.out) die(2, "--out: required (a .png file)");
    tdm_pipeline_t *pipe = open_pipeline(&a);
    int W = a.width, H = a.height;
    float *lat = NULL;
    char *params = NULL;
    if (tdm_latents_load(pipe, a.latents, &W, &H, &lat, &params) != TDM_OK) die_status();
    uint8_t *rgb = malloc((size_t)W * H * 3);
    if (!rgb) die(1, "out of memory");
    if (tdm_pipeline_decode(pipe, lat, W, H, rgb) != TDM_OK) die_status();
    stage_memory(pipe, &a, TDM_STAGE_DECODE);
    prepare_out_parent("--out", a.out);
    if (tdm_image_save_png(a.out, rgb, W, H, params) != TDM_OK) die_status();
    if (!a.quiet) fprintf(stderr, "tandem: decoded %s -> %s (%dx%d)\n", a.latents, a.out, W, H);
    free(lat);
    free(params);
    free(rgb);
    tdm_pipeline_close(pipe);
    args_free(&a);
    return 0;
}
