#!/usr/bin/env bash
# On the GPU machine (device tool), after dev/gpu_run.sh has built build-gpu: the
# one-GPU checks of single-image parallelism. Ranks share the one GPU through the
# MPI communicator (device buffers staged through host memory):
#   - SD --parallel cfg=2 (2 ranks) against one process, fp32 and fp16;
#   - FLUX --parallel ulysses=2 and 3 against one process, fp32 and bf16;
#   - FLUX --parallel ring=2 and ulysses=2,ring=2 (within float tolerance: the
#     largest difference is printed, bytes are not expected to match);
#   - FLUX --parallel tp=2 (2 ranks) and tp=2,ulysses=2 (4 ranks) against one
#     process, fp32 and bf16 (tensor parallelism sums in another order: expected
#     within float tolerance, not byte-identical; the relative error is printed);
#   - --parallel auto on 2 ranks (the probe's CUDA path and the choice);
#   - --parallel-vae (the image's ranks decode it in row bands) with SD cfg=2 and
#     FLUX ulysses=3, PNGs against one process (expected within 1 per channel);
# each on the tiny fixtures, comparing the latents (--output-type latent) and the
# PNGs byte for byte and, where they differ, printing the largest difference.
# Then the dist-labelled tests (their CUDA parts run where a GPU is present).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
T=$PWD/build-gpu/tandem
W=$(mktemp -d)
SD=tests/fixtures/pipelines/sd15-tiny
FLUX=tests/fixtures/flux_pipelines/flux-dev-tiny
SDJOB="--prompt 'a red fox' --prompt 'a lighthouse' --steps 4 --seed 3 --width 64 --height 64 --quiet"
FJOB="--prompt 'a red fox' --prompt 'a lighthouse' --steps 3 --seed 5 --width 64 --height 64 --max-sequence-length 32 --quiet"

