#!/usr/bin/env bash
# On the GPU machine after dev/gpu_run.sh built build-gpu: op-level profiles (TDM_PROFILE=1,
# see src/backend/cuda/profile.cu) of the SD1.5 UNet step (fp16), the FLUX 4+8-block step
# (bf16; FLUX_DTYPES="bf16 fp8" for both) and the FLUX VAE decode at 1024² (bf16), plus their plain timings. Folders as
# bench/run_gpu.sh, bench/run_flux_gpu.sh and bench/run_t5_vae_gpu.sh build them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
SD=${SD:-/tmp/tdm-gpu-sd15}
FX=${FX:-/tmp/tdm-gpu-flux-4x8}
ITERS=${ITERS:-5}
cmake --build build-gpu -j "$(nproc)" --target bench_unet bench_flux >/dev/null
[ -f "$SD/unet/config.json" ] || $PY bench/ref_gpu.py build "$SD"
./build-gpu/bench_unet "$SD" 64 64 2 77 "$ITERS" "$(nproc)" cuda:0 fp16
TDM_PROFILE=1 ./build-gpu/bench_unet "$SD" 64 64 2 77 1 "$(nproc)" cuda:0 fp16
if [ "${PROFILE_FLUX:-1}" = 1 ]; then
  [ -f "$FX/transformer/config.json" ] || $PY bench/ref_flux_cpu.py build "$FX" 4 8
  for dt in ${FLUX_DTYPES:-bf16}; do   # e.g. FLUX_DTYPES="bf16 fp8"
    ./build-gpu/bench_flux "$FX" 64 64 512 "$ITERS" "$(nproc)" cuda:0 "$dt"
    TDM_PROFILE=1 ./build-gpu/bench_flux "$FX" 64 64 512 1 "$(nproc)" cuda:0 "$dt"
  done
fi
if [ "${PROFILE_VAE:-1}" = 1 ]; then
  VAE=${VAE:-/tmp/tdm-gpu-flux-vae}
  [ -d "$VAE" ] || { $PY bench/ref_vae_gpu.py build "$VAE.part" && mv "$VAE.part" "$VAE"; }
  cmake --build build-gpu -j "$(nproc)" --target bench_vae >/dev/null
  TDM_PROFILE=1 ./build-gpu/bench_vae "$VAE" 128 128 1 "$(nproc)" cuda:0 bf16
fi
if [ "${PROFILE_T5:-1}" = 1 ]; then
  T5=${T5:-/tmp/tdm-gpu-t5xxl}
  [ -d "$T5" ] || { $PY bench/ref_t5_gpu.py build "$T5.part" && mv "$T5.part" "$T5"; }
  cmake --build build-gpu -j "$(nproc)" --target bench_t5 >/dev/null
  TDM_PROFILE=1 ./build-gpu/bench_t5 "$T5" 512 1 "$(nproc)" cuda:0 bf16
fi
