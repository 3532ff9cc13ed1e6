"""Procedural captioned shapes: the demo model's training data, made on the fly from a seed.

One to three shapes (circle, square, triangle, star, ring, cross) in 8 colours on a plain or
gradient background of another colour, at a position (left, right, top, bottom, centre) and size
(small, large), with captions in a few templates. Some colour x shape x background combinations
never appear in training (`held_out`); the semantic tests prompt for exactly those.

No downloads, no state: `sample(rng)` gives one (image, attributes) pair and `caption(attrs, rng)`
one of its captions. Images are uint8 HxWx3, antialiased by 4x4 supersampling.
"""
import math

import numpy as np

SIZE = 64
SS = 4  # supersampling factor per axis

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "orange": (245, 140, 20),
    "purple": (140, 40, 180),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLOUR_NAMES = list(COLOURS)
SHAPES = ["circle", "square", "triangle", "star", "ring", "cross"]
PLURAL = {s: s + ("es" if s.endswith("s") else "s") for s in SHAPES}
POSITIONS = ["left", "right", "top", "bottom", "centre"]
SIZES = ["small", "large"]
COUNTS = {1: "a", 2: "two", 3: "three"}


def held_out(colour, shape, background):
    """True for the colour x shape x background triples kept out of training (about 1 in 7)."""
    c, s, b = COLOUR_NAMES.index(colour), SHAPES.index(shape), COLOUR_NAMES.index(background)
    return (3 * c + 5 * s + 2 * b) % 7 == 0 and c != b


def held_out_triples():
    return [(c, s, b) for c in COLOUR_NAMES for s in SHAPES for b in COLOUR_NAMES
            if c != b and held_out(c, s, b)]


_grid_cache = {}


def _grid():
    if "g" not in _grid_cache:
        n = SIZE * SS
        coords = (np.arange(n, dtype=np.float32) + 0.5) / SS
        _grid_cache["g"] = np.meshgrid(coords, coords)  # x, y in pixel units
    return _grid_cache["g"]


def _polygon_mask(x, y, pts):
    """Even-odd point in polygon over the grid (pts: list of (x, y))."""
    inside = np.zeros(x.shape, dtype=bool)
    n = len(pts)
    for i in range(n):
        x1, y1 = pts[i]
        x2, y2 = pts[(i + 1) % n]
        if y1 == y2:
            continue
        cond = (y1 > y) != (y2 > y)
        xint = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= cond & (x < xint)
    return inside


def shape_mask(shape, cx, cy, r):
    """Coverage in [0, 1] at SIZE x SIZE of one shape of 'radius' r centred at (cx, cy)."""
    x, y = _grid()
    dx, dy = x - cx, y - cy
    if shape == "circle":
        m = dx * dx + dy * dy <= r * r
    elif shape == "ring":
        d2 = dx * dx + dy * dy
        m = (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    elif shape == "square":
        h = 0.85 * r
        m = (np.abs(dx) <= h) & (np.abs(dy) <= h)
    elif shape == "cross":
        w = 0.3 * r
        m = ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    elif shape == "triangle":
        pts = [(cx + r * math.cos(a), cy + r * math.sin(a) + 0.15 * r)
               for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        m = _polygon_mask(x, y, pts)
    elif shape == "star":
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rr = r if k % 2 == 0 else 0.45 * r
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a) + 0.1 * r))
        m = _polygon_mask(x, y, pts)
    else:
        raise ValueError(shape)
    return m.reshape(SIZE, SS, SIZE, SS).mean(axis=(1, 3)).astype(np.float32)


