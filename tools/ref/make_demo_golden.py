"""diffusers parity of the demo model: tests/fixtures/demo/cases.json + expected/ from
models/shapes-64 as StableDiffusionPipeline.from_pretrained loads it (float32 compute of the
fp16 weights, the same upcast tandem does on the CPU).

    /opt/refenv/bin/python tools/ref/make_demo_golden.py

Cases: the folder's PNDM scheduler at `make demo`'s settings (20 steps, guidance 3,
two prompts, 64x64), and DPM-Solver++ with a negative prompt and two images per prompt.
"""
import json
import os
import shutil
import sys
from types import SimpleNamespace

import diffusers
import torch
import transformers

sys.path.insert(0, os.path.dirname(__file__))
import make_pipelines as mp  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(REPO, "models", "shapes-64")
OUT = os.path.join(REPO, "tests", "fixtures", "demo")
PNAME = "../../../models/shapes-64"  # relative to OUT, as cases.json's "pipeline"

CASES = [
    dict(name="demo_pndm", prompts=["a large red circle on a blue background",
                                    "two small yellow stars at the top, green background"],
         negative_prompt=None, seed=7, steps=20, guidance_scale=3.0, width=64, height=64,
         num_images_per_prompt=1, scheduler=None),
    dict(name="demo_dpm_negative", prompts=["a white ring at the left, purple gradient background"],
         negative_prompt="a black square", seed=3, steps=12, guidance_scale=4.0, width=64, height=64,
         num_images_per_prompt=2, scheduler="DPMSolverMultistepScheduler"),
]


def main():
    torch.set_num_threads(2)
    exp = os.path.join(OUT, "expected")
    if os.path.exists(exp):
        shutil.rmtree(exp)
    os.makedirs(os.path.join(OUT, "expected", "shapes-64"))
    pipe = mp.load_pipeline(MODEL)
    with open(os.path.join(MODEL, "scheduler", "scheduler_config.json")) as f:
        base_config = json.load(f)
    a = SimpleNamespace(out=OUT, no_verify=True)
    entries = []
    for case in CASES:
        case = dict(case, pipeline=PNAME)
        # expected files under expected/shapes-64/ rather than the relative pipeline path
        entry, _, _, _ = mp.run_and_write(a, "shapes-64", case, pipe, None, base_config, mp.run_case,
                                          lambda _p, c: mp.tandem_argv("models/shapes-64", c))
        entry["pipeline"] = PNAME
        entries.append(entry)
    doc = {"about": "diffusers parity of models/shapes-64 (tools/ref/make_demo_golden.py); "
                    "pipeline paths are relative to this folder; image i uses seed + i.",
           "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                        "transformers": transformers.__version__},
           "tolerance": {"latents_rel": 1e-4, "png_abs": 1},
           "cases": entries}
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {len(entries)} cases to {OUT}/cases.json")


if __name__ == "__main__":
    main()
