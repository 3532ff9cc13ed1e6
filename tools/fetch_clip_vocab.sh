#!/bin/sh
# fetch_clip_vocab.sh — download the CLIP BPE merges (from the open_clip_torch
# wheel on PyPI) and write the full 49408-token CLIP tokenizer folder to
# tests/fixtures/clip-vocab/ (SD1.x pad) and tests/fixtures/clip-vocab/sd2/
# (pad "!") and tests/fixtures/clip-vocab/trunc/ (first 1000 merges, pad "!")
# for the tokenizer tests. Needs pip, unzip or python3; no torch.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/tests/fixtures"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

python3 -m pip download open_clip_torch --no-deps --only-binary=:all: -d "$tmp" -q --retries 1 --timeout 20
whl=$(ls "$tmp"/open_clip_torch-*.whl | head -n 1)
python3 - "$whl" "$tmp/bpe_simple_vocab_16e6.txt" <<'PY'
import gzip, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith("bpe_simple_vocab_16e6.txt.gz"))
    data = gzip.decompress(z.read(name))
open(sys.argv[2], "wb").write(data)
PY
python3 "$root/tools/ref/clip_vocab.py" "$tmp/bpe_simple_vocab_16e6.txt" "$out/clip-vocab"
python3 "$root/tools/ref/clip_vocab.py" "$tmp/bpe_simple_vocab_16e6.txt" "$out/clip-vocab/sd2" --pad '!'
python3 "$root/tools/ref/clip_vocab.py" "$tmp/bpe_simple_vocab_16e6.txt" "$out/clip-vocab/trunc" --merges 1000 --pad '!'
