"""The demo model's CLIP tokenizer: byte-level BPE merges learned from the caption language.

Same file format and vocabulary layout as openai/clip-vit-large-patch14 (vocab.json, merges.txt):
the 256 byte symbols, the same with `</w>`, one entry per learned merge, then <|startoftext|> and
<|endoftext|>. Merges are learned greedily (most frequent adjacent pair first, ties broken by the
pair's text) from the words of `data.corpus_words()` until every caption word is one token, so a
caption is one token per word and any other text still tokenizes byte by byte.
"""
import json
import os
import sys

from data import corpus_words

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref"))
from clip_vocab import bytes_to_unicode  # noqa: E402  (CLIP's byte -> unicode table)


def learn_merges(words):
    b2u = bytes_to_unicode()
    seqs = {}
    for w, f in words.items():
        sym = [b2u[b] for b in w.encode("utf-8")]
        sym[-1] += "</w>"
        seqs[w] = (sym, f)
    merges = []
    while True:
        counts = {}
        for sym, f in seqs.values():
            for a, b in zip(sym, sym[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + f
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        for w, (sym, f) in seqs.items():
            out, i = [], 0
            while i < len(sym):
                if i + 1 < len(sym) and (sym[i], sym[i + 1]) == best:
                    out.append(sym[i] + sym[i + 1])
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            seqs[w] = (out, f)
    return merges


def write_tokenizer(folder, max_length):
    os.makedirs(folder, exist_ok=True)
    merges = learn_merges(corpus_words())
    b2u = list(bytes_to_unicode().values())
    vocab = b2u + [v + "</w>" for v in b2u] + ["".join(m) for m in merges] + \
        ["<|startoftext|>", "<|endoftext|>"]
    assert len(set(vocab)) == len(vocab)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2 (learned from the demo captions by tools/train/tokenizer.py)\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    special = {"content": None, "single_word": False, "lstrip": False, "rstrip": False,
               "normalized": True}
    tok = lambda s: dict(special, content=s)  # noqa: E731
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": tok("<|startoftext|>"), "eos_token": tok("<|endoftext|>"),
                   "unk_token": tok("<|endoftext|>"), "pad_token": "<|endoftext|>"}, f, indent=2)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"unk_token": tok("<|endoftext|>"), "bos_token": tok("<|startoftext|>"),
                   "eos_token": tok("<|endoftext|>"), "pad_token": "<|endoftext|>",
                   "add_prefix_space": False, "errors": "replace", "do_lower_case": True,
                   "model_max_length": max_length, "tokenizer_class": "CLIPTokenizer"}, f, indent=2)
    return len(vocab)


if __name__ == "__main__":
    import sys
    import tempfile

    from transformers import CLIPTokenizer

    d = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
    n = write_tokenizer(d, 32)
    t = CLIPTokenizer.from_pretrained(d)
    print(n, "tokens;", t.tokenize("two small yellow stars at the top, green gradient background"))
    print(t("a large red circle on a blue background", padding="max_length").input_ids)
