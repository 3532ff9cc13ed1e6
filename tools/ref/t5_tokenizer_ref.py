#!/usr/bin/env python3
"""t5_tokenizer_ref.py — golden ids for tests/test_t5_tokenizer.c, and the
grapheme-break table that src/text/t5_tokenizer.c embeds.

    t5_tokenizer_ref.py cases    # writes tests/fixtures/t5_tokenizer/cases.json
    t5_tokenizer_ref.py tables   # prints the C table of Grapheme_Cluster_Break ranges

`cases`: the tokenizer folder is tests/fixtures/t5_tokenizer/tok (made by
t5_vocab.py). For every test string and every L in LENGTHS the ids come from
transformers' T5TokenizerFast called as FluxPipeline calls tokenizer_2:
tokenizer(text, padding="max_length", max_length=L, truncation=True,
add_special_tokens=True). Trailing pad ids are left out of the file (the test
checks that the rest of the row is pad_id). The script also checks that
loading a copy of the folder without tokenizer.json (spiece.model only) gives
the same ids, and reports (does not fail on) the strings where the
sentencepiece library itself disagrees (`spm_agrees` in the file).

`tables`: per code point, the Grapheme_Cluster_Break class (and
Extended_Pictographic) as the `regex` module's Unicode data has it, merged
into ranges, for the extended grapheme clusters the Precompiled normalizer
walks.

Needs: transformers, tokenizers, sentencepiece, protobuf, regex.
"""
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.normpath(os.path.join(HERE, "..", "..", "tests", "fixtures", "t5_tokenizer"))
LENGTHS = [512, 256, 77, 8]

_LONG_PROMPT = ("A highly detailed oil painting of an ancient castle on a misty mountain at sunset, "
                "with a golden dragon flying over the river, cinematic lighting, 8k, trending on "
                "artstation, by a famous artist. ")

CASES = [
    "",
    "a photo of a cat",
    "A photo of a cat sitting on a red chair, highly detailed, 4k",
    " leading space",
    "trailing space ",
    "  multiple   spaces   inside  ",
    "   ",
    "\t\n",
    "tab\tseparated\twords",
    "new\nline\r\nwindows\rcr",
    "\r\n\r\n",
    "café naïve résumé façade",
    "cafe\u0301 nai\u0308ve re\u0301sume\u0301",
    "e\u0301\u0301\u0301 stacked marks",
    "\u0301 leading combining mark",
    "A\u0301 \uff21\u0301 \ufb01\u0301 grapheme prefix",
    "\ufb01ne \ufb02ower \ufb00 \ufb03 \ufb04",
    "\uff26\uff55\uff4c\uff4c\uff0d\uff57\uff49\uff44\uff54\uff48\u3000\uff54\uff45\uff58\uff54\u3000\uff11\uff12\uff13",
    "\uff48\uff45\uff4c\uff4c\uff4f\u3000\uff57\uff4f\uff52\uff4c\uff44",
    "\u3000\u3000leading ideographic spaces",
    "\u2460\u2461\u2462 \u2474 \u2488 \u216b \u217b",
    "x\u00b2 H\u2082O \u00bd \u00bc \u00be \u2030",
    "\u00bdcup \u00bctsp",
    "\u2122 \u00a9 \u00ae \u2103 \u2109 \u2116 \u2121",
    "emoji \U0001F600\U0001F389\U0001F44D\U0001F3FD \U0001F468\u200d\U0001F469\u200d\U0001F467 \U0001F1EB\U0001F1F7",
    "\U0001F600",
    "\U0001F600\U0001F600\U0001F600 unk fuse",
    "variation \u263a\ufe0f \u2764\ufe0f \u2708\ufe0e",
    "\u6771\u4eac \u4eac\u90fd \u65e5\u672c \u4e2d\u56fd \u4f60\u597d\u4e16\u754c",
    "\ud55c\uad6d \uc11c\uc6b8 \uc548\ub155\ud558\uc138\uc694 \u1100\u1161\u11a8",
    "\u3131 \u314f \u1100",
    "\u0395\u03bb\u03bb\u03ac\u03b4\u03b1 \u03ba\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u041c\u043e\u0441\u043a\u0432\u0430 \u043f\u0440\u0438\u0432\u0435\u0442",
    "!!!???...,,,;;;:::",
    "12345 3.14159 1,000,000 2024-01-01",
    "<extra_id_0> masked <extra_id_2>",
    "<extra_id_1><extra_id_1>x",
    "<extra_id_99> is not a sentinel here",
    "text </s> more <pad> <unk>",
    "</s></s>",
    "\uff1c/s\uff1e full-width eos",
    "a\x01b\x7fc\u200bd\u00ade",
    "\u00a0nbsp\u2002en\u2003em\u2009thin",
    "\u2028line sep\u2029para\u0085nel",
    "UPPER CASE lower case MiXeD",
    "it's don't can't I'm",
    "https://example.com/path?q=1&x=2#frag",
    "email@example.com #hashtag @mention",
    "\"quoted\" 'single' \u00abguillemets\u00bb \u201elow\u201c \u2018curly\u2019",
    "\u2014 \u2013 \u2026 \u2022 \u00b7 \u2027",
    "math: \u2211 \u222b \u221a \u221e \u2260 \u2264 \u2265 \u00b1 \u00d7 \u00f7",
    "a\u0903b spacing mark",
    "\u0645\u0631\u062d\u0628\u0627 \u0600\u0661 arabic",
    "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd hebrew",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0915\u094d\u0937\u0924\u094d\u0930\u093f\u092f",
    "\u337b \u337f \u338f \u33a1",
    "\uff76\uff80\uff76\uff85 \uff8a\uff9f",
    "\u212b A\u030a \u00c5",
    "\u01c5 \u01c8 \u01cb",
    "\u0130stanbul \u0131 \u0130",
    "\u00df \u1e9e \u017f",
    "\U0001D401\U0001D428\U0001D425\U0001D41D \U0001D456\U0001D461\U0001D44E\U0001D459\U0001D456\U0001D450",
    "\u2126 \u03c9 \u03a9",
    "\ufeffBOM at start",
    "Z\u0334\u0321a\u0337l\u0338g\u0335o",
    "\u2581 already \u2581meta\u2581space",
    "a\u2581\u2581b",
    "a",
    "cat,cat.cat!cat",
    "quote's\u2019s",
    "\ue000 private \U000F0000 use",
    "x" * 300,
    "a" * 1000,
    _LONG_PROMPT * 12,
    " ".join("word%d" % i for i in range(700)),
]


