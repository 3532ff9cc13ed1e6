#!/usr/bin/env python3
"""make_flux_pipelines.py — golden end-to-end fixtures for tandem's FLUX.1 path.

Builds tiny random-weight FLUX.1-family pipelines (one dev-like, one schnell-like) with
diffusers, saves each as a real diffusers folder under tests/fixtures/flux_pipelines/<name>/
(laid out like black-forest-labs/FLUX.1-dev / -schnell: sharded T5 and transformer with
index files, CLIP with the "text_model." key prefix, the real scheduler config), runs the
cases in CASES in float32 on CPU from the folder as reloaded by FluxPipeline.from_pretrained,
and writes the expected outputs under tests/fixtures/flux_pipelines/expected/<name>/ plus
tests/fixtures/flux_pipelines/cases.json.

    /opt/refenv/bin/python tools/ref/make_flux_pipelines.py [--out DIR] [--no-verify]

Deterministic (torch.manual_seed before each model is built; fixed seeds for every run) and
idempotent (the pipeline folders, expected/ and cases.json are deleted and rewritten).
Reuses make_pipelines.py's CLIP tokenizer / text-encoder layout helpers (save_pipeline,
clip_vocab_bpe) and t5_vocab.write_t5_tokenizer_dir for the tiny T5 tokenizer.
Dev-time only; see tools/ref/README.md.
"""
import argparse
import copy
import glob
import json
import math
import os
import shutil
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import make_pipelines as sdref  # noqa: E402  (tools/ref/make_pipelines.py: CLIP helpers)
import t5_vocab  # noqa: E402  (tools/ref/t5_vocab.py: tiny T5 sentencepiece tokenizer)

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
)
from diffusers.pipelines.flux.pipeline_flux import calculate_shift  # noqa: E402
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

# scheduler/scheduler_config.json verbatim as the real repositories ship them.
FLUX_DEV_SCHEDULER = {  # black-forest-labs/FLUX.1-dev
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "_diffusers_version": "0.30.0.dev0",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}
FLUX_SCHNELL_SCHEDULER = {  # black-forest-labs/FLUX.1-schnell
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "_diffusers_version": "0.29.0.dev0",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": False,
}


def model_index(version):
    """model_index.json as the real FLUX.1 repositories ship it (tokenizer_2 named T5TokenizerFast,
    no image_encoder / feature_extractor entries)."""
    return {
        "_class_name": "FluxPipeline",
        "_diffusers_version": version,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


EOT = "<|endoftext|>"
QK_GAIN = 3.0      # condition_transformer: q/k RMSNorm weights x3 (attention logits x9)
POOLED_GAIN = 3.0  # condition_transformer: pooled-text embedder linear_1 weight x3
# CLIP text encoder as FLUX.1 ships openai/clip-vit-large-patch14: quick_gelu, legacy
# eos_token_id 2 (pooler = hidden state at argmax(input_ids), i.e. the first <|endoftext|>).
CLIP_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 hidden_act="quick_gelu", max_position_embeddings=77, layer_norm_eps=1e-5,
                 bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=32)
# T5 v1.1 encoder layout (google/t5-v1_1-xxl as FLUX.1 ships it): gated-gelu (gelu_new),
# relative attention 32 buckets / max distance 128 (bias in block 0 only), RMS layer norms.
# The saved weights hold "shared.weight" only (encoder.embed_tokens is tied to it).
T5_TEXT = dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, feed_forward_proj="gated-gelu",
               relative_attention_num_buckets=32, relative_attention_max_distance=128,
               layer_norm_epsilon=1e-6, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
               decoder_start_token_id=0)

