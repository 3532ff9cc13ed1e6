#!/usr/bin/env bash
# The guide's staged FLUX flow over two GPUs (run on a 2-GPU machine after dev/gpu_run.sh built
# build-gpu): a FLUX.1-dev-size pipeline folder with random weights — the transformer of
# bench/run_flux_full_gpu.sh (bf16, 23.8 GB), T5-XXL (bench/ref_t5_gpu.py, bf16), CLIP ViT-L text
# (random, bf16), the FLUX VAE (bench/ref_vae_gpu.py), tokenizers and scheduler from the tiny
# fixture (their ids are valid for the real vocabularies) — generated at 1024² with
# `--device cuda:0 --device-map balanced --max-memory $MM` (default 0=16GiB,1=16GiB): text
# encoders, then the transformer split over both GPUs, then the VAE, each stage loaded alone.
# --report-memory prints each stage's peak on each GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_DISABLE_PROGRESS_BARS=1
PY=${PY:-python3}
B=${BUILD:-build-gpu}
D=${D:-/tmp/tdm-gpu-flux-staged}
TX=${TX:-/tmp/tdm-gpu-flux-full-19x38}
MM=${MM:-0=16GiB,1=16GiB}
STEPS=${STEPS:-4}
[ -d "$TX" ] || { $PY bench/ref_flux_gpu.py build "$TX.part" 19 38 && mv "$TX.part" "$TX"; }
if [ ! -d "$D/vae" ]; then
  mkdir -p "$D"
  F=tests/fixtures/flux_pipelines/flux-dev-tiny
  cp -r "$F/model_index.json" "$F/scheduler" "$F/tokenizer" "$F/tokenizer_2" "$D/"
  ln -sfn "$TX/transformer" "$D/transformer"
  $PY bench/ref_t5_gpu.py build "$D"
  $PY - "$D" <<'PY'
import sys, torch
from transformers import CLIPTextConfig, CLIPTextModel
torch.manual_seed(0)
m = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                 num_attention_heads=12, max_position_embeddings=77, vocab_size=49408,
                                 hidden_act="quick_gelu", projection_dim=768)).to(torch.bfloat16)
m.save_pretrained(f"{sys.argv[1]}/text_encoder", safe_serialization=True)
PY
  $PY bench/ref_vae_gpu.py build "$D"
fi
t0=$(date +%s.%N)
"$B/tandem" generate --model "$D" --device cuda:0 --device-map balanced --max-memory "$MM" \
  --prompt "a red cube on a table" --steps "$STEPS" --width 1024 --height 1024 --seed 0 \
  --print-device-map --report-memory --quiet --out /tmp/tdm-staged-out | python3 -c "
import json, sys
s, i, dec = sys.stdin.read(), 0, json.JSONDecoder()
while i < len(s):   # each stage's plan: component -> devices
    if s[i].isspace(): i += 1; continue
    j, i = dec.raw_decode(s, i); c = {}
    for k, v in j['device_map'].items(): c.setdefault(k.split('.')[0], set()).add(str(v))
    print(json.dumps({'plan_bytes': j['bytes'], 'components': {k: sorted(v) for k, v in c.items()}}))
"
t1=$(date +%s.%N)
python3 -c "import json; m = json.loads(open('/tmp/tdm-staged-out/manifest.jsonl').readline()); print(json.dumps({'impl': 'tandem', 'what': 'flux_staged_2gpu', 'max_memory': '$MM', 'steps': $STEPS, 'image_s': m['seconds'], 'wall_s': round($t1 - $t0, 2)}))"
