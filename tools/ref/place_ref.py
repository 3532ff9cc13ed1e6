"""Device-map fixtures for tests/test_place.c, from accelerate's own planner.

For each case (a module tree, a max_memory dict, a strategy) this runs accelerate's real
get_balanced_memory + infer_auto_device_map (offload_buffers=False, fallback_allocation=False,
clean_result=True), exactly as diffusers' ModelMixin.from_pretrained calls them, and records:

  accelerate.balanced   max_memory after get_balanced_memory (sequential: after get_max_memory)
  accelerate.device_map the cleaned map, or accelerate.error when accelerate raises
  fixed                 what tandem's default planner must give (the spec's fixes, emulated here
                        with accelerate's own functions; see fixed_plan below), or an error
  bugs                  which spec bugs this case triggers (#7 low_zero by position, #8 disk
                        with balanced, #9 zero-budget GPU, #10 max_layer reserve without offload)

Module trees:
  (a) small synthetic nn.Module trees (tests/fixtures/place/synthetic.json holds their
      parameter lists, in the tests/fixtures/ptree format, plus the cases);
  (b) the real models of tests/fixtures/ptree/{flux_dev,t5_xxl,sd15_unet,sd_vae,clip_l}.json,
      built on the meta device from the config in that file (floating tensors counted as bf16,
      dtype=torch.bfloat16 as diffusers passes torch_dtype). tests/fixtures/place/<case>.json
      refers to the ptree file for the parameter list and adds the class of each no-split path.

The C planner sees only tensors. Modules without any tensor (activations, Dropout, FluxPosEmbed)
are invisible to it, but accelerate puts them in the map. So for real models the planner is
checked against accelerate run on a tree rebuilt from the parameter list (same names, order,
sizes, no-split classes, ties): device_map. The map of the real model is kept too
(real_device_map), with real_equal saying whether it is the same once the keys of tensor-less
modules are dropped and the map re-cleaned.

usage: /opt/refenv/bin/python tools/ref/place_ref.py     (rewrites tests/fixtures/place/)
"""
import json, logging, os, sys, warnings
import torch
import torch.nn as nn
import accelerate.utils.modeling as am
from accelerate.utils import get_balanced_memory, infer_auto_device_map
from accelerate.utils.modeling import clean_device_map, compute_module_sizes

sys.path.insert(0, os.path.dirname(__file__))
import ptree_ref  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "place")
PTREE = os.path.join(ROOT, "tests", "fixtures", "ptree")
DT = torch.bfloat16

GiB, MiB, GB, MB = 2**30, 2**20, 10**9, 10**6

logging.getLogger("accelerate").setLevel(logging.ERROR)   # "Device 0 is not available": no GPU needed
warnings.filterwarnings("ignore")


# ---- parameter lists and trees -------------------------------------------------------------

def plist_of(m):
    """The model's parameter list in the tests/fixtures/ptree format, plus no-split classes."""
    params = [[n, list(p.shape), str(p.dtype).replace("torch.", ""), 0] for n, p in m.named_parameters()]
    params += [[n, list(b.shape), str(b.dtype).replace("torch.", ""), 1] for n, b in m.named_buffers()]
    ns = set(getattr(m, "_no_split_modules", None) or [])
    nosplit = [(n, type(mod).__name__) for n, mod in m.named_modules() if n and type(mod).__name__ in ns]
    tied, seen = [], {}
    for n, p in m.named_parameters(remove_duplicate=False):
        if id(p) in seen and seen[id(p)] != n:
            tied.append(f"{seen[id(p)]}={n}")
        seen.setdefault(id(p), n)
    return {"params": params, "nosplit": [n for n, _ in nosplit],
            "nosplit_classes": [c for _, c in nosplit], "no_split_classes": sorted(ns), "tied": tied}


_classes = {}