PIPELINES = {
    # FLUX.1-dev-like: guidance embedding, dynamic shifting (mu from the image token count),
    # transformer saved in 3 shards with an index, T5 in 2 shards.
    "flux-dev-tiny": dict(
        merges=1000, pad=EOT, text=CLIP_TEXT, t5=T5_TEXT, t5_shards=2,
        transformer=dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=2,
                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                         pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6)),
        transformer_shards=3,
        vae=dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 16, 16, 16),
                 layers_per_block=1, norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64, scaling_factor=0.3611,
                 shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False,
                 mid_block_add_attention=True, force_upcast=True),
        scheduler=FLUX_DEV_SCHEDULER, index_version="0.30.0.dev0",
        model_card=dict(steps=28, guidance_scale=3.5, max_sequence_length=512),
    ),
    # FLUX.1-schnell-like: no guidance embedding, static shift 1.0 (sigmas = linspace), head dim 8
    # with axes (2,2,4), transformer in one file, T5 in 2 shards, VAE (8,8,8,16) with 2 layers per block and
    # 4 norm groups.
    "flux-schnell-tiny": dict(
        merges=500, pad=EOT, text=CLIP_TEXT, t5=T5_TEXT, t5_shards=2,
        transformer=dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=2,
                         attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                         pooled_projection_dim=32, guidance_embeds=False, axes_dims_rope=(2, 2, 4)),
        transformer_shards=1,
        vae=dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 8, 8, 16),
                 layers_per_block=2, norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64, scaling_factor=0.3611,
                 shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False,
                 mid_block_add_attention=True, force_upcast=True),
        scheduler=FLUX_SCHNELL_SCHEDULER, index_version="0.30.0.dev0",
        model_card=dict(steps=4, guidance_scale=0.0, max_sequence_length=256),
    ),
}

ASTRO = "a photo of an astronaut riding a horse on mars"
LONG = ("a very long and detailed description of a quiet harbour town at dawn, with fishing boats, "
        "seagulls over the water, wet cobblestone streets, warm light in the windows of small "
        "houses, mountains in the distance covered with fresh snow, a lighthouse on the rocks, "
        "mist over the sea and a red bicycle leaning against an old stone wall near the bakery")

# One entry per run. seeds: image i of the call uses seed + i (one torch.Generator per image).
# prompt_2: None = diffusers' default (prompt_2 = prompt, the T5 input), else one string used
# for every prompt. width x height are multiples of 16 (vae_scale_factor 8 x 2x2 packing).
# The first case of every pipeline is the one stages.safetensors follows.
CASES = [
    # --- flux-dev-tiny ---
    dict(name="dev_64", pipeline="flux-dev-tiny", prompts=[ASTRO], prompt_2=None,
         seed=0, num_images_per_prompt=1, steps=3, guidance_scale=3.5, max_sequence_length=512,
         width=64, height=64),
    dict(name="dev_wide_2prompts_g5", pipeline="flux-dev-tiny",
         prompts=["a red cat sitting on a chair", "a mountain lake at sunset"], prompt_2=None,
         seed=42, num_images_per_prompt=1, steps=2, guidance_scale=5.0, max_sequence_length=256,
         width=128, height=64),
    dict(name="dev_tall_prompt2_2per", pipeline="flux-dev-tiny",
         prompts=["portrait of an old man with a hat"],
         prompt_2="an oil painting in the style of the old masters, dark background",
         seed=7, num_images_per_prompt=2, steps=3, guidance_scale=3.5, max_sequence_length=77,
         width=64, height=128),
    # prompt longer than both limits: CLIP truncates at 77 (…, <|endoftext|>), T5 at 32 (…, </s>)
    dict(name="dev_long_msl32", pipeline="flux-dev-tiny", prompts=[LONG], prompt_2=None,
         seed=123, num_images_per_prompt=1, steps=2, guidance_scale=5.0, max_sequence_length=32,
         width=64, height=64),
    # --- flux-schnell-tiny ---
    dict(name="schnell_64", pipeline="flux-schnell-tiny", prompts=[ASTRO], prompt_2=None,
         seed=0, num_images_per_prompt=1, steps=4, guidance_scale=0.0, max_sequence_length=256,
         width=64, height=64),
    dict(name="schnell_wide_2prompts", pipeline="flux-schnell-tiny",
         prompts=["a city street at night in the rain", "a bowl of fruit on a wooden table"],
         prompt_2=None, seed=1000, num_images_per_prompt=1, steps=2, guidance_scale=0.0,
         max_sequence_length=512, width=128, height=64),
    dict(name="schnell_tall_prompt2_msl77", pipeline="flux-schnell-tiny", prompts=["a white flower"],
         prompt_2="a macro photograph of a white flower with drops of water", seed=5,
         num_images_per_prompt=1, steps=3, guidance_scale=0.0, max_sequence_length=77,
         width=64, height=128),
    dict(name="schnell_long_msl32_2per", pipeline="flux-schnell-tiny", prompts=[LONG], prompt_2=None,
         seed=31, num_images_per_prompt=2, steps=2, guidance_scale=0.0, max_sequence_length=32,
         width=64, height=64),
]

