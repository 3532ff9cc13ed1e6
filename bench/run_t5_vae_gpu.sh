#!/usr/bin/env bash
# T5 encoder and VAE decode GPU benchmarks (run on the GPU machine after dev/gpu_run.sh built
# build-gpu; BENCH_T5VAE=1 there): FLUX.1's text_encoder_2 (T5-XXL encoder, 512 tokens, bf16) and
# its AutoencoderKL decoding a 128x128 latent to 1024x1024 (tandem fp32/fp16/bf16, diffusers
# fp32/bf16), random weights in the real configs, batch 1. Folders are built once under /tmp, on
# the GPU; then tandem, then the PyTorch reference (eager, CUDA events), on the same inputs. One
# JSON line per measurement. DEV=cpu T5_DTYPE=fp32 VAE_DTYPES=fp32 REF_VAE_DTYPES=fp32 with
# TINY=1 REF_DEVICE=cpu checks the plumbing without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_DISABLE_PROGRESS_BARS=1
PY=${PY:-python3}
B=${BUILD:-build-gpu}
DEV=${DEV:-cuda:0}
T5DIR=${T5DIR:-/tmp/tdm-gpu-t5xxl}
VAEDIR=${VAEDIR:-/tmp/tdm-gpu-flux-vae}
ITERS=${ITERS:-10}
TOKENS=${TOKENS:-512}
LAT=${LAT:-128}
T5_DTYPE=${T5_DTYPE:-bf16}
# each folder is built under DIR.part and renamed when complete
[ -d "$T5DIR" ] || { $PY bench/ref_t5_gpu.py build "$T5DIR.part" && mv "$T5DIR.part" "$T5DIR"; }
[ -d "$VAEDIR" ] || { $PY bench/ref_vae_gpu.py build "$VAEDIR.part" && mv "$VAEDIR.part" "$VAEDIR"; }
cmake --build "$B" -j "$(nproc)" --target bench_t5 bench_vae >/dev/null
"$B/bench_t5" "$T5DIR" "$TOKENS" "$ITERS" "$(nproc)" "$DEV" "$T5_DTYPE"
for dt in ${VAE_DTYPES:-fp32 fp16 bf16}; do "$B/bench_vae" "$VAEDIR" "$LAT" "$LAT" "$ITERS" "$(nproc)" "$DEV" "$dt"; done
$PY bench/ref_t5_gpu.py step "$T5DIR" "$TOKENS" "$T5_DTYPE" "$ITERS"
for dt in ${REF_VAE_DTYPES:-fp32 bf16}; do $PY bench/ref_vae_gpu.py step "$VAEDIR" "$LAT" "$LAT" "$dt" "$ITERS"; done