def rebuild(pl):
    """An nn.Module tree on meta holding exactly the tensors of parameter list `pl`: modules made
    in first-appearance order, no-split paths given their class name, ties re-made."""
    def cls(name):
        if name not in _classes:
            _classes[name] = type(name, (nn.Module,), {})
        return _classes[name]
    kind = dict(zip(pl["nosplit"], pl["nosplit_classes"]))
    root = nn.Module()

    def module(path):
        m, cur = root, ""
        for part in path.split(".") if path else []:
            cur = f"{cur}.{part}" if cur else part
            if part not in m._modules:
                m.add_module(part, cls(kind.get(cur, "Module"))())
            m = m._modules[part]
        return m
    for name, shape, dtype, buf in pl["params"]:
        mod, _, leaf = name.rpartition(".")
        t = torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
        if buf:
            module(mod).register_buffer(leaf, t)
        else:
            module(mod).register_parameter(leaf, nn.Parameter(t, requires_grad=False))
    for t in pl["tied"]:
        first, other = t.split("=")
        fm, _, fl = first.rpartition(".")
        om, _, ol = other.rpartition(".")
        module(om).register_parameter(ol, getattr(module(fm), fl))
    return root


# ---- accelerate, and tandem's fixes emulated with it ----------------------------------------

def key_out(k):
    return k if isinstance(k, str) else str(k)


def run_accelerate(model, nosplit, mm, strategy):
    mm = dict(mm)
    try:
        if strategy == "sequential":
            bal = am.get_max_memory(mm)
        else:
            bal = get_balanced_memory(model, max_memory=mm, no_split_module_classes=nosplit, dtype=DT,
                                      low_zero=strategy == "balanced_low_0")
        dm = infer_auto_device_map(model, max_memory=dict(bal), no_split_module_classes=nosplit, dtype=DT)
    except Exception as e:  # noqa: BLE001 - the error is the expected result
        return None, None, f"{type(e).__name__}: {e}"
    return [[key_out(k), int(v)] for k, v in bal.items()], dict(sorted(dm.items())), None


def infer_no_reserve(model, nosplit, mm):
    """infer_auto_device_map with no max_layer reserve on the main devices."""
    orig = am.get_max_layer_size
    am.get_max_layer_size = lambda *a, **k: (0, [])
    try:
        return dict(infer_auto_device_map(model, max_memory=dict(mm), no_split_module_classes=nosplit, dtype=DT))
    finally:
        am.get_max_layer_size = orig


def fixed_plan(model, nosplit, mm, strategy):
    """tandem's default planner, built from accelerate's functions:
    - the GPUs given a zero budget are no devices (#9); balancing acts on the others, renumbered
      0..n-1 in id order, so balanced_low_0 lightens the lowest-id GPU whatever the ids (#7);
    - "disk" takes no part in balancing (#8);
    - plan first with no max_layer reserve; keep that plan if it puts nothing on cpu/disk, else
      plan again with the reserve on the main devices (#10);
    - as accelerate, a max_memory without "disk" gets an unlimited one (infer_auto_device_map
      appends it), so what fits nowhere else overflows to disk."""
    gpus = sorted(k for k in mm if isinstance(k, int) and mm[k] > 0)
    if strategy == "sequential":
        bal = {k: mm[k] for k in gpus}
    else:
        ren = {i: mm[g] for i, g in enumerate(gpus)}
        if "cpu" in mm:
            ren["cpu"] = mm["cpu"]
        b = get_balanced_memory(model, max_memory=ren, no_split_module_classes=nosplit, dtype=DT,
                                low_zero=strategy == "balanced_low_0")
        bal = {g: b[i] for i, g in enumerate(gpus)}
    for k in ("cpu", "disk"):
        if k in mm:
            bal[k] = mm[k]
    used_gpus = [g for g in gpus if bal[g] > 0]
    inf = {k: bal[k] for k in used_gpus + [k for k in ("cpu", "disk") if k in bal]}
    dm = infer_no_reserve(model, nosplit, inf)
    passes = 1
    if any(v in ("cpu", "disk") for v in dm.values()):
        dm = dict(infer_auto_device_map(model, max_memory=dict(inf), no_split_module_classes=nosplit, dtype=DT))
        passes = 2
    balanced = [[key_out(k), int(bal[k])] for k in gpus + [k for k in ("cpu", "disk") if k in bal]]
    return balanced, dict(sorted(dm.items())), None, passes


def bugs_of(mm, strategy, acc, fixed, fixed_passes, acc_err):
    b = []
    gpus = sorted(k for k in mm if isinstance(k, int))
    pos = [g for g in gpus if mm[g] > 0]
    if strategy == "balanced_low_0" and len(pos) > 1 and pos != list(range(len(pos))):
        b.append("low_zero_by_position_4297")
    if strategy != "sequential" and "disk" in mm:
        b.append("disk_with_balanced_3480")
    if any(mm[g] == 0 for g in gpus):
        b.append("zero_budget_gpu_1933")
    if fixed is not None and acc is not None and fixed_passes == 1 and fixed != acc:
        b.append("max_layer_reserve_3041")
    return b


