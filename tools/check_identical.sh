#!/usr/bin/env bash
# check_identical.sh — proves a change changes no output: builds git revision
# REV (default HEAD) in a temporary clone and the current working tree (both
# CPU-only: -DTDM_CUDA=OFF, Release, target tandem_cli only), runs the golden
# fixture set with each `tandem` binary and compares every output file byte
# for byte (cmp). Prints one table row per file; exits 0 when all are
# identical, 1 on any difference or missing file, 2 when it cannot compare
# (bad REV, build failure, a command that fails).
#
#   tools/check_identical.sh [REV]      e.g. tools/check_identical.sh HEAD~3
#
# The fixture set, run with both binaries on the working tree's fixtures (so
# only the code differs), every pipeline being a folder with a
# model_index.json under tests/fixtures/pipelines/ and
# tests/fixtures/flux_pipelines/:
#   - every case of those folders' cases.json (its tandem_argv: each SD
#     scheduler, several prompts, images per prompt, sizes, FLUX dev and
#     schnell), once as PNG images and once with --output-type latent;
#   - per pipeline: `tandem encode` embeddings of two prompts, `generate
#     --embeddings` latents from that file, `tandem decode` of a latent to a
#     PNG, and a run sharded over two virtual CPU devices (--devices
#     cpu:0,cpu:1 --device-map balanced, weights that fit nowhere streamed
#     from disk) with --print-device-map, PNG and latent.
# manifest.jsonl files are compared with the per-run fields "seconds" and
# "rank" removed; everything else (PNG, safetensors, printed plans, exit
# codes) as is. stderr (timings, progress) is kept in the logs, not compared.
#
# Environment: JOBS (build jobs, default nproc), THREADS (tandem --threads,
# default 2; the same for both runs), KEEP=1 keeps the temporary folder.
# Needs git, cmake, jq, cmp. About 2-3 minutes on 2 cores, mostly the builds.
set -euo pipefail

die() { echo "check_identical: $*" >&2; exit 2; }

