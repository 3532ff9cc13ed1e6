#!/usr/bin/env bash
# CPU benchmark: SD1.5 architecture (random weights), 512x512, CFG batch 2, float32,
# tandem vs diffusers/PyTorch on the same machine with the same thread count.
# Needs a Python with torch + diffusers + transformers (PY, default /opt/refenv/bin/python)
# and the CLIP vocabulary (make vocab). Prints JSON lines; paste the table into RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/opt/refenv/bin/python}
DIR=${DIR:-/tmp/tdm-bench-sd15}
THREADS=${THREADS:-$(nproc)}
ITERS=${ITERS:-3}
STEPS=${STEPS:-20}
[ -f "$DIR/model_index.json" ] || $PY bench/ref_cpu.py build "$DIR" tests/fixtures/clip-vocab
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target bench_unet tandem_cli >/dev/null
echo "# $(date -u +%F) $(lscpu | sed -n 's/^Model name: *//p'), threads=$THREADS"
OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=$THREADS ./build/bench_unet "$DIR" 64 64 2 77 "$ITERS" "$THREADS"
$PY bench/ref_cpu.py unet "$DIR" "$THREADS" "$ITERS"
if [ "$STEPS" -gt 0 ]; then
  t0=$(date +%s.%N)
  /usr/bin/time -f '{"impl": "tandem", "peak_rss_mib": %M}' ./build/tandem generate --model "$DIR" \
    --prompt "a photograph of an astronaut riding a horse" --steps "$STEPS" --seed 0 \
    --threads "$THREADS" --quiet --out /tmp/tdm-bench-out 2>&1 | tail -1
  echo "{\"impl\": \"tandem\", \"image_s\": $(echo "$(date +%s.%N) - $t0" | bc), \"steps\": $STEPS}"
  $PY bench/ref_cpu.py pipe "$DIR" "$THREADS" "$STEPS"
fi
