#!/usr/bin/env python3
"""make_pipelines.py — golden end-to-end fixtures for tandem's Stable Diffusion path.

Builds tiny random-weight Stable-Diffusion-family pipelines with diffusers, saves each as a
real diffusers folder under tests/fixtures/pipelines/<name>/, runs the cases listed in
CASES in float32 on CPU, and writes the expected outputs under
tests/fixtures/pipelines/expected/<name>/ plus tests/fixtures/pipelines/cases.json.

    /opt/refenv/bin/python tools/ref/make_pipelines.py [--out DIR] [--no-verify]

Deterministic (torch.manual_seed before each model is built; fixed seeds for every run) and
idempotent (the pipeline folders, expected/ and cases.json are deleted and rewritten).
Dev-time only; see tools/ref/README.md.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import clip_vocab  # noqa: E402  (tools/ref/clip_vocab.py)

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

SCHEDULERS = {c.__name__: c for c in (PNDMScheduler, DDIMScheduler, EulerDiscreteScheduler,
                                       EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler)}

EOT = "<|endoftext|>"

# scheduler/scheduler_config.json written verbatim, as the real repositories ship them (old
# files without timestep_spacing etc., so class defaults apply when another class is
# built with from_config — e.g. DDIM "leading" but Euler "linspace" from the same file).
SD15_SCHEDULER = {  # runwayml/stable-diffusion-v1-5
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
SD2_SCHEDULER = {  # stabilityai/stable-diffusion-2 (768-v)
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.10.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
EULER_LEADING_SCHEDULER = {  # newer-style file with explicit keys (as SDXL base ships it)
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

PIPELINES = {
    # SD1.x-like: quick_gelu CLIP, legacy eos_token_id 2, pad <|endoftext|>, conv proj_in/out,
    # attention_head_dim as the head count, VAE scale 4, PNDM.
    "sd15-tiny": dict(
        merges=2000, pad=EOT,
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  hidden_act="quick_gelu", max_position_embeddings=77, layer_norm_eps=1e-5,
                  bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=32),
        unet=dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                  layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                  attention_head_dim=2, norm_num_groups=8),
        vae=dict(sample_size=64, in_channels=3, out_channels=3, latent_channels=4,
                 block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=8,
                 down_block_types=("DownEncoderBlock2D",) * 3,
                 up_block_types=("UpDecoderBlock2D",) * 3, scaling_factor=0.18215),
        scheduler=SD15_SCHEDULER,
    ),
    # SD2.x-like: gelu CLIP with the tokenizer's real eos id, pad "!", linear proj_in/out,
    # per-block head counts, upcast_attention, v-prediction Euler.
    "sd2-tiny-v": dict(
        merges=2000, pad="!",
        text=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  hidden_act="gelu", max_position_embeddings=77, layer_norm_eps=1e-5,
                  bos_token_id=None, eos_token_id=None, pad_token_id=1, projection_dim=48),
        unet=dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                  layers_per_block=1,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                  cross_attention_dim=48, attention_head_dim=(2, 4), norm_num_groups=4,
                  use_linear_projection=True, upcast_attention=True),
        vae=dict(sample_size=64, in_channels=3, out_channels=3, latent_channels=4,
                 block_out_channels=(8, 8, 16), layers_per_block=1, norm_num_groups=4,
                 down_block_types=("DownEncoderBlock2D",) * 3,
                 up_block_types=("UpDecoderBlock2D",) * 3, scaling_factor=0.18215),
        scheduler=SD2_SCHEDULER,
    ),
    # 3 UNet levels (2 downsamplers, 2 layers per block), 4 VAE levels (scale 8 as the real models), a smaller
    # vocabulary (1000 merges), 3 text layers, per-block heads (1,2,4), epsilon Euler "leading".
    "sd-tiny-3level": dict(
        merges=1000, pad=EOT,
        text=dict(hidden_size=40, intermediate_size=80, num_hidden_layers=3, num_attention_heads=5,
                  hidden_act="quick_gelu", max_position_embeddings=77, layer_norm_eps=1e-5,
                  bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=40),
        unet=dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 8, 16),
                  layers_per_block=2,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                  cross_attention_dim=40, attention_head_dim=(1, 2, 4), norm_num_groups=8),
        vae=dict(sample_size=64, in_channels=3, out_channels=3, latent_channels=4,
                 block_out_channels=(8, 8, 8, 16), layers_per_block=1, norm_num_groups=4,
                 down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215),
        scheduler=EULER_LEADING_SCHEDULER,
    ),
}

NEG = "blurry, low quality"

# One entry per run. seeds: one per image, image i of the call uses seeds[i]; all cases use
# consecutive seeds seed, seed+1, ... (the CLI contract: global image index i -> seed+i).
# negative_prompt: one string applied to every prompt (diffusers is given [neg] * len(prompts)
# when several prompts are passed), or None (diffusers then uses "" for the CFG branch).
# scheduler None = the folder's scheduler; a class name = Cls.from_config(folder config).
# The first case of every pipeline is the one stages.safetensors follows.
CASES = [
    # --- sd15-tiny (PNDM in the folder) ---
    dict(name="sd15_pndm", pipeline="sd15-tiny", scheduler=None,
         prompts=["a photo of an astronaut riding a horse on mars"], negative_prompt=NEG,
         seed=0, num_images_per_prompt=1, steps=8, guidance_scale=7.5, width=64, height=64),
    dict(name="sd15_ddim_3prompts", pipeline="sd15-tiny", scheduler="DDIMScheduler",
         prompts=["a red cat sitting on a chair", "a mountain lake at sunset",
                  "portrait of an old man with a hat"], negative_prompt=None,
         seed=42, num_images_per_prompt=1, steps=6, guidance_scale=7.5, width=64, height=32),
    dict(name="sd15_euler_2per", pipeline="sd15-tiny", scheduler="EulerDiscreteScheduler",
         prompts=["a bowl of fruit on a wooden table"], negative_prompt="dark",
         seed=7, num_images_per_prompt=2, steps=6, guidance_scale=5.0, width=32, height=64),
    dict(name="sd15_eulera", pipeline="sd15-tiny", scheduler="EulerAncestralDiscreteScheduler",
         prompts=["a city street at night in the rain"], negative_prompt="ugly, bad art",
         seed=123, num_images_per_prompt=1, steps=7, guidance_scale=7.5, width=64, height=64),
    dict(name="sd15_dpm_nocfg", pipeline="sd15-tiny", scheduler="DPMSolverMultistepScheduler",
         prompts=["a small house in the forest", "the sea"], negative_prompt=None,
         seed=1000, num_images_per_prompt=1, steps=6, guidance_scale=1.0, width=64, height=64),
    # --- sd2-tiny-v (v-prediction Euler in the folder) ---
    dict(name="sd2v_euler", pipeline="sd2-tiny-v", scheduler=None,
         prompts=["a photo of an astronaut riding a horse on mars"], negative_prompt=NEG,
         seed=0, num_images_per_prompt=1, steps=8, guidance_scale=7.5, width=64, height=64),
    dict(name="sd2v_ddim_2prompts", pipeline="sd2-tiny-v", scheduler="DDIMScheduler",
         prompts=["a dog running on the beach!", "green trees and blue sky"], negative_prompt=NEG,
         seed=5, num_images_per_prompt=1, steps=6, guidance_scale=7.5, width=32, height=64),
    dict(name="sd2v_dpm", pipeline="sd2-tiny-v", scheduler="DPMSolverMultistepScheduler",
         prompts=["an oil painting of a ship in a storm"], negative_prompt=None,
         seed=9, num_images_per_prompt=1, steps=6, guidance_scale=7.5, width=64, height=32),
    dict(name="sd2v_eulera_nocfg", pipeline="sd2-tiny-v", scheduler="EulerAncestralDiscreteScheduler",
         prompts=["a white flower"], negative_prompt=None,
         seed=11, num_images_per_prompt=2, steps=5, guidance_scale=1.0, width=64, height=64),
    dict(name="sd2v_pndm", pipeline="sd2-tiny-v", scheduler="PNDMScheduler",
         prompts=["a castle on a hill"], negative_prompt="people",
         seed=31, num_images_per_prompt=1, steps=5, guidance_scale=7.5, width=64, height=64),
    # --- sd-tiny-3level (epsilon Euler, timestep_spacing leading, VAE scale 8) ---
    dict(name="l3_euler", pipeline="sd-tiny-3level", scheduler=None,
         prompts=["a photo of an astronaut riding a horse on mars"], negative_prompt=NEG,
         seed=0, num_images_per_prompt=1, steps=8, guidance_scale=7.5, width=64, height=64),
    dict(name="l3_euler_2prompts_wide", pipeline="sd-tiny-3level", scheduler=None,
         prompts=["a yellow car on a road", "snow on the mountains"], negative_prompt="text",
         seed=3, num_images_per_prompt=1, steps=6, guidance_scale=6.0, width=96, height=64),
    # 80x48 px -> latent 10x6: the UNet's second downsampler sees odd sizes (5x3 -> 3x2) and the
    # up path resizes to the skip connection's size (diffusers' forward_upsample_size).
    dict(name="l3_dpm_odd", pipeline="sd-tiny-3level", scheduler="DPMSolverMultistepScheduler",
         prompts=["a cup of coffee"], negative_prompt=None,
         seed=21, num_images_per_prompt=1, steps=6, guidance_scale=7.5, width=80, height=48),
    dict(name="l3_eulera", pipeline="sd-tiny-3level", scheduler="EulerAncestralDiscreteScheduler",
         prompts=["a bird on a branch"], negative_prompt=NEG,
         seed=77, num_images_per_prompt=1, steps=5, guidance_scale=7.5, width=64, height=64),
    dict(name="l3_ddim_nocfg", pipeline="sd-tiny-3level", scheduler="DDIMScheduler",
         prompts=["a black and white photo of a bridge"], negative_prompt=None,
         seed=2024, num_images_per_prompt=1, steps=5, guidance_scale=1.0, width=64, height=96),
]


def build_pipeline(name, spec, tok_dir):
    """Random-weight pipeline; every model built right after its own torch.manual_seed."""
    clip_vocab.write_truncated_tokenizer_dir(tok_dir, clip_vocab_bpe(), spec["merges"], pad=spec["pad"])
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    text = dict(spec["text"])
    text["vocab_size"] = len(tokenizer)
    if text["bos_token_id"] is None:  # SD2 style: the tokenizer's real ids
        text["bos_token_id"] = tokenizer.bos_token_id
        text["eos_token_id"] = tokenizer.eos_token_id
    torch.manual_seed(1)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text)).eval()
    torch.manual_seed(2)
    unet = UNet2DConditionModel(**spec["unet"]).eval()
    torch.manual_seed(3)
    vae = AutoencoderKL(**spec["vae"]).eval()
    sconf = {k: v for k, v in spec["scheduler"].items() if not k.startswith("_")}
    scheduler = SCHEDULERS[spec["scheduler"]["_class_name"]].from_config(sconf)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def clip_vocab_bpe():
    import open_clip
    p = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    if not os.path.exists(p):
        sys.exit(f"make_pipelines.py: {p} not found (pip install open_clip_torch)")
    return p


def save_pipeline(pipe, spec, folder):
    if os.path.exists(folder):
        shutil.rmtree(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    # tokenizer/ as the real SD repos ship it: vocab.json, merges.txt, tokenizer_config.json,
    # special_tokens_map.json (no tokenizer.json).
    tdir = os.path.join(folder, "tokenizer")
    shutil.rmtree(tdir)
    clip_vocab.write_truncated_tokenizer_dir(tdir, clip_vocab_bpe(), spec["merges"], pad=spec["pad"])
    # text_encoder/model.safetensors with the "text_model." key prefix that the real SD repos
    # (saved by transformers 4.x) have; transformers 5 saves CLIPTextModel without it but
    # loads either layout (checked by the reload in main()).
    te = os.path.join(folder, "text_encoder", "model.safetensors")
    sd = load_file(te)
    save_file({k if k.startswith("text_model.") else "text_model." + k: v for k, v in sd.items()},
              te, metadata={"format": "pt"})
    # scheduler config verbatim as in the real repository
    with open(os.path.join(folder, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(spec["scheduler"], f, indent=2)
        f.write("\n")


def load_pipeline(folder):
    for comp, cls in (("text_encoder", CLIPTextModel), ("unet", UNet2DConditionModel),
                      ("vae", AutoencoderKL)):
        _, info = cls.from_pretrained(os.path.join(folder, comp), output_loading_info=True)
        bad = {k: v for k, v in info.items() if v}
        if bad:
            sys.exit(f"make_pipelines.py: {folder}/{comp} did not reload cleanly: {bad}")
    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def case_scheduler(pipe, base_config, case):
    cls = SCHEDULERS[case["scheduler"]] if case["scheduler"] else SCHEDULERS[base_config["_class_name"]]
    pipe.scheduler = cls.from_config(base_config)  # fresh state for every run
    return type(pipe.scheduler).__name__


def case_seeds(case):
    n = len(case["prompts"]) * case["num_images_per_prompt"]
    return [case["seed"] + i for i in range(n)]


def run_case(pipe, base_config, case, output_type):
    case_scheduler(pipe, base_config, case)
    prompts = case["prompts"]
    prompt = prompts[0] if len(prompts) == 1 else list(prompts)
    neg = case["negative_prompt"]
    if neg is not None and isinstance(prompt, list):
        neg = [neg] * len(prompt)  # diffusers wants the same type as prompt
    gens = [torch.Generator("cpu").manual_seed(s) for s in case_seeds(case)]
    with torch.no_grad():
        out = pipe(prompt=prompt, negative_prompt=neg, num_inference_steps=case["steps"],
                   guidance_scale=case["guidance_scale"], width=case["width"], height=case["height"],
                   num_images_per_prompt=case["num_images_per_prompt"], generator=gens,
                   output_type=output_type)
    return out.images


def tokenize(pipe, text):
    tok = pipe.tokenizer
    return tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True,
               return_tensors="pt").input_ids


@torch.no_grad()
def stages(pipe, base_config, case, final_latents):
    """Intermediate tensors of `case` (one prompt, one negative, batch 1, CFG on)."""
    assert len(case["prompts"]) == 1 and case["num_images_per_prompt"] == 1
    assert case["guidance_scale"] > 1.0 and case["negative_prompt"] is not None
    prompt, neg = case["prompts"][0], case["negative_prompt"]
    case_scheduler(pipe, base_config, case)
    sched = pipe.scheduler
    t = {}
    t["input_ids"] = tokenize(pipe, prompt)
    t["negative_input_ids"] = tokenize(pipe, neg)
    t["empty_input_ids"] = tokenize(pipe, "")
    pe, ne = pipe.encode_prompt(prompt, torch.device("cpu"), 1, True, neg)
    t["prompt_embeds"], t["negative_prompt_embeds"] = pe, ne
    _, ee = pipe.encode_prompt(prompt, torch.device("cpu"), 1, True, None)
    t["empty_prompt_embeds"] = ee  # what the CFG branch uses when no negative prompt is given

    sched.set_timesteps(case["steps"], device="cpu")
    t["timesteps"] = sched.timesteps.clone()
    if hasattr(sched, "sigmas") and sched.sigmas is not None:
        t["sigmas"] = torch.as_tensor(sched.sigmas).clone().float()
    t["init_noise_sigma"] = torch.tensor([float(sched.init_noise_sigma)], dtype=torch.float32)
    vsf = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, case["height"] // vsf, case["width"] // vsf)
    gen = torch.Generator("cpu").manual_seed(case["seed"])
    noise = randn_tensor(shape, generator=gen, device=torch.device("cpu"), dtype=torch.float32)
    t["init_noise"] = noise
    lat = noise * sched.init_noise_sigma
    t["init_latents"] = lat

    t0 = sched.timesteps[0]
    emb = torch.cat([ne, pe])  # CFG batch: unconditional first
    x = sched.scale_model_input(torch.cat([lat] * 2), t0)
    t["unet_input"] = x
    t["unet_encoder_hidden_states"] = emb
    out = pipe.unet(x, t0, encoder_hidden_states=emb, return_dict=False)[0]
    t["unet_output"] = out
    u, c = out.chunk(2)
    guided = u + case["guidance_scale"] * (c - u)
    t["guided_noise_pred"] = guided
    t["latents_after_step0"] = sched.step(guided, t0, lat, return_dict=False)[0]

    t["final_latents"] = final_latents
    dec = pipe.vae.decode(final_latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    t["vae_decoded"] = dec  # [-1,1]-ish, before postprocess
    return {k: v.detach().contiguous() for k, v in t.items()}


def tandem_argv(pname, case):
    """The case as `tandem generate` flags (--model relative to cases.json's folder)."""
    argv = ["generate", "--model", pname]
    for pr in case["prompts"]:
        argv += ["--prompt", pr]
    if case["negative_prompt"] is not None:
        argv += ["--negative-prompt", case["negative_prompt"]]
    argv += ["--seed", str(case["seed"]), "--steps", str(case["steps"]),
             "--guidance", repr(case["guidance_scale"]), "--width", str(case["width"]),
             "--height", str(case["height"]),
             "--num-images-per-prompt", str(case["num_images_per_prompt"])]
    if case["scheduler"]:
        argv += ["--scheduler", case["scheduler"]]
    return argv


def run_and_write(a, pname, case, pipe, built, base_config, run, argv):
    """Runs `case` on the reloaded pipeline (latents and PNGs), writes them under a.out/expected/,
    checks the in-memory pipeline against it unless a.no_verify, prints a summary line. Returns the
    case's cases.json entry (tandem_argv from argv(pname, case)), the latents, the images and the
    reload-vs-memory difference (None when not checked). Shared with make_sdxl_pipelines.py."""
    lat = run(pipe, base_config, case, "latent")
    imgs = run(pipe, base_config, case, "pil")
    seeds = case_seeds(case)
    assert lat.shape[0] == len(seeds) == len(imgs)
    lat_file = f"expected/{pname}/{case['name']}.safetensors"
    save_file({"latents": lat.contiguous()}, os.path.join(a.out, lat_file))
    png_files = []
    for i, im in enumerate(imgs):
        f = f"expected/{pname}/{case['name']}_{i}.png"
        im.save(os.path.join(a.out, f))
        png_files.append(f)
    diff = None
    if not a.no_verify:
        ref = run(built, base_config, case, "latent")
        diff = float((ref - lat).abs().max())
    sname = case_scheduler(pipe, base_config, case)
    arr = np.stack([np.asarray(im) for im in imgs])
    print(f"{pname:15s} {case['name']:24s} {sname:32s} latents {tuple(lat.shape)} "
          f"absmax {float(lat.abs().max()):.3g} std {float(lat.std()):.3g} "
          f"px [{arr.min()},{arr.max()}] mean {arr.mean():.1f}"
          + ("" if diff is None else f"  reload-vs-memory maxdiff {diff:.3g}"))
    entry = dict(case)
    entry["scheduler"] = sname
    entry["scheduler_override"] = case["scheduler"] is not None
    entry["tandem_argv"] = argv(pname, case)
    entry["seeds"] = seeds
    entry["latents"] = lat_file
    entry["latent_shape"] = list(lat.shape)
    entry["images"] = png_files
    return entry, lat, imgs, diff


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "pipelines"))
    ap.add_argument("--no-verify", action="store_true",
                    help="skip re-running every case on the in-memory pipeline")
    a = ap.parse_args()
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    os.makedirs(a.out, exist_ok=True)
    exp_root = os.path.join(a.out, "expected")
    if os.path.exists(exp_root):
        shutil.rmtree(exp_root)
    tmp = os.path.join(a.out, ".tmp_tokenizer")

    cases_out = []
    worst = 0.0
    for pname, spec in PIPELINES.items():
        folder = os.path.join(a.out, pname)
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        built = build_pipeline(pname, spec, tmp)
        built.set_progress_bar_config(disable=True)
        shutil.rmtree(tmp)
        save_pipeline(built, spec, folder)
        pipe = load_pipeline(folder)  # fixtures come from the pipeline as loaded from disk
        base_config = dict(spec["scheduler"])
        exp = os.path.join(exp_root, pname)
        os.makedirs(exp)
        pcases = [c for c in CASES if c["pipeline"] == pname]
        for ci, case in enumerate(pcases):
            entry, lat, imgs, diff = run_and_write(a, pname, case, pipe, built, base_config, run_case, tandem_argv)
            worst = max(worst, diff or 0.0)
            if ci == 0:
                st = stages(pipe, base_config, case, lat)
                sfile = f"expected/{pname}/stages.safetensors"
                save_file(st, os.path.join(a.out, sfile))
                entry["stages"] = sfile
                dec = st["vae_decoded"]
                px = (dec / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
                px = (px * 255).round().astype("uint8")
                assert np.array_equal(px[0], np.asarray(imgs[0])), "stage decode != pipeline image"
            cases_out.append(entry)

    doc = {
        "about": "Golden end-to-end cases for tools/ref/make_pipelines.py; paths are relative to "
                 "this file's folder. Image i of a case uses seeds[i] = seed + i "
                 "(torch.Generator('cpu').manual_seed, one generator per image). "
                 "negative_prompt applies to every prompt; null means diffusers' default \"\". "
                 "scheduler is the class used: the folder's, or Cls.from_config(folder scheduler "
                 "config) when scheduler_override is true.",
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "python": sys.version.split()[0],
                     # torch.randn's float32 Box-Muller uses avx_mathfun sin/cos/log under
                     # AVX2/AVX512 and libm under "default" (see rng_ref.py): last-bit noise
                     # differences, far inside the latent tolerance.
                     "aten_cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "tolerance": {"latents_rel": 1e-4, "png_abs": 1},
        "pipelines": {p: {"folder": p, "scheduler": s["scheduler"]["_class_name"],
                          "vae_scale_factor": 2 ** (len(s["vae"]["block_out_channels"]) - 1),
                          "default_size": s["unet"]["sample_size"] * 2 ** (len(s["vae"]["block_out_channels"]) - 1)}
                      for p, s in PIPELINES.items()},
        "stages_about": "expected/<pipeline>/stages.safetensors follows the first case of that "
                        "pipeline (one prompt, one negative prompt, batch 1, CFG on, the folder's "
                        "scheduler). sigmas only where the scheduler has them (Euler). "
                        "unet_* are the first denoising step on the CFG batch [negative; prompt]; "
                        "vae_decoded = vae.decode(final_latents / scaling_factor) before postprocess.",
        "stages_tensors": ["input_ids", "negative_input_ids", "empty_input_ids", "prompt_embeds",
                           "negative_prompt_embeds", "empty_prompt_embeds", "timesteps", "sigmas",
                           "init_noise_sigma", "init_noise", "init_latents", "unet_input",
                           "unet_encoder_hidden_states", "unet_output", "guided_noise_pred",
                           "latents_after_step0", "final_latents", "vae_decoded"],
        "cases": cases_out,
    }
    with open(os.path.join(a.out, "cases.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    total = 0
    for root, _, files in os.walk(a.out):
        total += sum(os.path.getsize(os.path.join(root, x)) for x in files)
    print(f"wrote {len(cases_out)} cases to {a.out}: {total / 1e6:.2f} MB")
    if not a.no_verify:
        print(f"reloaded pipelines vs in-memory pipelines: max |latents diff| = {worst:.3g}")


if __name__ == "__main__":
    main()
