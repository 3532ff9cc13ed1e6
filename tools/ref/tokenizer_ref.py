#!/usr/bin/env python3
"""tokenizer_ref.py — reference data for tandem's CLIP tokenizer (dev-time;
needs transformers + tokenizers, e.g. /opt/refenv/bin/python).

    tokenizer_ref.py fixtures   # tests/fixtures/tokenizer/cases.json from transformers
    tokenizer_ref.py jsononly   # tests/fixtures/tokenizer/json_only/: the truncated
                                # vocabulary as transformers 5 saves it (tokenizer.json
                                # + tokenizer_config.json), checked against cases.json
    tokenizer_ref.py tables     # src/text/clip_unicode_tables.h from tokenizers' own
                                # normalizers and pre-tokenizer, probed per code point
    tokenizer_ref.py slowcheck  # compare against transformers 4.x's slow (Python)
                                # CLIPTokenizer without ftfy, re-implemented here

The fixtures need the full vocabulary: run tools/fetch_clip_vocab.sh first.
Golden ids come from transformers' CLIPTokenizer, loaded the way diffusers'
StableDiffusionPipeline loads it: CLIPTokenizer.from_pretrained(folder), and
called as the pipeline calls it: padding="max_length", truncation=True.
"""
import json
import os
import sys
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = os.path.join(ROOT, "tests", "fixtures", "clip-vocab")
SPLIT_RE = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"
            r"[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")

LONG = " ".join(f"word{i} and more" for i in range(40))

CASES = [
    "a photo of a cat",
    "A Photo Of A CAT",
    "",
    " ",
    "   \t\n  ",
    "hello",
    "  leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nand\x0bvertical\x0cfeeds",
    "many     spaces   between",
    "don't",
    "I'M sure you'RE right, we'll see; they'd've",
    "it's John's cat's toy",
    "'s 't 're 've 'm 'll 'd",
    "rock'n'roll o'clock '90s",
    "!'s x''s '''",
    "hello, world!",
    "wow!!! really?!?! ... --- ***",
    "(parenthesized) [bracketed] {braced} <angled>",
    "a painting of a fox, highly detailed, 8k, trending on artstation",
    "masterpiece, best quality, (ultra-detailed:1.2), 1girl",
    "1234567890",
    "3.14159 1,000,000 -42 +7 1e10",
    "x² y³ ½ ¼ Ⅳ ⅷ ٣٤ ५ 〇 ①",
    "café naïve résumé façade",
    "CAFÉ NAÏVE RÉSUMÉ",
    "cafe\u0301 nai\u0308ve",
    "A\u030a \u212b \u00c5",
    "Ωmega ΣΊΣΥΦΟΣ ὈΔΥΣΣΕΎΣ",
    "Москва ПРИВЕТ мир",
    "straße STRASSE ẞ",
    "İstanbul ıi DİYARBAKIR",
    "ǅungla ǈ Ǌ",
    "ﬁne ﬂow ﬀ",
    "你好世界",
    "東京タワー とうきょう",
    "한국어 텍스트",
    "\u1100\u1161\u11a8 \u1112\u1161\u11ab",
    "ลูกแมว น่ารัก",
    "مرحبا بالعالم",
    "שלום עולם",
    "हिन्दी भाषा",
    "emoji 🙂👍🏽 🇺🇸 👨‍👩‍👧",
    "🐱🐶🦊 cat dog fox",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "nbsp\u00a0ideographic\u3000space\u2028line\u2029para\u0085nel",
    "soft\u00adhyphen and \u2014 em dash \u2013 en",
    "“smart quotes” ‘single’ «guillemets»",
    "<|endoftext|>",
    "before <|endoftext|> after",
    "x<|endoftext|>y",
    "<|startoftext|>a cat<|endoftext|>",
    "<|ENDOFTEXT|> <|StartOfText|>",
    "<|endoftext|>> <<|endoftext|>",
    "<|endoftext",
    "a!b!c! !!",
    "email@example.com https://example.com/path?q=1&x=2#frag",
    "C:\\path\\to\\file.png",
    "#hashtag @mention $100 %50 ^caret ~tilde `backtick` |pipe|",
    "mIxEd CaSe WoRdS",
    "ALLCAPSWORDWITHOUTSPACES",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "\u00e9\u0301\u0327 e\u0327\u0301 e\u0301\u0327",
    "\U0001d400\U0001d401 \U0001d7d8 \U0002a6d6",
    "control\x01chars\x7f\u0080here",
    "\ufffd replacement \ufffd",
    "Ⓐⓑ ⅰⅱ Ａｂｃ １２３",
    LONG,
    "a " * 80,
    "x" * 200,
    "!" * 100,
    "tokens " * 74 + "end",
    "tokens " * 75 + "end",
    "tokens " * 76 + "end",
]

