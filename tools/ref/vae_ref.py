#!/usr/bin/env python3
"""vae_ref.py — writes the golden fixtures for tests/test_vae.c from diffusers.

For each tiny random AutoencoderKL configuration below it writes

  tests/fixtures/vae/<name>/vae/config.json
  tests/fixtures/vae/<name>/vae/diffusion_pytorch_model.safetensors
  tests/fixtures/vae/<name>/io.safetensors

io.safetensors holds (float32 unless noted):
  dec_z      (2, latent_channels, h, w)       input of vae.decode (already unscaled)
  dec_img    (2, out_channels, h*s, w*s)      vae.decode(dec_z).sample
  dec_rgb8   (2, h*s, w*s, 3) uint8           VaeImageProcessor().postprocess(dec_img, "pil")
  enc_img    (2, in_channels, H, W)           input of vae.encode, in [-1, 1]
  enc_mean   (2, latent_channels, H/s, W/s)   vae.encode(enc_img).latent_dist.mean
  enc_logvar (2, latent_channels, H/s, W/s)   ... .logvar (clamped to [-30, 20])

Weights are random (norm affines and biases perturbed too, so every parameter
matters). To keep the fixtures small the weights of some configurations are
stored as float16: they are rounded to float16 first and the reference runs in
float32 with exactly those values, so the stored file is exact.

  /opt/refenv/bin/python tools/ref/vae_ref.py --out tests/fixtures/vae
"""
import argparse
import json
import os

import numpy as np
import torch
from diffusers import AutoencoderKL
from diffusers.image_processor import VaeImageProcessor
from safetensors.torch import save_file

CONFIGS = [
    # SD-like: quant convs, mid attention, 32 groups of 1 channel
    dict(name="sd", dtype="float16",
         cfg=dict(in_channels=3, out_channels=3, block_out_channels=(32, 32),
                  down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2,
                  layers_per_block=1, latent_channels=4, norm_num_groups=32,
                  sample_size=16, scaling_factor=0.18215),
         dec_hw=(6, 6), enc_hw=(16, 12)),
    # FLUX-like: 16 latent channels, no quant convs, shift_factor set, 3 levels
    dict(name="flux", dtype="float16",
         cfg=dict(in_channels=3, out_channels=3, block_out_channels=(16, 32, 32),
                  down_block_types=("DownEncoderBlock2D",) * 3,
                  up_block_types=("UpDecoderBlock2D",) * 3,
                  layers_per_block=1, latent_channels=16, norm_num_groups=8,
                  sample_size=32, scaling_factor=0.3611, shift_factor=0.1159,
                  use_quant_conv=False, use_post_quant_conv=False),
         dec_hw=(5, 3), enc_hw=(12, 20)),
    # float32 weights, 2 layers per block, no mid attention, odd sizes, 4 groups
    dict(name="f32", dtype="float32",
         cfg=dict(in_channels=3, out_channels=3, block_out_channels=(8, 8),
                  down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2,
                  layers_per_block=2, latent_channels=4, norm_num_groups=4,
                  sample_size=16, scaling_factor=0.5, mid_block_add_attention=False),
         dec_hw=(3, 7), enc_hw=(10, 7)),
]


def randomize(model, gen, dtype):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (1.5 / fan_in ** 0.5))
            if dtype == "float16":
                p.copy_(p.half().float())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for i, c in enumerate(CONFIGS):
        gen = torch.Generator("cpu").manual_seed(1234 + i)
        vae = AutoencoderKL(**c["cfg"]).eval()
        randomize(vae, gen, c["dtype"])
        s = 2 ** (len(c["cfg"]["block_out_channels"]) - 1)
        L = c["cfg"]["latent_channels"]
        h, w = c["dec_hw"]
        H, W = c["enc_hw"]
        z = torch.randn((2, L, h, w), generator=gen)
        img_in = (torch.rand((2, c["cfg"]["in_channels"], H, W), generator=gen) * 2 - 1)
        with torch.no_grad():
            dec = vae.decode(z).sample
            dist = vae.encode(img_in).latent_dist
        rgb = VaeImageProcessor(vae_scale_factor=s).postprocess(dec.clone(), output_type="pil")
        rgb8 = np.stack([np.asarray(im) for im in rgb]).astype(np.uint8)
        assert rgb8.shape == (2, h * s, w * s, 3), rgb8.shape

        d = os.path.join(args.out, c["name"])
        sub = os.path.join(d, "vae")
        os.makedirs(sub, exist_ok=True)
        save_vae = vae.half() if c["dtype"] == "float16" else vae
        save_vae.save_pretrained(sub, safe_serialization=True)
        save_file({
            "dec_z": z.contiguous(),
            "dec_img": dec.contiguous(),
            "dec_rgb8": torch.from_numpy(rgb8).contiguous(),
            "enc_img": img_in.contiguous(),
            "enc_mean": dist.mean.contiguous(),
            "enc_logvar": dist.logvar.contiguous(),
        }, os.path.join(d, "io.safetensors"))
        with open(os.path.join(sub, "config.json")) as f:
            cfgj = json.load(f)
        print(f"{c['name']}: scale {s}, dec {tuple(z.shape)} -> {tuple(dec.shape)}, "
              f"enc {tuple(img_in.shape)} -> {tuple(dist.mean.shape)}, "
              f"|dec| max {dec.abs().max():.3f}, logvar [{dist.logvar.min():.2f}, "
              f"{dist.logvar.max():.2f}], keys {sorted(cfgj)}")


if __name__ == "__main__":
    main()