# compare DIR_A DIR_B LABEL: byte identity of every output, else the largest difference
compare() {
  local a=$1 b=$2 label=$3 same=1 n=0
  for f in "$a"/*.png "$a"/*.safetensors "$a"/*.npy; do
    [ -e "$f" ] || continue
    n=$((n + 1))
    cmp -s "$f" "$b/$(basename "$f")" || { same=0; echo "  $label: $(basename "$f") differs"; }
  done
  if [ "$n" = 0 ]; then echo "FAIL $label: no outputs"; return; fi
  if [ "$same" = 1 ]; then echo "ok   $label: $n outputs byte-identical"; else echo "DIFF $label"; fi
  python3 - "$a" "$b" <<'PY' 2>/dev/null
import sys, glob, os, json, struct
import numpy as np
def load(p):
    if p.endswith('.png'):
        from PIL import Image; return np.asarray(Image.open(p)).astype(np.float64)
    if p.endswith('.safetensors'):
        b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
        for k, v in h.items():
            if k == '__metadata__': continue
            s, e = v['data_offsets']; dt = {'F32': np.float32, 'F16': np.float16, 'BF16': None}[v['dtype']]
            return np.frombuffer(b[8 + n + s:8 + n + e], dtype=dt).astype(np.float64)
    return np.load(p).astype(np.float64)
a, b = sys.argv[1], sys.argv[2]
for f in sorted(glob.glob(a + '/*')):
    g = os.path.join(b, os.path.basename(f))
    if not f.endswith(('.png', '.safetensors', '.npy')) or not os.path.exists(g): continue
    x, y = load(f), load(g)
    if x.shape != y.shape: print('   ', os.path.basename(f), 'shapes differ'); continue
    d = np.abs(x - y).max(); r = d / max(np.abs(x).max(), 1e-30)
    if d: print('    %s: max abs diff %.3g (rel %.3g)' % (os.path.basename(f), d, r))
PY
}

run1() { eval "$T generate --device cuda $*"; }
runN() { local n=$1; shift; eval "$T launch --oversubscribe -n $n -- generate --device cuda $*"; }

for dt in fp32 fp16; do
  for ot in latent png; do
    run1 --model $SD $SDJOB --dtype $dt --output-type $ot --out $W/sd1_${dt}_$ot || echo "FAIL sd one process $dt $ot"
    runN 2 --model $SD $SDJOB --dtype $dt --output-type $ot --parallel cfg=2 --out $W/sdc_${dt}_$ot \
      || echo "FAIL sd cfg=2 $dt $ot"
    compare $W/sd1_${dt}_$ot $W/sdc_${dt}_$ot "SD cfg=2 vs 1 process, $dt, $ot"
  done
done
for dt in fp32 bf16; do
  for ot in latent png; do
    run1 --model $FLUX $FJOB --dtype $dt --output-type $ot --out $W/f1_${dt}_$ot || echo "FAIL flux one process $dt $ot"
    for u in 2 3; do
      runN $u --model $FLUX $FJOB --dtype $dt --output-type $ot --parallel ulysses=$u --out $W/fu${u}_${dt}_$ot \
        || echo "FAIL flux ulysses=$u $dt $ot"
      compare $W/f1_${dt}_$ot $W/fu${u}_${dt}_$ot "FLUX ulysses=$u vs 1 process, $dt, $ot"
    done
    # ring attention and tensor parallelism sum in another order: within
    # float tolerance, not byte-identical (DIFF expected; read the max rel diff)
    for job in 2:ring=2 4:ulysses=2,ring=2 2:tp=2 4:tp=2,ulysses=2; do
      n=${job%%:*} par=${job#*:}
      tag=$(echo $par | tr ',=' '__')
      runN $n --model $FLUX $FJOB --dtype $dt --output-type $ot --parallel $par --out $W/f${tag}_${dt}_$ot \
        || echo "FAIL flux $par $dt $ot"
      compare $W/f1_${dt}_$ot $W/f${tag}_${dt}_$ot "FLUX $par vs 1 process (tolerance), $dt, $ot"
    done
  done
done
for dt in fp32 fp16; do
  runN 2 --model $SD $SDJOB --dtype $dt --parallel cfg=2 --parallel-vae --out $W/sdv_${dt} \
    || echo "FAIL sd cfg=2 --parallel-vae $dt"
  compare $W/sd1_${dt}_png $W/sdv_${dt} "SD cfg=2 --parallel-vae vs 1 process, $dt (within 1 expected)"
done
for dt in fp32 bf16; do
  runN 3 --model $FLUX $FJOB --dtype $dt --parallel ulysses=3 --parallel-vae --out $W/fv_${dt} \
    || echo "FAIL flux ulysses=3 --parallel-vae $dt"
  compare $W/f1_${dt}_png $W/fv_${dt} "FLUX ulysses=3 --parallel-vae vs 1 process, $dt (within 1 expected)"
done
# --parallel auto: the probe's CUDA path (GEMM, attention, the all-to-all of the exchange --comm
# picks: staged MPI here, ranks sharing the GPU) and the choice, cached under $W
# (not --quiet: the choice and the predicted-vs-measured lines are what it checks)
(export XDG_CACHE_HOME=$W/cache; runN 2 --model $FLUX ${FJOB/--quiet/} --parallel auto --out $W/fauto 2>&1) \
  | grep "parallel auto" || echo "FAIL flux --parallel auto"
cat $W/cache/tandem/probe-*.json 2>/dev/null || echo "FAIL no probe cache"
ls $W/sd1_fp32_latent $W/f1_fp32_latent | head
rm -rf "$W"
(cd build-gpu && ctest -L dist --output-on-failure -j 2) 2>&1 | tee "$OUT/ctest_dist.log" | tail -15
# NCCL (one rank per GPU: skipped on a one-GPU machine; run it on a multi-GPU kind)
(cd build-gpu && ctest -R test_nccl_mpi --output-on-failure) 2>&1 | tail -5
