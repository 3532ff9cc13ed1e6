"""Train the demo model (dev time only): data -> KL autoencoder -> text encoder + UNet -> folder.

    python tools/train/train.py vae    --work DIR            # autoencoder on rendered scenes
    python tools/train/train.py unet   --work DIR            # CLIP text encoder + UNet, EMA
    python tools/train/train.py export --work DIR --out models/shapes-64

Everything is seeded; the data is rendered by data.py (no downloads). Runs on the CPU (torch's
2 threads on the project's 2-core machine) or a GPU (`--device cuda`). The stages write their
checkpoints and a loss log (`*_loss.tsv`) under --work, so a stage can be rerun alone.
"""
import argparse
import json
import math
import os
import shutil
import time

import numpy as np
import torch
import torch.nn.functional as F

import data
import tokenizer as tok

MAX_LENGTH = 32

VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
    block_out_channels=[16, 32, 64, 64], down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4, sample_size=data.SIZE, act_fn="silu")

UNET_CONFIG = dict(
    sample_size=data.SIZE // 8, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=[64, 128, 192], norm_num_groups=16, cross_attention_dim=128,
    attention_head_dim=4,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])

TEXT_CONFIG = dict(
    hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4,
    max_position_embeddings=MAX_LENGTH, hidden_act="quick_gelu", projection_dim=128)

# Stable Diffusion 1.5's scheduler_config.json (training uses the same betas through DDPM)
SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None, "clip_sample": False}


def render(n, seed):
    rng = np.random.default_rng(seed)
    imgs = np.empty((n, data.SIZE, data.SIZE, 3), np.uint8)
    attrs = []
    for i in range(n):
        imgs[i], a = data.sample(rng)
        attrs.append(a)
    return imgs, attrs


