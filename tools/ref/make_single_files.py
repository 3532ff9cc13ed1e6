#!/usr/bin/env python3
"""make_single_files.py — single-file (original LDM key layout) versions of the tiny fixtures.

Most checkpoints people download are one .safetensors file in the layout of the original
Stable Diffusion code (model.diffusion_model.*, first_stage_model.*, cond_stage_model.* /
conditioner.embedders.*), which diffusers reads with from_single_file. This writes such files for
tests/fixtures/pipelines/sd15-tiny and sd2-tiny-v (OpenCLIP text encoder) and
tests/fixtures/sdxl_pipelines/sdxl-tiny, and the FLUX
transformer of tests/fixtures/flux_pipelines/flux-dev-tiny in the BFL layout (flux1-dev.safetensors:
the transformer alone), into tests/fixtures/single_file/, and checks each with diffusers' own
conversion code (for FLUX convert_flux_transformer_checkpoint_to_diffusers, its hard-coded
FLUX.1 width set to the tiny model's)
(diffusers.loaders.single_file_utils: convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
convert_ldm_clip_checkpoint, convert_open_clip_checkpoint): converted back, every tensor must equal
the folder's, bit for bit. tandem then must give the folder's images from the file.

    /opt/refenv/bin/python tools/ref/make_single_files.py

The diffusers -> LDM direction written here is the inverse of those functions for any number of
blocks (diffusers' scripts/convert_diffusers_to_original_*.py hard-code the real models' sizes).
Real files store the VAE attention's q/k/v/proj_out as 1x1 conv weights (C, C, 1, 1) and OpenCLIP's
q/k/v as one in_proj_weight; so do these. Dev-time only.
"""
import json
import os
import re
import sys

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(REPO, "tests", "fixtures")

from diffusers.loaders import single_file_utils as sfu  # noqa: E402

RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
          ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def unet_to_ldm(sd, cfg):
    lpb = cfg["layers_per_block"]
    out = {}
    top = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
           "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
    up_attn = {int(m.group(1)) for k in sd for m in [re.match(r"up_blocks\.(\d+)\.attentions\.", k)] if m}
    for k, v in sd.items():
        mod, _, leaf = k.rpartition(".")
        if mod in top:
            out[f"{top[mod]}.{leaf}"] = v
            continue
        m = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.*)", k)
        if m:
            part, b, kind, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
            if kind == "resnets":
                for a, o in RESNET:
                    rest = re.sub(rf"^{a}\.", f"{o}.", rest)
            if part == "down":
                if kind == "downsamplers":
                    out[f"input_blocks.{(b + 1) * (lpb + 1)}.0.op.{rest.split('.', 1)[1]}"] = v
                else:
                    out[f"input_blocks.{b * (lpb + 1) + j + 1}.{0 if kind == 'resnets' else 1}.{rest}"] = v
            else:
                if kind == "upsamplers":
                    out[f"output_blocks.{b * (lpb + 1) + lpb}.{2 if b in up_attn else 1}.conv.{rest.split('.', 1)[1]}"] = v
                else:
                    out[f"output_blocks.{b * (lpb + 1) + j}.{0 if kind == 'resnets' else 1}.{rest}"] = v
            continue
        m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", k)
        if m:
            kind, j, rest = m.group(1), int(m.group(2)), m.group(3)
            if kind == "resnets":
                for a, o in RESNET:
                    rest = re.sub(rf"^{a}\.", f"{o}.", rest)
                out[f"middle_block.{2 * j}.{rest}"] = v
            else:
                out[f"middle_block.1.{rest}"] = v
            continue
        sys.exit(f"unet key {k}: no LDM name")
    return {"model.diffusion_model." + k: v for k, v in out.items()}