# (text, L) pairs run with a length other than 77.
SHORT_L = [("a photo of a cat", 5), ("a photo of a cat", 2), ("hello", 3), ("", 4),
           ("a photo of an astronaut riding a horse on mars", 10)]


def load(folder):
    from transformers import CLIPTokenizer
    return CLIPTokenizer.from_pretrained(folder)


def encode(tok, text, L):
    return tok(text, padding="max_length", max_length=L, truncation=True).input_ids


def cmd_fixtures():
    import transformers
    variants = {"sd1": VOCAB, "sd2": os.path.join(VOCAB, "sd2"), "trunc": os.path.join(VOCAB, "trunc")}
    toks = {k: load(v) for k, v in variants.items()}
    out = {"transformers": transformers.__version__,
           "class": type(toks["sd1"]).__module__ + "." + type(toks["sd1"]).__name__,
           "pad_id": {k: t.pad_token_id for k, t in toks.items()},
           "cases": []}
    runs = [(t, 77) for t in CASES] + SHORT_L
    for text, L in runs:
        case = {"text": text, "L": L}
        for k, t in toks.items():
            ids = encode(t, text, L)
            assert len(ids) == L, (text, L, len(ids))
            # keep everything up to the last non-pad id; the rest must be pad
            n = L
            while n > 0 and ids[n - 1] == t.pad_token_id:
                n -= 1
            if n < L and t.pad_token_id == t.eos_token_id:
                n += 1  # keep the EOS that the pad run swallowed
            case[k] = ids[:n]
        out["cases"].append(case)
    path = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "cases.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n")
        for key in ("transformers", "class", "pad_id"):
            f.write(f' {json.dumps(key)}: {json.dumps(out[key])},\n')
        f.write(' "cases": [\n')
        f.write(",\n".join("  " + json.dumps(c, ensure_ascii=True, separators=(",", ":"))
                           for c in out["cases"]))
        f.write("\n ]\n}\n")
    print(f"wrote {path}: {len(out['cases'])} cases")


def _golden_mismatches(folder, key):
    """Number of cases.json cases whose `key` ids transformers does not
    reproduce when loading `folder`."""
    with open(os.path.join(ROOT, "tests", "fixtures", "tokenizer", "cases.json"), encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    tok = load(folder)
    bad = 0
    for c in cases:
        ids, want = encode(tok, c["text"], c["L"]), c[key]
        if ids[:len(want)] != want or any(x != tok.pad_token_id for x in ids[len(want):]):
            bad += 1
    return bad


def cmd_jsononly():
    """The "trunc" vocabulary saved by CLIPTokenizer.save_pretrained (transformers
    5 writes only tokenizer.json and tokenizer_config.json), for the test of
    loading a folder without vocab.json/merges.txt. Checks that transformers
    gives cases.json's "trunc" ids from it, with merges as [a, b] pairs (as
    saved) and as "a b" strings (older tokenizers files)."""
    import shutil
    import tempfile
    out = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "json_only")
    with tempfile.TemporaryDirectory() as tmp:
        load(os.path.join(VOCAB, "trunc")).save_pretrained(tmp)
        names = sorted(os.listdir(tmp))
        assert names == ["tokenizer.json", "tokenizer_config.json"], names
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        for n in names:
            shutil.copy(os.path.join(tmp, n), out)
        with open(os.path.join(tmp, "tokenizer.json"), encoding="utf-8") as f:
            tj = json.load(f)
        assert tj["model"]["type"] == "BPE" and isinstance(tj["model"]["merges"][0], list)
        tj["model"]["merges"] = [" ".join(m) for m in tj["model"]["merges"]]
        with open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tj, f, ensure_ascii=False)
        bad_str = _golden_mismatches(tmp, "trunc")
    bad_pairs = _golden_mismatches(out, "trunc")
    print(f"wrote {out}: {names}; transformers differs from cases.json on {bad_pairs} (pair merges) "
          f"and {bad_str} (string merges) cases")
    if bad_pairs or bad_str:
        sys.exit(1)


