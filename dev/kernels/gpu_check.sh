#!/usr/bin/env bash
# gpu_check.sh — builds the CUDA backend and runs the `cuda` tests on a GPU
# machine. With OpenBLAS, cJSON and libpng present (pkg-config), the normal
# CMake build + `ctest -L cuda`; otherwise a stand-alone build of
# tests/test_backend_ops.c with just core + ops (OpenBLAS if a libopenblas is
# found, else the naive cblas shim in dev/kernels/shim).
# usage: dev/kernels/gpu_check.sh [BUILD_DIR (default build-gpu)]
# env:   STANDALONE=1 forces the stand-alone build, SHIM=1 the naive cblas.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${1:-$root/build-gpu}"
cd "$root" || exit 2
export PATH="/usr/local/cuda/bin:$PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
nvcc --version | tail -2
if [ -z "${STANDALONE:-}" ] && pkg-config --exists openblas libcjson libpng 2>/dev/null; then
    echo "== full CMake build"
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null &&
        cmake --build "$build" -j"$(nproc)" >/dev/null &&
        cd "$build" && ctest -L cuda --output-on-failure
    exit $?
fi
echo "== stand-alone build (no OpenBLAS/cJSON/libpng dev packages here)"
mkdir -p "$build" || exit 2
cflags="-O2 -std=gnu11 -fopenmp -Wall -Wextra -Wno-unused-parameter -DTDM_HAVE_CUDA -Isrc -Iinclude"
blas=""
if [ -z "${SHIM:-}" ] && { [ -f /usr/include/cblas.h ] || [ -f /usr/include/x86_64-linux-gnu/cblas.h ]; }; then
    blaslib="$(ldconfig -p | awk '/libopenblas\.so /{print $NF; exit}')"
fi
if [ -n "${blaslib:-}" ]; then
    echo "cblas: $blaslib"; blas="$blaslib"
else
    echo "cblas: naive shim"
    cflags="$cflags -Idev/kernels/shim"
    gcc $cflags -c dev/kernels/shim/naive_cblas.c -o "$build/naive_cblas.o" || exit 1
    blas="$build/naive_cblas.o"
fi
for f in src/backend/cuda/*.cu; do
    nvcc -O3 -std=c++17 -arch=sm_90 -Xcompiler=-Wall,-Wextra,-Wno-unused-parameter \
        --Werror=all-warnings -Isrc -Iinclude -c "$f" -o "$build/$(echo "$f" | tr / _).o" || exit 1
done
for f in src/core/core.c src/backend/cpu/ops.c src/backend/ops.c tests/test_backend_ops.c; do
    gcc $cflags -c "$f" -o "$build/$(echo "$f" | tr / _).o" || exit 1
done
g++ -fopenmp -o "$build/test_backend_ops" "$build"/*.c.o "$build"/*.cu.o $blas \
    -L/usr/local/cuda/lib64 -lcublas -lcudart -lm || exit 1
"$build/test_backend_ops" cuda
