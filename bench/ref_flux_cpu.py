"""PyTorch/diffusers side of the FLUX CPU benchmark (bench/run_flux_cpu.sh); not a test.

  ref_flux_cpu.py build DIR DOUBLE SINGLE           FluxTransformer2DModel at the real width
                                                    (24 heads x 128, T5 4096, CLIP 768), random weights
  ref_flux_cpu.py step DIR GRID_H GRID_W TXT THREADS ITERS   time one forward, float32
"""
import json, resource, sys, time

import torch


def build(d, double, single):
    from diffusers import FluxTransformer2DModel
    torch.manual_seed(0)
    m = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=double, num_single_layers=single,
                               attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                               pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))
    m.save_pretrained(f"{d}/transformer", safe_serialization=True)


def step(d, gh, gw, txt, threads, iters):
    from diffusers import FluxTransformer2DModel
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    m = FluxTransformer2DModel.from_pretrained(d, subfolder="transformer").eval()
    load = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    n = gh * gw
    img = torch.randn(1, n, 64, generator=g)
    enc = torch.randn(1, txt, 4096, generator=g)
    pooled = torch.randn(1, 768, generator=g)
    img_ids = torch.zeros(n, 3)
    img_ids[:, 1] = torch.arange(gh).repeat_interleave(gw)
    img_ids[:, 2] = torch.arange(gw).repeat(gh)
    txt_ids = torch.zeros(txt, 3)
    times = []
    with torch.inference_mode():
        for _ in range(iters):
            t0 = time.perf_counter()
            m(hidden_states=img, encoder_hidden_states=enc, pooled_projections=pooled,
              timestep=torch.tensor([0.7]), img_ids=img_ids, txt_ids=txt_ids,
              guidance=torch.tensor([3.5]), return_dict=False)
            times.append(time.perf_counter() - t0)
    print(json.dumps({"impl": "diffusers", "torch": torch.__version__, "load_s": round(load, 2),
                      "step_s_best": round(min(times), 3), "step_s_mean": round(sum(times) / len(times), 3),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)}))


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        step(sys.argv[2], *map(int, sys.argv[3:8]))
