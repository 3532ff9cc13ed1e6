"""Fixtures of the demo model's semantic test (tests/test_demo.c), from data.py alone:

- tests/fixtures/demo/prompts.json: 40 prompts over colour x shape x background triples that
  data.held_out() keeps out of training, "a large {colour} {shape} on a {bg} background";
- tests/fixtures/demo/checker.png + checker.json: 96 scenes rendered by data.py exactly as in
  training (one large shape, plain background, every colour x shape twice), in one strip, with
  their labels: the checker in the test must read them right before it judges the model;
- tests/fixtures/demo/checker_vae.png: the same scenes through the demo model's autoencoder
  (encode, decode: as blurred as the model can draw them), to be read as well.

    python tools/train/make_test_fixtures.py [--vae models/shapes-64/vae]
"""
import argparse
import json
import os

import numpy as np
from PIL import Image

import data

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(REPO, "tests", "fixtures", "demo")
# the demo model draws best at low guidance (7.5 over-saturates it); make demo uses the same
GUIDANCE = 3.0


def held_out_prompts(n=40):
    triples = data.held_out_triples()
    rng = np.random.default_rng(40)
    # spread over shapes first so that each shape is asked about as often
    by_shape = {s: [t for t in triples if t[1] == s] for s in data.SHAPES}
    for s in by_shape:
        rng.shuffle(by_shape[s])
    picked, k = [], 0
    while len(picked) < n:
        for s in data.SHAPES:
            if k < len(by_shape[s]) and len(picked) < n:
                picked.append(by_shape[s][k])
        k += 1
    return [dict(prompt=data.test_prompt(c, s, b), colour=c, shape=s, background=b) for c, s, b in picked]


def checker_scenes():
    rng = np.random.default_rng(96)
    imgs, labels = [], []
    for rep in range(2):
        for c in data.COLOUR_NAMES:
            for s in data.SHAPES:
                bg = c
                while bg == c:
                    bg = data.COLOUR_NAMES[rng.integers(len(data.COLOUR_NAMES))]
                pos = data.POSITIONS[rng.integers(len(data.POSITIONS))]
                img = data.background(bg, False, rng)
                rgb = data._jitter(data.COLOURS[c], rng)
                (cx, cy, r), = data._place(pos, "large", 1, rng)
                m = data.shape_mask(s, data._clamp(cx, r), data._clamp(cy, r), r)[:, :, None]
                img = img * (1 - m) + rgb * m
                imgs.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
                labels.append(dict(colour=c, shape=s, background=bg))
    return np.concatenate(imgs, axis=1), labels


def through_vae(strip, vae_dir):
    import torch
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=torch.float32).eval()
    n = strip.shape[1] // data.SIZE
    x = torch.from_numpy(strip.reshape(data.SIZE, n, data.SIZE, 3).transpose(1, 3, 0, 2).copy())
    x = x.float() / 127.5 - 1
    with torch.no_grad():
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
    y = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().numpy()  # n, 3, H, W
    return y.transpose(2, 0, 3, 1).reshape(data.SIZE, n * data.SIZE, 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vae", default=os.path.join(REPO, "models", "shapes-64", "vae"))
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    prompts = held_out_prompts()
    with open(os.path.join(OUT, "prompts.json"), "w") as f:
        json.dump({"colours": {k: list(v) for k, v in data.COLOURS.items()}, "shapes": data.SHAPES,
                   "steps": 20, "guidance_scale": GUIDANCE, "prompts": prompts}, f, indent=1)
    strip, labels = checker_scenes()
    Image.fromarray(strip).save(os.path.join(OUT, "checker.png"))
    Image.fromarray(through_vae(strip, a.vae)).save(os.path.join(OUT, "checker_vae.png"))
    with open(os.path.join(OUT, "checker.json"), "w") as f:
        json.dump({"tile": data.SIZE, "scenes": labels}, f, indent=1)
    print(f"{len(prompts)} prompts, {len(labels)} checker scenes in {OUT}")


if __name__ == "__main__":
    main()
