/* main.c — the `tandem` command: the command table (name, function,
 * one-line summary, usage), help and dispatch to the subcommands
 * (generate.c, stages.c, launch.c, plan.c). The CLI is the only place that
 * prints to stdout and exits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
    const char *usage;   /* "  tandem NAME" is printed before it */
} cli_command_t;

/* Indexed by cli_cmd. */
static const cli_command_t k_commands[CLI_NCMDS] = {
    [CLI_GENERATE] = {"generate", cmd_generate, "prompts -> images (or latents), one process or a rank of a job",
        " --model DIR|ORG/NAME [--prompt TEXT]... [--prompts-file FILE]\n"
        "                  [--prompt-2 TEXT]... [--negative-prompt TEXT] [--negative-prompt-2 TEXT]\n"
        "                  [--seed N] [--steps N] [--guidance G] [--guidance-rescale R] [--clip-skip N]\n"
        "                  [--width W] [--height H] [--max-sequence-length N]\n"
        "                  [--original-size WxH] [--target-size WxH] [--crops-coords-top-left T,L]\n"
        "                  [--scheduler NAME] [--num-images-per-prompt N]\n"
        "                  [--output-type png|latent] [--out DIR] [--embeddings FILE]\n"
        "                  [--dtype fp32|fp16|bf16|fp8] [--device cpu|cuda:N] [--variant NAME]\n"
        "                  [--config DIR] [--vae FILE] [--text-encoder FILE] [--text-encoder-2 FILE]\n"
        "                  [--threads N] [--keep-resident] [--report-memory] [--quiet]\n"
        "                  [--schedule static|dynamic] [--resume | --overwrite]\n"
        "                  [[--device-map STRATEGY|COMPONENT=STRATEGY]... --max-memory 0=..,1=..,cpu=..\n"
        "                   [--devices cpu:0,cpu:1,...] [--gpus-per-rank K] [--print-device-map]]\n"
        "                  [--parallel auto|cfg=2,ulysses=U,ring=R,tp=T [--parallel-vae]]\n"
        "                  [--comm auto|mpi|nccl] [--reprobe]\n"
        "Image i of a job (prompts x images per prompt, prompt-major) uses seed+i and is written as\n"
        "OUT/%06d.png (or .safetensors with tensor \"latents\"); OUT/manifest.jsonl lists them.\n"
        "Stages load only their components: text encoders, then the denoiser, then the VAE.\n"
        "--seed: 0..18446744073709551615 (decimal digits). --scheduler: a diffusers class name\n"
        "(any case) or a short name: euler, euler_a, ddim, pndm, dpmpp_2m (Stable Diffusion),\n"
        "flow_euler (FLUX); the folder's scheduler config is kept. --prompts-file: one prompt a line.\n"
        "--model FILE.safetensors --config DIR: a single-file checkpoint (original SD/SDXL layout, or\n"
        "a BFL FLUX transformer) with the configs, tokenizers and scheduler of diffusers folder DIR.\n"
        "--vae / --text-encoder / --text-encoder-2 FILE: that component's weights from a file of its\n"
        "own (diffusers names, an original-layout VAE such as FLUX's ae.safetensors, OpenCLIP).\n"
        "SDXL: --prompt-2 / --negative-prompt-2 go to text_encoder_2 (default: the first ones); no\n"
        "--negative-prompt gives zero negative embeddings when the folder has\n"
        "force_zeros_for_empty_prompt; --original-size / --target-size (default: the image size) and\n"
        "--crops-coords-top-left (default 0,0) are the UNet's micro-conditioning. --guidance-rescale\n"
        "(Stable Diffusion and SDXL, 0..1) rescales the guided prediction (diffusers' guidance_rescale).\n"
        "--clip-skip N (Stable Diffusion and SDXL): the prompt embeddings from N text-encoder layers\n"
        "before the last, as diffusers' clip_skip (negative prompts without it, as diffusers).\n"
        "An --out folder holding an earlier job's outputs is refused unless --resume (make only the\n"
        "missing images) or --overwrite (delete that job's outputs first); one job per folder.\n"
        "--dtype is the GEMM precision (Linear/Conv weights; float32 accumulation): fp32 on cpu;\n"
        "on cuda the default is fp16 for Stable Diffusion and bf16 for FLUX. fp8 (FLUX): the\n"
        "transformer blocks' Linears in FP8 e4m3 with per-channel/per-token scales, the rest bf16\n"
        "(cuda: Hopper or newer; cpu: the float32 reference of the same arithmetic).\n"
        "A device map runs a `tandem plan` placement: on the GPUs from --device cuda:N on (with\n"
        "--device cuda each rank takes K GPUs of its own) or on virtual devices standing for GPUs.\n"
        "--parallel ulysses=U,ring=R,tp=T,cfg=C (under tandem launch): each image is made by\n"
        "C*R*U*T ranks and the ranks / that many images are made at once; cfg=2 splits Stable\n"
        "Diffusion's guidance batch over two ranks, ulysses=U FLUX's tokens over U ranks (both\n"
        "the same bytes as one process on the CPU), ring=R FLUX's tokens over R ranks with ring\n"
        "attention, ulysses=U,ring=R both over U*R ranks; tp=T splits FLUX's transformer blocks\n"
        "(whole heads, MLP columns) over T ranks, each holding about 1/T of their weights (ring\n"
        "and tp: within float tolerance of one process, not bit-identical). The\n"
        "image's first rank decodes and writes it; --parallel-vae makes all its ranks decode it\n"
        "together instead, each a band of its rows (the VAE's working memory split between them;\n"
        "pixels within 1 of one process).\n"
        "--parallel auto: the ranks time a GEMM, an attention call and an all-to-all (cached per\n"
        "host in ~/.cache/tandem; --reprobe measures again), then rank 0 chooses the layout with a\n"
        "cost model (see tandem plan --help).\n"
        "--comm: how a group's GPUs exchange data: nccl, mpi (staged through host memory) or auto\n"
        "(nccl when built and each rank of the group has a GPU of its own).\n"},
    [CLI_ENCODE] = {"encode", cmd_encode, "prompts -> embeddings file (text encoders only)",
        "   --model DIR [--prompt TEXT]... [--prompts-file FILE] [--prompt-2 TEXT]...\n"
        "                  [--negative-prompt TEXT] [--negative-prompt-2 TEXT] [--max-sequence-length N]\n"
        "                  --out FILE.safetensors\n"
        "                  [--dtype fp32|fp16|bf16|fp8] [--device cpu|cuda:N] [--variant NAME]\n"
        "                  [--threads N] [--report-memory] [--quiet]\n"
        "The file's metadata names the pipeline; `tandem generate --embeddings FILE` takes it\n"
        "with a model of the same pipeline class.\n"},
    [CLI_DECODE] = {"decode", cmd_decode, "latents file -> PNG (VAE only)",
        "   --model DIR --latents FILE.safetensors [--width W] [--height H]\n"
        "                  --out FILE.png [--dtype fp32|fp16|bf16|fp8] [--device cpu|cuda:N]\n"
        "                  [--variant NAME] [--threads N] [--report-memory] [--quiet]\n"
        "Missing folders of --out are created.\n"},
    [CLI_LAUNCH] = {"launch", cmd_launch, "run generate or serve as N ranks through Open MPI",
        "   -n N [--gpus LIST] [--oversubscribe] -- generate ... [--schedule static|dynamic]\n"
        "                  [--resume]\n"
        "  tandem launch -n N [--gpus LIST] [--oversubscribe] -- serve ...\n"
        "generate: the ranks split the images (static blocks or, with --schedule dynamic, a shared\n"
        "counter); the output does not depend on N. serve: every rank keeps the model on its GPU(s)\n"
        "and makes images; rank 0 is also the HTTP front and the queue; a stop signal ends the\n"
        "server gracefully (--grace). At most one rank per CPU of this host (or per GPU of --gpus)\n"
        "unless --oversubscribe. A failing rank's error line ends the whole job.\n"},
    [CLI_PLAN] = {"plan", cmd_plan, "placement of a model over devices as JSON (no weights loaded)",
        "     --model DIR --max-memory 0=16GiB,1=16GiB,cpu=64GiB\n"
        "                  [--device-map STRATEGY|COMPONENT=STRATEGY]... [--only COMPONENT,...]\n"
        "                  [--dtype fp32|fp16|bf16|fp8] [--variant NAME]\n"
        "STRATEGY is auto (= balanced), balanced, balanced_low_0 or sequential; each component at\n"
        "most once. Reads the configs and, where present, the safetensors headers.\n"
        "  tandem plan --model DIR --parallel auto --ranks N [--images N] [--width W] [--height H]\n"
        "                  [--guidance G] [--max-sequence-length N] [--device cuda|cpu]\n"
        "                  [--dtype ...] [--max-memory 0=16GiB]\n"
        "Every layout of N ranks (dp x cfg x ring x ulysses x tp) with its predicted step time,\n"
        "the job's time a step and a rank's memory (a cost model with the device's default\n"
        "numbers), and the layout that finishes the job first among those tandem runs.\n"},
    [CLI_SERVE] = {"serve", cmd_serve, "an HTTP server over the resident model (jobs, OpenAI, A1111 APIs)",
        "    --model DIR [--host 127.0.0.1] [--port 7860] [--token TOKEN] [--queue N]\n"
        "                  [--max-steps N] [--max-pixels N] [--max-images N] [--keep 10m]\n"
        "                  [--keep-mib 1024] [--grace 30s] [--rank-timeout 10m]\n"
        "                  [--steps N] [--width W] [--height H] [--guidance G]\n"
        "                  [--negative-prompt TEXT] [--seed N] [--scheduler NAME]\n"
        "                  [--dtype fp32|fp16|bf16|fp8] [--device cpu|cuda:N[,cuda:M...]]\n"
        "                  [--variant NAME] [--threads N] [--device-map ... --max-memory ...] [--quiet]\n"
        "Loads every stage once and keeps it resident; --device A,B,... makes one worker (pipeline)\n"
        "per device, and under tandem launch every rank is one; each takes the next image from a\n"
        "queue of --queue jobs (full: 429), so the images of one request share the workers.\n"
        "Routes: POST /v1/jobs, GET /v1/jobs/ID (state, progress), GET /v1/jobs/ID/events\n"
        "(server-sent progress), GET /v1/jobs/ID/images/K.png, DELETE /v1/jobs/ID (cancel),\n"
        "POST /v1/images/generations (OpenAI), POST /sdapi/v1/txt2img and GET /sdapi/v1/progress\n"
        "(A1111), GET /health, GET /metrics (Prometheus), GET / (a web page). Binds 127.0.0.1\n"
        "unless --host; another address needs --token (Bearer, on every route but /health and /).\n"
        "Image k of a request is `tandem generate`'s image of the same parameters with seed + k.\n"
        "SIGTERM/SIGINT/SIGUSR1: stop accepting, finish the running images within --grace, exit 0.\n"},
};

