#!/usr/bin/env python3
"""sched_ref.py — golden fixtures for tests/test_sched.c: runs the diffusers
schedulers (PNDM, DDIM, Euler, Euler-ancestral, DPM-Solver++ multistep,
FlowMatchEuler) over several configs and step counts and records, per case,
the timesteps, the sigmas, init_noise_sigma and the sample after every step of
a pipeline-shaped loop driven by a deterministic fake model.

FlowMatch cases carry a "flow" entry saying how the schedule was set:
"pipeline" — as FluxPipeline does (its own calculate_shift and
retrieve_timesteps, sigmas = np.linspace(1, 1/n, n) unless the case lists
"sigmas", mu from "image_seq_len"); "plain" — scheduler.set_timesteps(n).
The recorded mu is FluxPipeline's, a Python float written with repr.

Fake model (computed identically in C; every constant is exact in float32):
    x_in   = scheduler.scale_model_input(latents, t)   (latents for FlowMatch)
    out[j] = 0.125 * x_in[j] + (((j*7 + i*13) % 17) - 8) * 0.0625
with j the flat index over the whole batch and i the loop index.
Initial latents: per-item torch.randn from generators seeded SEEDS (the
diffusers randn_tensor list-of-generators path), times init_noise_sigma; the
same generators then feed the ancestral noise.

Usage: /opt/refenv/bin/python tools/ref/sched_ref.py [OUTDIR]
(default OUTDIR = tests/fixtures/sched). Writes config_*.json, cases.json and
sched_ref.safetensors. Each case also records its "sensitivity": the largest
relative change of the trajectory when the tables the steps read (sigmas or
alphas_cumprod) move by one float32 ulp. torch's CPU sqrt/log/exp (MKL VML)
are not correctly rounded, so ulp-level table differences are unavoidable;
zero-terminal-SNR Euler cases amplify them to ~1e-4."""
import json, os, sys
import numpy as np
import torch
import diffusers
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
from safetensors.torch import save_file

SEEDS = [1234, 5678]
SHAPE = (2, 5, 2)         # one item: 20 floats (>= 16 and not a multiple of 16)
B = len(SEEDS)

SD15 = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "trained_betas": None, "clip_sample": False}
SD21 = {"_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
        "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False,
        "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}

# FLUX.1-dev / FLUX.1-schnell scheduler/scheduler_config.json as published
FLUX_DEV = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.30.0.dev0",
            "base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096,
            "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0,
            "use_dynamic_shifting": True}
FLUX_SCHNELL = {"_class_name": "FlowMatchEulerDiscreteScheduler",
                "_diffusers_version": "0.29.0.dev0", "base_image_seq_len": 256, "base_shift": 0.5,
                "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000,
                "shift": 1.0, "use_dynamic_shifting": False}
FLOW_SD3 = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
            "shift": 3.0}

