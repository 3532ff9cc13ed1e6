#!/usr/bin/env bash
# On the GPU machine (run tool, carry .deps): build test_backend_ops with CUDA and run it
# (prints the tensor-core attention errors; its attention rows run with the default kernels
# and again with attn_tc_16row, the 64-row tc_attention_kernel for every head dim), then
# build + run the stand-alone attention benchmark (dev/kernels/attention_bench.cu) for both
# kernels (TDM_ATTN_TC=1 there selects the 64-row one), then (NCU=1) the conversion / attention-kernel split of the headline
# shapes under ncu, then (CTEST=1) ctest -L cuda.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
[ -f .deps/deps.tar.xz ] && tar xJf .deps/deps.tar.xz
export PKG_CONFIG_PATH=$PWD/.deps/pkgconfig CMAKE_PREFIX_PATH=$PWD/.deps
export LD_LIBRARY_PATH=$PWD/.deps/lib:${LD_LIBRARY_PATH:-} PATH=/usr/local/cuda/bin:$PATH
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
nvcc -O3 -std=c++17 -arch=sm_90 -DTDM_HAVE_CUDA -Isrc -Iinclude dev/kernels/attention_bench.cu \
  src/backend/cuda/attention.cu src/backend/cuda/attention_tc.cu -lcublas -o /tmp/attention_bench \
  > "$OUT/bench_build.log" 2>&1 &
bpid=$!
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DTDM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 > "$OUT/cmake.log" 2>&1 \
  || { tail -20 "$OUT/cmake.log"; exit 1; }
cmake --build build-gpu -j "$(nproc)" --target test_backend_ops > "$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -20; exit 1; }
echo "== test_backend_ops cuda"
timeout 150 ./build-gpu/test_backend_ops cuda > "$OUT/test_backend_ops.log" 2>&1; echo "rc=$?"
grep -E "attention|fail|FAIL|passed" "$OUT/test_backend_ops.log" | tail -70
wait $bpid || { tail -20 "$OUT/bench_build.log"; exit 1; }
echo "== attention_bench (default: tc2 for DP <= 128)"
timeout 90 /tmp/attention_bench 2>&1 | tee "$OUT/bench.log"
echo "== attention_bench, TDM_ATTN_TC=1"
TDM_ATTN_TC=1 timeout 90 /tmp/attention_bench 2>&1 | tee "$OUT/bench_tc1.log"
if [ "${NCU:-0}" = 1 ]; then
  for e in default 1; do
    echo "== ncu, TDM_ATTN_TC=$e"
    TDM_ATTN_TC=$e timeout 120 ncu --clock-control none --metrics gpu__time_duration.sum \
      -k regex:'tc_convert|tc2?_attention_kernel' /tmp/attention_bench profile 2>&1 \
      | grep -E "profile|tc_convert|attention_kernel|gpu__time_duration" | cut -c1-110
  done
fi
if [ "${CTEST:-0}" = 1 ]; then
  cmake --build build-gpu -j "$(nproc)" > "$OUT/build_all.log" 2>&1
  (cd build-gpu && timeout 100 ctest -L cuda --output-on-failure -j 4) > "$OUT/ctest.log" 2>&1; tail -12 "$OUT/ctest.log"
fi