void cli_command_usage(int cmd, FILE *f) {
    if (cmd < 0 || cmd >= CLI_NCMDS) { usage(f); return; }
    fprintf(f, "usage:\n  tandem %s%s", k_commands[cmd].name, k_commands[cmd].usage);
}

void usage(FILE *f) {
    fputs("usage: tandem COMMAND [FLAGS]\n\ncommands:\n", f);
    for (int c = 0; c < CLI_NCMDS; c++) fprintf(f, "  %-9s %s\n", k_commands[c].name, k_commands[c].summary);
    fputs("\n  tandem COMMAND --help   (or tandem help COMMAND): that command's flags\n"
          "  tandem --version\n", f);
}

/* Exits with the unknown-command error, listing every command. */
static void __attribute__((noreturn)) unknown_command(const char *name) {
    char list[256] = "";
    const char *near = NULL;
    int bd = 3;
    for (int c = 0; c < CLI_NCMDS; c++) {
        size_t n = strlen(list);
        snprintf(list + n, sizeof list - n, "%s%s", c ? ", " : "", k_commands[c].name);
        int d = cli_edit_distance(name, k_commands[c].name);
        if (d < bd) { bd = d; near = k_commands[c].name; }
    }
    if (near) die(2, "unknown command \"%.200s\" (did you mean %s? commands: %s)", name, near, list);
    die(2, "unknown command \"%.200s\" (commands: %s)", name, list);
}

