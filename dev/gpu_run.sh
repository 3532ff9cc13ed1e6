#!/usr/bin/env bash
# On the GPU machine (device tool): unpack the carried build dependencies (.deps, made by
# dev/make_gpu_deps.sh from this
# project's Debian packages: OpenBLAS, cJSON, libpng) and the diffusers wheel (.whl), build with
# CUDA, run the `cuda`-labelled tests (extra ctest flags in CTEST_ARGS, e.g. -V), then the GPU
# benchmarks asked for: BENCH=1 (SD UNet), BENCH_FLUX=1 (FLUX 4+8 blocks), BENCH_FLUX_FULL=1 (FLUX.1-dev
# 19+38 blocks, bf16), BENCH_T5VAE=1 (T5-XXL encoder, FLUX VAE decode), BENCH_FULL=1 (SD image),
# BENCH_LOAD=1 (loading the SD UNet onto the GPU, bench/run_load_gpu.sh), BENCH_FP8=1 (FLUX.1-dev in
# FP8 beside bf16 and diffusers, with the quality figures: bench/run_flux_fp8_gpu.sh), BENCH_SERVE=1
# (images/s through tandem serve vs tandem generate, bench/run_serve.sh), BENCH_SDXL=1 (SDXL UNet
# step 1024², fp16, vs diffusers: bench/run_sdxl_gpu.sh).
# Logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
[ -f .deps/deps.tar.xz ] && tar xJf .deps/deps.tar.xz
export PKG_CONFIG_PATH=$PWD/.deps/pkgconfig CMAKE_PREFIX_PATH=$PWD/.deps
export LD_LIBRARY_PATH=$PWD/.deps/lib:${LD_LIBRARY_PATH:-}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DTDM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 > "$OUT/cmake.log" 2>&1 \
  || { tail -20 "$OUT/cmake.log"; exit 1; }
cmake --build build-gpu -j "$(nproc)" > "$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -20; exit 1; }
(cd build-gpu && ctest -L cuda --output-on-failure -j 4 ${CTEST_ARGS:-}) 2>&1 | tee "$OUT/ctest.log" | tail -25
if [ -n "${VERBOSE_TEST:-}" ]; then ./build-gpu/$VERBOSE_TEST 2>&1 | tail -40 | tee "$OUT/$VERBOSE_TEST.log"; fi
if [ "${BENCH_FLUX:-0}" = 1 ]; then bash bench/run_flux_gpu.sh 2>&1 | grep -v Warning | tee "$OUT/bench_flux.log"; fi
if [ "${PROFILE:-0}" = 1 ]; then bash dev/gpu_profile.sh 2>&1 | grep -v Warning | tee "$OUT/profile.log"; fi
if [ "${BENCH_T5VAE:-0}" = 1 ]; then bash bench/run_t5_vae_gpu.sh 2>&1 | grep -v Warning | tee "$OUT/bench_t5_vae.log"; fi
if [ "${BENCH_FLUX_FULL:-0}" = 1 ]; then bash bench/run_flux_full_gpu.sh 2>&1 | grep -v Warning | tee "$OUT/bench_flux_full.log"; fi
if [ "${BENCH_SERVE:-0}" = 1 ]; then   # needs a build with tandem serve (libmicrohttpd there)
  BUILD=build-gpu bash bench/run_serve.sh 2>&1 | grep -v Warning | tee "$OUT/bench_serve.log"
fi
if [ "${BENCH_SDXL:-0}" = 1 ]; then bash bench/run_sdxl_gpu.sh 2>&1 | grep -v Warning | tee "$OUT/bench_sdxl.log"; fi
if [ "${BENCH_FP8:-0}" = 1 ]; then bash bench/run_flux_fp8_gpu.sh 2>&1 | grep -v Warning | tee "$OUT/bench_fp8.log"; fi
if [ "${BENCH_FULL:-0}" = 1 ]; then bash bench/run_gpu_full.sh 2>&1 | grep -v Warning | tee "$OUT/bench_full.log"; fi
if [ "${BENCH:-0}" = 1 ]; then
  cmake --build build-gpu -j "$(nproc)" --target bench_unet >/dev/null 2>&1
  ITERS=${ITERS:-10} bash bench/run_gpu.sh 2>&1 | grep -v Warning | tee "$OUT/bench.log"
fi
if [ "${BENCH_LOAD:-0}" = 1 ]; then bash bench/run_load_gpu.sh 2>&1 | grep -v Warning | tee "$OUT/bench_load.log"; fi