# (width, height, steps) whose mu / timesteps / sigmas go into expected/<pipeline>/schedules.safetensors:
# the case sizes plus real FLUX resolutions (the token count, hence mu, matches the real models
# since the tiny VAE also downsamples 8x).
SCHEDULE_SIZES = [(64, 64, 3), (128, 64, 2), (64, 128, 3), (64, 64, 4), (64, 64, 1), (256, 256, 28),
                  (512, 512, 28), (1024, 1024, 28), (1024, 1024, 50), (1360, 768, 28), (768, 1360, 4),
                  (2048, 2048, 4), (1024, 1024, 4)]


def resave_sharded(model, comp_dir, n, weights_prefix):
    """Rewrites comp_dir's weights as n shards + index (as the real FLUX.1 repositories): the
    smallest max_shard_size (on a 1/64-of-total grid) for which save_pretrained writes n files."""
    for f in glob.glob(os.path.join(comp_dir, weights_prefix + "*")):
        os.remove(f)
    total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    index = os.path.join(comp_dir, weights_prefix + ".safetensors.index.json")
    for k in range(64 // n, 65):
        cap = total * k // 64
        model.save_pretrained(comp_dir, safe_serialization=True, max_shard_size=cap)
        shards = sorted(glob.glob(os.path.join(comp_dir, weights_prefix + "-*-of-*.safetensors")))
        if len(shards) == n and os.path.exists(index):
            return
        for f in glob.glob(os.path.join(comp_dir, weights_prefix + "*")):
            os.remove(f)
    raise RuntimeError(f"{comp_dir}: no max_shard_size gives {n} shards")


def perturb_norms(model, seed, scale=0.1):
    """Norm layers are initialised to weight 1 / bias 0; give them random affine parameters
    (weight *= 1 + scale*randn, bias += scale*randn) so that a forward pass that skips them
    cannot match. Every module with a 1-D `weight` whose class name contains "Norm"."""
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for name, mod in model.named_modules():
            w = getattr(mod, "weight", None)
            if "Norm" not in type(mod).__name__ or not isinstance(w, torch.nn.Parameter) or w.ndim != 1:
                continue
            w.mul_(1 + scale * torch.randn(w.shape, generator=g))
            b = getattr(mod, "bias", None)
            if isinstance(b, torch.nn.Parameter):
                b.add_(scale * torch.randn(b.shape, generator=g))


def condition_transformer(tr, qk_gain, pooled_gain):
    """Random init leaves the image tokens nearly blind to the text: q/k pass through RMSNorm
    (so attention logits are ~N(0,1) and 512 text keys average out) and the pooled CLIP vector
    is one small term of the modulation. Multiply the q/k RMSNorm weights (logits x qk_gain^2)
    and the pooled-text embedder's first linear weight so that the latents depend on both
    the T5 and the CLIP input by several percent."""
    with torch.no_grad():
        for name, p in tr.named_parameters():
            if name.endswith(("norm_q.weight", "norm_k.weight", "norm_added_q.weight", "norm_added_k.weight")):
                p.mul_(qk_gain)
        tr.time_text_embed.text_embedder.linear_1.weight.mul_(pooled_gain)


def build_pipeline(spec, tok_dir, tok2_dir):
    """Random-weight FluxPipeline; every model built right after its own torch.manual_seed."""
    import clip_vocab
    clip_vocab.write_truncated_tokenizer_dir(tok_dir, sdref.clip_vocab_bpe(), spec["merges"], pad=spec["pad"])
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    tokenizer_2 = T5TokenizerFast.from_pretrained(tok2_dir)
    text = dict(spec["text"], vocab_size=len(tokenizer))
    torch.manual_seed(1)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text)).eval()
    perturb_norms(text_encoder, 11)
    torch.manual_seed(2)
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), **spec["t5"])).eval()
    perturb_norms(text_encoder_2, 12)
    torch.manual_seed(3)
    transformer = FluxTransformer2DModel(**spec["transformer"]).eval()
    perturb_norms(transformer, 13)
    condition_transformer(transformer, QK_GAIN, POOLED_GAIN)
    torch.manual_seed(4)
    vae = AutoencoderKL(**spec["vae"]).eval()
    perturb_norms(vae, 14)
    sconf = {k: v for k, v in spec["scheduler"].items() if not k.startswith("_")}
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(sconf)
    return FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer)


