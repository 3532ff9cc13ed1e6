#!/usr/bin/env bash
# Throughput through `tandem serve` against `tandem generate` on the same device (issue: serve
# overhead <= 3 %): N images of SD1.5 at 512x512, STEPS steps, one per job, seeds 0..N-1.
# `generate` makes them in one process (one load, --keep-resident); the server is started,
# loaded, then fed N jobs by bench/serve_client.py (CLIENTS at a time) — the load time is
# outside both figures. Also the median time from a request to its first progress event.
# On the GPU machine after dev/gpu_run.sh (BUILD=build-gpu DEV=cuda:0); on the CPU with the
# tiny model for a smoke run (MODEL=tests/fixtures/pipelines/sd15-tiny DEV=cpu SIZE=64).
# RANKS=R (> 1): both under `tandem launch -n R --gpus 0..R-1` (DEV=cuda), the server's ranks as
# its workers — the multi-GPU line.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
B=${BUILD:-build-gpu}
DEV=${DEV:-cuda:0}
N=${N:-32}
STEPS=${STEPS:-20}
SIZE=${SIZE:-512}
CLIENTS=${CLIENTS:-4}
MODEL=${MODEL:-/tmp/tdm-gpu-sd15}
RANKS=${RANKS:-1}
TDM=("$B/tandem")
if [ "$RANKS" -gt 1 ]; then
  TDM=("$B/tandem" launch -n "$RANKS" --gpus "$(seq -s, 0 $((RANKS - 1)))" --)
  DEV=cuda
fi
[ -f "$MODEL/model_index.json" ] || $PY bench/ref_gpu.py build "$MODEL"
T=$(mktemp -d /tmp/tdm-serve-bench-XXXXXX)
trap 'kill $SRV 2>/dev/null || true; rm -rf "$T"' EXIT
# generate: one process, N images; its own report gives the seconds without the load
"${TDM[@]}" generate --model "$MODEL" --device "$DEV" --prompt "a photograph of an astronaut riding a horse" \
  --num-images-per-prompt "$N" --steps "$STEPS" --width "$SIZE" --height "$SIZE" --keep-resident \
  --out "$T/gen" 2>&1 | tail -1
"${TDM[@]}" serve --model "$MODEL" --device "$DEV" --port 0 --queue "$((N + 8))" --steps "$STEPS" \
  > "$T/serve.out" 2> "$T/serve.err" &
SRV=$!
for _ in $(seq 600); do grep -q serving "$T/serve.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/.* on \(http:[^ ]*\)$/\1/p' "$T/serve.out")
$PY bench/serve_client.py "$URL" 2 1 "$STEPS" "$SIZE" "$SIZE" >/dev/null   # warm-up
$PY bench/serve_client.py "$URL" "$N" "$CLIENTS" "$STEPS" "$SIZE" "$SIZE"
