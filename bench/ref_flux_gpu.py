"""PyTorch/diffusers side of the FLUX GPU benchmarks (bench/run_flux_gpu.sh, run_flux_full_gpu.sh);
not a test.

  ref_flux_gpu.py build DIR DOUBLE SINGLE   DIR/transformer: FluxTransformer2DModel at FLUX.1-dev's
      width (24 heads x 128, T5 4096, CLIP 768, guidance embedding) with DOUBLE + SINGLE blocks
      (19 + 38: the full 11.9 B-parameter model), diffusers' own random init (nn.Linear's uniform,
      std ~ 0.58/sqrt(fan_in): activations stay finite) done on the GPU in bf16, saved as bf16
      safetensors shards (~24 GB for the full model)
  ref_flux_gpu.py step DIR GRID_H GRID_W TXT DTYPE ITERS   one transformer forward, batch 1, eager,
      DTYPE fp32 (TF32 off) or bf16, the inputs of bench_flux.c; peak GPU memory counts the
      resident weights. Folders from ref_flux_cpu.py build (float32) work too.
  ref_flux_gpu.py offload DIR GRID_H GRID_W TXT MAX_MEMORY ITERS   the same forward in bf16 with
      the model loaded by accelerate through diffusers' from_pretrained(device_map="auto",
      max_memory=...) (MAX_MEMORY as tandem's flag, e.g. 0=8GiB,cpu=100GiB): the blocks that do
      not fit GPU 0 stay in host RAM and accelerate's hooks move them to the GPU per call
      (bench/run_offload_gpu.sh)
  ref_flux_gpu.py cp DIR GRID_H GRID_W TXT DTYPE ITERS ULYSSES RING   under torchrun
      --nproc_per_node=ULYSSES*RING: the step forward with diffusers' context parallelism
      (transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree, ring_degree)),
      NCCL, one GPU per rank); rank 0 reports (bench/run_parallel_gpu.sh)
TINY=1 / REF_DEVICE=cpu: see ref_common.py.
"""
import sys
import time

import torch

from ref_common import DEVICE, DTYPES, TINY, bench_input, building, exact_fp32, load, report, time_calls


def build(d, double, single):
    from diffusers import FluxTransformer2DModel
    torch.manual_seed(0)
    width = dict(num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32) if TINY else \
        dict(num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768)
    with building(torch.bfloat16):
        m = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=double, num_single_layers=single,
                                   attention_head_dim=128, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
                                   **width)
    m.save_pretrained(f"{d}/transformer", safe_serialization=True, max_shard_size="10GB")


def step(d, gh, gw, txt, dtype, iters):
    from diffusers import FluxTransformer2DModel
    exact_fp32()
    dt = DTYPES[dtype]
    m, load_s = load(lambda: FluxTransformer2DModel.from_pretrained(d, subfolder="transformer", torch_dtype=dt))
    run(m, gh, gw, txt, dtype, dt, iters, load_s)


def offload(d, gh, gw, txt, max_memory, iters):
    from diffusers import FluxTransformer2DModel
    mm = {}
    for item in max_memory.split(","):
        k, v = item.split("=")
        mm[int(k) if k.isdigit() else k] = v
    t0 = time.perf_counter()   # placed by accelerate: no .to(device)
    m = FluxTransformer2DModel.from_pretrained(d, subfolder="transformer", torch_dtype=torch.bfloat16,
                                               device_map="auto", max_memory=mm).eval()
    load_s = time.perf_counter() - t0
    run(m, gh, gw, txt, "bf16", torch.bfloat16, iters, load_s, max_memory=max_memory)


def cp(d, gh, gw, txt, dtype, iters, ulysses, ring):
    import os
    from diffusers import ContextParallelConfig, FluxTransformer2DModel
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.distributed.init_process_group(backend="nccl")
    dt = DTYPES[dtype]
    m, load_s = load(lambda: FluxTransformer2DModel.from_pretrained(d, subfolder="transformer", torch_dtype=dt))
    m.enable_parallelism(config=ContextParallelConfig(ulysses_degree=ulysses, ring_degree=ring))
    rank = torch.distributed.get_rank()
    run(m, gh, gw, txt, dtype, dt, iters, load_s, quiet=rank != 0, ranks=ulysses * ring, ulysses=ulysses,
        ring=ring)
    torch.distributed.destroy_process_group()


def run(m, gh, gw, txt, dtype, dt, iters, load_s, quiet=False, **extra):
    cfg, n = m.config, gh * gw
    img = bench_input((1, n, cfg.in_channels), 2).to(DEVICE, dt)
    enc = bench_input((1, txt, cfg.joint_attention_dim), 3).to(DEVICE, dt)
    pooled = bench_input((1, cfg.pooled_projection_dim), 4).to(DEVICE, dt)
    img_ids = torch.zeros(n, 3)
    img_ids[:, 1] = torch.arange(gh).repeat_interleave(gw)
    img_ids[:, 2] = torch.arange(gw).repeat(gh)
    kw = dict(hidden_states=img, encoder_hidden_states=enc, pooled_projections=pooled,
              timestep=torch.tensor([0.7], device=DEVICE, dtype=dt), img_ids=img_ids.to(DEVICE),
              txt_ids=torch.zeros(txt, 3, device=DEVICE), return_dict=False)
    if cfg.guidance_embeds:
        kw["guidance"] = torch.tensor([3.5], device=DEVICE, dtype=dt)
    times, out, weights = time_calls(lambda: m(**kw)[0], iters)
    if quiet:
        return
    report("diffusers", "flux_transformer", dtype, times, out, weights, load_s, batch=1, img_tokens=n,
           txt_tokens=txt, blocks=[cfg.num_layers, cfg.num_single_layers], **extra)


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "offload":
        offload(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7]))
    elif sys.argv[1] == "cp":
        cp(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7]),
           int(sys.argv[8]), int(sys.argv[9]))
    else:
        step(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7]))