def _encode_rows(tok, text):
    rows = {}
    pad = tok.pad_token_id
    for L in LENGTHS:
        ids = tok(text, padding="max_length", max_length=L, truncation=True,
                  add_special_tokens=True).input_ids
        if len(ids) != L:
            raise RuntimeError("L=%d: got %d ids for %r" % (L, len(ids), text))
        while ids and ids[-1] == pad:
            ids = ids[:-1]
        rows[str(L)] = ids
    return rows


def make_cases():
    from transformers import T5TokenizerFast
    import sentencepiece as spm

    tok_dir = os.path.join(FIX, "tok")
    tok = T5TokenizerFast.from_pretrained(tok_dir)
    tmp = tempfile.mkdtemp()
    try:
        for f in ("spiece.model", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(os.path.join(tok_dir, f), tmp)
        tok_spm = T5TokenizerFast.from_pretrained(tmp)
    finally:
        shutil.rmtree(tmp)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(tok_dir, "spiece.model"))

    if len(CASES) != len(set(CASES)):
        raise RuntimeError("duplicate test strings")
    out = []
    n_spm_diff = 0
    for text in CASES:
        rows = _encode_rows(tok, text)
        rows_spm = _encode_rows(tok_spm, text)
        if rows != rows_spm:
            raise RuntimeError("tokenizer.json and spiece.model folders disagree on %r" % text)
        full = tok(text).input_ids
        ref = sp.encode(text) + [tok.eos_token_id]
        agrees = full == ref
        if not agrees:
            n_spm_diff += 1
            print("sentencepiece differs on %r:\n  transformers %s\n  sentencepiece %s"
                  % (text[:60], tok.convert_ids_to_tokens(full)[:20], sp.id_to_piece(ref[:-1])[:20]),
                  file=sys.stderr)
        out.append({"text": text, "ids": rows, "spm_agrees": agrees})
    doc = {
        "tokenizer": "tok",
        "pad_id": tok.pad_token_id,
        "eos_id": tok.eos_token_id,
        "vocab_size": len(tok),
        "lengths": LENGTHS,
        "cases": out,
    }
    path = os.path.join(FIX, "cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("wrote %s: %d cases, %d where sentencepiece differs" % (path, len(out), n_spm_diff))


# Grapheme_Cluster_Break classes; numbers must match T5_GCB_* in t5_tokenizer.c
_GCB = [("CR", 1), ("LF", 2), ("Control", 3), ("Extend", 4), ("ZWJ", 5), ("SpacingMark", 6),
        ("Prepend", 7), ("Regional_Indicator", 8), ("L", 9), ("V", 10), ("T", 11)]
_EXT_PICT = 12


def make_tables():
    import regex

    rs = [(regex.compile(r"\p{Grapheme_Cluster_Break=%s}" % n), v) for n, v in _GCB]
    ep = regex.compile(r"\p{Extended_Pictographic}")
    ranges = []
    for c in range(0x110000):
        k = 0
        if not 0xD800 <= c <= 0xDFFF:
            ch = chr(c)
            for r, v in rs:
                if r.match(ch):
                    k = v
                    break
            if k == 0 and ep.match(ch):
                k = _EXT_PICT
        if ranges and ranges[-1][2] == k and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c, k])
    cells = ["{0x%X,0x%X,%d}" % tuple(r) for r in ranges if r[2]]
    print("/* generated by tools/ref/t5_tokenizer_ref.py tables (regex %s) */" % regex.__version__)
    print("static const uint32_t t5_gcb_ranges[][3] = {")
    line = "   "
    for c in cells:
        if len(line) + len(c) + 2 > 100:
            print(line)
            line = "   "
        line += " " + c + ","
    print(line)
    print("};")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "cases"
    if what == "cases":
        make_cases()
    elif what == "tables":
        make_tables()
    else:
        sys.exit("usage: t5_tokenizer_ref.py cases|tables")
