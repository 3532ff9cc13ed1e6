#!/usr/bin/env bash
# FLUX.1-dev transformer step in FP8 (--dtype fp8) beside bf16 and diffusers' bf16, on the GPU
# machine after dev/gpu_run.sh built build-gpu (BENCH_FP8=1 there). Same model folder and inputs
# as bench/run_flux_full_gpu.sh (19 + 38 blocks, random weights in the real config, 4096 image +
# 512 text tokens, batch 1). Rows: tandem bf16, tandem fp8, tandem fp8 with GPU 0 capped at
# CAP (default 8GiB; the rest streamed from page-locked host RAM), diffusers bf16; then the
# FP8 quality figures: the step output's relative error (max |fp8 - bf16| / max |bf16|) and
# mean relative error against the bf16 step, for SEEDS input draws. One JSON line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_DISABLE_PROGRESS_BARS=1
PY=${PY:-python3}
B=${BUILD:-build-gpu}
DEV=${DEV:-cuda:0}
DOUBLE=${DOUBLE:-19}
SINGLE=${SINGLE:-38}
DIR=${DIR:-/tmp/tdm-gpu-flux-full-${DOUBLE}x${SINGLE}}
ITERS=${ITERS:-3}
CAP=${CAP:-8GiB}
SEEDS=${SEEDS:-0 1}
REF=${REF:-1}
T=$(mktemp -d /tmp/tdm-fp8-XXXXXX)
[ -d "$DIR" ] || { $PY bench/ref_flux_gpu.py build "$DIR.part" "$DOUBLE" "$SINGLE" && mv "$DIR.part" "$DIR"; }
cmake --build "$B" -j "$(nproc)" --target bench_flux >/dev/null
run() {   # SEED DTYPE ITERS [env...]
  local s=$1 dt=$2 it=$3
  shift 3
  env SEED="$s" DUMP="$T/out_${dt}_$s.f32" "$@" "$B/bench_flux" "$DIR" 64 64 512 "$it" "$(nproc)" "$DEV" "$dt"
}
first=1
for s in $SEEDS; do
  it=1
  [ $first = 1 ] && it=$ITERS
  run "$s" bf16 "$it"
  run "$s" fp8 "$it"
  first=0
done
if [ -n "$CAP" ]; then
  env SEED=0 MAX_MEMORY="0=$CAP,cpu=200GiB" "$B/bench_flux" "$DIR" 64 64 512 2 "$(nproc)" "$DEV" fp8
fi
for s in $SEEDS; do
  $PY - "$T/out_bf16_$s.f32" "$T/out_fp8_$s.f32" "$s" <<'EOF'
import sys, numpy as np
a = np.fromfile(sys.argv[1], np.float32).astype(np.float64)
b = np.fromfile(sys.argv[2], np.float32).astype(np.float64)
d = np.abs(b - a)
print('{"fp8_vs_bf16": {"seed": %s, "rel_err_max": %.4g, "rel_err_mean": %.4g, "cos": %.6f}}' % (
    sys.argv[3], d.max() / np.abs(a).max(), d.mean() / np.abs(a).mean(),
    float(a @ b / np.sqrt((a @ a) * (b @ b)))))
EOF
done
rm -rf "$T"
if [ "$REF" = 1 ]; then $PY bench/ref_flux_gpu.py step "$DIR" 64 64 512 bf16 "$ITERS"; fi