def _classes():
    """Per code point: 'W' (\\s, removed by the split), 'L', 'N' or 'P', as
    tokenizers' Split pre-tokenizer (Oniguruma) classifies it."""
    from tokenizers import Regex, pre_tokenizers
    sp = pre_tokenizers.Split(Regex(SPLIT_RE), behavior="removed", invert=True)
    cls = {}
    for c in range(0x110000):
        if 0xD800 <= c < 0xE000:
            continue
        ch = chr(c)
        r = [p for p, _ in sp.pre_tokenize_str("a" + ch)]
        if r == ["a"]:
            k = "W"
        elif r == ["a" + ch]:
            k = "L"
        else:
            r2 = [p for p, _ in sp.pre_tokenize_str("!" + ch)]
            k = "P" if r2 == ["!" + ch] else "N"
        cls[c] = k
    return cls


def _ranges(cls):
    rows, start, prev = [], None, None
    for c in sorted(cls):
        k = cls[c]
        if k == "P":
            if start is not None:
                rows.append((start, prev, cls[start]))
                start = None
            continue
        if start is not None and (c != prev + 1 or cls[start] != k):
            rows.append((start, prev, cls[start]))
            start = None
        if start is None:
            start = c
        prev = c
    if start is not None:
        rows.append((start, prev, cls[start]))
    return rows


def _emit(f, name, ctype, rows, per_line):
    f.write(f"static const {ctype} {name}[][{len(rows[0])}] = {{\n")
    for i in range(0, len(rows), per_line):
        f.write("    " + " ".join("{" + ",".join(f"0x{v:X}" for v in r) + "}," for r in rows[i:i + per_line])
                + "\n")
    f.write("};\n")


def cmd_tables():
    from tokenizers import normalizers
    lower = normalizers.Lowercase()
    nfd = normalizers.NFD()
    nfc = normalizers.NFC()
    cls = _classes()
    cat_rows = [(a, b, {"W": 1, "L": 2, "N": 3}[k]) for a, b, k in _ranges(cls)]
    low_rows, dec_rows, comp_rows, ccc = [], [], [], []
    mismatch = 0
    for c in range(0x110000):
        if 0xD800 <= c < 0xE000:
            continue
        ch = chr(c)
        lo = lower.normalize_str(ch)
        if lo != ch:
            assert len(lo) <= 2, (hex(c), lo)
            low_rows.append((c, ord(lo[0]), ord(lo[1]) if len(lo) > 1 else 0))
        if 0xAC00 <= c <= 0xD7A3:
            continue  # Hangul syllables: algorithmic
        d = nfd.normalize_str(ch)
        if d != ch:
            assert len(d) <= 4, (hex(c), d)
            dec_rows.append((c,) + tuple(ord(x) for x in d) + (0,) * (4 - len(d)))
            if d != unicodedata.normalize("NFD", ch):
                mismatch += 1
        k = unicodedata.combining(ch)
        if k:
            ccc.append((c, k))
        dm = unicodedata.decomposition(ch)
        if dm and not dm.startswith("<"):
            parts = [int(x, 16) for x in dm.split()]
            if len(parts) == 2 and nfc.normalize_str(chr(parts[0]) + chr(parts[1])) == ch:
                comp_rows.append((parts[0], parts[1], c))
    ccc_rows = []
    for c, k in ccc:
        if ccc_rows and ccc_rows[-1][1] == c - 1 and ccc_rows[-1][2] == k:
            ccc_rows[-1] = (ccc_rows[-1][0], c, k)
        else:
            ccc_rows.append((c, c, k))
    comp_rows.sort()
    path = os.path.join(ROOT, "src", "text", "clip_unicode_tables.h")
    with open(path, "w") as f:
        f.write("/* clip_unicode_tables.h — Unicode data for the CLIP tokenizer, generated by\n"
                " * tools/ref/tokenizer_ref.py tables from the behaviour of Hugging Face\n"
                " * tokenizers (probed per code point), so that tandem classifies, lower-cases\n"
                " * and NFC-composes text as transformers' CLIPTokenizer does. Included only by\n"
                " * clip_tokenizer.c. Not a vocabulary: no token strings live here. */\n")
        f.write("#ifndef TDM_CLIP_UNICODE_TABLES_H\n#define TDM_CLIP_UNICODE_TABLES_H\n\n")
        f.write("#include <stdint.h>\n\n")
        f.write("/* {first, last, class}: 1 = whitespace (\\s), 2 = letter (\\p{L}),\n"
                " * 3 = number (\\p{N}); code points not listed are 'other'. */\n")
        _emit(f, "clip_uni_class", "uint32_t", cat_rows, 4)
        f.write("\n/* {code point, lower-case, second lower-case char or 0} (Lowercase normalizer). */\n")
        _emit(f, "clip_uni_lower", "uint32_t", low_rows, 4)
        f.write("\n/* {code point, full canonical decomposition (up to 4, 0-padded)};\n"
                " * Hangul syllables are decomposed algorithmically. */\n")
        _emit(f, "clip_uni_decomp", "uint32_t", dec_rows, 3)
        f.write("\n/* {first, last, canonical combining class} for non-zero classes. */\n")
        _emit(f, "clip_uni_ccc", "uint32_t", ccc_rows, 4)
        f.write("\n/* {starter, combining, composite}: primary composites, sorted. */\n")
        _emit(f, "clip_uni_comp", "uint32_t", comp_rows, 4)
        f.write("\n#endif\n")
    print(f"wrote {path}: {len(cat_rows)} class ranges, {len(low_rows)} lower, {len(dec_rows)} decomp, "
          f"{len(ccc_rows)} ccc ranges, {len(comp_rows)} compositions; "
          f"{mismatch} decompositions differ from Python's unicodedata {unicodedata.unidata_version}")