def _jitter(rgb, rng, amount=12):
    return np.clip(np.array(rgb, dtype=np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def background(colour, gradient, rng):
    base = _jitter(COLOURS[colour], rng)
    img = np.broadcast_to(base, (SIZE, SIZE, 3)).copy()
    if gradient:
        t = np.linspace(0.0, 1.0, SIZE, dtype=np.float32)
        if rng.random() < 0.5:
            t = t[::-1]
        other = base * 0.45 + 0.55 * 128.0
        ramp = t[:, None, None] if rng.random() < 0.5 else t[None, :, None]
        img = base * (1 - ramp) + other * ramp
    return img


REGION = {  # centre (x, y) of each position, in pixels
    "left": (17, 32), "right": (47, 32), "top": (32, 17), "bottom": (32, 47), "centre": (32, 32),
}
RADIUS = {"small": (6.0, 8.5), "large": (13.0, 17.0)}


def _place(pos, size, count, rng):
    """Centres and radii of `count` shapes of one size in one region (no overlaps)."""
    lo, hi = RADIUS[size]
    r = rng.uniform(lo, hi)
    bx, by = REGION[pos]
    if count == 1:
        j = 3.0
        cx = bx + rng.uniform(-j, j)
        cy = by + rng.uniform(-j, j)
        return [(cx, cy, r)]
    # several: spread along the region's long axis (vertical for left/right)
    step = 2 * r + 3
    offs = [(k - (count - 1) / 2) * step for k in range(count)]
    if pos in ("left", "right"):
        return [(bx + rng.uniform(-1, 1), by + o, r) for o in offs]
    return [(bx + o, by + rng.uniform(-1, 1), r) for o in offs]


def _clamp(c, r):
    return min(max(c, r + 1.0), SIZE - r - 1.0)


def sample(rng, allow_held_out=False):
    """One random scene: (uint8 image HxWx3, attribute dict)."""
    bg = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
    gradient = bool(rng.random() < 0.3)
    kind = rng.random()
    objs = []
    if kind < 0.7:  # one shape
        n_objs = [(1, rng.choice(SIZES), rng.choice(POSITIONS))]
    elif kind < 0.85:  # two or three of the same, small
        n_objs = [(int(rng.integers(2, 4)), "small", rng.choice(POSITIONS))]
    else:  # two different shapes, left and right (or top and bottom)
        pair = ("left", "right") if rng.random() < 0.5 else ("top", "bottom")
        n_objs = [(1, "small", pair[0]), (1, "small", pair[1])]
    for count, size, pos in n_objs:
        for _ in range(100):
            colour = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
            shape = SHAPES[rng.integers(len(SHAPES))]
            if colour != bg and (allow_held_out or not held_out(colour, shape, bg)):
                break
        objs.append(dict(count=count, size=size, pos=pos, colour=colour, shape=shape))
    img = background(bg, gradient, rng)
    for o in objs:
        rgb = _jitter(COLOURS[o["colour"]], rng)
        for cx, cy, r in _place(o["pos"], o["size"], o["count"], rng):
            m = shape_mask(o["shape"], _clamp(cx, r), _clamp(cy, r), r)[:, :, None]
            img = img * (1 - m) + rgb * m
    attrs = dict(bg=bg, gradient=gradient, objs=objs)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), attrs


def _articled(s):
    """'a orange ...' -> 'an orange ...'."""
    return "an" + s[1:] if s.startswith("a ") and s[2] in "aeiou" else s


def _obj_phrase(o, with_size, with_pos):
    n = o["count"]
    noun = o["shape"] if n == 1 else PLURAL[o["shape"]]
    words = [COUNTS[n]]
    if with_size:
        words.append(o["size"])
    words += [o["colour"], noun]
    s = _articled(" ".join(words))
    if with_pos:
        s += " in the centre" if o["pos"] == "centre" else " at the " + o["pos"]
    return s


def caption(attrs, rng):
    """One caption of the scene; which details it names (size, position) varies."""
    bgw = attrs["bg"] + (" gradient" if attrs["gradient"] else "")
    objs = attrs["objs"]
    with_size = bool(rng.random() < 0.6)
    with_pos = bool(rng.random() < 0.6)
    if len(objs) == 2:
        a = _obj_phrase(objs[0], False, with_pos)
        b = _obj_phrase(objs[1], False, with_pos)
        return f"{a} and {b}, {bgw} background" if rng.random() < 0.5 else \
            f"{a} and {b} on " + _articled(f"a {bgw} background")
    p = _obj_phrase(objs[0], with_size, with_pos)
    t = rng.integers(3)
    if t == 0:
        return f"{p} on " + _articled(f"a {bgw} background")
    if t == 1:
        return f"{p}, {bgw} background"
    return f"{bgw} background with {p}"


def corpus_words():
    """Every word the captions use (for learning the tokenizer's merges), with a weight."""
    words = {}
    rng = np.random.default_rng(0)
    for _ in range(4000):
        _, attrs = sample(rng, allow_held_out=True)
        for w in caption(attrs, rng).replace(",", " , ").split():
            words[w] = words.get(w, 0) + 1
    return words


def test_prompt(colour, shape, bg):
    return f"a large {colour} {shape} on " + _articled(f"a {bg} background")


if __name__ == "__main__":
    import sys

    from PIL import Image

    rng = np.random.default_rng(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    tiles = []
    for i in range(16):
        img, attrs = sample(rng)
        print(caption(attrs, rng))
        tiles.append(img)
    grid = np.concatenate([np.concatenate(tiles[r * 4:(r + 1) * 4], axis=1) for r in range(4)], axis=0)
    Image.fromarray(grid).resize((512, 512), Image.NEAREST).save("/tmp/data_grid.png")
    print(len(held_out_triples()), "held-out triples")
