#!/usr/bin/env bash
# One device call of this session's CUDA work (run tool): tests + profiles + load/full-image
# benches via dev/gpu_run.sh, then the old-vs-new attention kernel comparison. Logs in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
PROFILE=1 BENCH_LOAD=${BENCH_LOAD:-1} BENCH_FULL=${BENCH_FULL:-1} bash dev/gpu_run.sh > "$OUT/round.log" 2>&1
grep -E 'Passed|Failed|tests passed|"impl"|^profile|^  (conv|linear|attention|im2col|group|bias|cast|gemm|gelu|copy|add|geglu|layer|rms|rope|gated)' "$OUT/round.log" | head -150
echo "== FLUX 4+8 with the old attention kernel"
TDM_ATTN_TC=1 ./build-gpu/bench_flux /tmp/tdm-gpu-flux-4x8 64 64 512 5 "$(nproc)" cuda:0 bf16
echo "== SD UNet with the old attention kernel"
TDM_ATTN_TC=1 ./build-gpu/bench_unet /tmp/tdm-gpu-sd15 64 64 2 77 5 "$(nproc)" cuda:0 fp16
