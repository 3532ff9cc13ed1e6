"""Parameter lists of the PyTorch modules tandem reproduces, for tests/test_ptree.c.

For each model config (the tiny fixture configs under tests/fixtures and the real SD1.5 /
SD2 / FLUX.1-dev / T5-XXL / CLIP-L configs written below), builds the diffusers / transformers
class on the meta device (no weights) and writes tests/fixtures/ptree/<case>.json:
  {"class": ..., "config": {...}, "params": [[name, [shape], dtype, is_buffer], ...],
   "nosplit": [module paths whose class is in _no_split_modules], "nosplit_class": [their classes],
   "tied": ["first=other", ...]}
params is named_parameters() then named_buffers(), in registration order, tied parameters once.

usage: /opt/refenv/bin/python tools/ref/ptree_ref.py     (rewrites tests/fixtures/ptree/)
"""
import json, os, sys
import torch
import diffusers, transformers
from accelerate import init_empty_weights

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "ptree")

REAL = {
    "sd15_unet": ("UNet2DConditionModel", dict(
        sample_size=64, in_channels=4, out_channels=4, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, block_out_channels=[320, 640, 1280, 1280],
        layers_per_block=2, cross_attention_dim=768, attention_head_dim=8)),
    "sd2_unet": ("UNet2DConditionModel", dict(
        sample_size=96, in_channels=4, out_channels=4, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, block_out_channels=[320, 640, 1280, 1280],
        layers_per_block=2, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True)),
    "sd_vae": ("AutoencoderKL", dict(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, sample_size=512)),
    "flux_vae": ("AutoencoderKL", dict(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, sample_size=1024,
        scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)),
    "flux_dev": ("FluxTransformer2DModel", dict(
        patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
        axes_dims_rope=[16, 56, 56])),
    # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json and text_encoder_2/config.json
    "sdxl_unet": ("UNet2DConditionModel", dict(
        sample_size=128, in_channels=4, out_channels=4,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], block_out_channels=[320, 640, 1280],
        layers_per_block=2, cross_attention_dim=2048, attention_head_dim=[5, 10, 20],
        transformer_layers_per_block=[1, 2, 10], use_linear_projection=True, addition_embed_type="text_time",
        addition_embed_type_num_heads=64, addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)),
    "clip_bigg": ("CLIPTextModelWithProjection", dict(
        vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=1280, bos_token_id=0, eos_token_id=2,
        architectures=["CLIPTextModelWithProjection"],
        pad_token_id=1)),
    "clip_l": ("CLIPTextModel", dict(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)),
    "t5_xxl": ("T5EncoderModel", dict(
        vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
        dense_act_fn="gelu_new", is_gated_act=True, tie_word_embeddings=False)),
}

def tiny_cases():
    """Every tiny fixture config committed under tests/fixtures (unet, vae, clip, t5, flux)."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
    cases = {}
    for dirpath, _, files in os.walk(root):
        if "config.json" not in files:
            continue
        cfg = json.load(open(os.path.join(dirpath, "config.json")))
        cls = cfg.get("_class_name") or (cfg.get("architectures") or [None])[0]
        if cls not in ("UNet2DConditionModel", "AutoencoderKL", "FluxTransformer2DModel", "CLIPTextModel",
                       "CLIPTextModelWithProjection", "T5EncoderModel"):
            continue
        rel = os.path.relpath(dirpath, root).replace(os.sep, "_").replace("-", "_")
        cases["tiny_" + rel] = (cls, cfg, os.path.relpath(dirpath, os.path.join(root, "..", "..")))
    return cases

def build(cls_name, cfg):
    with init_empty_weights():
        if hasattr(diffusers, cls_name) and cls_name not in ("CLIPTextModel",):
            cls = getattr(diffusers, cls_name)
            return cls.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
        cls = getattr(transformers, cls_name)
        conf_cls = {"CLIPTextModel": transformers.CLIPTextConfig, "CLIPTextModelWithProjection": transformers.CLIPTextConfig,
                    "T5EncoderModel": transformers.T5Config}[cls_name]
        return cls(conf_cls(**{k: v for k, v in cfg.items() if not k.startswith("_") and k != "architectures"}))

def dump(name, cls_name, cfg, config_path=None):
    m = build(cls_name, cfg)
    params = [[n, list(p.shape), str(p.dtype).replace("torch.", ""), 0] for n, p in m.named_parameters()]
    params += [[n, list(b.shape), str(b.dtype).replace("torch.", ""), 1] for n, b in m.named_buffers()]
    nosplit_cls = set(getattr(m, "_no_split_modules", None) or [])
    nosplit = [n for n, mod in m.named_modules() if n and type(mod).__name__ in nosplit_cls]
    nosplit_class = [type(mod).__name__ for n, mod in m.named_modules() if n and type(mod).__name__ in nosplit_cls]
    tied = []
    seen = {}
    for n, p in m.named_parameters(remove_duplicate=False):
        if id(p) in seen and seen[id(p)] != n:
            tied.append(f"{seen[id(p)]}={n}")
        seen.setdefault(id(p), n)
    out = {"class": cls_name, "config_path": config_path, "config": None if config_path else cfg,
           "no_split_classes": sorted(nosplit_cls), "params": params, "nosplit": nosplit, "nosplit_class": nosplit_class, "tied": tied}
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print(f"{name}: {cls_name}, {len(params)} tensors, {len(nosplit)} no-split, {len(tied)} tied")

def main():
    os.makedirs(OUT, exist_ok=True)
    for name, (cls, cfg) in REAL.items():
        dump(name, cls, cfg)
    for name, (cls, cfg, path) in sorted(tiny_cases().items()):
        dump(name, cls, cfg, path)

if __name__ == "__main__":
    main()