def to_tensor(u8):
    return torch.from_numpy(u8).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def lr_at(step, total, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def set_lr(opt, lr):
    for pg in opt.param_groups:
        pg["lr"] = lr


def next_logged_step(path):
    """One past the last step logged in `path` (a resumed stage's log continues from there)."""
    with open(path) as f:
        return int(f.read().split("\n")[-2].split("\t")[0]) + 1


def vae_batch(imgs, a, g):
    """A random batch of scenes in [-1, 1]."""
    idx = torch.randint(len(imgs), (a.vae_batch,), generator=g).numpy()
    return to_tensor(imgs[idx]).to(a.device)


def sample_posterior(post, g, device):
    return post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(device)


def log_line(path, step, loss, t0):
    with open(path, "a") as f:
        f.write(f"{step}\t{loss:.6f}\t{time.time() - t0:.1f}\n")


def train_vae(a):
    from diffusers import AutoencoderKL
    torch.manual_seed(1)
    logp = os.path.join(a.work, "vae_loss.tsv")
    offset = 0
    if a.vae_resume:  # a second run from the saved weights (fresh optimizer), its log appended
        vae = AutoencoderKL.from_pretrained(os.path.join(a.work, "vae")).to(a.device)
        offset = next_logged_step(logp)
    else:
        vae = AutoencoderKL(**VAE_CONFIG).to(a.device)
        open(logp, "w").close()
    imgs, _ = render(a.vae_images, seed=1)
    opt = torch.optim.AdamW(vae.parameters(), lr=a.vae_lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(11 + offset)
    t0, run = time.time(), 0.0
    for step in range(a.vae_steps):
        set_lr(opt, lr_at(step, a.vae_steps, a.vae_lr, 100))
        x = vae_batch(imgs, a, g)
        post = vae.encode(x).latent_dist
        z = sample_posterior(post, g, a.device)
        y = vae.decode(z).sample
        rec = F.mse_loss(y, x) + 0.5 * F.l1_loss(y, x)
        kl = post.kl().mean() / x[0].numel()
        loss = rec + a.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        run = loss.item() if step == 0 else 0.98 * run + 0.02 * loss.item()
        if step % 50 == 0 or step == a.vae_steps - 1:
            log_line(logp, offset + step, run, t0)
            print(f"vae {offset + step} loss {run:.5f} rec {rec.item():.5f} kl {kl.item():.3f} {time.time() - t0:.0f}s",
                  flush=True)
    # latent scale as Stable Diffusion chose it: 1 / std of the posterior samples
    with torch.no_grad():
        x = to_tensor(imgs[:512]).to(a.device)
        z = vae.encode(x).latent_dist.sample(generator=None)
        scale = float(1.0 / z.flatten().std())
    vae.register_to_config(scaling_factor=round(scale, 5))
    vae.save_pretrained(os.path.join(a.work, "vae"))
    print("vae saved; scaling_factor", scale)


def train_decoder(a):
    """Decoder-only fine-tuning (as Stable Diffusion's ft-MSE VAE): the encoder and the latent
    space stay as they are, so a UNet trained on them needs nothing redone."""
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(os.path.join(a.work, "vae")).to(a.device)
    for p in list(vae.encoder.parameters()) + list(vae.quant_conv.parameters()):
        p.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    imgs, _ = render(a.vae_images, seed=4)
    opt = torch.optim.AdamW(params, lr=a.dec_lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(14)
    logp = os.path.join(a.work, "vae_loss.tsv")
    offset = next_logged_step(logp)
    t0, run = time.time(), 0.0
    for step in range(a.dec_steps):
        set_lr(opt, lr_at(step, a.dec_steps, a.dec_lr, 50))
        x = vae_batch(imgs, a, g)
        with torch.no_grad():
            z = sample_posterior(vae.encode(x).latent_dist, g, a.device)
        y = vae.decode(z).sample
        loss = F.mse_loss(y, x) + 0.5 * F.l1_loss(y, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        run = loss.item() if step == 0 else 0.98 * run + 0.02 * loss.item()
        if step % 50 == 0 or step == a.dec_steps - 1:
            log_line(logp, offset + step, run, t0)
            print(f"decoder {offset + step} loss {run:.5f} {time.time() - t0:.0f}s", flush=True)
    vae.save_pretrained(os.path.join(a.work, "vae"))
    print("vae (fine-tuned decoder) saved", flush=True)


def encode_dataset(vae, imgs, device, batch=256):
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(imgs), batch):
            post = vae.encode(to_tensor(imgs[i:i + batch]).to(device)).latent_dist
            means.append(post.mean.cpu())
            stds.append(post.std.cpu())
    return torch.cat(means), torch.cat(stds)


def train_unet(a):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokdir = os.path.join(a.work, "tokenizer")
    ntok = tok.write_tokenizer(tokdir, MAX_LENGTH)
    tokz = CLIPTokenizer.from_pretrained(tokdir)
    vae = AutoencoderKL.from_pretrained(os.path.join(a.work, "vae")).to(a.device).eval()
    sf = vae.config.scaling_factor
    cache = os.path.join(a.work, "latents.pt")
    if os.path.exists(cache):
        mean, std, attrs = torch.load(cache, weights_only=False)
    else:
        t = time.time()
        imgs, attrs = render(a.unet_images, seed=2)
        mean, std = encode_dataset(vae, imgs, a.device)
        torch.save((mean, std, attrs), cache)
        print(f"encoded {len(imgs)} images in {time.time() - t:.0f}s", flush=True)
    del vae

    torch.manual_seed(2)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=ntok, bos_token_id=ntok - 2, eos_token_id=ntok - 1,
                                        pad_token_id=ntok - 1, **TEXT_CONFIG)).to(a.device)
    torch.manual_seed(3)
    unet = UNet2DConditionModel(**UNET_CONFIG).to(a.device)
    params = list(text.parameters()) + list(unet.parameters())
    print(f"text encoder {sum(p.numel() for p in text.parameters()):,} params, "
          f"UNet {sum(p.numel() for p in unet.parameters()):,}", flush=True)
    ema = [p.detach().clone() for p in params]
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          num_train_timesteps=1000)
    opt = torch.optim.AdamW(params, lr=a.unet_lr, weight_decay=0.01)
    rng = np.random.default_rng(12)
    g = torch.Generator().manual_seed(12)
    logp = os.path.join(a.work, "unet_loss.tsv")
    open(logp, "w").close()
    t0, run = time.time(), 0.0
    for step in range(a.unet_steps):
        set_lr(opt, lr_at(step, a.unet_steps, a.unet_lr, 200))
        idx = rng.integers(len(mean), size=a.unet_batch)
        caps = ["" if rng.random() < 0.1 else data.caption(attrs[i], rng) for i in idx]
        ids = tokz(caps, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                   return_tensors="pt").input_ids.to(a.device)
        z = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * sf
        noise = torch.randn(z.shape, generator=g)
        if a.offset_noise:  # per-channel mean shifts: plain backgrounds come out in their colour
            noise = noise + a.offset_noise * torch.randn(z.shape[:2] + (1, 1), generator=g)
        t = torch.randint(0, 1000, (a.unet_batch,), generator=g)
        zt = sched.add_noise(z, noise, t)
        cond = text(ids).last_hidden_state
        pred = unet(zt.to(a.device), t.to(a.device), cond).sample
        loss = F.mse_loss(pred, noise.to(a.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        d = min(a.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(d).add_(p.detach(), alpha=1 - d)
        run = loss.item() if step == 0 else 0.98 * run + 0.02 * loss.item()
        if step % 50 == 0 or step == a.unet_steps - 1:
            log_line(logp, step, run, t0)
            print(f"unet {step} loss {run:.5f} {time.time() - t0:.0f}s", flush=True)
        if (step + 1) % 1000 == 0 or step == a.unet_steps - 1:
            save_unet(a, text, unet, ema, params, tokdir)


def save_unet(a, text, unet, ema, params, tokdir):
    with torch.no_grad():
        live = [p.detach().clone() for p in params]
        for p, e in zip(params, ema):
            p.copy_(e)
        text.save_pretrained(os.path.join(a.work, "text_encoder"))
        unet.save_pretrained(os.path.join(a.work, "unet"))
        for p, l in zip(params, live):
            p.copy_(l)
    print("saved EMA weights", flush=True)


def export(a):
    """The diffusers folder in the Hub layout: fp16 safetensors, tokenizer without tokenizer.json."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    w = a.work
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(os.path.join(w, "vae")),
        text_encoder=CLIPTextModel.from_pretrained(os.path.join(w, "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(os.path.join(w, "tokenizer")),
        unet=UNet2DConditionModel.from_pretrained(os.path.join(w, "unet")),
        scheduler=PNDMScheduler.from_config(SCHEDULER_CONFIG),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = pipe.to(torch.float16)
    for comp in ("text_encoder", "tokenizer", "unet", "vae", "scheduler"):  # the card stays
        if os.path.exists(os.path.join(a.out, comp)):
            shutil.rmtree(os.path.join(a.out, comp))
    pipe.save_pretrained(a.out, safe_serialization=True)
    shutil.rmtree(os.path.join(a.out, "tokenizer"))
    shutil.copytree(os.path.join(w, "tokenizer"), os.path.join(a.out, "tokenizer"))
    with open(os.path.join(a.out, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(SCHEDULER_CONFIG, f, indent=2)
    for f in ("vae_loss.tsv", "unet_loss.tsv"):
        if os.path.exists(os.path.join(w, f)):
            shutil.copy(os.path.join(w, f), os.path.join(a.out, f))
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(a.out) for f in fs)
    print(f"wrote {a.out}: {total / 1e6:.1f} MB")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("stage", choices=["vae", "unet", "decoder", "export"])
    p.add_argument("--work", required=True)
    p.add_argument("--out", default="models/shapes-64")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vae-steps", type=int, default=1000)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-kl", type=float, default=2e-4)
    p.add_argument("--vae-images", type=int, default=8000)
    p.add_argument("--vae-resume", action="store_true")
    p.add_argument("--dec-steps", type=int, default=2000)
    p.add_argument("--dec-lr", type=float, default=5e-4)
    p.add_argument("--unet-steps", type=int, default=6000)
    p.add_argument("--unet-batch", type=int, default=64)
    p.add_argument("--unet-lr", type=float, default=6e-4)
    p.add_argument("--unet-images", type=int, default=40000)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--offset-noise", type=float, default=0.05)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    os.makedirs(a.work, exist_ok=True)
    {"vae": train_vae, "unet": train_unet, "decoder": train_decoder, "export": export}[a.stage](a)


if __name__ == "__main__":
    main()