def save_flux_pipeline(pipe, spec, folder, tok2_dir):
    # save_pretrained + the SD layout fixes shared with make_pipelines.py: tokenizer/ as
    # vocab.json/merges.txt/tokenizer_config.json/special_tokens_map.json, text_encoder keys
    # with the "text_model." prefix, scheduler_config.json verbatim.
    sdref.save_pipeline(pipe, spec, folder)
    # tokenizer_2/ exactly as t5_vocab writes it (spiece.model + tokenizer.json + configs)
    shutil.rmtree(os.path.join(folder, "tokenizer_2"))
    shutil.copytree(tok2_dir, os.path.join(folder, "tokenizer_2"))
    # sharded weights with *.safetensors.index.json, as the real repositories
    resave_sharded(pipe.text_encoder_2, os.path.join(folder, "text_encoder_2"), spec["t5_shards"], "model")
    if spec["transformer_shards"] > 1:
        resave_sharded(pipe.transformer, os.path.join(folder, "transformer"), spec["transformer_shards"],
                       "diffusion_pytorch_model")
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(model_index(spec["index_version"]), f, indent=2)
        f.write("\n")


def load_flux_pipeline(folder):
    for comp, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", T5EncoderModel),
                      ("transformer", FluxTransformer2DModel), ("vae", AutoencoderKL)):
        _, info = cls.from_pretrained(os.path.join(folder, comp), output_loading_info=True)
        bad = {k: v for k, v in info.items() if v}
        if bad:
            sys.exit(f"make_flux_pipelines.py: {folder}/{comp} did not reload cleanly: {bad}")
    pipe = FluxPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def fresh_scheduler(pipe, base_config):
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(base_config)


def case_seeds(case):
    n = len(case["prompts"]) * case["num_images_per_prompt"]
    return [case["seed"] + i for i in range(n)]


def call_args(case):
    prompts = case["prompts"]
    prompt = prompts[0] if len(prompts) == 1 else list(prompts)
    p2 = case["prompt_2"]
    if p2 is not None and isinstance(prompt, list):
        p2 = [p2] * len(prompt)
    return dict(prompt=prompt, prompt_2=p2, num_inference_steps=case["steps"],
                guidance_scale=case["guidance_scale"], width=case["width"], height=case["height"],
                max_sequence_length=case["max_sequence_length"],
                num_images_per_prompt=case["num_images_per_prompt"])


def run_case(pipe, base_config, case, output_type, latents=None):
    fresh_scheduler(pipe, base_config)
    gens = [torch.Generator("cpu").manual_seed(s) for s in case_seeds(case)]
    with torch.no_grad():
        out = pipe(**call_args(case), generator=gens, latents=latents, output_type=output_type)
    return out.images


