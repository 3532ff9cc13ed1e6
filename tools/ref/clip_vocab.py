#!/usr/bin/env python3
"""clip_vocab.py — turn open_clip's bpe_simple_vocab_16e6.txt(.gz) into a
Hugging Face "tokenizer" folder (vocab.json, merges.txt,
tokenizer_config.json, special_tokens_map.json) laid out like the one of
openai/clip-vit-large-patch14 that Stable Diffusion 1.x ships.

Standard library only (no torch, no transformers). Usage:

    clip_vocab.py BPE_FILE OUT_DIR                  # full vocabulary, 49408 tokens
    clip_vocab.py BPE_FILE OUT_DIR --merges K       # truncated: first K merges
    clip_vocab.py BPE_FILE OUT_DIR --pad '!'        # SD2.x style pad token

The vocabulary order is CLIP's: 256 byte symbols, the same 256 with "</w>",
one token per merge (in merge order), then <|startoftext|>, <|endoftext|>.
"""
import argparse
import gzip
import json
import os
import sys

CLIP_MERGES = 49152 - 256 - 2  # merges CLIP uses from the BPE file (48894)
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def bytes_to_unicode():
    """GPT-2/CLIP byte -> printable unicode character table (256 entries)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
          + list(range(ord("\xae"), ord("\xff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def read_merges(bpe_path):
    """All merges CLIP uses, as (left, right) pairs, from the .txt or .txt.gz file."""
    opener = gzip.open if bpe_path.endswith(".gz") else open
    with opener(bpe_path, "rb") as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:CLIP_MERGES + 1]]
    if len(merges) != CLIP_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{bpe_path}: expected {CLIP_MERGES} merge lines")
    return merges


def build_vocab(merges):
    """CLIP's vocabulary for the given merge list: token -> id."""
    byte_syms = list(bytes_to_unicode().values())
    toks = byte_syms + [s + "</w>" for s in byte_syms]
    toks += ["".join(m) for m in merges]
    toks += [BOS, EOS]
    return {t: i for i, t in enumerate(toks)}


def _added(content):
    return {"content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": True}


def write_tokenizer_dir(out_dir, merges, pad=EOS, max_length=77):
    """Writes the four files of a diffusers tokenizer folder.

    pad: "<|endoftext|>" as SD1.x (and openai/clip-vit-large-patch14), or
    "!" as SD2.x, whose special_tokens_map.json names "!" while its
    tokenizer_config.json keeps "<|endoftext|>"."""
    os.makedirs(out_dir, exist_ok=True)
    vocab = build_vocab(merges)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    config = {
        "unk_token": dict(_added(EOS), __type="AddedToken"),
        "bos_token": dict(_added(BOS), __type="AddedToken"),
        "eos_token": dict(_added(EOS), __type="AddedToken"),
        "pad_token": EOS,
        "add_prefix_space": False,
        "errors": "replace",
        "do_lower_case": True,
        "name_or_path": "openai/clip-vit-large-patch14",
        "model_max_length": max_length,
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    stm = {"bos_token": _added(BOS), "eos_token": _added(EOS), "unk_token": _added(EOS),
           "pad_token": pad}
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(stm, f, indent=2)
    return vocab


def write_truncated_tokenizer_dir(out_dir, bpe_path, k, pad=EOS, max_length=77):
    """Tokenizer folder with only the first k merges: 512 + k + 2 tokens.
    Used by the tiny test pipelines (a small text-encoder embedding table)."""
    merges = read_merges(bpe_path)
    if not 0 <= k <= len(merges):
        raise ValueError(f"merges must be in [0, {len(merges)}]")
    return write_tokenizer_dir(out_dir, merges[:k], pad=pad, max_length=max_length)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bpe", help="bpe_simple_vocab_16e6.txt or .txt.gz")
    ap.add_argument("out", help="output tokenizer folder")
    ap.add_argument("--merges", type=int, default=None, help="keep only the first K merges")
    ap.add_argument("--pad", default=EOS, help='pad token ("<|endoftext|>" SD1.x, "!" SD2.x)')
    ap.add_argument("--max-length", type=int, default=77)
    a = ap.parse_args()
    merges = read_merges(a.bpe)
    if a.merges is not None:
        if not 0 <= a.merges <= len(merges):
            sys.exit(f"clip_vocab.py: --merges must be in [0, {len(merges)}]")
        merges = merges[:a.merges]
    vocab = write_tokenizer_dir(a.out, merges, pad=a.pad, max_length=a.max_length)
    print(f"wrote {a.out}: {len(vocab)} tokens, {len(merges)} merges")


if __name__ == "__main__":
    main()
