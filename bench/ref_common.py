"""What the PyTorch reference sides of the GPU benchmarks share (ref_t5_gpu.py, ref_vae_gpu.py,
ref_flux_gpu.py); not a test.

Inputs are the deterministic sequence of bench/bench_util.h (bench_input, bench_hash), so tandem
and the reference see the same numbers and their out_mean_abs can be compared. Timing: warm-ups,
then CUDA events around each call; peak memory is torch.cuda.max_memory_allocated after a reset
with the weights resident. Environment: REF_DEVICE=cpu (wall clock, no GPU memory) and TINY=1
(a few layers, narrow) only to check the plumbing on a machine without a GPU.
"""
import contextlib, json, os, time

import torch

DEVICE = os.environ.get("REF_DEVICE", "cuda")
TINY = os.environ.get("TINY") == "1"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def bench_hash(n, seed):
    """bench_hash(i, seed) of bench_util.h for i in [0, n), as int64."""
    h = (torch.arange(n, dtype=torch.int64) * 2654435761 + seed * 0x9E3779B9) & 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x45D9F3B) & 0xFFFFFFFF
    return h ^ (h >> 16)


def bench_input(shape, seed):
    """bench_input of bench_util.h: uniform [-sqrt 3, sqrt 3), float32, on the CPU."""
    n = 1
    for s in shape:
        n *= s
    u = bench_hash(n, seed).to(torch.float64) / 4294967296.0 * 2.0 - 1.0
    return (u * 1.7320508075688772).to(torch.float32).reshape(shape)


@contextlib.contextmanager
def building(dtype):
    """Modules created inside are made on DEVICE in `dtype` and initialised there."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(DEVICE), torch.no_grad():
            yield
    finally:
        torch.set_default_dtype(prev)


def exact_fp32():
    """fp32 as tandem computes it: no TF32 in matmuls or convolutions."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _sync():
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def load(make):
    """make() -> a model; returns it on DEVICE in eval mode, and the seconds that took."""
    t0 = time.perf_counter()
    m = make().to(DEVICE).eval()
    _sync()
    return m, time.perf_counter() - t0


def time_calls(fn, iters, warmup=3):
    """Peak-memory reset, `warmup` untimed calls, then `iters` timed ones; (times in ms, last output)."""
    _sync()
    if DEVICE.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    weights = torch.cuda.memory_allocated() if DEVICE.startswith("cuda") else 0
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            if DEVICE.startswith("cuda"):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                out = fn()
                b.record()
                torch.cuda.synchronize()
                dt = a.elapsed_time(b)
            else:
                t0 = time.perf_counter()
                out = fn()
                dt = (time.perf_counter() - t0) * 1e3
            if i >= warmup:
                times.append(dt)
    return times, out, weights


def report(impl, what, dtype, times, out, weights, load_s, **extra):
    """One JSON line, the keys of bench_util.h's bench_report."""
    out = out.float()
    fin = torch.isfinite(out)
    rec = {"impl": impl, "what": what, "dtype": dtype, "device": DEVICE, **extra,
           "load_s": round(load_s, 2), "iters": len(times), "best_ms": round(min(times), 2),
           "mean_ms": round(sum(times) / len(times), 2),
           "median_ms": round(sorted(times)[len(times) // 2], 2)}
    if DEVICE.startswith("cuda"):
        rec.update(gpu=torch.cuda.get_device_name(0), torch=torch.__version__,
                   weights_mib=round(weights / 2**20, 1),
                   peak_gpu_mib=round(torch.cuda.max_memory_allocated() / 2**20, 1),
                   gpu_reserved_mib=round(torch.cuda.max_memory_reserved() / 2**20, 1))
    nonfinite = int((~fin).sum())
    rec.update(finite=nonfinite == 0, nonfinite=nonfinite,
               out_mean_abs=float(f"{float(out[fin].abs().double().mean()):.6g}") if nonfinite < out.numel() else 0.0)
    print(json.dumps(rec), flush=True)
