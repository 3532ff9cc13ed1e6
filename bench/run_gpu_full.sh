#!/usr/bin/env bash
# GPU full-image benchmark (run on the GPU machine after dev/gpu_run.sh built build-gpu): the
# SD1.5 architecture with random weights (bench/ref_cpu.py build; needs the CLIP vocabulary in
# tests/fixtures/clip-vocab, carried), 512x512, STEPS PNDM steps incl. text encoder and VAE
# decode, tandem (cuda:0, default fp16) vs diffusers fp16, one warm-up image each.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DIR=${DIR:-/tmp/tdm-gpu-sd15-full}
STEPS=${STEPS:-50}
[ -f "$DIR/model_index.json" ] || $PY bench/ref_cpu.py build "$DIR" tests/fixtures/clip-vocab
cp tests/fixtures/clip-vocab/vocab.json tests/fixtures/clip-vocab/merges.txt "$DIR/tokenizer/"
./build-gpu/tandem generate --model "$DIR" --device cuda:0 --prompt warm-up --steps 2 --quiet --out /tmp/tdm-warm
t0=$(date +%s.%N)
./build-gpu/tandem generate --model "$DIR" --device cuda:0 --prompt "a photograph of an astronaut riding a horse" \
  --steps "$STEPS" --seed 0 --report-memory --quiet --out /tmp/tdm-gpu-out
t1=$(date +%s.%N)
python3 -c "import json; m = json.loads(open('/tmp/tdm-gpu-out/manifest.jsonl').readline()); print(json.dumps({'impl': 'tandem', 'dtype': 'fp16', 'image_s': m['seconds'], 'wall_s_incl_load_and_encode': round($t1 - $t0, 3), 'steps': $STEPS}))"
$PY bench/ref_gpu.py pipe "$DIR" "$STEPS"