CONFIGS = {
    "sd15": SD15,
    "sd21": SD21,
    "sd21_linspace": {**SD21, "timestep_spacing": "linspace"},
    "sd21_trailing_zsnr": {**SD21, "timestep_spacing": "trailing", "rescale_betas_zero_snr": True},
    "sd15_leading": {**SD15, "timestep_spacing": "leading"},
    "sd15_trailing": {**SD15, "timestep_spacing": "trailing"},
    "sd15_prk": {**SD15, "skip_prk_steps": False},
    "sd15_karras": {**SD15, "use_karras_sigmas": True},
    "sd21_karras": {**SD21, "use_karras_sigmas": True},
    "sd15_sigma_min": {**SD15, "final_sigmas_type": "sigma_min", "lower_order_final": False},
    "sd15_euler_final": {**SD15, "final_sigmas_type": "sigma_min", "euler_at_final": True},
    "sd15_order3": {**SD15, "solver_order": 3},
    "sd15_heun": {**SD15, "solver_type": "heun"},
    "ddim_default_clip": {"_class_name": "DDIMScheduler", "clip_sample": True,
                          "clip_sample_range": 1.0, "set_alpha_to_one": True},
    "ddim_sample_clip": {**SD15, "_class_name": "DDIMScheduler", "prediction_type": "sample",
                         "clip_sample": True, "clip_sample_range": 1.5},
    "cos_linear": {"_class_name": "DDIMScheduler", "beta_schedule": "squaredcos_cap_v2",
                   "steps_offset": 1},
    "linear_betas": {"_class_name": "EulerDiscreteScheduler", "beta_schedule": "linear",
                     "beta_start": 0.0001, "beta_end": 0.02},
    "flux_dev": FLUX_DEV,
    "flux_schnell": FLUX_SCHNELL,
    "flux_dev_terminal": {**FLUX_DEV, "shift_terminal": 0.1},
    "flux_dev_karras": {**FLUX_DEV, "use_karras_sigmas": True},
    "flux_dev_exp": {**FLUX_DEV, "use_exponential_sigmas": True},
    "flux_dev_linear": {**FLUX_DEV, "time_shift_type": "linear"},
    "flux_dev_invert": {**FLUX_DEV, "invert_sigmas": True},
    "flux_dev_flow_sigmas": {**FLUX_DEV, "use_flow_sigmas": True},
    "flux_schnell_terminal": {**FLUX_SCHNELL, "shift_terminal": 0.02},
    "flow_sd3": FLOW_SD3,
    "flow_sd3_terminal_karras": {**FLOW_SD3, "shift_terminal": 0.05, "use_karras_sigmas": True},
    "flow_exp_range": {**FLOW_SD3, "use_exponential_sigmas": True, "sigma_min": 0.02,
                       "sigma_max": 0.9},
}

MAIN = [1, 2, 5, 20, 50]
SOME = [2, 7, 25]
PLAN = [
    ("PNDMScheduler", "sd15", MAIN), ("PNDMScheduler", "sd21", MAIN),
    ("PNDMScheduler", "sd21_linspace", SOME), ("PNDMScheduler", "sd15_trailing", SOME),
    ("PNDMScheduler", "sd15_prk", [4, 7, 25]), ("PNDMScheduler", "cos_linear", [4, 7, 25]),
    ("DDIMScheduler", "sd15", MAIN), ("DDIMScheduler", "sd21", MAIN),
    ("DDIMScheduler", "sd21_linspace", SOME), ("DDIMScheduler", "sd21_trailing_zsnr", SOME),
    ("DDIMScheduler", "ddim_default_clip", SOME), ("DDIMScheduler", "ddim_sample_clip", SOME),
    ("DDIMScheduler", "cos_linear", SOME),
    ("EulerDiscreteScheduler", "sd15", MAIN), ("EulerDiscreteScheduler", "sd21", MAIN),
    ("EulerDiscreteScheduler", "sd15_leading", SOME), ("EulerDiscreteScheduler", "sd21_trailing_zsnr", SOME),
    ("EulerDiscreteScheduler", "sd15_karras", [1, 2, 5, 20]), ("EulerDiscreteScheduler", "sd21_karras", SOME),
    ("EulerDiscreteScheduler", "sd15_sigma_min", SOME), ("EulerDiscreteScheduler", "linear_betas", SOME),
    ("EulerAncestralDiscreteScheduler", "sd15", MAIN), ("EulerAncestralDiscreteScheduler", "sd21", MAIN),
    ("EulerAncestralDiscreteScheduler", "sd15_leading", SOME),
    ("EulerAncestralDiscreteScheduler", "sd21_trailing_zsnr", SOME),
    ("DPMSolverMultistepScheduler", "sd15", MAIN), ("DPMSolverMultistepScheduler", "sd21", MAIN),
    ("DPMSolverMultistepScheduler", "sd15_karras", [1, 2, 5, 20]),
    ("DPMSolverMultistepScheduler", "sd21_karras", SOME),
    ("DPMSolverMultistepScheduler", "sd15_sigma_min", SOME),
    ("DPMSolverMultistepScheduler", "sd15_euler_final", SOME),
    ("DPMSolverMultistepScheduler", "sd15_order3", [1, 3, 7, 25]),
    ("DPMSolverMultistepScheduler", "sd15_heun", SOME),
    ("DPMSolverMultistepScheduler", "sd15_leading", SOME),
    ("DPMSolverMultistepScheduler", "sd21_trailing_zsnr", SOME),
    ("DPMSolverMultistepScheduler", "cos_linear", SOME),
]

