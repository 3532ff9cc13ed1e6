/* main.c — the `tandem` command: usage text and dispatch to the
 * subcommands (generate.c, stages.c, launch.c, plan.c). The CLI is the
 * only place that prints to stdout and exits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

void usage(FILE *f) {
    fputs("usage:\n"
          "  tandem generate --model DIR|ORG/NAME [--prompt TEXT]... [--prompts-file FILE]\n"
          "                  [--prompt-2 TEXT]... [--negative-prompt TEXT] [--seed N] [--steps N]\n"
          "                  [--guidance G] [--width W] [--height H] [--max-sequence-length N]\n"
          "                  [--scheduler CLASSNAME] [--num-images-per-prompt N]\n"
          "                  [--output-type png|latent] [--out DIR] [--embeddings FILE]\n"
          "                  [--dtype fp32|fp16|bf16] [--device cpu|cuda:N] [--variant NAME]\n"
          "                  [--threads N] [--keep-resident] [--report-memory] [--quiet]\n"
          "                  [[--device-map STRATEGY|COMPONENT=STRATEGY]... --max-memory 0=..,1=..,cpu=..\n"
          "                   [--devices cpu:0,cpu:1,...] [--gpus-per-rank K] [--print-device-map]]\n"
          "                   (run a `tandem plan` placement: on the GPUs from --device cuda:N on —\n"
          "                   with --device cuda each rank takes K GPUs of its own — or on virtual\n"
          "                   devices standing for GPUs)\n"
          "  tandem encode   --model DIR [--prompt TEXT]... [--prompts-file FILE] [--prompt-2 TEXT]...\n"
          "                  [--negative-prompt TEXT] [--max-sequence-length N] --out FILE.safetensors\n"
          "  tandem decode   --model DIR --latents FILE.safetensors [--width W] [--height H]\n"
          "                  --out FILE.png\n"
          "  tandem launch   -n N [--gpus LIST] -- generate ... [--schedule static|dynamic] [--resume]\n"
          "  tandem plan     --model DIR --max-memory 0=16GiB,1=16GiB,cpu=64GiB\n"
          "                  [--device-map STRATEGY|COMPONENT=STRATEGY]... [--only COMPONENT,...]\n"
          "                  [--dtype fp32|fp16|bf16] [--variant NAME]   (placement as JSON from\n"
          "                  the configs and, where present, the safetensors headers)\n"
          "  tandem --version\n"
          "Image i of a job (prompts x images per prompt, prompt-major) uses seed+i and is written as\n"
          "OUT/%06d.png (or .safetensors with tensor \"latents\"); OUT/manifest.jsonl lists them.\n"
          "Stages load only their components: text encoders, then the denoiser, then the VAE.\n"
          "--dtype is the GEMM precision (Linear/Conv weights; float32 accumulation): fp32 on cpu;\n"
          "on cuda the default is fp16 for Stable Diffusion and bf16 for FLUX.\n",
          f);
}

int main(int argc, char **argv) {
    /* OpenMP and OpenBLAS run separate thread pools; idle OpenMP workers
     * spinning steal the cores OpenBLAS needs (measured ~10% of a UNet
     * step). libgomp reads OMP_WAIT_POLICY before main, so set it and
     * re-execute once when the user has not chosen a policy. */
    if (!getenv("OMP_WAIT_POLICY") && setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0)
        execv("/proc/self/exe", argv);   /* returns only on failure: go on as is */
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "--version")) { printf("tandem %s\n", TANDEM_VERSION); return 0; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) { usage(stdout); return 0; }
    if (!strcmp(argv[1], "generate")) return cmd_generate(argc - 2, argv + 2);
    if (!strcmp(argv[1], "encode")) return cmd_encode(argc - 2, argv + 2);
    if (!strcmp(argv[1], "decode")) return cmd_decode(argc - 2, argv + 2);
    if (!strcmp(argv[1], "launch")) return cmd_launch(argc - 2, argv + 2);
    if (!strcmp(argv[1], "plan")) return cmd_plan(argc - 2, argv + 2);
    die(2, "unknown command \"%s\" (commands: generate, encode, decode, launch)", argv[1]);
}
