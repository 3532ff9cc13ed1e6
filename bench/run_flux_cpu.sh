#!/usr/bin/env bash
# FLUX CPU benchmark: one FluxTransformer2DModel step at the real width (3072; 24 heads x 128)
# with DOUBLE double-stream + SINGLE single-stream blocks (default 4 + 8), 1024 image tokens
# (a 512x512 image) + 512 text tokens, float32, random weights; tandem vs diffusers/PyTorch with
# the same thread count, one after the other on the same machine. Prints JSON lines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/opt/refenv/bin/python}
DOUBLE=${DOUBLE:-4}
SINGLE=${SINGLE:-8}
DIR=${DIR:-/tmp/tdm-bench-flux-${DOUBLE}x${SINGLE}}
THREADS=${THREADS:-$(nproc)}
ITERS=${ITERS:-2}
[ -f "$DIR/transformer/config.json" ] || $PY bench/ref_flux_cpu.py build "$DIR" "$DOUBLE" "$SINGLE"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target bench_flux >/dev/null
echo "# $(date -u +%F) $(lscpu | sed -n 's/^Model name: *//p'), threads=$THREADS, $DOUBLE double + $SINGLE single blocks"
OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=$THREADS ./build/bench_flux "$DIR" 32 32 512 "$ITERS" "$THREADS"
$PY bench/ref_flux_cpu.py step "$DIR" 32 32 512 "$THREADS" "$ITERS"
