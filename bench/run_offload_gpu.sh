#!/usr/bin/env bash
# Offload benchmark of the sharding issue (run on the GPU machine after dev/gpu_run.sh built
# build-gpu): the FLUX.1-dev-size transformer (19 + 38 blocks, random bf16 weights, built once
# into $DIR as bench/run_flux_full_gpu.sh does), 1024² (4096 + 512 tokens), batch 1, bf16, with
# GPU 0 capped by MM (default 0=8GiB,cpu=100GiB): tandem all on the GPU, tandem split (the plan's
# GPU-0 blocks resident, the rest in page-locked host RAM, each block's copy queued on a side
# stream while the previous block computes), then diffusers/accelerate with the same
# max_memory (device_map="auto": CPU-offload hooks). Also the plain pinned host→GPU copy rate,
# the floor for the streamed bytes. JSON lines.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_DISABLE_PROGRESS_BARS=1
PY=${PY:-python3}
B=${BUILD:-build-gpu}
DIR=${DIR:-/tmp/tdm-gpu-flux-full-19x38}
MM=${MM:-0=8GiB,cpu=100GiB}
ITERS=${ITERS:-3}
[ -d "$DIR" ] || { $PY bench/ref_flux_gpu.py build "$DIR.part" 19 38 && mv "$DIR.part" "$DIR"; }
cmake --build "$B" -j "$(nproc)" --target bench_flux >/dev/null
$PY - <<'PY'
import json, time, torch
x = torch.empty(2 << 30, dtype=torch.uint8, pin_memory=True)
y = torch.empty_like(x, device="cuda")
for i in range(4):
    torch.cuda.synchronize(); t = time.perf_counter(); y.copy_(x, non_blocking=True); torch.cuda.synchronize()
    dt = time.perf_counter() - t
print(json.dumps({"what": "pinned_h2d", "gb_per_s": round(x.numel() / dt / 1e9, 1)}))
PY
[ "${RESIDENT:-1}" = 1 ] && "$B/bench_flux" "$DIR" 64 64 512 "$ITERS" "$(nproc)" cuda:0 bf16
MAX_MEMORY="$MM" "$B/bench_flux" "$DIR" 64 64 512 "$ITERS" "$(nproc)" cuda:0 bf16
[ "${REF:-1}" = 1 ] && $PY bench/ref_flux_gpu.py offload "$DIR" 64 64 512 "$MM" "$ITERS"
true
