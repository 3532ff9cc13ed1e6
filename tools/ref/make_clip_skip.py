#!/usr/bin/env python3
"""make_clip_skip.py — golden cases of StableDiffusionPipeline's clip_skip on the committed tiny SD
pipelines (tests/fixtures/pipelines/{sd15-tiny,sd-tiny-3level}), written to
tests/fixtures/clip_skip/ (cases.json, expected/) without touching those pipelines or their goldens.

    /opt/refenv/bin/python tools/ref/make_clip_skip.py

diffusers: the prompt's embeddings are final_layer_norm(hidden_states[-(clip_skip + 1)]); the negative
prompt's are the last layer's, as without clip_skip. diffusers 0.42.1's own clip_skip path fails with
transformers 5 (it reaches text_encoder.text_model, which CLIPTextModel no longer has), so the
embeddings are made here by the same arithmetic and given to the pipeline as prompt_embeds /
negative_prompt_embeds; everything after is the pipeline's. SDXL's clip_skip cases are in
make_sdxl_pipelines.py. Dev-time only; conventions of make_pipelines.py (whose helpers it uses).
"""
import json
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import make_pipelines as mp  # noqa: E402

import diffusers  # noqa: E402
import transformers  # noqa: E402

OUT = os.path.join(REPO, "tests", "fixtures", "clip_skip")

CASES = [
    dict(name="sd15_skip1", pipeline="sd15-tiny", scheduler=None, clip_skip=1,
         prompts=["a photo of an astronaut riding a horse on mars"], negative_prompt="blurry",
         seed=0, num_images_per_prompt=1, steps=6, guidance_scale=7.5, width=64, height=64),
    dict(name="l3_skip1_2prompts", pipeline="sd-tiny-3level", scheduler="DDIMScheduler", clip_skip=1,
         prompts=["a yellow car on a road", "snow on the mountains"], negative_prompt=None,
         seed=3, num_images_per_prompt=1, steps=5, guidance_scale=6.0, width=64, height=64),
    dict(name="l3_skip2_nocfg", pipeline="sd-tiny-3level", scheduler=None, clip_skip=2,
         prompts=["a cup of coffee"], negative_prompt=None,
         seed=21, num_images_per_prompt=1, steps=5, guidance_scale=1.0, width=64, height=64),
]


@torch.no_grad()
def skip_embeds(pipe, text, skip):
    """encode_prompt's clip_skip branch: final_layer_norm(hidden_states[-(skip + 1)]). diffusers
    0.42.1 reaches the norm as text_encoder.text_model.final_layer_norm, which transformers 5's
    CLIPTextModel no longer has (AttributeError), so the same arithmetic is done here and the
    embeddings passed in as prompt_embeds."""
    out = pipe.text_encoder(mp.tokenize(pipe, text), output_hidden_states=True)
    tm = getattr(pipe.text_encoder, "text_model", pipe.text_encoder)
    return tm.final_layer_norm(out.hidden_states[-(skip + 1)])


def run_case(pipe, base_config, case, output_type):
    mp.case_scheduler(pipe, base_config, case)
    n = len(case["prompts"])
    pe = torch.cat([skip_embeds(pipe, p, case["clip_skip"]) for p in case["prompts"]])
    ne = None
    if case["guidance_scale"] > 1:  # the negative prompt without clip_skip, as encode_prompt
        with torch.no_grad():
            ne = pipe.text_encoder(mp.tokenize(pipe, case["negative_prompt"] or ""))[0].repeat(n, 1, 1)
    gens = [torch.Generator("cpu").manual_seed(s) for s in mp.case_seeds(case)]
    with torch.no_grad():
        out = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, num_inference_steps=case["steps"],
                   guidance_scale=case["guidance_scale"], width=case["width"], height=case["height"],
                   num_images_per_prompt=case["num_images_per_prompt"], generator=gens,
                   output_type=output_type)
    return out.images


def argv_of(pname, case):
    return ["generate", "--model", f"../pipelines/{pname}"] + mp.tandem_argv(pname, case)[3:] + \
        ["--clip-skip", str(case["clip_skip"])]


def main():
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)

    class A:  # run_and_write's options
        out = OUT
        no_verify = True

    cases = []
    for pname in ("sd15-tiny", "sd-tiny-3level"):
        folder = os.path.join(REPO, "tests", "fixtures", "pipelines", pname)
        pipe = mp.load_pipeline(folder)
        base = json.load(open(os.path.join(folder, "scheduler", "scheduler_config.json")))
        os.makedirs(os.path.join(OUT, "expected", pname))
        for case in (c for c in CASES if c["pipeline"] == pname):
            entry, _, _, _ = mp.run_and_write(A, pname, case, pipe, None, base, run_case, argv_of)
            entry["pipeline"] = f"../pipelines/{pname}"  # relative to this cases.json
            cases.append(entry)
    doc = {"about": "StableDiffusionPipeline clip_skip on the committed tiny pipelines "
                    "(tools/ref/make_clip_skip.py); conventions of ../pipelines/cases.json.",
           "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                        "transformers": transformers.__version__,
                        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability()},
           "tolerance": {"latents_rel": 1e-4, "png_abs": 1}, "cases": cases}
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
