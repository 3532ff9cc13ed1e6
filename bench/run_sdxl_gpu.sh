#!/usr/bin/env bash
# GPU benchmark (issue 17, item 5): SDXL base's UNet step, 1024x1024 (latents 128x128), CFG batch 2,
# fp16, random weights in the real config, tandem vs diffusers (PyTorch eager, SDPA) on the same
# card in one call. BENCH_SDXL=1 in dev/gpu_run.sh. Prints JSON lines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DIR=${DIR:-/tmp/tdm-gpu-sdxl}
ITERS=${ITERS:-10}
[ -f "$DIR/unet/config.json" ] || $PY bench/ref_gpu.py build-sdxl "$DIR"
cmake --build build-gpu -j "$(nproc)" --target bench_unet >/dev/null
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
./build-gpu/bench_unet "$DIR" 128 128 2 77 "$ITERS" "$(nproc)" cuda:0 fp16
$PY bench/ref_gpu.py unet-sdxl "$DIR" fp16 "$ITERS"
