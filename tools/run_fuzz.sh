#!/usr/bin/env bash
# run_fuzz.sh — builds the libFuzzer targets (fuzz/fuzz_*.c) with clang and
# runs each for N seconds on a copy of its seed corpus (fuzz/corpus/<name>/),
# with fuzz/<name>.dict as dictionary when present.
# Exits nonzero if a target fails to build or any run finds a crash, leak,
# timeout or sanitizer report; the reproducer is left in the work folder.
#
# usage: tools/run_fuzz.sh [SECONDS_PER_TARGET (default 60)] [TARGET...]
# env:   BUILD_DIR (default <repo>/build-fuzz), WORK_DIR (default BUILD_DIR/fuzz-work),
#        CC (default clang), JOBS (build parallelism, default 4)
set -euo pipefail

secs="${1:-60}"
shift || true
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build-fuzz}"
work="${WORK_DIR:-$build/fuzz-work}"
cc="${CC:-clang}"
jobs="${JOBS:-4}"

case "$secs" in ''|*[!0-9]*) echo "run_fuzz.sh: error: seconds must be a number, got '$secs'" >&2; exit 2;; esac

# Instrument the library too (coverage feedback + ASan/UBSan inside it), not
# only the fuzz entry files.
san="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CC="$cc" cmake -S "$root" -B "$build" -DTDM_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS="$san" >/dev/null

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for src in "$root"/fuzz/fuzz_*.c; do
        [ -e "$src" ] || continue
        t="$(basename "$src" .c)"
        targets+=("$t")
    done
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "run_fuzz.sh: error: no fuzz targets in $root/fuzz" >&2
    exit 2
fi
cmake --build "$build" -j "$jobs" --target "${targets[@]}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export OMP_NUM_THREADS=1

fail=0
for t in "${targets[@]}"; do
    name="${t#fuzz_}"
    seeds="$root/fuzz/corpus/$name"
    corpus="$work/$name/corpus"
    artifacts="$work/$name/artifacts/"
    mkdir -p "$corpus" "$artifacts"
    # Work on a copy so the committed seeds stay small.
    if [ -d "$seeds" ]; then cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true; fi
    dict=()
    if [ -f "$root/fuzz/$name.dict" ]; then dict=(-dict="$root/fuzz/$name.dict"); fi
    echo "== $t: ${secs}s, corpus $corpus"
    if "$build/$t" "${dict[@]}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$artifacts" "$corpus" \
        >"$work/$name/log.txt" 2>&1; then
        tail -n 12 "$work/$name/log.txt" | grep -E '^(stat::number_of_executed_units|Done)' || true
        echo "== $t: ok"
    else
        echo "== $t: FAILED (log $work/$name/log.txt, reproducers in $artifacts)" >&2
        grep -E 'ERROR|runtime error|SUMMARY|Test unit written' "$work/$name/log.txt" | head -n 20 >&2 || true
        fail=1
    fi
done
exit "$fail"
