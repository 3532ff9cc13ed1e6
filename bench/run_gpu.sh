#!/usr/bin/env bash
# GPU benchmark (run on the GPU machine): SD1.5-architecture UNet step, 512x512, CFG batch 2,
# tandem (CUDA backend) vs diffusers (PyTorch eager, SDPA) on the same card in one call.
# Needs: diffusers importable (carried wheel), nvcc, and the build deps (see bench/README or
# the carried .deps). Prints JSON lines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DIR=${DIR:-/tmp/tdm-gpu-sd15}
ITERS=${ITERS:-20}
[ -f "$DIR/unet/config.json" ] || $PY bench/ref_gpu.py build "$DIR"
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
cmake --build build-gpu -j "$(nproc)" --target bench_unet >/dev/null
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
./build-gpu/bench_unet "$DIR" 64 64 2 77 "$ITERS" "$(nproc)" cuda:0 fp32
./build-gpu/bench_unet "$DIR" 64 64 2 77 "$ITERS" "$(nproc)" cuda:0 fp16
$PY bench/ref_gpu.py unet "$DIR" fp32 "$ITERS"
$PY bench/ref_gpu.py unet "$DIR" fp16 "$ITERS"
