"""ops_ref.py — golden values for tests/test_ops.c (the CPU kernels of
src/backend/cpu/ops.c), computed by torch in float32 on CPU.

Writes tests/fixtures/ops/ops.safetensors: for each case "<case>.<name>"
tensors (inputs and the expected output "<case>.y"). The shapes of each case
are repeated in tests/test_ops.c. Run: /opt/refenv/bin/python tools/ref/ops_ref.py
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(1234)
out = {}


def put(case, **tensors):
    for k, v in tensors.items():
        out[f"{case}.{k}"] = v.detach().to(torch.float32).contiguous().clone()


def rnd(*shape, scale=1.0, offset=0.0):
    return torch.randn(*shape) * scale + offset


# ---- linear: y = x W^T + b ---------------------------------------------------
for case, (M, K, N, bias) in {
    "linear_a": (5, 7, 3, True),
    "linear_b": (13, 33, 17, False),
    "linear_c": (1, 64, 96, True),
}.items():
    x, W = rnd(M, K), rnd(N, K)
    b = rnd(N) if bias else None
    put(case, x=x, W=W, y=F.linear(x, W, b), **({"b": b} if bias else {}))

# ---- gemm with transposes: C = alpha op(A) op(B) + beta C --------------------
M, N, K = 6, 5, 9
A, Bm, C = rnd(K, M), rnd(N, K), rnd(M, N)        # transA=1, transB=1
put("gemm_tt", A=A, B=Bm, C=C, y=0.5 * (A.t() @ Bm.t()) + 2.0 * C)
A, Bm = rnd(M, K), rnd(K, N)                        # no transposes, beta 0
put("gemm_nn", A=A, B=Bm, y=A @ Bm)

# ---- conv2d ------------------------------------------------------------------
# (B, Cin, H, W, Cout, kh, kw, stride, (pt, pb, pl, pr), bias)
convs = {
    "conv_3x3": (2, 3, 7, 5, 4, 3, 3, 1, (1, 1, 1, 1), True),
    "conv_s2": (1, 4, 9, 8, 6, 3, 3, 2, (1, 1, 1, 1), True),
    "conv_1x1": (2, 5, 4, 6, 3, 1, 1, 1, (0, 0, 0, 0), True),
    "conv_nobias": (1, 2, 6, 7, 3, 3, 2, 1, (0, 0, 0, 0), False),
    "conv_pad4": (2, 3, 8, 7, 5, 3, 3, 2, (0, 1, 0, 1), True),
    "conv_1x1_s2": (1, 3, 5, 5, 2, 1, 1, 2, (0, 0, 0, 0), False),
}
for case, (B, Cin, H, W, Cout, kh, kw, s, (pt, pb, pl, pr), bias) in convs.items():
    x, w = rnd(B, Cin, H, W), rnd(Cout, Cin, kh, kw, scale=0.3)
    b = rnd(Cout) if bias else None
    y = F.conv2d(F.pad(x, (pl, pr, pt, pb)), w, b, stride=s)
    put(case, x=x, w=w, y=y, **({"b": b} if bias else {}))

# ---- group norm (+ SiLU) -----------------------------------------------------
B, C, S, G = 2, 6, 10, 3
x = rnd(B, C, S, scale=3.0, offset=5.0)
g, b = rnd(C), rnd(C)
y = F.group_norm(x, G, g, b, eps=1e-6)
put("group_norm", x=x, g=g, b=b, y=y)
put("group_norm_silu", x=x, g=g, b=b, y=F.silu(y))
B, C, S, G = 1, 64, 49, 32
x = rnd(B, C, S, scale=0.5, offset=-2.0)
g, b = rnd(C), rnd(C)
put("group_norm_32", x=x, g=g, b=b, y=F.group_norm(x, G, g, b, eps=1e-5))

# ---- layer norm ----------------------------------------------------------------
rows, D = 5, 33
x = rnd(rows, D, scale=2.0, offset=3.0)
g, b = rnd(D), rnd(D)
put("layer_norm", x=x, g=g, b=b, y=F.layer_norm(x, (D,), g, b, eps=1e-5))

# ---- activations ---------------------------------------------------------------
x = torch.linspace(-9.0, 9.0, 1001) + rnd(1001, scale=0.01)
put("act", x=x, silu=F.silu(x), gelu=F.gelu(x), gelu_tanh=F.gelu(x, approximate="tanh"),
    quick_gelu=x * torch.sigmoid(1.702 * x))
rows, Fd = 3, 17
h = rnd(rows, 2 * Fd)
a, gate = h.chunk(2, dim=-1)
put("geglu", h=h, y=a * F.gelu(gate))

# ---- softmax -------------------------------------------------------------------
x = rnd(4, 37, scale=20.0)
x[1] += 1000.0
put("softmax", x=x, y=torch.softmax(x, dim=-1))

# ---- attention (tokens-major (B, T, H*D)) --------------------------------------
# (B, Tq, Tk, H, D, causal)
attns = {
    "attn_small": (2, 7, 11, 3, 8, False),
    "attn_causal": (1, 77, 77, 2, 40, True),
    "attn_long_q": (1, 130, 9, 1, 40, False),
    "attn_causal_rect": (2, 5, 9, 2, 8, True),
    "attn_one_key": (1, 3, 1, 2, 8, False),
}
for case, (B, Tq, Tk, H, D, causal) in attns.items():
    q, k, v = rnd(B, Tq, H * D), rnd(B, Tk, H * D), rnd(B, Tk, H * D)
    split = lambda t, T: t.view(B, T, H, D).transpose(1, 2)
    scale = D ** -0.5
    o = F.scaled_dot_product_attention(split(q, Tq), split(k, Tk), split(v, Tk),
                                       is_causal=causal, scale=scale)
    put(case, q=q, k=k, v=v, y=o.transpose(1, 2).reshape(B, Tq, H * D))

# ---- layout --------------------------------------------------------------------
x = rnd(2, 3, 5, 7)
put("upsample", x=x, y=F.interpolate(x, scale_factor=2.0, mode="nearest"))

path = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "ops", "ops.safetensors")
os.makedirs(os.path.dirname(path), exist_ok=True)
save_file(out, path)
print(path, sum(t.numel() * 4 for t in out.values()), "bytes of data")
