#!/usr/bin/env python3
"""check_layers.py — fails when a file under src/ includes a header of a
higher layer, or of a sibling layer, than its own (DESIGN.md, "Layers").

Layers, bottom-up (a layer includes only itself and the ones below it):
    core -> io -> backend -> nn -> models -> (text, sched) -> place -> dist
    -> pipe -> serve -> cli
text and sched are siblings: neither may include the other. A layer is the
first folder under src/ (src/backend/cpu and src/backend/cuda are backend).

Scans every `#include "..."` in src/**/*.{c,h,cu,cuh}. A quoted name with a
folder ("models/flux.h") is a path under src/; one without a folder is the
including file's own folder, else the public API under include/ (tandem.h),
which every layer may include: it is a leaf (the check also fails if a public
header includes anything under src/). System headers (<...>) are not checked.

Also fails on two leaks the layers forbid: a CUDA preprocessor conditional
(`#if... CUDA...`) outside src/backend/, and a getenv() call outside src/cli/
and the Hugging Face cache resolution in src/io/folder.c (the library takes
its configuration as parameters, not from the environment).

Prints one line per violation, `file:line: from-layer -> to-layer (header)`,
and exits 1 if there is any; exits 0 with a one-line summary otherwise.
Usage: tools/check_layers.py [REPO_ROOT]   (default: the folder above tools/)
"""
import os
import re
import sys

# rank per layer; equal ranks are siblings (allowed only within one layer)
LAYERS = {
    "core": 0, "io": 1, "backend": 2, "nn": 3, "models": 4,
    "text": 5, "sched": 5,
    "place": 6, "dist": 7, "pipe": 8, "serve": 9, "cli": 10,
}

# Known violations, each with the issue item that removes it. Entries are
# (including file, included header), both relative to src/. Keep this empty
# where possible: fix the include rather than list it. An entry that no
# longer matches anything is itself reported, so the list cannot go stale.
ALLOWED = {
}

INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')
CUDA_COND = re.compile(r'^\s*#\s*(if|ifdef|ifndef|elif)\b.*CUDA')
GETENV = re.compile(r'\bgetenv\s*\(')
GETENV_OK = ("cli/", "io/folder.c")     # the CLI; the HF cache paths
SOURCE_EXT = (".c", ".h", ".cu", ".cuh")


def layer_of(rel):
    """Layer of a path relative to src/, or None for an unknown folder."""
    top = rel.split("/", 1)[0]
    return top if "/" in rel and top in LAYERS else None


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), ".."))
    src = os.path.join(root, "src")
    pub = os.path.join(root, "include")
    if not os.path.isdir(src):
        print(f"check_layers: {src}: no such folder", file=sys.stderr)
        return 2
    bad = []
    used = set()
    nfiles = ninc = 0
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for fn in sorted(filenames):
            if not fn.endswith(SOURCE_EXT):
                continue
            path = os.path.join(dirpath, fn)
            rel = os.path.relpath(path, src).replace(os.sep, "/")
            nfiles += 1
            frm = layer_of(rel)
            if frm is None:
                bad.append(f"src/{rel}:1: file outside the layer folders "
                           f"({', '.join(LAYERS)}): add its layer to tools/check_layers.py")
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                for ln, line in enumerate(f, 1):
                    if frm != "backend" and CUDA_COND.match(line):
                        bad.append(f"src/{rel}:{ln}: CUDA conditional outside src/backend/ "
                                   f"(open devices by name and call tdm_op_*)")
                    if GETENV.search(line) and not rel.startswith(GETENV_OK):
                        bad.append(f"src/{rel}:{ln}: getenv outside src/cli/ (pass it as a "
                                   f"parameter)")
                    m = INCLUDE.match(line)
                    if not m:
                        continue
                    ninc += 1
                    name = m.group(1)
                    if "/" not in name:
                        if os.path.exists(os.path.join(dirpath, name)):
                            continue                      # same folder
                        if os.path.exists(os.path.join(pub, name)):
                            continue                      # public API header
                        bad.append(f"src/{rel}:{ln}: {frm} -> ? (\"{name}\" is neither in "
                                   f"its folder nor in include/)")
                        continue
                    to = layer_of(name)
                    if to is None or not os.path.exists(os.path.join(src, name)):
                        bad.append(f"src/{rel}:{ln}: {frm} -> ? (\"{name}\" is not a header "
                                   f"under src/<layer>/)")
                        continue
                    if to == frm or LAYERS[to] < LAYERS[frm]:
                        continue
                    if (rel, name) in ALLOWED:
                        used.add((rel, name))
                        continue
                    kind = "sideways" if LAYERS[to] == LAYERS[frm] else "up"
                    bad.append(f"src/{rel}:{ln}: {frm} -> {to} ({kind}: \"{name}\")")
    # the public API must stay a leaf for "every layer may include it" to hold
    for dirpath, _, filenames in os.walk(pub):
        for fn in sorted(filenames):
            if not fn.endswith(".h"):
                continue
            path = os.path.join(dirpath, fn)
            with open(path, encoding="utf-8", errors="replace") as f:
                for ln, line in enumerate(f, 1):
                    m = INCLUDE.match(line)
                    if m and not os.path.exists(os.path.join(dirpath, m.group(1))):
                        bad.append(f"{os.path.relpath(path, root)}:{ln}: public header includes "
                                   f"\"{m.group(1)}\" (include/ may only include include/)")
    for rel, name in sorted(set(ALLOWED) - used):
        bad.append(f"tools/check_layers.py: allowlist entry src/{rel} -> \"{name}\" matches "
                   f"nothing: remove it")
    for b in bad:
        print(b)
    if bad:
        print(f"check_layers: {len(bad)} violation(s) in {nfiles} files", file=sys.stderr)
        return 1
    print(f"check_layers: {nfiles} files, {ninc} includes, layering ok"
          + (f" ({len(ALLOWED)} allowlisted)" if ALLOWED else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