def vae_to_ldm(sd, cfg):
    n = len(cfg["up_block_types"])
    out = {}
    for k, v in sd.items():
        r = k
        r = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", r)
        r = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", r)
        r = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", r)
        r = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.",
                   lambda m: f"decoder.up.{n - 1 - int(m.group(1))}.block.", r)
        r = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                   lambda m: f"decoder.up.{n - 1 - int(m.group(1))}.upsample.", r)
        r = re.sub(r"\.mid_block\.resnets\.(\d+)\.", lambda m: f".mid.block_{int(m.group(1)) + 1}.", r)
        r = r.replace(".conv_shortcut.", ".nin_shortcut.")
        if ".mid_block.attentions.0." in r:
            r = r.replace(".mid_block.attentions.0.", ".mid.attn_1.")
            r = (r.replace("group_norm.", "norm.").replace("to_q.", "q.").replace("to_k.", "k.")
                 .replace("to_v.", "v.").replace("to_out.0.", "proj_out."))
            if v.ndim == 2:
                v = v[:, :, None, None].contiguous()  # 1x1 convs in the original code
        out["first_stage_model." + r] = v
    return out


def clip_to_ldm(sd, prefix):
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in sd.items()}


def open_clip_to_ldm(sd, prefix):
    """CLIPTextModelWithProjection -> OpenCLIP names (q/k/v fused, text_projection transposed)."""
    out = {}
    for k, v in sd.items():
        k = k[len("text_model."):] if k.startswith("text_model.") else k
        if k == "embeddings.position_embedding.weight":
            out["positional_embedding"] = v
        elif k == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = v
        elif k.startswith("final_layer_norm."):
            out["ln_final." + k.split(".")[-1]] = v
        elif k == "text_projection.weight":
            out["text_projection"] = v.T.contiguous()
        elif k.startswith("encoder.layers."):
            _, _, i, rest = k.split(".", 3)
            base = f"transformer.resblocks.{i}."
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                continue  # fused below
            rest = (rest.replace("self_attn.out_proj", "attn.out_proj").replace("layer_norm1", "ln_1")
                    .replace("layer_norm2", "ln_2").replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj"))
            out[base + rest] = v
        elif k == "embeddings.position_ids":
            continue
        else:
            sys.exit(f"open_clip key {k}: no LDM name")
    sd = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in sd.items()}
    layers = {int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")}
    for i in sorted(layers):
        p = f"encoder.layers.{i}.self_attn."
        q = [sd[p + f"{x}_proj.weight"] for x in "qkv"]
        b = [sd[p + f"{x}_proj.bias"] for x in "qkv"]
        out[f"transformer.resblocks.{i}.attn.in_proj_weight"] = torch.cat(q, 0)
        out[f"transformer.resblocks.{i}.attn.in_proj_bias"] = torch.cat(b, 0)
    return {prefix + k: v for k, v in out.items()}


def folder_sd(folder, sub):
    d = os.path.join(folder, sub)
    sd = {}
    for x in sorted(os.listdir(d)):  # one file or the shards of an index
        if x.endswith(".safetensors"):
            sd.update(load_file(os.path.join(d, x)))
    assert sd, d
    return sd, json.load(open(os.path.join(d, "config.json")))


def same(a, b, what):
    if set(a) != set(b):
        sys.exit(f"{what}: keys differ: {sorted(set(a) ^ set(b))[:8]}")
    for k in a:
        if a[k].shape != b[k].shape or not torch.equal(a[k], b[k]):
            sys.exit(f"{what}: {k} differs")


def strip_text_model(sd):
    return {k if k.startswith("text_model.") or k.startswith("text_projection") else "text_model." + k: v
            for k, v in sd.items()}


def make(name, folder, sdxl, open_clip_te=False):
    ckpt = {}
    unet, ucfg = folder_sd(folder, "unet")
    vae, vcfg = folder_sd(folder, "vae")
    ckpt.update(unet_to_ldm(unet, ucfg))
    ckpt.update(vae_to_ldm(vae, vcfg))
    te, tcfg = folder_sd(folder, "text_encoder")
    if open_clip_te:  # SD 2.x: OpenCLIP's layout, with its text_projection (diffusers splits q/k/v by its rows)
        torch.manual_seed(5)
        D = tcfg["hidden_size"]
        te_ldm = open_clip_to_ldm(dict(te, **{"text_projection.weight": torch.randn(D, D)}), "cond_stage_model.model.")
        ckpt.update(te_ldm)
    else:
        clip_prefix = "conditioner.embedders.0.transformer." if sdxl else "cond_stage_model.transformer."
        ckpt.update(clip_to_ldm(te, clip_prefix))
    if sdxl:
        te2, _ = folder_sd(folder, "text_encoder_2")
        ckpt.update(open_clip_to_ldm(te2, "conditioner.embedders.1.model."))
    # what diffusers reads back from it, against the folder
    same(sfu.convert_ldm_unet_checkpoint(ckpt, ucfg), unet, f"{name} unet")
    same(sfu.convert_ldm_vae_checkpoint(ckpt, vcfg), vae, f"{name} vae")
    if open_clip_te:
        from transformers import CLIPTextConfig, CLIPTextModel
        model1 = CLIPTextModel(CLIPTextConfig.from_pretrained(os.path.join(folder, "text_encoder")))
        conv = sfu.convert_open_clip_checkpoint(model1, ckpt, prefix="cond_stage_model.model.")
        conv.pop("text_projection.weight", None)  # SD 2.x: diffusers ignores it (a CLIPTextModel has none)
        same(strip_text_model(conv), strip_text_model(te), f"{name} text_encoder")
    else:
        same(strip_text_model(sfu.convert_ldm_clip_checkpoint(ckpt)), strip_text_model(te), f"{name} text_encoder")
    if sdxl:
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection
        cfg2 = CLIPTextConfig.from_pretrained(os.path.join(folder, "text_encoder_2"))
        model2 = CLIPTextModelWithProjection(cfg2)
        conv = sfu.convert_open_clip_checkpoint(model2, ckpt, prefix="conditioner.embedders.1.model.")
        same(strip_text_model(conv), strip_text_model(te2), f"{name} text_encoder_2")
    out = os.path.join(FIX, "single_file", name + ".safetensors")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    save_file({k: v.contiguous() for k, v in sorted(ckpt.items())}, out)
    print(f"{out}: {len(ckpt)} tensors, {os.path.getsize(out) / 1e6:.2f} MB; diffusers reads back the folder's "
          f"weights exactly")


def flux_to_bfl(sd, cfg):
    """FluxTransformer2DModel -> the BFL layout of flux1-dev.safetensors (q/k/v fused; a single
    block's q/k/v and MLP input fused in linear1; final_layer.adaLN_modulation's halves swapped)."""
    D = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    out = {}
    ren = [("time_text_embed.timestep_embedder.linear_1.", "time_in.in_layer."),
           ("time_text_embed.timestep_embedder.linear_2.", "time_in.out_layer."),
           ("time_text_embed.text_embedder.linear_1.", "vector_in.in_layer."),
           ("time_text_embed.text_embedder.linear_2.", "vector_in.out_layer."),
           ("time_text_embed.guidance_embedder.linear_1.", "guidance_in.in_layer."),
           ("time_text_embed.guidance_embedder.linear_2.", "guidance_in.out_layer."),
           ("context_embedder.", "txt_in."), ("x_embedder.", "img_in."), ("proj_out.", "final_layer.linear.")]
    dbl = [("norm1.linear.", "img_mod.lin."), ("norm1_context.linear.", "txt_mod.lin."),
           ("attn.norm_q.weight", "img_attn.norm.query_norm.scale"), ("attn.norm_k.weight", "img_attn.norm.key_norm.scale"),
           ("attn.norm_added_q.weight", "txt_attn.norm.query_norm.scale"),
           ("attn.norm_added_k.weight", "txt_attn.norm.key_norm.scale"),
           ("ff.net.0.proj.", "img_mlp.0."), ("ff.net.2.", "img_mlp.2."), ("ff_context.net.0.proj.", "txt_mlp.0."),
           ("ff_context.net.2.", "txt_mlp.2."), ("attn.to_out.0.", "img_attn.proj."), ("attn.to_add_out.", "txt_attn.proj.")]
    sgl = [("norm.linear.", "modulation.lin."), ("attn.norm_q.weight", "norm.query_norm.scale"),
           ("attn.norm_k.weight", "norm.key_norm.scale"), ("proj_out.", "linear2.")]
    for k, v in sd.items():
        m = re.match(r"(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.*)", k)
        if m:
            blk, i, rest = m.group(1), int(m.group(2)), m.group(3)
            if re.match(r"attn\.(to_[qkv]|add_[qkv]_proj)\.", rest) or rest.startswith("proj_mlp."):
                continue  # fused below
            table, pre = (dbl, f"double_blocks.{i}.") if blk == "transformer_blocks" else (sgl, f"single_blocks.{i}.")
            for a, o in table:
                if rest.startswith(a):
                    out[pre + o + rest[len(a):]] = v
                    break
            else:
                sys.exit(f"flux key {k}: no BFL name")
            continue
        if k.startswith("norm_out.linear."):
            h = v.shape[0] // 2
            out["final_layer.adaLN_modulation.1." + k.split(".")[-1]] = torch.cat([v[h:], v[:h]], 0)
            continue
        for a, o in ren:
            if k.startswith(a):
                out[o + k[len(a):]] = v
                break
        else:
            sys.exit(f"flux key {k}: no BFL name")
    nd = cfg["num_layers"]
    for i in range(nd):
        p = f"transformer_blocks.{i}.attn."
        for w in ("weight", "bias"):
            out[f"double_blocks.{i}.img_attn.qkv.{w}"] = torch.cat([sd[p + f"to_{x}.{w}"] for x in "qkv"], 0)
            out[f"double_blocks.{i}.txt_attn.qkv.{w}"] = torch.cat([sd[p + f"add_{x}_proj.{w}"] for x in "qkv"], 0)
    for i in range(cfg["num_single_layers"]):
        p = f"single_transformer_blocks.{i}."
        for w in ("weight", "bias"):
            out[f"single_blocks.{i}.linear1.{w}"] = torch.cat(
                [sd[p + f"attn.to_{x}.{w}"] for x in "qkv"] + [sd[p + f"proj_mlp.{w}"]], 0)
    assert all(v.shape[0] % D == 0 or v.ndim == 1 for v in out.values())
    return out


def diffusers_flux_convert(ckpt, cfg):
    """diffusers' convert_flux_transformer_checkpoint_to_diffusers, whose one hard-coded size
    (inner_dim = 3072, FLUX.1's) is set to this config's."""
    import inspect
    src = inspect.getsource(sfu.convert_flux_transformer_checkpoint_to_diffusers)
    D = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    assert src.count("inner_dim = 3072") == 1
    src = src.replace("inner_dim = 3072", f"inner_dim = {D}")
    ns = dict(vars(sfu))
    exec(src, ns)
    return ns["convert_flux_transformer_checkpoint_to_diffusers"](dict(ckpt))


def make_flux(name, folder):
    tr, cfg = folder_sd(folder, "transformer")
    ckpt = flux_to_bfl(tr, cfg)
    same(diffusers_flux_convert(ckpt, cfg), tr, f"{name} transformer")
    out = os.path.join(FIX, "single_file", name + ".safetensors")
    save_file({k: v.contiguous() for k, v in sorted(ckpt.items())}, out)
    print(f"{out}: {len(ckpt)} tensors, {os.path.getsize(out) / 1e6:.2f} MB; diffusers reads back the folder's "
          f"transformer exactly")


def make_vae_file(name, folder):
    """A VAE file of its own in the original layout without a prefix (FLUX's ae.safetensors)."""
    vae, cfg = folder_sd(folder, "vae")
    ckpt = {k[len("first_stage_model."):]: v for k, v in vae_to_ldm(vae, cfg).items()}
    same(sfu.convert_ldm_vae_checkpoint(dict(ckpt), cfg), vae, f"{name} vae")
    out = os.path.join(FIX, "single_file", name + ".safetensors")
    save_file({k: v.contiguous() for k, v in sorted(ckpt.items())}, out)
    print(f"{out}: {len(ckpt)} tensors; diffusers reads back the folder's VAE exactly")


def main():
    make("sd15-tiny", os.path.join(FIX, "pipelines", "sd15-tiny"), False)
    make("sd2-tiny-v", os.path.join(FIX, "pipelines", "sd2-tiny-v"), False, open_clip_te=True)
    make("sdxl-tiny", os.path.join(FIX, "sdxl_pipelines", "sdxl-tiny"), True)
    make_flux("flux-dev-tiny", os.path.join(FIX, "flux_pipelines", "flux-dev-tiny"))
    make_vae_file("flux-dev-tiny-ae", os.path.join(FIX, "flux_pipelines", "flux-dev-tiny"))


if __name__ == "__main__":
    main()