rev=${1:-HEAD}
[ $# -le 1 ] || die "usage: tools/check_identical.sh [REV]"
for t in git cmake jq cmp; do command -v "$t" >/dev/null || die "$t not found"; done
root=$(git rev-parse --show-toplevel 2>/dev/null) || die "not inside a git work tree"
sha=$(git -C "$root" rev-parse --verify --quiet "$rev^{commit}") || die "$rev: not a revision"
jobs=${JOBS:-$(nproc)}
threads=${THREADS:-2}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tdm-identical.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "keeping $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi

# ---- builds ------------------------------------------------------------------------
build() {   # build SRC_DIR BUILD_DIR LABEL
    local log="$tmp/build-$3.log"
    echo "building $3 ..."
    if ! { cmake -S "$1" -B "$2" -DTDM_CUDA=OFF -DCMAKE_BUILD_TYPE=Release &&
           cmake --build "$2" -j "$jobs" --target tandem_cli; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "$3: build failed (log above)"
    fi
    [ -x "$2/tandem" ] || die "$3: no tandem binary in $2"
}
git clone -q --shared --no-checkout "$root" "$tmp/rev-src" || die "cannot clone $root"
git -C "$tmp/rev-src" checkout -q --detach "$sha" || die "cannot check out $sha"
build "$tmp/rev-src" "$tmp/rev-build" "rev"
build "$root" "$tmp/work-build" "work"

# ---- the fixture set -----------------------------------------------------------------
# Runs one tandem command in folder $dir, its stdout to $out/NAME.stdout (when
# given) and its exit code to $out/NAME.rc; a failure stops the check.
tdm_run() {   # tdm_run NAME STDOUT(0|1) ARGS...
    local name=$1 keep=$2 rc=0
    shift 2
    if [ "$keep" = 1 ]; then
        (cd "$dir" && "$bin" "$@") >"$out/$name.stdout" 2>>"$out/log" || rc=$?
    else
        (cd "$dir" && "$bin" "$@") >/dev/null 2>>"$out/log" || rc=$?
    fi
    echo "$rc" >"$out/$name.rc"
    [ "$rc" = 0 ] || { tail -n 5 "$out/log" >&2; die "$label: $name: tandem $* exited $rc"; }
}

run_set() {   # run_set BIN OUT LABEL
    local bin=$1 out=$2 label=$3 dir cases n i name pipe model flux argv
    mkdir -p "$out"
    for cases in "$root"/tests/fixtures/pipelines/cases.json "$root"/tests/fixtures/flux_pipelines/cases.json; do
        dir=$(dirname "$cases")
        n=$(jq '.cases | length' "$cases")
        for ((i = 0; i < n; i++)); do
            name=$(jq -r ".cases[$i].name" "$cases")
            mapfile -d '' argv < <(jq -j ".cases[$i].tandem_argv[] | ., \"\\u0000\"" "$cases")
            tdm_run "$name" 0 "${argv[@]}" --threads "$threads" --quiet --out "$out/$name"
            tdm_run "$name-latent" 0 "${argv[@]}" --threads "$threads" --quiet --output-type latent \
                --out "$out/$name-latent"
        done
    done
    for model in "$root"/tests/fixtures/pipelines/*/model_index.json \
                 "$root"/tests/fixtures/flux_pipelines/*/model_index.json; do
        [ -f "$model" ] || continue
        dir=$(dirname "$(dirname "$model")")
        pipe=$(basename "$(dirname "$model")")
        flux=$(grep -q '"Flux' "$model" && echo 1 || echo 0)
        local neg=(--negative-prompt "blurry") size=(--width 64 --height 64)
        [ "$flux" = 1 ] && neg=()
        tdm_run "$pipe-encode" 0 encode --model "$pipe" --prompt "a red cube on a table" \
            --prompt "a green field" "${neg[@]}" --threads "$threads" --quiet \
            --out "$out/$pipe-encode/embeddings.safetensors"
        tdm_run "$pipe-from-embeddings" 0 generate --model "$pipe" \
            --embeddings "$out/$pipe-encode/embeddings.safetensors" --output-type latent --seed 9 \
            --steps 3 "${size[@]}" --threads "$threads" --quiet --out "$out/$pipe-from-embeddings"
        tdm_run "$pipe-decode" 0 decode --model "$pipe" \
            --latents "$out/$pipe-from-embeddings/000001.safetensors" "${size[@]}" \
            --threads "$threads" --quiet --out "$out/$pipe-decode/decoded.png"
        for kind in png latent; do
            tdm_run "$pipe-sharded-$kind" 1 generate --model "$pipe" --prompt "a red cube" \
                --num-images-per-prompt 2 --seed 5 --steps 2 "${size[@]}" --output-type "$kind" \
                --devices cpu:0,cpu:1 --device-map balanced --max-memory 0=200KB,cpu=200KB \
                --print-device-map --threads "$threads" --quiet --out "$out/$pipe-sharded-$kind"
        done
    done
}

echo "running the fixture set with $rev ($sha) ..."
run_set "$tmp/rev-build/tandem" "$tmp/out-rev" "rev"
echo "running the fixture set with the working tree ..."
run_set "$tmp/work-build/tandem" "$tmp/out-work" "work"

# ---- compare -----------------------------------------------------------------------
strip_manifest() { sed -E 's/,"seconds":[^,}]*//; s/,"rank":[^,}]*//' "$1"; }

cd "$tmp"
files=$( { (cd out-rev && find . -type f ! -name log ! -name .tandem.lock);
           (cd out-work && find . -type f ! -name log ! -name .tandem.lock); } | sort -u)
ndiff=0 nsame=0
printf '%-62s %10s  %s\n' "file" "bytes" "result"
while IFS= read -r f; do
    f=${f#./}
    a="out-rev/$f" b="out-work/$f"
    if [ ! -f "$a" ]; then res="MISSING in $rev"
    elif [ ! -f "$b" ]; then res="MISSING in working tree"
    elif [ "$(basename "$f")" = manifest.jsonl ]; then
        if cmp -s <(strip_manifest "$a") <(strip_manifest "$b"); then res=identical; else res=DIFFERENT; fi
    elif cmp -s "$a" "$b"; then res=identical
    else res=DIFFERENT
    fi
    [ "$res" = identical ] && nsame=$((nsame + 1)) || ndiff=$((ndiff + 1))
    printf '%-62s %10s  %s\n' "$f" "$(stat -c %s "$a" 2>/dev/null || stat -c %s "$b")" "$res"
done <<<"$files"
echo "$nsame identical, $ndiff different ($rev $sha vs working tree)"
[ "$ndiff" = 0 ]