# ---- transformers 4.x slow CLIPTokenizer without ftfy, for comparison only ----
def _slow_encoder(folder):
    import regex
    with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
        enc = json.load(f)
    with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as f:
        merges = f.read().strip().split("\n")[1:49152 - 256 - 2 + 1]
    ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from clip_vocab import bytes_to_unicode
    be = bytes_to_unicode()
    pat = regex.compile(SPLIT_RE, regex.IGNORECASE)
    cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}

    def bpe(token):
        if token in cache:
            return cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            big = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if big not in ranks:
                break
            a, b = big
            out, i = [], 0
            while i < len(word):
                try:
                    j = word.index(a, i)
                except ValueError:
                    out.extend(word[i:])
                    break
                out.extend(word[i:j])
                i = j
                if word[i] == a and i < len(word) - 1 and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = tuple(out)
        return " ".join(word)

    def basic(text):  # BasicTokenizer(do_lower_case, strip_accents=False, do_split_on_punc=False)
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C")
                                           and ch not in "\t\n\r"):
                continue
            if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
                out.append(" ")
            elif (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
                  or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
                  or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F):
                out.append(" " + ch + " ")
            else:
                out.append(ch)
        text = unicodedata.normalize("NFC", "".join(out))
        return [w.lower() for w in text.split()]

    specials = ["<|startoftext|>", "<|endoftext|>"]

    def encode(text, L):
        ids = []
        parts = regex.split("(" + "|".join(regex.escape(s) for s in specials) + ")", text)
        for part in parts:
            if part in specials:
                ids.append(enc[part])
                continue
            for tok in pat.findall(" ".join(basic(part))):
                tok = "".join(be[b] for b in tok.encode("utf-8"))
                ids.extend(enc[t] for t in bpe(tok).split(" "))
        ids = [49406] + ids[:L - 2] + [49407]
        return ids + [49407] * (L - len(ids))
    return encode


def cmd_slowcheck():
    fast = load(VOCAB)
    slow = _slow_encoder(VOCAB)
    bad = 0
    for text in CASES:
        a, b = encode(fast, text, 77), slow(text, 77)
        if a != b:
            bad += 1
            print(f"differs: {text[:60]!r}\n  fast {a[:a.index(49407) + 1]}\n  slow {b[:b.index(49407) + 1]}")
    print(f"{bad} of {len(CASES)} strings differ between fast (5.x) and slow (4.x, no ftfy)")


if __name__ == "__main__":
    cmds = {"fixtures": cmd_fixtures, "jsononly": cmd_jsononly, "tables": cmd_tables,
            "slowcheck": cmd_slowcheck}
    if len(sys.argv) != 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]]()
