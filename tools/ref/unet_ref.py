#!/usr/bin/env python3
"""unet_ref.py — writes the golden fixtures of tests/test_unet.c.

Builds tiny random-weight diffusers UNet2DConditionModel configs (the SD1.x/2.x
family: CrossAttn/Down/Up blocks, linear or conv projections, head counts as
int or per-block list, odd input sizes), runs them in float32 on CPU and writes

    tests/fixtures/unet/<name>/unet/{config.json,diffusion_pytorch_model.safetensors}
    tests/fixtures/unet/<name>/io.safetensors   x (B,C,H,W), t (B), ctx (B,T,D), out (B,C,H,W)

Usage: python tools/ref/unet_ref.py [OUT_DIR]   (default tests/fixtures/unet)
Needs torch, diffusers and safetensors (dev-time only).
"""
import os
import shutil
import sys

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

CONFIGS = {
    # SD1.5 layout: (CrossAttn, CrossAttn, Down) / (Up, CrossAttn, CrossAttn),
    # attention_head_dim = an int number of heads, conv projections; weights
    # stored as the fp16 variant (the reference runs on the fp16-rounded
    # weights in float32).
    "sd15": dict(
        model=dict(
            sample_size=8, in_channels=4, out_channels=4,
            block_out_channels=(8, 16, 16), layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            norm_num_groups=4, cross_attention_dim=16, attention_head_dim=2,
        ),
        B=2, H=8, W=8, T=7, t=(981.0, 981.0), variant="fp16",
    ),
    # SD2 layout: linear projections, heads from a per-block list, upcast,
    # per-block transformer depth, non-square input, 77 tokens, fp32 weights.
    "sd2": dict(
        model=dict(
            sample_size=8, in_channels=4, out_channels=4,
            block_out_channels=(8, 16), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            norm_num_groups=4, cross_attention_dim=16, attention_head_dim=[2, 4],
            use_linear_projection=True, upcast_attention=True,
            transformer_layers_per_block=[2, 1],
        ),
        B=2, H=8, W=16, T=77, t=(1.0, 499.5),
    ),
    # Less common values: only_cross_attention list, center_input_sample,
    # flip_sin_to_cos False, freq_shift 1, downsample_padding 0, mid scale,
    # layers_per_block list, cross_attention_dim != channels, odd input
    # size (forwarded upsample sizes).
    "misc": dict(
        model=dict(
            sample_size=16, in_channels=3, out_channels=5,
            block_out_channels=(16, 16), layers_per_block=[1, 2],
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            norm_num_groups=8, norm_eps=1e-6, cross_attention_dim=24,
            attention_head_dim=[4, 8], only_cross_attention=[True, False],
            center_input_sample=True, flip_sin_to_cos=False, freq_shift=1,
            downsample_padding=0, mid_block_scale_factor=1.5,
        ),
        B=2, H=9, W=7, T=5, t=(37.0, 37.0),
    ),
}


def randomize(model, g):
    """Default init for conv/linear; norm affine params perturbed so they matter."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))


def main():
    out_root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "..", "tests", "fixtures", "unet")
    torch.set_num_threads(1)
    for name, c in CONFIGS.items():
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(1)
        model = UNet2DConditionModel(**c["model"]).eval()
        randomize(model, g)
        variant = c.get("variant")
        if variant == "fp16":
            model = model.half().float()
        cfg = model.config
        B, H, W, T = c["B"], c["H"], c["W"], c["T"]
        x = torch.randn(B, cfg.in_channels, H, W, generator=g)
        t = torch.tensor(c["t"], dtype=torch.float32)
        ctx = torch.randn(B, T, cfg.cross_attention_dim, generator=g)
        with torch.no_grad():
            out = model(x, t, encoder_hidden_states=ctx).sample
        d = os.path.join(out_root, name)
        shutil.rmtree(d, ignore_errors=True)
        if variant == "fp16":
            model.half().save_pretrained(os.path.join(d, "unet"), safe_serialization=True,
                                         variant="fp16")
        else:
            model.save_pretrained(os.path.join(d, "unet"), safe_serialization=True)
        save_file({"x": x.contiguous(), "t": t, "ctx": ctx.contiguous(),
                   "out": out.contiguous()}, os.path.join(d, "io.safetensors"))
        nparam = sum(p.numel() for p in model.parameters())
        print(f"{name}: {nparam} params, out {tuple(out.shape)} "
              f"|out|max {out.abs().max().item():.3f}")


if __name__ == "__main__":
    main()
