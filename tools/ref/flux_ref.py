#!/usr/bin/env python3
"""flux_ref.py — writes the golden fixtures of tests/test_flux.c.

Builds tiny random-weight diffusers FluxTransformer2DModel configs, runs them
in float32 on CPU exactly as FluxPipeline calls the transformer (timestep and
guidance already divided by 1000, 2-D img_ids from _prepare_latent_image_ids,
zero txt_ids) and writes

    tests/fixtures/flux/<name>/transformer/{config.json, weights}
    tests/fixtures/flux/<name>/io.safetensors
        img (B,N,C), txt (B,T,J), pooled (B,P), timestep (B), [guidance (B)],
        img_ids (N,3), txt_ids (T,3), out (B,N,C_out)

Configs:
  dev      guidance_embeds, in_channels 64 (2x2-packed 16-channel latents),
           head_dim 16 with axes (4,6,6), 2 double + 1 single block, T=12,
           weights saved SHARDED (index.json + 4 shards)
  schnell  no guidance, in_channels 16 (packed 4-channel latents), head_dim 8,
           an 8x12 grid (101 tokens: several attention query tiles)
           with axes (2,2,4), 1 double + 2 single blocks, T=5, timesteps that
           differ per batch element, non-zero txt_ids
  bf16     no guidance, 3 heads of 8 (2,2,4), out_channels 8 != in_channels 16,
           weights stored as the bf16 variant (the reference runs on the
           bf16-rounded weights in float32), B=1, a 3x5 grid with an offset

Random init is diffusers' default (nn.Linear uniform +-1/sqrt(fan_in)); the
RMSNorm weights are perturbed around 1 so they matter. Activations stay O(1).

Usage: python tools/ref/flux_ref.py [OUT_DIR]   (default tests/fixtures/flux)
Needs torch, diffusers and safetensors (dev-time only).
"""
import os
import shutil
import sys

import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from safetensors.torch import save_file

CONFIGS = {
    "dev": dict(
        model=dict(in_channels=64, num_layers=2, num_single_layers=1, attention_head_dim=16,
                   num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=24,
                   guidance_embeds=True, axes_dims_rope=(4, 6, 6)),
        B=2, h=4, w=6, T=12, t=(0.7, 0.7), guidance=(3.5, 3.5), shard="150KB",
    ),
    "schnell": dict(
        model=dict(in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=8,
                   num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=24,
                   guidance_embeds=False, axes_dims_rope=(2, 2, 4)),
        B=2, h=8, w=12, T=5, t=(0.7, 0.25), txt_ids="ramp",
    ),
    "bf16": dict(
        model=dict(in_channels=16, out_channels=8, num_layers=1, num_single_layers=1,
                   attention_head_dim=8, num_attention_heads=3, joint_attention_dim=32,
                   pooled_projection_dim=24, guidance_embeds=False, axes_dims_rope=(2, 2, 4)),
        B=1, h=3, w=5, T=5, t=(1.0,), variant="bf16", id_offset=(1.0, 2.0, 3.0),
    ),
}


def randomize(model, g):
    """RMSNorm weights (norm_q/k, norm_added_q/k) perturbed around 1."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".norm_" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))


def main():
    out_root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "..", "tests", "fixtures", "flux")
    torch.set_num_threads(1)
    for seed, (name, c) in enumerate(CONFIGS.items()):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(100 + seed)
        model = FluxTransformer2DModel(**c["model"]).eval()
        randomize(model, g)
        variant = c.get("variant")
        if variant == "bf16":
            model = model.to(torch.bfloat16).float()
        cfg = model.config
        B, h, w, T = c["B"], c["h"], c["w"], c["T"]
        cout = cfg.out_channels or cfg.in_channels
        img = torch.randn(B, h * w, cfg.in_channels, generator=g)
        txt = torch.randn(B, T, cfg.joint_attention_dim, generator=g)
        pooled = torch.randn(B, cfg.pooled_projection_dim, generator=g)
        # FluxPipeline: latent_image_ids for the packed (h, w) grid, zero text ids
        img_ids = FluxPipeline._prepare_latent_image_ids(B, h, w, torch.device("cpu"),
                                                          torch.float32)
        if "id_offset" in c:
            img_ids = img_ids + torch.tensor(c["id_offset"])
        txt_ids = torch.zeros(T, 3)
        if c.get("txt_ids") == "ramp":
            txt_ids = torch.arange(T * 3, dtype=torch.float32).reshape(T, 3) % 5
        timestep = torch.tensor(c["t"], dtype=torch.float32)
        guidance = (torch.tensor(c["guidance"], dtype=torch.float32)
                    if cfg.guidance_embeds else None)
        with torch.no_grad():
            out = model(hidden_states=img, encoder_hidden_states=txt, pooled_projections=pooled,
                        timestep=timestep, img_ids=img_ids, txt_ids=txt_ids,
                        guidance=guidance).sample
        assert out.shape == (B, h * w, cout)
        assert torch.isfinite(out).all()
        d = os.path.join(out_root, name)
        shutil.rmtree(d, ignore_errors=True)
        tdir = os.path.join(d, "transformer")
        if variant == "bf16":
            model.to(torch.bfloat16).save_pretrained(tdir, safe_serialization=True,
                                                     variant="bf16")
        elif "shard" in c:
            model.save_pretrained(tdir, safe_serialization=True, max_shard_size=c["shard"])
        else:
            model.save_pretrained(tdir, safe_serialization=True)
        io = {"img": img, "txt": txt, "pooled": pooled, "timestep": timestep,
              "img_ids": img_ids.contiguous(), "txt_ids": txt_ids.contiguous(),
              "out": out.contiguous()}
        if guidance is not None:
            io["guidance"] = guidance
        save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(d, "io.safetensors"))
        nparam = sum(p.numel() for p in model.parameters())
        print(f"{name}: {nparam} params, out {tuple(out.shape)} |out| max "
              f"{out.abs().max().item():.3f} std {out.std().item():.3f}, files "
              f"{sorted(os.listdir(tdir))}")


if __name__ == "__main__":
    main()