def drop_empty(dm, model):
    sizes = compute_module_sizes(model, dtype=DT)
    kept = {k: v for k, v in dm.items() if sizes.get(k, 0) > 0}
    return dict(clean_device_map(kept))


def case(model, real, nosplit, mm, strategy):
    bal, dm, err = run_accelerate(model, nosplit, mm, strategy)
    fbal, fdm, ferr, passes = fixed_plan(model, nosplit, mm, strategy)
    c = {"strategy": strategy, "max_memory": [[key_out(k), v] for k, v in mm.items()],
         "accelerate": {"balanced": bal, "device_map": dm, "error": err},
         "fixed": {"balanced": fbal, "device_map": fdm, "error": ferr, "passes": passes}}
    c["bugs"] = bugs_of(mm, strategy, dm, fdm, passes, err)
    if not c["bugs"]:
        assert err is None and ferr is None and dm == fdm and bal == fbal, (mm, strategy, dm, fdm, bal, fbal)
    if real is not None:
        rbal, rdm, rerr = run_accelerate(real, nosplit, mm, strategy)
        assert rbal == bal and (rerr is None) == (err is None), (rbal, bal, rerr, err)
        c["accelerate"]["real_device_map"] = rdm
        c["accelerate"]["real_equal"] = rdm is None or drop_empty(rdm, real) == dm
    return c


def mmdict(pairs):
    return {(int(k) if isinstance(k, int) else k): v for k, v in pairs}


STRATS = ["sequential", "balanced", "balanced_low_0"]


# ---- (a) synthetic trees ------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attn = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.Linear(4 * d, d))
        self.norm = nn.LayerNorm(d)
        self.register_buffer("mask", torch.zeros(8, 8, dtype=torch.int64))


class TiedNet(nn.Module):
    """embed / blocks (no-split) / norm / head, head.weight tied to embed.weight, buffers."""
    _no_split_modules = ["Block"]

    def __init__(self, d=64, n=6, head_bias=True):
        super().__init__()
        self.embed = nn.Embedding(500, d)
        self.blocks = nn.ModuleList([Block(d) for _ in range(n)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 500, bias=head_bias)
        self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.ones(16))


class RootParamNet(nn.Module):
    """A root-level parameter and buffer, nested Sequentials of unequal Linears, no no-split."""
    _no_split_modules = []

    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(64, 96))
        self.enc = nn.Sequential(nn.Sequential(nn.Linear(96, 96), nn.Linear(96, 192)),
                                 nn.Sequential(nn.Linear(192, 192), nn.Sequential(nn.Linear(192, 48), nn.Linear(48, 96))),
                                 nn.Linear(96, 96))
        self.dec = nn.Sequential(nn.Linear(96, 384), nn.Linear(384, 96))
        self.register_buffer("ids", torch.arange(32))


