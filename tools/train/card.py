"""Pictures for the demo model's card and the README (dev time only, PIL):

    python tools/train/card.py loss MODEL_DIR            # MODEL_DIR/loss.png from *_loss.tsv
    python tools/train/card.py grid OUT.png DIR COLS     # tandem's PNGs of DIR (sorted) in a grid,
                                                         # captioned from DIR/manifest.jsonl
"""
import json
import os
import sys

from PIL import Image, ImageDraw, ImageFont


def read_tsv(path):
    pts = []
    with open(path) as f:
        for line in f:
            step, loss, _ = line.split("\t")
            pts.append((int(step), float(loss)))
    return pts


def plot(draw, box, pts, title, colour):
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(0, 0, 0))
    draw.text((x0 + 6, y0 + 4), title, fill=(0, 0, 0), font=ImageFont.load_default())
    if len(pts) < 2:
        return
    smax = max(p[0] for p in pts)
    lo, hi = min(p[1] for p in pts), max(p[1] for p in pts)
    xy = [(x0 + 4 + (x1 - x0 - 8) * s / smax, y1 - 4 - (y1 - y0 - 24) * (v - lo) / (hi - lo or 1))
          for s, v in pts]
    draw.line(xy, fill=colour, width=2)
    draw.text((x0 + 6, y1 - 16), f"steps 0..{smax}, loss {hi:.3f} -> {pts[-1][1]:.3f}", fill=(0, 0, 0),
              font=ImageFont.load_default())


def loss(model_dir):
    img = Image.new("RGB", (640, 240), (255, 255, 255))
    d = ImageDraw.Draw(img)
    plot(d, (5, 5, 315, 235), read_tsv(os.path.join(model_dir, "vae_loss.tsv")),
         "autoencoder: MSE + L1/2 + KL (smoothed)", (200, 40, 40))
    plot(d, (325, 5, 635, 235), read_tsv(os.path.join(model_dir, "unet_loss.tsv")),
         "UNet + text encoder: noise MSE (smoothed)", (40, 40, 200))
    img.save(os.path.join(model_dir, "loss.png"))


def grid(out, folder, cols):
    files = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    prompts = {}
    mpath = os.path.join(folder, "manifest.jsonl")
    if os.path.exists(mpath):
        with open(mpath) as f:
            for line in f:
                r = json.loads(line)
                prompts[os.path.basename(r.get("file", ""))] = r.get("prompt", "")
    scale, cap = 2, 30
    tiles = [Image.open(os.path.join(folder, f)).convert("RGB") for f in files]
    tw, th = tiles[0].width * scale, tiles[0].height * scale
    cw = max(tw, 200)
    rows = (len(tiles) + cols - 1) // cols
    img = Image.new("RGB", (cols * (cw + 8) + 8, rows * (th + cap + 8) + 8), (255, 255, 255))
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for k, (f, t) in enumerate(zip(files, tiles)):
        x, y = 8 + (k % cols) * (cw + 8), 8 + (k // cols) * (th + cap + 8)
        img.paste(t.resize((tw, th), Image.NEAREST), (x + (cw - tw) // 2, y))
        words, lines = prompts.get(f, f).split(), [""]
        for w in words:
            if len(lines[-1]) + len(w) + 1 > cw // 6:
                lines.append("")
            lines[-1] = (lines[-1] + " " + w).strip()
        for i, line in enumerate(lines[:2]):
            d.text((x, y + th + 2 + 12 * i), line, fill=(0, 0, 0), font=font)
    img.save(out)


if __name__ == "__main__":
    if sys.argv[1] == "loss":
        loss(sys.argv[2])
    else:
        grid(sys.argv[2], sys.argv[3], int(sys.argv[4]))