int main(int argc, char **argv) {
    /* OpenMP and OpenBLAS run separate thread pools; idle OpenMP workers
     * spinning steal the cores OpenBLAS needs (measured ~10% of a UNet
     * step). libgomp reads OMP_WAIT_POLICY before main, so set it and
     * re-execute once when the user has not chosen a policy. */
    if (!getenv("OMP_WAIT_POLICY") && setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0)
        execv("/proc/self/exe", argv);   /* returns only on failure: go on as is */
    cli_env_log_level();
    if (argc < 2) { usage(stderr); return 2; }
    const char *c = argv[1];
    if (!strcmp(c, "--version")) { printf("tandem %s\n", TANDEM_VERSION); return 0; }
    if (!strcmp(c, "--help") || !strcmp(c, "-h") || !strcmp(c, "help")) {
        if (argc < 3 || strcmp(c, "help")) { usage(stdout); return 0; }
        if (argc > 3) die(2, "help: takes one command (tandem help COMMAND)");
        int k = cli_cmd_index(argv[2]);
        if (k < 0) unknown_command(argv[2]);
        cli_command_usage(k, stdout);
        return 0;
    }
    int k = cli_cmd_index(c);
    if (k < 0) unknown_command(c);
    return k_commands[k].fn(argc - 2, argv + 2);
}
