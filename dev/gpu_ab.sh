#!/usr/bin/env bash
# On the GPU machine (device tool): benchmark a base revision against the working tree in one
# call, for refactors that must not be slower. The base's source is carried as .ab/base.tar
# (made here with: mkdir -p .ab && git archive -o .ab/base.tar --format=tar.gz REV; .ab is git-ignored locally).
# Builds both with CUDA (Release, sm_90), then alternates SD1.5 UNet steps (fp32, fp16) and FLUX
# 4+8-block steps (fp32, bf16) base/new ROUNDS times. Needs .deps and the diffusers wheel (to
# make the random-weight models). Prints JSON lines tagged "base"/"new"; logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
ROUNDS=${ROUNDS:-2}
ITERS=${ITERS:-10}
mkdir -p "$OUT" /tmp/ab-base
[ -f .deps/deps.tar.xz ] && tar xJf .deps/deps.tar.xz
export PKG_CONFIG_PATH=$PWD/.deps/pkgconfig CMAKE_PREFIX_PATH=$PWD/.deps
export LD_LIBRARY_PATH=$PWD/.deps/lib:${LD_LIBRARY_PATH:-}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
tar xf .ab/base.tar -C /tmp/ab-base
build() { # $1 source dir, $2 build dir
  cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=Release -DTDM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    > "$OUT/cmake-$(basename "$2").log" 2>&1 &&
  cmake --build "$2" -j "$(nproc)" --target bench_unet bench_flux > "$OUT/build-$(basename "$2").log" 2>&1
}
build /tmp/ab-base /tmp/ab-base/build-gpu & b1=$!
build "$PWD" "$PWD/build-gpu" & b2=$!
wait $b1 || { echo "base build failed"; tail -20 "$OUT/build-build-gpu.log"; exit 1; }
wait $b2 || { echo "new build failed"; exit 1; }
SD=/tmp/tdm-gpu-sd15 FX=/tmp/tdm-gpu-flux-4x8
[ -f "$SD/unet/config.json" ] || python3 bench/ref_gpu.py build "$SD" >/dev/null
[ -f "$FX/transformer/config.json" ] || python3 bench/ref_flux_cpu.py build "$FX" 4 8 >/dev/null
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for r in $(seq "$ROUNDS"); do
  for which in base new; do
    b=/tmp/ab-base/build-gpu; [ $which = new ] && b=$PWD/build-gpu
    for dt in fp32 fp16; do
      echo "{\"rev\":\"$which\",\"round\":$r,\"bench\":\"sd_unet\",\"dtype\":\"$dt\"}"
      "$b/bench_unet" "$SD" 64 64 2 77 "$ITERS" "$(nproc)" cuda:0 $dt 2>&1 | grep -v Warning | tail -2
    done
    for dt in fp32 bf16; do
      echo "{\"rev\":\"$which\",\"round\":$r,\"bench\":\"flux_4x8\",\"dtype\":\"$dt\"}"
      "$b/bench_flux" "$FX" 64 64 512 5 "$(nproc)" cuda:0 $dt 2>&1 | grep -v Warning | tail -2
    done
  done
done
