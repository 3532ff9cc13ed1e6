#!/usr/bin/env bash
# One-image parallelism GPU benchmark (run on the GPU machine after dev/gpu_run.sh built build-gpu):
# the FLUX.1-dev transformer step (19 + 38 blocks, random weights built once by
# bench/ref_flux_gpu.py into $DIR), batch 1, GRID x GRID image tokens (64: 1024², 128: 2048²) +
# 512 text tokens, DTYPE (bf16): tandem with Ulysses over U ranks (bench_flux under mpirun, rank r
# on GPU r mod GPUs, dist's nn group over MPI: exchanges staged through host memory until the NCCL
# communicator lands), then diffusers' ContextParallelConfig(ulysses_degree=U) under torchrun on
# the same GPUs, for every U in $DEGREES that the GPUs allow (U = 1 is the one-GPU baseline); then
# every layout in $LAYOUTS (PARALLEL for bench_flux: ring=R, tp=T, ulysses=U,ring=R (USP),
# tp=T,ulysses=U) with diffusers' ContextParallelConfig(ulysses_degree, ring_degree) beside the
# context-parallel ones. On a machine with fewer GPUs than ranks, tandem's ranks share GPUs (a dry
# run: correctness and overheads, not a speed-up; COMM=mpi then) and diffusers is skipped (NCCL
# takes one rank per GPU). One JSON line per run.
# SD=1 adds Stable Diffusion 1.5 (random weights, bench/ref_cpu.py build; needs the CLIP vocabulary
# in tests/fixtures/clip-vocab), 512², SD_STEPS steps, fp16: one process on GPU 0 against
# `launch -n 2 --gpus 0,1 -- generate --parallel cfg=2` (the guidance halves on two GPUs), the image's
# seconds from the manifest (warm-up image first) and whether the PNGs are byte-identical.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_DISABLE_PROGRESS_BARS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
PY=${PY:-python3}
B=${BUILD:-build-gpu}
DOUBLE=${DOUBLE:-19}
SINGLE=${SINGLE:-38}
DIR=${DIR:-/tmp/tdm-gpu-flux-full-${DOUBLE}x${SINGLE}}
GRID=${GRID:-64}
ITERS=${ITERS:-3}
DTYPE=${DTYPE:-bf16}
DEGREES=${DEGREES:-1 2 4}
LAYOUTS=${LAYOUTS:-ring=2 tp=2 ring=4 tp=4 ulysses=2,ring=2 tp=2,ulysses=2}
NGPU=$(nvidia-smi -L | wc -l)
[ -d "$DIR" ] || { $PY bench/ref_flux_gpu.py build "$DIR.part" "$DOUBLE" "$SINGLE" && mv "$DIR.part" "$DIR"; }
cmake --build "$B" -j "$(nproc)" --target bench_flux >/dev/null
for U in $DEGREES; do
  if [ "$U" = 1 ]; then
    "$B/bench_flux" "$DIR" "$GRID" "$GRID" 512 "$ITERS" 4 cuda "$DTYPE"
  else
    mpirun --oversubscribe --bind-to none -np "$U" "$B/bench_flux" "$DIR" "$GRID" "$GRID" 512 "$ITERS" 4 cuda "$DTYPE"
  fi
  if [ "$U" -le "$NGPU" ]; then
    if [ "$U" = 1 ]; then $PY bench/ref_flux_gpu.py step "$DIR" "$GRID" "$GRID" 512 "$DTYPE" "$ITERS"
    else torchrun --nproc_per_node="$U" bench/ref_flux_gpu.py cp "$DIR" "$GRID" "$GRID" 512 "$DTYPE" "$ITERS" "$U" 1
    fi
  else
    echo "{\"impl\": \"diffusers\", \"skipped\": \"ulysses=$U needs $U GPUs, $NGPU present\"}"
  fi
done
for L in $LAYOUTS; do
  U=1 R=1 T=1
  for kv in ${L//,/ }; do
    case $kv in ulysses=*) U=${kv#*=} ;; ring=*) R=${kv#*=} ;; tp=*) T=${kv#*=} ;; esac
  done
  n=$((U * R * T))
  PARALLEL=$L mpirun --oversubscribe --bind-to none -x PARALLEL -x COMM -np "$n" \
    "$B/bench_flux" "$DIR" "$GRID" "$GRID" 512 "$ITERS" 4 cuda "$DTYPE" || echo "{\"impl\": \"tandem\", \"failed\": \"$L\"}"
  if [ "$T" = 1 ] && [ "$n" -le "$NGPU" ]; then
    torchrun --nproc_per_node="$n" bench/ref_flux_gpu.py cp "$DIR" "$GRID" "$GRID" 512 "$DTYPE" "$ITERS" "$U" "$R"
  fi
done
if [ "${SD:-0}" = 1 ] && [ "$NGPU" -ge 2 ]; then
  SDDIR=${SDDIR:-/tmp/tdm-gpu-sd15-full}
  SD_STEPS=${SD_STEPS:-50}
  [ -f "$SDDIR/model_index.json" ] || $PY bench/ref_cpu.py build "$SDDIR" tests/fixtures/clip-vocab
  cp tests/fixtures/clip-vocab/vocab.json tests/fixtures/clip-vocab/merges.txt "$SDDIR/tokenizer/"
  J="--prompt warm-up --prompt 'a photograph of an astronaut riding a horse' --steps $SD_STEPS --seed 0 --quiet --overwrite"
  eval "$B/tandem generate --model $SDDIR --device cuda:0 $J --out /tmp/tdm-sd-one"
  eval "$B/tandem launch -n 2 --gpus 0,1 -- generate --model $SDDIR --device cuda $J --parallel cfg=2 --out /tmp/tdm-sd-cfg"
  $PY - <<'PY'
import json
def secs(d): return [json.loads(l)["seconds"] for l in open(d + "/manifest.jsonl")][1]
one, cfg = secs("/tmp/tdm-sd-one"), secs("/tmp/tdm-sd-cfg")
same = open("/tmp/tdm-sd-one/000001.png", "rb").read() == open("/tmp/tdm-sd-cfg/000001.png", "rb").read()
print(json.dumps({"impl": "tandem", "what": "sd15_image_cfg_parallel", "one_gpu_s": one, "cfg2_s": cfg,
                  "speedup": round(one / cfg, 3), "png_identical": same}))
PY
fi
