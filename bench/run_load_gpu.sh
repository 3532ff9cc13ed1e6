#!/usr/bin/env bash
# Load benchmark (run on the GPU machine after dev/gpu_run.sh built build-gpu): a plain read of the
# SD1.5-architecture UNet's float32 safetensors file that bench/run_gpu.sh builds, then tandem's
# loader putting it on cuda:0 with fp16 GEMM weights (the file's float32 converted) and in fp32
# (copied as is). Prints JSON lines (bench/bench_load.c).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DIR=${DIR:-/tmp/tdm-gpu-sd15}
REPEATS=${REPEATS:-3}
[ -f "$DIR/unet/config.json" ] || $PY bench/ref_gpu.py build "$DIR"
cmake --build build-gpu -j "$(nproc)" --target bench_load >/dev/null
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
./build-gpu/bench_load "$DIR" unet cuda:0 fp16 "$REPEATS"
./build-gpu/bench_load "$DIR" unet cuda:0 fp32 "$REPEATS"