class Stage(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.a = Block(d)
        self.b = Block(d)
        self.proj = nn.Linear(d, d)


class DeepNet(nn.Module):
    """Splittable Stages of two no-split Blocks and a Linear each, between two Linears."""
    _no_split_modules = ["Block"]

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(32, 64)
        self.stages = nn.ModuleList([Stage(64), Stage(64), Stage(64)])
        self.out = nn.Linear(64, 32)


def synthetic():
    torch.manual_seed(0)
    trees = {"tied": TiedNet(), "tied_nobias": TiedNet(d=48, n=4, head_bias=False),
             "rootparam": RootParamNet(), "deep": DeepNet()}
    out = {}
    for name, m in trees.items():
        m = m.to("meta")
        if name.startswith("tied"):
            m.head.weight = m.embed.weight
        pl = plist_of(m)
        ns = pl["no_split_classes"]
        total = compute_module_sizes(m, dtype=DT)[""]
        fr = [(f, g) for f in (0.2, 0.35, 0.5, 0.7) for g in (None, 1.0)]
        mms = []
        for f, c in fr:
            d = {0: int(total * f), 1: int(total * f)}
            if c:
                d["cpu"] = int(total * c)
            mms.append(d)
        mms += [{0: int(total * 0.3), "cpu": total}, {0: int(total * 0.1), 1: int(total * 0.6), 2: int(total * 0.6)},
                {0: total * 2}, {0: int(total * 0.25), 1: int(total * 0.25), 2: int(total * 0.25), "cpu": total},
                {0: 0, "cpu": total * 2}, {0: int(total * 0.4), 2: int(total * 0.4), "cpu": total},
                {0: int(total * 0.3), "cpu": int(total * 0.3), "disk": 10**12},
                {0: int(total * 0.3), 1: int(total * 0.3), "cpu": int(total * 0.2)}]
        cases = [case(m, None, ns, mm, s) for mm in mms for s in STRATS]
        out[name] = {**pl, "total": int(total), "cases": cases}
        print(f"synthetic {name}: {len(pl['params'])} tensors, {total} bytes, {len(cases)} cases, "
              f"{sum(1 for c in cases if c['bugs'])} with bugs")
    return out


# ---- (b) real models -----------------------------------------------------------------------

REAL_CASES = {
    "flux_dev": [{0: 14 * GiB, 1: 14 * GiB}, {0: 16 * GB, 1: 16 * GB, "cpu": 64 * GB}, {0: 8 * GiB, "cpu": 64 * GiB},
                 {0: 10 * GB, 1: 10 * GB}, {0: 10 * GB, 1: 10 * GB, "cpu": 64 * GB},
                 {0: 2 * GiB, 1: 20 * GiB, 2: 20 * GiB}, {0: 30 * GB}, {0: 12 * GiB, 2: 12 * GiB, "cpu": 64 * GiB},
                 {1: 14 * GiB, 2: 14 * GiB, "cpu": 64 * GiB}, {0: 0, "cpu": 64 * GB},
                 {0: 8 * GiB, "cpu": 8 * GiB, "disk": 10**12}, {0: 20 * GiB, 1: 20 * GiB, 2: 20 * GiB, 3: 20 * GiB}],
    "t5_xxl": [{0: 4 * GiB, 1: 4 * GiB, "cpu": 16 * GiB}, {0: 6 * GB, 1: 6 * GB}, {0: 12 * GB},
               {0: 3 * GB, "cpu": 4 * GB, "disk": 10**12}],
    "sd15_unet": [{0: 500 * MB, 1: 500 * MB, "cpu": 2 * GB}, {0: 300 * MiB, "cpu": 4 * GiB}, {0: 1 * GB, 1: 1 * GB},
                  {0: 200 * MB, 1: 200 * MB, 2: 200 * MB, "cpu": 1 * GB}, {0: 700 * MB, 1: 700 * MB, 2: 700 * MB}],
    "sd_vae": [{0: 50 * MB, 1: 50 * MB, "cpu": 1 * GB}, {0: 100 * MB, 1: 100 * MB}, {0: 40 * MB, "cpu": 1 * GB}],
    "clip_l": [{0: 100 * MB, 1: 100 * MB, "cpu": 1 * GB}, {0: 150 * MB, 1: 150 * MB}, {0: 60 * MB, 1: 60 * MB, 2: 60 * MB}],
}


def real(name):
    j = json.load(open(os.path.join(PTREE, name + ".json")))
    model = ptree_ref.build(j["class"], j["config"])
    pl = plist_of(model)
    assert pl["params"] == j["params"] and pl["nosplit"] == j["nosplit"] and pl["tied"] == j["tied"], name
    tree = rebuild(pl)
    ns = pl["no_split_classes"]
    cases = [case(tree, model, ns, mm, s) for mm in REAL_CASES[name] for s in STRATS]
    total = compute_module_sizes(model, dtype=DT)[""]
    print(f"{name}: {total} bytes, {len(cases)} cases, {sum(1 for c in cases if c['bugs'])} with bugs, "
          f"{sum(1 for c in cases if not c['accelerate'].get('real_equal', True))} differ on the real model")
    return {"ptree": name, "nosplit_classes": pl["nosplit_classes"], "no_split_classes": ns, "total": int(total),
            "cases": cases}


def main():
    os.makedirs(OUT, exist_ok=True)
    syn = synthetic()
    with open(os.path.join(OUT, "synthetic.json"), "w") as f:
        json.dump(syn, f, separators=(",", ":"))
    for name in REAL_CASES:
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(real(name), f, separators=(",", ":"))


if __name__ == "__main__":
    main()