# FlowMatch: (config, steps, flow mode) with FLUX packed image sizes
# (H/16 * W/16 tokens): 256^2, 512^2, 1024^2, 512x768, 1360x768
FLUX_SIZES = {"256x256": 256, "512x512": 1024, "1024x1024": 4096, "512x768": 1536,
              "1360x768": 4080}
FLUX_STEPS = [1, 4, 28, 50]
FM = "FlowMatchEulerDiscreteScheduler"
for size in FLUX_SIZES:
    PLAN += [(FM, "flux_dev", FLUX_STEPS, {"mode": "pipeline", "size": size})]
for size in ("256x256", "1024x1024", "1360x768"):
    PLAN += [(FM, "flux_schnell", FLUX_STEPS, {"mode": "pipeline", "size": size})]
for cfg in ("flux_dev_karras", "flux_dev_exp", "flux_dev_linear", "flux_dev_invert",
            "flux_dev_flow_sigmas"):
    PLAN += [(FM, cfg, [1, 4, 28], {"mode": "pipeline", "size": "512x768"})]
# shift_terminal divides by 1 - sigma[-1]: diffusers' one-step schedule (sigma 1) gives NaN
for cfg in ("flux_dev_terminal", "flux_schnell_terminal"):
    PLAN += [(FM, cfg, [2, 4, 28], {"mode": "pipeline", "size": "512x768"})]
PLAN += [
    (FM, "flux_dev", [5], {"mode": "pipeline", "size": "1024x1024",
                           "sigmas": [1.0, 0.8, 0.55, 0.3, 0.1]}),
    (FM, "flux_schnell", [1, 4, 28], {"mode": "plain"}),
    (FM, "flow_sd3", [1, 4, 28, 50], {"mode": "plain"}),
    (FM, "flow_sd3_terminal_karras", [2, 4, 28], {"mode": "plain"}),
    (FM, "flow_exp_range", [4, 28], {"mode": "plain"}),
    (FM, "sd15", [1, 4, 28], {"mode": "plain"}),          # an SD config asked for FlowMatch
]


def fake_model(x_in, i):
    n = x_in.numel()
    j = torch.arange(n)
    pat = (((j * 7 + i * 13) % 17) - 8).to(torch.float32) * 0.0625
    return (0.125 * x_in.reshape(-1) + pat).reshape(x_in.shape)


def set_flow_timesteps(sched, steps, flow):
    """As FluxPipeline.__call__ step 5; returns mu (None in plain mode)."""
    if flow["mode"] == "plain":
        sched.set_timesteps(steps)
        return None
    sigmas = flow.get("sigmas")
    sigmas = np.linspace(1.0, 1 / steps, steps) if sigmas is None else sigmas
    if hasattr(sched.config, "use_flow_sigmas") and sched.config.use_flow_sigmas:
        sigmas = None
    mu = calculate_shift(FLUX_SIZES[flow["size"]],
                         sched.config.get("base_image_seq_len", 256),
                         sched.config.get("max_image_seq_len", 4096),
                         sched.config.get("base_shift", 0.5),
                         sched.config.get("max_shift", 1.15))
    retrieve_timesteps(sched, steps, "cpu", sigmas=sigmas, mu=mu)
    return mu


