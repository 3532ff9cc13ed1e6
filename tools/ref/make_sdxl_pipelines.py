#!/usr/bin/env python3
"""make_sdxl_pipelines.py — golden end-to-end fixtures for tandem's SDXL path.

Builds tiny random-weight StableDiffusionXLPipeline folders with diffusers (one with both text
encoders, one with text_encoder_2 only, as the refiner ships), saves them as real diffusers folders
under tests/fixtures/sdxl_pipelines/<name>/, runs the CASES in float32 on the CPU and writes the
final latents, the PNGs, cases.json and the stage tensors of each pipeline's first case.

    /opt/refenv/bin/python tools/ref/make_sdxl_pipelines.py [--out DIR] [--no-verify]

Deterministic and idempotent like make_pipelines.py (whose helpers it uses). The watermarker is
off (add_watermarker=False): invisible-watermark is not a diffusers dependency and tandem does not
watermark. Dev-time only; see tools/ref/README.md.
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

import clip_vocab  # noqa: E402
import make_pipelines as mp  # noqa: E402  (clip_vocab_bpe, schedulers, EOT)

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

SCHEDULERS = {c.__name__: c for c in (PNDMScheduler, DDIMScheduler, EulerDiscreteScheduler,
                                       EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler)}

# stabilityai/stable-diffusion-xl-base-1.0's scheduler/scheduler_config.json
SDXL_SCHEDULER = dict(mp.EULER_LEADING_SCHEDULER)
# DPM++ 2M Karras as SDXL fine-tunes ship it
DPM_KARRAS_SCHEDULER = {
    "_class_name": "DPMSolverMultistepScheduler",
    "_diffusers_version": "0.21.0",
    "algorithm_type": "dpmsolver++",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "solver_order": 2,
    "solver_type": "midpoint",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": True,
}

PIPELINES = {
    # Both encoders (CLIP-L-like quick_gelu with the legacy eos id 2, pad <|endoftext|>; a
    # bigG-like gelu CLIPTextModelWithProjection, pad "!"), SDXL's UNet layout (DownBlock2D first,
    # transformer_layers_per_block per level, linear projections, text_time micro-conditioning),
    # force_upcast VAE with SDXL's scaling factor, the base model's Euler "leading" scheduler.
    "sdxl-tiny": dict(
        force_zeros=True,
        tok=dict(merges=2000, pad=mp.EOT),
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  hidden_act="quick_gelu", max_position_embeddings=77, layer_norm_eps=1e-5,
                  bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=32),
        tok2=dict(merges=2000, pad="!"),
        text2=dict(hidden_size=40, intermediate_size=80, num_hidden_layers=3, num_attention_heads=5,
                   hidden_act="gelu", max_position_embeddings=77, layer_norm_eps=1e-5,
                   bos_token_id=None, eos_token_id=None, pad_token_id=1, projection_dim=24),
        unet=dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(8, 16, 16),
                  layers_per_block=2,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                  transformer_layers_per_block=(1, 2, 2), attention_head_dim=(1, 2, 4),
                  cross_attention_dim=72, norm_num_groups=4, use_linear_projection=True,
                  addition_embed_type="text_time", addition_time_embed_dim=8,
                  projection_class_embeddings_input_dim=24 + 6 * 8),
        vae=dict(sample_size=64, in_channels=3, out_channels=3, latent_channels=4,
                 block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4,
                 down_block_types=("DownEncoderBlock2D",) * 3,
                 up_block_types=("UpDecoderBlock2D",) * 3, scaling_factor=0.13025,
                 force_upcast=True),
        scheduler=SDXL_SCHEDULER,
    ),
    # text_encoder_2 only (text_encoder and tokenizer null, as the refiner's folder), no zeros for
    # an absent negative prompt, 4 VAE levels (scale 8) with latents_mean / latents_std (as
    # Playground v2.5's VAE: decode takes latents * std / scaling_factor + mean), DPM++ 2M Karras.
    "sdxl-tiny-te2": dict(
        force_zeros=False,
        tok2=dict(merges=1000, pad="!"),
        text2=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                   hidden_act="gelu", max_position_embeddings=77, layer_norm_eps=1e-5,
                   bos_token_id=None, eos_token_id=None, pad_token_id=1, projection_dim=32),
        unet=dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16, 16),
                  layers_per_block=1,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                  transformer_layers_per_block=2, attention_head_dim=(2, 4, 4),
                  cross_attention_dim=48, norm_num_groups=4, use_linear_projection=True,
                  addition_embed_type="text_time", addition_time_embed_dim=4,
                  projection_class_embeddings_input_dim=32 + 6 * 4),
        vae=dict(sample_size=64, in_channels=3, out_channels=3, latent_channels=4,
                 block_out_channels=(8, 8, 8, 16), layers_per_block=1, norm_num_groups=4,
                 down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.5,
                 latents_mean=(0.25, -0.5, 0.125, 0.0), latents_std=(1.5, 0.75, 2.0, 1.0),
                 force_upcast=True),
        scheduler=DPM_KARRAS_SCHEDULER,
    ),
}

NEG = "blurry, low quality"

# As make_pipelines.py's CASES, plus: prompt_2 / negative_prompt_2 (None: diffusers' default, the
# first prompt), guidance_rescale, original_size / crops_coords_top_left / target_size as diffusers
# takes them ((height, width), (top, left); None: the defaults). negative_prompt None with
# force_zeros_for_empty_prompt gives zero negative embeddings; "" is encoded.
CASES = [
    dict(name="xl_euler", pipeline="sdxl-tiny", scheduler=None,
         prompts=["a photo of an astronaut riding a horse on mars"], negative_prompt=NEG,
         seed=0, num_images_per_prompt=1, steps=8, guidance_scale=5.0, width=64, height=64),
    dict(name="xl_zeros_wide", pipeline="sdxl-tiny", scheduler=None,
         prompts=["a yellow car on a road", "snow on the mountains"], negative_prompt=None,
         seed=3, num_images_per_prompt=1, steps=6, guidance_scale=6.0, width=96, height=64),
    dict(name="xl_prompt2_eulera", pipeline="sdxl-tiny", scheduler="EulerAncestralDiscreteScheduler",
         prompts=["a bowl of fruit on a wooden table"], prompt_2="an oil painting, dark colours",
         negative_prompt="ugly", negative_prompt_2="bright, flat",
         seed=7, num_images_per_prompt=1, steps=6, guidance_scale=7.0, width=64, height=64),
    dict(name="xl_rescale_ddim", pipeline="sdxl-tiny", scheduler="DDIMScheduler",
         prompts=["a city street at night in the rain"], negative_prompt=NEG, guidance_rescale=0.7,
         seed=123, num_images_per_prompt=1, steps=6, guidance_scale=7.5, width=64, height=32),
    dict(name="xl_micro_cond", pipeline="sdxl-tiny", scheduler=None,
         prompts=["a castle on a hill"], negative_prompt=NEG, original_size=(128, 96),
         crops_coords_top_left=(8, 4), target_size=(64, 48),
         seed=31, num_images_per_prompt=1, steps=5, guidance_scale=5.0, width=32, height=64),
    dict(name="xl_dpm_nocfg", pipeline="sdxl-tiny", scheduler="DPMSolverMultistepScheduler",
         prompts=["a small house in the forest"], negative_prompt=None,
         seed=1000, num_images_per_prompt=2, steps=6, guidance_scale=1.0, width=64, height=64),
    # clip_skip 1: the prompts' hidden_states[-3] of both encoders (the negative's stay [-2])
    dict(name="xl_clip_skip", pipeline="sdxl-tiny", scheduler=None,
         prompts=["a lighthouse on a cliff"], negative_prompt=NEG, clip_skip=1,
         seed=17, num_images_per_prompt=1, steps=5, guidance_scale=5.0, width=64, height=64),
    dict(name="xl_empty_neg_pndm", pipeline="sdxl-tiny", scheduler="PNDMScheduler",
         prompts=["a white flower"], negative_prompt="",
         seed=11, num_images_per_prompt=1, steps=5, guidance_scale=5.0, width=64, height=64),
    dict(name="te2_dpm_karras", pipeline="sdxl-tiny-te2", scheduler=None,
         prompts=["a photo of an astronaut riding a horse on mars"], negative_prompt=NEG,
         seed=0, num_images_per_prompt=1, steps=6, guidance_scale=5.0, width=64, height=64),
    dict(name="te2_no_neg", pipeline="sdxl-tiny-te2", scheduler=None,
         prompts=["a bird on a branch", "a cup of coffee"], negative_prompt=None,
         seed=77, num_images_per_prompt=1, steps=5, guidance_scale=4.0, width=64, height=64),
    # 80x48 px -> latent 10x6 with the scale-8 VAE: odd sizes inside the UNet
    dict(name="te2_euler_odd", pipeline="sdxl-tiny-te2", scheduler="EulerDiscreteScheduler",
         prompts=["a dog running on the beach!"], negative_prompt="people", guidance_rescale=0.5,
         seed=21, num_images_per_prompt=1, steps=6, guidance_scale=6.0, width=80, height=48),
]


def _tokenizer(dirname, spec):
    clip_vocab.write_truncated_tokenizer_dir(dirname, mp.clip_vocab_bpe(), spec["merges"], pad=spec["pad"])
    return CLIPTokenizer.from_pretrained(dirname)


def _text_config(spec, tokenizer):
    text = dict(spec)
    text["vocab_size"] = len(tokenizer)
    if text["bos_token_id"] is None:  # bigG / SD2 style: the tokenizer's real ids
        text["bos_token_id"] = tokenizer.bos_token_id
        text["eos_token_id"] = tokenizer.eos_token_id
    return CLIPTextConfig(**text)


def build_pipeline(spec, tmp):
    """Random-weight pipeline; every model built right after its own torch.manual_seed."""
    tokenizer = text_encoder = None
    if "text" in spec:
        tokenizer = _tokenizer(os.path.join(tmp, "tok"), spec["tok"])
        torch.manual_seed(1)
        text_encoder = CLIPTextModel(_text_config(spec["text"], tokenizer)).eval()
    tokenizer_2 = _tokenizer(os.path.join(tmp, "tok2"), spec["tok2"])
    torch.manual_seed(4)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(spec["text2"], tokenizer_2)).eval()
    torch.manual_seed(2)
    unet = UNet2DConditionModel(**spec["unet"]).eval()
    torch.manual_seed(3)
    vae = AutoencoderKL(**spec["vae"]).eval()
    sconf = {k: v for k, v in spec["scheduler"].items() if not k.startswith("_")}
    scheduler = SCHEDULERS[spec["scheduler"]["_class_name"]].from_config(sconf)
    return StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet,
                                     scheduler=scheduler, force_zeros_for_empty_prompt=spec["force_zeros"],
                                     add_watermarker=False)


def save_pipeline(pipe, spec, folder):
    if os.path.exists(folder):
        shutil.rmtree(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    # tokenizers as the Hub repos ship them (no tokenizer.json); text_encoder keys with the
    # "text_model." prefix of transformers 4.x (text_encoder_2's have it as the module path)
    for sub, tspec in (("tokenizer", spec.get("tok")), ("tokenizer_2", spec["tok2"])):
        if tspec is None:
            continue
        tdir = os.path.join(folder, sub)
        shutil.rmtree(tdir)
        clip_vocab.write_truncated_tokenizer_dir(tdir, mp.clip_vocab_bpe(), tspec["merges"], pad=tspec["pad"])
    te = os.path.join(folder, "text_encoder", "model.safetensors")
    if os.path.exists(te):
        sd = load_file(te)
        save_file({k if k.startswith("text_model.") else "text_model." + k: v for k, v in sd.items()},
                  te, metadata={"format": "pt"})
    with open(os.path.join(folder, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(spec["scheduler"], f, indent=2)
        f.write("\n")


def load_pipeline(folder, spec):
    comps = [("text_encoder_2", CLIPTextModelWithProjection), ("unet", UNet2DConditionModel),
             ("vae", AutoencoderKL)]
    if "text" in spec:
        comps.append(("text_encoder", CLIPTextModel))
    for comp, cls in comps:
        _, info = cls.from_pretrained(os.path.join(folder, comp), output_loading_info=True)
        bad = {k: v for k, v in info.items() if v}
        if bad:
            sys.exit(f"make_sdxl_pipelines.py: {folder}/{comp} did not reload cleanly: {bad}")
    pipe = StableDiffusionXLPipeline.from_pretrained(folder, torch_dtype=torch.float32, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


case_scheduler = mp.case_scheduler  # Cls.from_config(folder config), fresh per run
case_seeds = mp.case_seeds


def _as_list(v, n):
    return v if v is None or n == 1 else [v] * n


def call_kwargs(case):
    prompts = case["prompts"]
    n = len(prompts)
    kw = dict(prompt=prompts[0] if n == 1 else list(prompts),
              prompt_2=_as_list(case.get("prompt_2"), n),
              negative_prompt=_as_list(case["negative_prompt"], n),
              negative_prompt_2=_as_list(case.get("negative_prompt_2"), n),
              num_inference_steps=case["steps"], guidance_scale=case["guidance_scale"],
              guidance_rescale=case.get("guidance_rescale", 0.0), clip_skip=case.get("clip_skip"),
              width=case["width"], height=case["height"],
              num_images_per_prompt=case["num_images_per_prompt"])
    for k in ("original_size", "crops_coords_top_left", "target_size"):
        if case.get(k) is not None:
            kw[k] = tuple(case[k])
    return kw


def run_case(pipe, base_config, case, output_type):
    case_scheduler(pipe, base_config, case)
    gens = [torch.Generator("cpu").manual_seed(s) for s in case_seeds(case)]
    with torch.no_grad():
        out = pipe(generator=gens, output_type=output_type, **call_kwargs(case))
    return out.images


@torch.no_grad()
def stages(pipe, base_config, case, final_latents):
    """Intermediate tensors of `case` (one prompt, one negative, batch 1, CFG on)."""
    assert len(case["prompts"]) == 1 and case["num_images_per_prompt"] == 1
    assert case["guidance_scale"] > 1.0 and case["negative_prompt"] is not None
    case_scheduler(pipe, base_config, case)
    sched = pipe.scheduler
    t = {}
    pe, ne, pp, npp = pipe.encode_prompt(case["prompts"][0], device=torch.device("cpu"),
                                         num_images_per_prompt=1, do_classifier_free_guidance=True,
                                         negative_prompt=case["negative_prompt"])
    t["prompt_embeds"], t["negative_prompt_embeds"] = pe, ne
    t["pooled_prompt_embeds"], t["negative_pooled_prompt_embeds"] = pp, npp
    _, ze, _, zp = pipe.encode_prompt(case["prompts"][0], device=torch.device("cpu"),
                                      num_images_per_prompt=1, do_classifier_free_guidance=True,
                                      negative_prompt=None)
    t["no_negative_prompt_embeds"], t["no_negative_pooled_prompt_embeds"] = ze, zp
    sched.set_timesteps(case["steps"], device="cpu")
    t["timesteps"] = sched.timesteps.clone()
    vsf = pipe.vae_scale_factor
    H, W = case["height"], case["width"]
    shape = (1, pipe.unet.config.in_channels, H // vsf, W // vsf)
    gen = torch.Generator("cpu").manual_seed(case["seed"])
    lat = randn_tensor(shape, generator=gen, device=torch.device("cpu"), dtype=torch.float32)
    lat = lat * sched.init_noise_sigma
    t["init_latents"] = lat
    proj = pipe.text_encoder_2.config.projection_dim
    ids = pipe._get_add_time_ids((H, W), (0, 0), (H, W), dtype=torch.float32, text_encoder_projection_dim=proj)
    t["add_time_ids"] = ids
    t0 = sched.timesteps[0]
    x = sched.scale_model_input(torch.cat([lat] * 2), t0)
    t["unet_input"] = x
    out = pipe.unet(x, t0, encoder_hidden_states=torch.cat([ne, pe]),
                    added_cond_kwargs={"text_embeds": torch.cat([npp, pp]), "time_ids": torch.cat([ids, ids])},
                    return_dict=False)[0]
    t["unet_output"] = out
    t["final_latents"] = final_latents
    return {k: v.detach().contiguous().float() for k, v in t.items()}


def tandem_argv(pname, case):
    argv = ["generate", "--model", pname]
    for pr in case["prompts"]:
        argv += ["--prompt", pr]
    if case.get("prompt_2") is not None:
        for _ in case["prompts"]:
            argv += ["--prompt-2", case["prompt_2"]]
    if case["negative_prompt"] is not None:
        argv += ["--negative-prompt", case["negative_prompt"]]
    if case.get("negative_prompt_2") is not None:
        argv += ["--negative-prompt-2", case["negative_prompt_2"]]
    argv += ["--seed", str(case["seed"]), "--steps", str(case["steps"]),
             "--guidance", repr(case["guidance_scale"]), "--width", str(case["width"]),
             "--height", str(case["height"]), "--num-images-per-prompt", str(case["num_images_per_prompt"])]
    if case.get("guidance_rescale"):
        argv += ["--guidance-rescale", repr(case["guidance_rescale"])]
    if case.get("clip_skip"):
        argv += ["--clip-skip", str(case["clip_skip"])]
    # diffusers' (height, width) pairs as tandem's WIDTHxHEIGHT; the crop as TOP,LEFT
    for k, flag in (("original_size", "--original-size"), ("target_size", "--target-size")):
        if case.get(k) is not None:
            argv += [flag, f"{case[k][1]}x{case[k][0]}"]
    if case.get("crops_coords_top_left") is not None:
        argv += ["--crops-coords-top-left", f"{case['crops_coords_top_left'][0]},{case['crops_coords_top_left'][1]}"]
    if case["scheduler"]:
        argv += ["--scheduler", case["scheduler"]]
    return argv


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "sdxl_pipelines"))
    ap.add_argument("--no-verify", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    os.makedirs(a.out, exist_ok=True)
    exp_root = os.path.join(a.out, "expected")
    if os.path.exists(exp_root):
        shutil.rmtree(exp_root)
    tmp = os.path.join(a.out, ".tmp_tokenizers")
    cases_out, worst = [], 0.0
    for pname, spec in PIPELINES.items():
        folder = os.path.join(a.out, pname)
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
        built = build_pipeline(spec, tmp)
        built.set_progress_bar_config(disable=True)
        shutil.rmtree(tmp)
        save_pipeline(built, spec, folder)
        pipe = load_pipeline(folder, spec)
        base_config = dict(spec["scheduler"])
        exp = os.path.join(exp_root, pname)
        os.makedirs(exp)
        for ci, case in enumerate(c for c in CASES if c["pipeline"] == pname):
            entry, lat, imgs, diff = mp.run_and_write(a, pname, case, pipe, built, base_config, run_case,
                                                      tandem_argv)
            worst = max(worst, diff or 0.0)
            if ci == 0:
                st = stages(pipe, base_config, case, lat)
                sfile = f"expected/{pname}/stages.safetensors"
                save_file(st, os.path.join(a.out, sfile))
                entry["stages"] = sfile
            cases_out.append(entry)
    doc = {
        "about": "Golden SDXL cases of tools/ref/make_sdxl_pipelines.py; paths relative to this file's "
                 "folder. Image i of a case uses seeds[i] = seed + i. negative_prompt applies to every "
                 "prompt; null: none given (zeros with force_zeros_for_empty_prompt, else \"\"). "
                 "original_size, target_size are (height, width), crops_coords_top_left (top, left), "
                 "null = diffusers' defaults.",
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "python": sys.version.split()[0],
                     "aten_cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "tolerance": {"latents_rel": 1e-4, "png_abs": 1},
        "stages_about": "expected/<pipeline>/stages.safetensors follows the pipeline's first case: "
                        "encode_prompt's four outputs with its negative prompt and with none "
                        "(no_negative_*), add_time_ids for (H, W), (0, 0), (H, W), and the first UNet "
                        "call on the CFG batch [negative; prompt].",
        "cases": cases_out,
    }
    with open(os.path.join(a.out, "cases.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(r, x)) for r, _, fs in os.walk(a.out) for x in fs)
    print(f"wrote {len(cases_out)} cases to {a.out}: {total / 1e6:.2f} MB")
    if not a.no_verify:
        print(f"reloaded pipelines vs in-memory pipelines: max |latents diff| = {worst:.3g}")


if __name__ == "__main__":
    main()
