"""PyTorch/diffusers side of the VAE GPU benchmark (bench/run_t5_vae_gpu.sh); not a test.

  ref_vae_gpu.py build DIR                      DIR/vae: AutoencoderKL with FLUX.1's config (16 latent
      channels, blocks 128/256/512/512, 2 layers per block, no quant convs), diffusers' own random
      init done on the GPU, saved float32 (as FLUX.1's vae folder is)
  ref_vae_gpu.py step DIR LATENT_H LATENT_W DTYPE ITERS   time vae.decode(z).sample, batch 1,
      eager (fp32 with TF32 off; the latents of bench_vae.c)
TINY=1 / REF_DEVICE=cpu: see ref_common.py.
"""
import sys

import torch

from ref_common import DEVICE, DTYPES, TINY, bench_input, building, exact_fp32, load, report, time_calls


def build(d):
    from diffusers import AutoencoderKL
    torch.manual_seed(0)
    blocks = (32, 32, 32, 32) if TINY else (128, 256, 512, 512)
    with building(torch.float32):
        m = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                          up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=blocks,
                          layers_per_block=1 if TINY else 2, act_fn="silu", latent_channels=16,
                          norm_num_groups=32, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
                          use_quant_conv=False, use_post_quant_conv=False, force_upcast=True,
                          mid_block_add_attention=True)
    m.save_pretrained(f"{d}/vae", safe_serialization=True)


def step(d, h, w, dtype, iters):
    from diffusers import AutoencoderKL
    exact_fp32()
    m, load_s = load(lambda: AutoencoderKL.from_pretrained(d, subfolder="vae", torch_dtype=DTYPES[dtype]))
    c = m.config.latent_channels
    z = bench_input((1, c, h, w), 1).to(DEVICE, DTYPES[dtype])
    f = 2 ** (len(m.config.block_out_channels) - 1)
    times, out, weights = time_calls(lambda: m.decode(z).sample, iters)
    report("diffusers", "vae_decode", dtype, times, out, weights, load_s, batch=1, latent=[c, h, w],
           image=[h * f, w * f])


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2])
    else:
        step(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
