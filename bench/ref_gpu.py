"""PyTorch/diffusers side of the GPU UNet benchmark (bench/run_gpu.sh); not a test.

  ref_gpu.py build DIR            save an SD1.5-architecture UNet with random weights (float32)
  ref_gpu.py unet DIR DTYPE ITERS time one UNet step, 512x512, CFG batch 2, on cuda:0
                                  (DTYPE fp32 with TF32 off, or fp16), SDPA attention
  ref_gpu.py build-sdxl DIR       save SDXL base's UNet (its real config) with random weights (fp16)
  ref_gpu.py unet-sdxl DIR DTYPE ITERS  one SDXL UNet step, 1024x1024, CFG batch 2, with the
                                  added conditions (pooled text embeddings, time ids)
  ref_gpu.py pipe DIR STEPS       time a full fp16 image (text encoder, STEPS PNDM steps, VAE
                                  decode), 512x512, on cuda:0, after one warm-up image
"""
import json, sys

import torch


def build(d):
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8)
    unet.save_pretrained(f"{d}/unet", safe_serialization=True)


SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=2048,
    attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
    addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816)


def build_sdxl(d):
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    with torch.device("cuda"):
        unet = UNet2DConditionModel(**SDXL_UNET).half()
    unet.save_pretrained(f"{d}/unet", safe_serialization=True)


def step_sdxl(d, dtype, iters):
    from diffusers import UNet2DConditionModel
    dt = torch.float16 if dtype == "fp16" else torch.float32
    unet = UNet2DConditionModel.from_pretrained(d, subfolder="unet", torch_dtype=dt).to("cuda").eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 128, 128, generator=g).to("cuda", dt)
    ctx = torch.randn(2, 77, 2048, generator=g).to("cuda", dt)
    add = {"text_embeds": torch.randn(2, 1280, generator=g).to("cuda", dt),
           "time_ids": torch.tensor([[1024, 1024, 0, 0, 1024, 1024]] * 2, device="cuda", dtype=dt)}
    t = torch.tensor([981, 981], device="cuda")
    with torch.inference_mode():
        for _ in range(3):
            unet(x, t, encoder_hidden_states=ctx, added_cond_kwargs=add)
        torch.cuda.synchronize()
        times = []
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            unet(x, t, encoder_hidden_states=ctx, added_cond_kwargs=add)
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
    times.sort()
    print(json.dumps({"impl": "diffusers", "model": "sdxl-unet", "dtype": dtype, "torch": torch.__version__,
                      "gpu": torch.cuda.get_device_name(0), "step_ms_median": round(times[len(times) // 2], 2),
                      "step_ms_best": round(times[0], 2),
                      "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}))


def step(d, dtype, iters):
    from diffusers import UNet2DConditionModel
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dt = torch.float16 if dtype == "fp16" else torch.float32
    unet = UNet2DConditionModel.from_pretrained(d, subfolder="unet", torch_dtype=dt).to("cuda").eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 64, 64, generator=g).to("cuda", dt)
    ctx = torch.randn(2, 77, 768, generator=g).to("cuda", dt)
    t = torch.tensor([981, 981], device="cuda")
    with torch.inference_mode():
        for _ in range(3):
            unet(x, t, encoder_hidden_states=ctx)
        torch.cuda.synchronize()
        times = []
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            unet(x, t, encoder_hidden_states=ctx)
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
    times.sort()
    print(json.dumps({"impl": "diffusers", "dtype": dtype, "torch": torch.__version__,
                      "gpu": torch.cuda.get_device_name(0), "step_ms_median": round(times[len(times) // 2], 2),
                      "step_ms_best": round(times[0], 2),
                      "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}))


def pipe(d, steps):
    import time
    from diffusers import StableDiffusionPipeline
    p = StableDiffusionPipeline.from_pretrained(d, torch_dtype=torch.float16).to("cuda")
    p.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(0)
    p("warm-up", num_inference_steps=2, generator=g)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    p("a photograph of an astronaut riding a horse", num_inference_steps=steps, generator=g)
    torch.cuda.synchronize()
    print(json.dumps({"impl": "diffusers", "dtype": "fp16", "image_s": round(time.perf_counter() - t0, 3),
                      "steps": steps, "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}))


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2])
    elif sys.argv[1] == "build-sdxl":
        build_sdxl(sys.argv[2])
    elif sys.argv[1] == "unet-sdxl":
        step_sdxl(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "pipe":
        pipe(sys.argv[2], int(sys.argv[3]))
    else:
        step(sys.argv[2], sys.argv[3], int(sys.argv[4]))
