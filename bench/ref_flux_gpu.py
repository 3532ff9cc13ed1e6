"""PyTorch/diffusers side of the FLUX GPU benchmark (bench/run_flux_gpu.sh); not a test.

  ref_flux_gpu.py step DIR GRID_H GRID_W TXT DTYPE ITERS   one transformer forward on cuda:0,
      DTYPE fp32 (TF32 off) or bf16; the folder is made by ref_flux_cpu.py build.
"""
import json, sys

import torch


def step(d, gh, gw, txt, dtype, iters):
    from diffusers import FluxTransformer2DModel
    torch.backends.cuda.matmul.allow_tf32 = False
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    m = FluxTransformer2DModel.from_pretrained(d, subfolder="transformer", torch_dtype=dt).to("cuda").eval()
    g = torch.Generator().manual_seed(0)
    n = gh * gw
    img = torch.randn(1, n, 64, generator=g).to("cuda", dt)
    enc = torch.randn(1, txt, 4096, generator=g).to("cuda", dt)
    pooled = torch.randn(1, 768, generator=g).to("cuda", dt)
    img_ids = torch.zeros(n, 3)
    img_ids[:, 1] = torch.arange(gh).repeat_interleave(gw)
    img_ids[:, 2] = torch.arange(gw).repeat(gh)
    img_ids, txt_ids = img_ids.cuda(), torch.zeros(txt, 3).cuda()
    kw = dict(hidden_states=img, encoder_hidden_states=enc, pooled_projections=pooled,
              timestep=torch.tensor([0.7], device="cuda", dtype=dt), img_ids=img_ids, txt_ids=txt_ids,
              guidance=torch.tensor([3.5], device="cuda", dtype=dt), return_dict=False)
    with torch.inference_mode():
        for _ in range(2):
            m(**kw)
        torch.cuda.synchronize()
        times = []
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            m(**kw)
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
    times.sort()
    print(json.dumps({"impl": "diffusers", "dtype": dtype, "torch": torch.__version__,
                      "gpu": torch.cuda.get_device_name(0), "step_ms_median": round(times[len(times) // 2], 2),
                      "step_ms_best": round(times[0], 2),
                      "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}))


if __name__ == "__main__":
    step(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7]))
