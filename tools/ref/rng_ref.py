#!/usr/bin/env python3
"""rng_ref.py — writes the golden fixtures for tests/test_rng.c from torch.

torch.randn on CPU draws from torch.Generator("cpu") (mt19937) and, for
float32 tensors of >= 16 elements, turns uniforms into normals with a
Box-Muller kernel whose sin/cos/log depend on torch's CPU capability:
  avx2 / avx512 -> the avx_mathfun polynomials (x86-64 machines)
  default       -> libm logf/sinf/cosf (aarch64, old x86, ATEN_CPU_CAPABILITY=default)
so there is one fixture per flavour:

  /opt/refenv/bin/python tools/ref/rng_ref.py --capability avx2    --out tests/fixtures/rng/randn_x86.txt
  /opt/refenv/bin/python tools/ref/rng_ref.py --capability default --out tests/fixtures/rng/randn_libm.txt

Format (whitespace separated tokens, '#' lines are comments):
  case <name> <seed>                 new generator, manual_seed(seed)
  <op> <n> <sum> <hash> <nh> <nt>    op is randn or rand (float32, this
                                     generator); sum = float64 sum of all n
                                     values in index order; hash = FNV-1a 64
                                     over the n float32 bit patterns (one
                                     32-bit word per step, see fnv1a below)
  then nh + nt float32 bit patterns in hex: the first nh and the last nt values
  end
"""
import argparse
import os
import sys


def fnv1a(words):
    h = 0xcbf29ce484222325
    for w in words:
        h ^= int(w)
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--capability", required=True, choices=["avx2", "avx512", "default"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.environ["ATEN_CPU_CAPABILITY"] = args.capability
    import numpy as np
    import torch
    torch.set_num_threads(1)
    got = torch.backends.cpu.get_cpu_capability()
    if got.lower() != args.capability:
        sys.exit(f"rng_ref: asked for cpu capability {args.capability}, torch runs {got}")

    big = 4 * 64 * 64
    sizes = [1, 2, 7, 15, 16, 17, 31, 64, 1000, big]
    seeds = [0, 1, 42, 2**32 + 5, 2**63 - 1, 2**64 - 1]
    cases = []  # (name, seed, [(op, n), ...])
    for s in seeds:
        for n in sizes:
            cases.append((f"s{s}_n{n}", s, [("randn", n)]))
    # Successive draws on one generator: the scalar path (< 16 elements)
    # caches the second Box-Muller value across calls, the vectorized path
    # (>= 16) leaves that cache alone.
    cases.append(("mixed42", 42, [("randn", 16), ("randn", 5), ("randn", 4 * 8 * 8),
                                  ("randn", 1), ("randn", 3), ("randn", 17), ("randn", 1),
                                  ("randn", big), ("randn", 2), ("randn", 33)]))
    cases.append(("mixed_big_seed", 2**32 + 5, [("randn", 3), ("randn", 1000), ("randn", 1),
                                               ("randn", 1), ("randn", 15), ("randn", 16)]))
    # Ancestral-sampler shape: initial latents then per-step noise.
    cases.append(("ancestral0", 0, [("randn", 4 * 8 * 8)] * 6))
    # torch.rand (uniform float32) and its interleaving with randn.
    cases.append(("rand0", 0, [("rand", 7), ("rand", 100), ("randn", 3), ("rand", 1),
                               ("randn", 1), ("randn", 20)]))

    keep = 64
    lines = [f"# written by tools/ref/rng_ref.py: torch {torch.__version__}, "
             f"cpu capability {got}, numpy {np.__version__}"]
    for name, seed, ops in cases:
        g = torch.Generator("cpu").manual_seed(seed)
        lines.append(f"case {name} {seed}")
        for op, n in ops:
            fn = torch.randn if op == "randn" else torch.rand
            x = fn(n, generator=g, dtype=torch.float32)
            bits = x.numpy().view(np.uint32)
            total = float(np.sum(x.numpy().astype(np.float64)))  # pairwise; C compares with a tolerance
            if n <= 2 * keep:
                head, tail = bits, bits[:0]
            else:
                head, tail = bits[:keep], bits[-keep:]
            lines.append(f"{op} {n} {total!r} {fnv1a(bits):016x} {len(head)} {len(tail)}")
            vals = [f"{int(v):08x}" for v in list(head) + list(tail)]
            for i in range(0, len(vals), 16):
                lines.append(" ".join(vals[i:i + 16]))
        lines.append("end")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
