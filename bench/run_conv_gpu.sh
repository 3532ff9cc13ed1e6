#!/usr/bin/env bash
# On the GPU machine after dev/gpu_run.sh built build-gpu: the convolution A/B of the SD1.5 UNet
# step (fp16, 512², CFG batch 2) and the FLUX VAE decode (bf16, 1024²) — TDM_CONV_IGEMM=1 (the
# default: implicit GEMM where the grid fills the GPU), 0 (im2col + cuBLAS everywhere), 2
# (implicit GEMM wherever it applies) in one call — then one profiled run of each with the
# default, then diffusers on the same folders. Folders as bench/run_gpu.sh and
# bench/run_t5_vae_gpu.sh build them. JSON lines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
SD=${SD:-/tmp/tdm-gpu-sd15}
VAE=${VAE:-/tmp/tdm-gpu-flux-vae}
ITERS=${ITERS:-10}
NP=$(nproc)
[ -f "$SD/unet/config.json" ] || $PY bench/ref_gpu.py build "$SD"
[ -d "$VAE" ] || { $PY bench/ref_vae_gpu.py build "$VAE.part" && mv "$VAE.part" "$VAE"; }
cmake --build build-gpu -j "$NP" --target bench_unet bench_vae >/dev/null
for m in ${MODES:-1 0 2}; do
  echo "TDM_CONV_IGEMM=$m"
  TDM_CONV_IGEMM=$m ./build-gpu/bench_unet "$SD" 64 64 2 77 "$ITERS" "$NP" cuda:0 fp16
  TDM_CONV_IGEMM=$m ./build-gpu/bench_vae "$VAE" 128 128 "$ITERS" "$NP" cuda:0 bf16
done
if [ "${PROFILE:-1}" = 1 ]; then
  TDM_PROFILE=1 ./build-gpu/bench_unet "$SD" 64 64 2 77 1 "$NP" cuda:0 fp16
  TDM_PROFILE=1 ./build-gpu/bench_vae "$VAE" 128 128 1 "$NP" cuda:0 bf16
fi
if [ "${REF:-1}" = 1 ]; then
  $PY bench/ref_gpu.py unet "$SD" fp16 "$ITERS"
  $PY bench/ref_vae_gpu.py step "$VAE" 128 128 bf16 "$ITERS"
fi
