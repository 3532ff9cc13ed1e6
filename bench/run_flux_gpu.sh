#!/usr/bin/env bash
# FLUX GPU benchmark (run on the GPU machine after dev/gpu_run.sh built build-gpu): one
# FluxTransformer2DModel step at the real width with DOUBLE + SINGLE blocks (default 4 + 8),
# 4096 image tokens (1024x1024) + 512 text tokens, random weights; tandem (CUDA, fp32) vs
# diffusers fp32 (TF32 off) and bf16 on the same card in one call. Prints JSON lines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DOUBLE=${DOUBLE:-4}
SINGLE=${SINGLE:-8}
DIR=${DIR:-/tmp/tdm-gpu-flux-${DOUBLE}x${SINGLE}}
ITERS=${ITERS:-5}
[ -f "$DIR/transformer/config.json" ] || $PY bench/ref_flux_cpu.py build "$DIR" "$DOUBLE" "$SINGLE"
cmake --build build-gpu -j "$(nproc)" --target bench_flux >/dev/null
./build-gpu/bench_flux "$DIR" 64 64 512 "$ITERS" "$(nproc)" cuda:0 fp32
./build-gpu/bench_flux "$DIR" 64 64 512 "$ITERS" "$(nproc)" cuda:0 bf16
$PY bench/ref_flux_gpu.py step "$DIR" 64 64 512 fp32 "$ITERS"
$PY bench/ref_flux_gpu.py step "$DIR" 64 64 512 bf16 "$ITERS"