def run_case(cls_name, cfg, steps, perturb=False, flow=None):
    cls = getattr(diffusers, cls_name)
    sched = cls.from_config(cfg)
    mu = None
    if flow is not None:
        mu = set_flow_timesteps(sched, steps, flow)
    else:
        sched.set_timesteps(steps)
    if perturb:   # every table entry the steps read moved up by one float32 ulp
        def move(t, to):   # zeros stay (sigma 0 is exact, not a rounding)
            a = t.numpy()
            return torch.from_numpy(np.where(a == 0, a, np.nextafter(a, np.float32(to))))
        if cls_name in ("PNDMScheduler", "DDIMScheduler"):   # down: alpha 1.0 must stay <= 1
            sched.alphas_cumprod = move(sched.alphas_cumprod, 0)
            sched.final_alpha_cumprod = move(sched.final_alpha_cumprod.reshape(1), 0)[0]
        else:
            sched.sigmas = move(sched.sigmas, np.inf)
    gens = [torch.Generator("cpu").manual_seed(s) for s in SEEDS]
    lat = torch.cat([torch.randn((1,) + SHAPE, generator=g, dtype=torch.float32) for g in gens])
    x_init = lat.clone()
    ins = getattr(sched, "init_noise_sigma", 1.0)    # FlowMatch has none (FluxPipeline: 1)
    lat = lat * ins
    ins = float(ins.item() if torch.is_tensor(ins) else ins)
    traj = []
    for i, t in enumerate(sched.timesteps):
        x_in = sched.scale_model_input(lat, t) if hasattr(sched, "scale_model_input") else lat
        out = fake_model(x_in, i)
        kw = {"generator": gens} if "Ancestral" in cls_name else {}
        lat = sched.step(out, t, lat, **kw).prev_sample
        traj.append(lat.reshape(-1).clone())
    res = {
        "timesteps": sched.timesteps.to(torch.float32).reshape(-1).clone(),
        "init": x_init.reshape(-1),
        "init_noise_sigma": torch.tensor([ins], dtype=torch.float32),
        "traj": torch.stack(traj) if traj else torch.zeros(0, lat.numel()),
    }
    if hasattr(sched, "sigmas") and cls_name not in ("PNDMScheduler", "DDIMScheduler"):
        res["sigmas"] = sched.sigmas.to(torch.float32).reshape(-1).clone()
    return res, mu


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "sched")
    os.makedirs(out, exist_ok=True)
    for name, cfg in CONFIGS.items():
        with open(os.path.join(out, f"config_{name}.json"), "w") as f:
            json.dump(cfg, f, indent=1)
    tensors, cases = {}, []
    for cls_name, cfg_name, step_list, *rest in PLAN:
        flow = rest[0] if rest else None
        for steps in step_list:
            r, mu = run_case(cls_name, CONFIGS[cfg_name], steps, flow=flow)
            # conditioning: how far diffusers' own trajectory moves when its
            # tables move by one ulp (as torch's MKL sqrt/log/exp do against
            # correctly rounded ones); the C test allows a few times this
            rp, _ = run_case(cls_name, CONFIGS[cfg_name], steps, perturb=True, flow=flow)
            diff = (r["traj"] - rp["traj"]).abs().amax(dim=1)
            sens = float((diff / r["traj"].abs().amax(dim=1)).max()) if steps else 0.0
            k = len(cases)
            for key, v in r.items():
                tensors[f"c{k}.{key}"] = v.contiguous()
            case = {"class": cls_name, "config": f"config_{cfg_name}.json", "steps": steps,
                    "len": int(r["timesteps"].numel()), "has_sigmas": "sigmas" in r,
                    "sensitivity": sens}
            if flow is not None:
                f = {"mode": flow["mode"]}
                if flow["mode"] == "pipeline":
                    f.update(image_seq_len=FLUX_SIZES[flow["size"]], size=flow["size"], mu=mu,
                             sigmas=flow.get("sigmas"))
                case["flow"] = f
            cases.append(case)
    meta = {"diffusers": diffusers.__version__, "torch": torch.__version__,
            "seeds": SEEDS, "item": int(torch.tensor(SHAPE).prod()), "batch": B, "cases": cases}
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1, allow_nan=False)
    save_file(tensors, os.path.join(out, "sched_ref.safetensors"))
    print(f"{len(cases)} cases written to {out}")


if __name__ == "__main__":
    main()
