#!/usr/bin/env bash
# Full FLUX.1-dev transformer GPU benchmark (run on the GPU machine after dev/gpu_run.sh built
# build-gpu; BENCH_FLUX_FULL=1 there): 19 double + 38 single blocks at the real width with the
# guidance embedding, random weights as bf16 shards (~24 GB, built once on the GPU into $DIR;
# this script deletes nothing), 4096 image tokens (1024x1024) + 512 text tokens, batch 1, bf16:
# tandem (2 warm-ups + ITERS) then diffusers (3 warm-ups + ITERS) on the same inputs. One JSON
# line each, with peak GPU memory (weights resident) and a finiteness check of the output.
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
DTYPE=${DTYPE:-bf16}
# built under DIR.part and renamed when complete
[ -d "$DIR" ] || { $PY bench/ref_flux_gpu.py build "$DIR.part" "$DOUBLE" "$SINGLE" && mv "$DIR.part" "$DIR"; }
cmake --build "$B" -j "$(nproc)" --target bench_flux >/dev/null
"$B/bench_flux" "$DIR" 64 64 512 "$ITERS" "$(nproc)" "$DEV" "$DTYPE"
$PY bench/ref_flux_gpu.py step "$DIR" 64 64 512 "$DTYPE" "$ITERS"
