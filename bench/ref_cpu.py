"""PyTorch/diffusers side of the CPU benchmark (bench/run_cpu.sh); not a test.

  ref_cpu.py build DIR VOCAB_DIR    write an SD1.5-architecture pipeline with random weights
  ref_cpu.py unet DIR THREADS ITERS time one UNet step, 512x512, CFG batch 2, float32
  ref_cpu.py pipe DIR THREADS STEPS time a full image (text encoder, STEPS UNet steps, VAE decode)
Prints one JSON line per measurement.
"""
import json, resource, sys, time

import torch


def build(d, vocab):
    from diffusers import (AutoencoderKL, PNDMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8)
    text = CLIPTextModel(CLIPTextConfig(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu",
        projection_dim=768, bos_token_id=0, eos_token_id=2))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        block_out_channels=(128, 256, 512, 512), sample_size=512,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    sched = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True,
                          steps_offset=1)
    tok = CLIPTokenizer.from_pretrained(vocab)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(d, safe_serialization=True)


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def unet_step(d, threads, iters):
    from diffusers import UNet2DConditionModel
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    unet = UNet2DConditionModel.from_pretrained(d, subfolder="unet").eval()
    load = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 64, 64, generator=g)
    ctx = torch.randn(2, 77, 768, generator=g)
    t = torch.tensor([981, 981])
    times = []
    with torch.inference_mode():
        for _ in range(iters):
            t0 = time.perf_counter()
            unet(x, t, encoder_hidden_states=ctx)
            times.append(time.perf_counter() - t0)
    print(json.dumps({"impl": "diffusers", "torch": torch.__version__, "load_s": round(load, 3),
                      "step_s_best": round(min(times), 4),
                      "step_s_mean": round(sum(times) / len(times), 4),
                      "peak_rss_mib": round(peak_mib(), 1)}))


def full_image(d, threads, steps):
    from diffusers import StableDiffusionPipeline
    torch.set_num_threads(threads)
    pipe = StableDiffusionPipeline.from_pretrained(d)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    pipe("a photograph of an astronaut riding a horse", num_inference_steps=steps,
         generator=g, height=512, width=512).images[0].save("/tmp/bench_diffusers.png")
    dt = time.perf_counter() - t0
    print(json.dumps({"impl": "diffusers", "image_s": round(dt, 2), "steps": steps,
                      "peak_rss_mib": round(peak_mib(), 1)}))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "build":
        build(sys.argv[2], sys.argv[3])
    elif mode == "unet":
        unet_step(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "pipe":
        full_image(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