def time_shift_schedule(config, width, height, steps, vae_scale_factor=8):
    """mu, timesteps, sigmas exactly as FluxPipeline.__call__ computes them."""
    sched = FlowMatchEulerDiscreteScheduler.from_config(config)
    h = 2 * (height // (vae_scale_factor * 2))
    w = 2 * (width // (vae_scale_factor * 2))
    seq = (h // 2) * (w // 2)
    mu = calculate_shift(seq, sched.config.get("base_image_seq_len", 256),
                         sched.config.get("max_image_seq_len", 4096),
                         sched.config.get("base_shift", 0.5), sched.config.get("max_shift", 1.15))
    sigmas = np.linspace(1.0, 1 / steps, steps)
    sched.set_timesteps(steps, device="cpu", sigmas=sigmas, mu=mu)
    return seq, mu, sched.timesteps.clone(), sched.sigmas.clone()


@torch.no_grad()
def stages(pipe, base_config, case, final_latents):
    """Intermediate tensors of `case` (one prompt, batch 1), recomputed step by step."""
    assert len(case["prompts"]) == 1 and case["num_images_per_prompt"] == 1
    prompt = case["prompts"][0]
    prompt_2 = case["prompt_2"] or prompt
    msl = case["max_sequence_length"]
    dev = torch.device("cpu")
    t = {}
    ci = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer_max_length,
                        truncation=True, return_tensors="pt").input_ids
    ti = pipe.tokenizer_2(prompt_2, padding="max_length", max_length=msl, truncation=True,
                          return_tensors="pt").input_ids
    t["clip_input_ids"], t["t5_input_ids"] = ci, ti
    clip_out = pipe.text_encoder(ci, output_hidden_states=False)
    t["clip_last_hidden_state"] = clip_out.last_hidden_state
    pe, pooled, text_ids = pipe.encode_prompt(prompt=prompt, prompt_2=case["prompt_2"], device=dev,
                                              num_images_per_prompt=1, max_sequence_length=msl)
    assert torch.equal(pooled, clip_out.pooler_output)
    assert torch.equal(pe, pipe.text_encoder_2(ti)[0])
    t["prompt_embeds"], t["pooled_prompt_embeds"], t["text_ids"] = pe, pooled, text_ids

    nc = pipe.transformer.config.in_channels // 4
    vsf = pipe.vae_scale_factor
    h = 2 * (case["height"] // (vsf * 2))
    w = 2 * (case["width"] // (vsf * 2))
    gen = torch.Generator("cpu").manual_seed(case["seed"])
    noise = randn_tensor((1, nc, h, w), generator=gen, device=dev, dtype=torch.float32)
    t["init_noise"] = noise  # randn, unpacked [1,16,h,w]
    lat = pipe._pack_latents(noise, 1, nc, h, w)
    t["init_latents"] = lat  # packed [1, h/2*w/2, 64]
    img_ids = pipe._prepare_latent_image_ids(1, h // 2, w // 2, dev, torch.float32)
    t["latent_image_ids"] = img_ids

    seq, mu, timesteps, sigmas = time_shift_schedule(base_config, case["width"], case["height"],
                                                     case["steps"], vsf)
    assert seq == lat.shape[1]
    t["mu"] = torch.tensor([mu], dtype=torch.float64)
    t["timesteps"], t["sigmas"] = timesteps, sigmas
    fresh_scheduler(pipe, base_config)
    sched = pipe.scheduler
    sched.set_timesteps(case["steps"], device="cpu", sigmas=np.linspace(1.0, 1 / case["steps"], case["steps"]),
                        mu=mu)
    assert torch.equal(sched.timesteps, timesteps) and torch.equal(sched.sigmas, sigmas)
    sched.set_begin_index(0)
    if pipe.transformer.config.guidance_embeds:
        guidance = torch.full([1], case["guidance_scale"], dtype=torch.float32).expand(1)
        t["guidance"] = guidance.contiguous()
    else:
        guidance = None
    x = lat
    for i, ts in enumerate(timesteps):
        tt = ts.expand(1).to(x.dtype) / 1000
        out = pipe.transformer(hidden_states=x, timestep=tt, guidance=guidance,
                               pooled_projections=pooled, encoder_hidden_states=pe, txt_ids=text_ids,
                               img_ids=img_ids, return_dict=False)[0]
        if i == 0:
            t["transformer_timestep"] = tt.clone()  # = timesteps[0] / 1000, shape [1]
            t["transformer_output"] = out
        x = sched.step(out, ts, x, return_dict=False)[0]
        if i == 0:
            t["latents_after_step0"] = x
    if not torch.equal(x, final_latents):
        raise RuntimeError(f"stages: step-by-step latents differ from the pipeline's by "
                           f"{float((x - final_latents).abs().max()):.3g}")
    t["final_latents"] = final_latents
    un = pipe._unpack_latents(final_latents, case["height"], case["width"], vsf)
    t["unpacked_latents"] = un
    vin = (un / pipe.vae.config.scaling_factor) + pipe.vae.config.shift_factor
    t["vae_input"] = vin
    t["vae_decoded"] = pipe.vae.decode(vin, return_dict=False)[0]  # [-1,1]-ish, before postprocess
    return {k: v.detach().contiguous() for k, v in t.items()}


def schedules(base_config):
    out = {}
    for (w, h, n) in SCHEDULE_SIZES:
        seq, mu, ts, sg = time_shift_schedule(base_config, w, h, n)
        key = f"{w}x{h}_{n}"
        out[key + "_mu"] = torch.tensor([mu], dtype=torch.float64)
        out[key + "_timesteps"] = ts.contiguous()
        out[key + "_sigmas"] = sg.contiguous()
    return out


@torch.no_grad()
def float64_check(pipe, base_config, case, lat32):
    """Max relative difference of the float32 latents to a float64 run from the same noise."""
    nc = pipe.transformer.config.in_channels // 4
    vsf = pipe.vae_scale_factor
    h = 2 * (case["height"] // (vsf * 2))
    w = 2 * (case["width"] // (vsf * 2))
    gens = [torch.Generator("cpu").manual_seed(s) for s in case_seeds(case)]
    noise = randn_tensor((len(gens), nc, h, w), generator=gens, device=torch.device("cpu"),
                         dtype=torch.float32)
    packed = pipe._pack_latents(noise, len(gens), nc, h, w).double()
    # on a copy: a float64 round trip of the loaded pipeline changes its float32 results slightly
    p64 = copy.deepcopy(pipe).to(torch.float64)
    fresh_scheduler(p64, base_config)
    out = p64(**call_args(case), latents=packed, output_type="latent").images
    return float((out - lat32.double()).abs().max() / lat32.double().abs().max())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "flux_pipelines"))
    ap.add_argument("--no-verify", action="store_true",
                    help="skip the in-memory and float64 re-runs of every case")
    a = ap.parse_args()
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    os.makedirs(a.out, exist_ok=True)
    exp_root = os.path.join(a.out, "expected")
    if os.path.exists(exp_root):
        shutil.rmtree(exp_root)
    tmp = os.path.join(a.out, ".tmp_tokenizer")
    t5_tok = os.path.join(a.out, ".tmp_t5_tokenizer")  # trained once (deterministic), copied twice
    if os.path.exists(t5_tok):
        shutil.rmtree(t5_tok)
    t5_vocab.write_t5_tokenizer_dir(t5_tok)

    cases_out = []
    worst = worst64 = 0.0
    for pname, spec in PIPELINES.items():
        folder = os.path.join(a.out, pname)
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        built = build_pipeline(spec, os.path.join(tmp, "clip"), t5_tok)
        built.set_progress_bar_config(disable=True)
        shutil.rmtree(tmp)
        save_flux_pipeline(built, spec, folder, t5_tok)
        pipe = load_flux_pipeline(folder)  # fixtures come from the pipeline as loaded from disk
        base_config = dict(spec["scheduler"])
        exp = os.path.join(exp_root, pname)
        os.makedirs(exp)
        save_file(schedules(base_config), os.path.join(exp, "schedules.safetensors"))
        pcases = [c for c in CASES if c["pipeline"] == pname]
        first_lat = None
        for ci, case in enumerate(pcases):
            lat = run_case(pipe, base_config, case, "latent")
            imgs = run_case(pipe, base_config, case, "pil")
            seeds = case_seeds(case)
            assert lat.shape[0] == len(seeds) == len(imgs)
            if not torch.isfinite(lat).all():
                sys.exit(f"make_flux_pipelines.py: {case['name']}: non-finite latents")
            lat_file = f"expected/{pname}/{case['name']}.safetensors"
            save_file({"latents": lat.contiguous()}, os.path.join(a.out, lat_file))
            png_files = []
            for i, im in enumerate(imgs):
                f = f"expected/{pname}/{case['name']}_{i}.png"
                im.save(os.path.join(a.out, f))
                png_files.append(f)
            diff = d64 = None
            if not a.no_verify:
                ref = run_case(built, base_config, case, "latent")
                diff = float((ref - lat).abs().max())
                worst = max(worst, diff)
                d64 = float64_check(pipe, base_config, case, lat)
                worst64 = max(worst64, d64)
            arr = np.stack([np.asarray(im) for im in imgs])
            sat = float(((arr == 0) | (arr == 255)).mean())
            print(f"{pname:17s} {case['name']:26s} latents {tuple(lat.shape)} "
                  f"absmax {float(lat.abs().max()):.3g} std {float(lat.std()):.3g} "
                  f"px [{arr.min()},{arr.max()}] mean {arr.mean():.1f} sat {sat:.3f}"
                  + ("" if diff is None else f"  reload-vs-memory {diff:.3g} f64-rel {d64:.2g}"))
            if ci == 0:
                first_lat = lat
            entry = dict(case)
            argv = ["generate", "--model", pname]
            for pr in case["prompts"]:
                argv += ["--prompt", pr]
            if case["prompt_2"] is not None:
                argv += ["--prompt-2", case["prompt_2"]]  # not in the CLI contract yet
            argv += ["--seed", str(case["seed"]), "--steps", str(case["steps"]),
                     "--guidance", repr(case["guidance_scale"]), "--width", str(case["width"]),
                     "--height", str(case["height"]),
                     "--max-sequence-length", str(case["max_sequence_length"]),
                     "--num-images-per-prompt", str(case["num_images_per_prompt"])]
            entry["tandem_argv"] = argv  # --model relative to cases.json's folder
            entry["seeds"] = seeds
            entry["latents"] = lat_file
            entry["latent_shape"] = list(lat.shape)
            entry["images"] = png_files
            seq, mu, ts, sg = time_shift_schedule(base_config, case["width"], case["height"], case["steps"])
            entry["image_seq_len"] = seq
            entry["mu"] = mu
            entry["timesteps"] = [float(v) for v in ts]
            entry["sigmas"] = [float(v) for v in sg]
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
        if not a.no_verify:  # a second, independent reload reproduces the saved latents
            again = load_flux_pipeline(folder)
            for case in pcases:
                saved = load_file(os.path.join(a.out, f"expected/{pname}/{case['name']}.safetensors"))["latents"]
                d = float((run_case(again, base_config, case, "latent") - saved).abs().max())
                if d != 0.0:
                    sys.exit(f"make_flux_pipelines.py: {case['name']}: reloaded folder gives latents "
                             f"differing by {d:.3g}")
            print(f"{pname:17s} fresh FluxPipeline.from_pretrained reproduces all saved latents exactly")
            del again
        # conditioning: the prompt must matter (same seed/size, another prompt)
        c0 = dict(pcases[0], prompts=["a green bicycle"], prompt_2=None)
        other = run_case(pipe, base_config, c0, "latent")
        rel = float((other - first_lat).abs().max() / first_lat.abs().max())
        print(f"{pname:17s} prompt dependence: max rel latent change for another prompt {rel:.3g}")
        if rel < 1e-2:
            sys.exit(f"make_flux_pipelines.py: {pname}: latents barely depend on the prompt ({rel:.3g})")

    shutil.rmtree(t5_tok)
    doc = {
        "about": "Golden end-to-end FLUX.1 cases for tools/ref/make_flux_pipelines.py; paths are "
                 "relative to this file's folder. Image i of a case uses seeds[i] = seed + i "
                 "(torch.Generator('cpu').manual_seed, one generator per image; prompts x "
                 "num_images_per_prompt, prompt-major). prompt_2 (T5 input) null means the prompt "
                 "itself; a string applies to every prompt. latents are exactly "
                 "output_type='latent': packed [B, (H/16)*(W/16), 64]. images: output_type='pil' "
                 "PNGs. mu/timesteps/sigmas: the schedule FluxPipeline computed for the case "
                 "(mu is float64, timesteps/sigmas float32 values). tandem_argv uses --prompt-2, "
                 "which the CLI contract does not list yet.",
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "python": sys.version.split()[0],
                     "aten_cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "tolerance": {"latents_rel": 1e-4, "png_abs": 1},
        "pipelines": {p: {"folder": p, "scheduler": s["scheduler"]["_class_name"],
                          "guidance_embeds": s["transformer"]["guidance_embeds"],
                          "vae_scale_factor": 2 ** (len(s["vae"]["block_out_channels"]) - 1),
                          "default_size": 128 * 2 ** (len(s["vae"]["block_out_channels"]) - 1),
                          # FluxPipeline.__call__ has one set of defaults for every FLUX
                          # model (it does not know schnell); model_card = what the
                          # black-forest-labs model cards pass explicitly.
                          "diffusers_call_defaults": dict(steps=28, guidance_scale=3.5,
                                                          max_sequence_length=512),
                          "model_card": s["model_card"],
                          "schedules": f"expected/{p}/schedules.safetensors"}
                      for p, s in PIPELINES.items()},
        "stages_about": "expected/<pipeline>/stages.safetensors follows the first case of that "
                        "pipeline (one prompt, batch 1). transformer_output = transformer("
                        "hidden_states=init_latents, timestep=transformer_timestep (= timesteps[0]/1000), "
                        "guidance=guidance (dev only; absent for schnell), pooled_projections="
                        "pooled_prompt_embeds, encoder_hidden_states=prompt_embeds, txt_ids=text_ids, "
                        "img_ids=latent_image_ids). vae_input = unpacked_latents / scaling_factor + "
                        "shift_factor; vae_decoded = vae.decode(vae_input) before postprocess. mu is "
                        "float64. schedules.safetensors: <W>x<H>_<steps>_{mu,timesteps,sigmas}.",
        "stages_tensors": ["clip_input_ids", "t5_input_ids", "clip_last_hidden_state",
                           "prompt_embeds", "pooled_prompt_embeds", "text_ids", "init_noise",
                           "init_latents", "latent_image_ids", "mu", "timesteps", "sigmas",
                           "guidance", "transformer_timestep", "transformer_output",
                           "latents_after_step0", "final_latents", "unpacked_latents", "vae_input",
                           "vae_decoded"],
        "schedule_sizes": [list(s) for s in SCHEDULE_SIZES],
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
        print(f"reloaded vs in-memory pipelines: max |latents diff| = {worst:.3g}; "
              f"float32 vs float64 (same noise): max rel diff = {worst64:.2g}")


if __name__ == "__main__":
    main()
