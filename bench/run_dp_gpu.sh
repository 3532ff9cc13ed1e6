#!/usr/bin/env bash
# Data-parallel scaling on a multi-GPU machine (device tool kinds nvidia-h100-x2 / x4), after
# dev/gpu_run.sh built build-gpu: SD1.5 architecture with random weights (bench/ref_cpu.py build;
# carry tests/fixtures/clip-vocab), 512x512, STEPS steps, IMAGES images, on 1, 2 and 4 GPUs through
# `tandem launch`. Prints per-run JSON: wall time, images/s from the ranks' own summary (which excludes
# model load), and the startup (load) time measured as wall - generation time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DIR=${DIR:-/tmp/tdm-gpu-sd15-full}
STEPS=${STEPS:-20}
IMAGES=${IMAGES:-32}
NGPU=$(nvidia-smi -L | wc -l)
[ -f "$DIR/model_index.json" ] || $PY bench/ref_cpu.py build "$DIR" tests/fixtures/clip-vocab
cp tests/fixtures/clip-vocab/vocab.json tests/fixtures/clip-vocab/merges.txt "$DIR/tokenizer/"
export NCCL_NVLS_ENABLE=0
for n in 1 2 4; do
  [ "$n" -le "$NGPU" ] || continue
  gpus=$(seq -s, 0 $((n - 1)))
  rm -rf /tmp/tdm-dp-$n
  t0=$(date +%s.%N)
  ./build-gpu/tandem launch -n "$n" --gpus "$gpus" -- generate --model "$DIR" --device cuda \
    --prompt "a photograph of an astronaut riding a horse" --num-images-per-prompt "$IMAGES" \
    --steps "$STEPS" --schedule dynamic --out /tmp/tdm-dp-$n 2> /tmp/tdm-dp-$n.log
  t1=$(date +%s.%N)
  gen=$(sed -n 's/^tandem: [0-9]* images in \([0-9.]*\)s.*/\1/p' /tmp/tdm-dp-$n.log | tail -1)
  python3 -c "import json; w=$t1-$t0; g=float('$gen'); print(json.dumps({'gpus': $n, 'images': $IMAGES, 'steps': $STEPS, 'wall_s': round(w, 2), 'generate_s': g, 'images_per_s': round($IMAGES / g, 3), 'startup_s': round(w - g, 2)}))"
done
