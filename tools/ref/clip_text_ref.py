"""clip_text_ref.py — golden values for tests/test_clip_text.c: tiny random
CLIPTextModel folders as transformers saves them, plus input ids and the
outputs transformers computes (float32, CPU).

For each config NAME writes tests/fixtures/clip_text/NAME/text_encoder/
{config.json, model.safetensors} (save_pretrained, safe_serialization; the
quick_eos2 weights renamed to the "text_model."-prefixed names of
transformers 4.x checkpoints) and
tests/fixtures/clip_text/NAME/expected.safetensors with
  ids           (B, T) int32   input ids (padded)
  last_hidden   (B, T, D)      last_hidden_state (after final_layer_norm)
  pooled        (B, D)         pooler_output
  skip1         (B, T, D)      final_layer_norm(hidden_states[-2]) (clip_skip=1 as diffusers)
Also writes bad_shape/text_encoder/: a valid config whose weights hold one
tensor of the wrong shape (encoder.layers.1.mlp.fc1.weight: (33, 16), not (32, 16)).

Run: /opt/refenv/bin/python tools/ref/clip_text_ref.py
"""
import json
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures",
                    "clip_text")


def make(name, ids, prefix=False, **cfg):
    torch.manual_seed(sum(name.encode()))
    config = CLIPTextConfig(**cfg)
    model = CLIPTextModel(config).eval()
    # larger-than-init weights so that every layer matters in the comparison
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "layer_norm" in n:
                p.copy_(1.0 + 0.2 * torch.randn_like(p) if n.endswith("weight") else 0.2 * torch.randn_like(p))
            elif "embedding" in n:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5 if p.ndim == 2 else 0.1 * torch.randn_like(p))
    d = os.path.join(ROOT, name)
    model.save_pretrained(os.path.join(d, "text_encoder"), safe_serialization=True)
    ids = torch.tensor(ids, dtype=torch.long)
    if prefix:
        # Checkpoints written by transformers 4.x (every SD1.x/2.x folder on the
        # Hub) name the tensors "text_model.<name>"; transformers 5 drops the
        # prefix. Rewrite to the 4.x names and check transformers reads them.
        f = os.path.join(d, "text_encoder", "model.safetensors")
        w = load_file(f)
        save_file({"text_model." + k: v for k, v in w.items()}, f, metadata={"format": "pt"})
        model = CLIPTextModel.from_pretrained(os.path.join(d, "text_encoder")).eval()
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        skip1 = model.final_layer_norm(out.hidden_states[-2])
    save_file({"ids": ids.to(torch.int32).contiguous(),
               "last_hidden": out.last_hidden_state.contiguous(),
               "pooled": out.pooler_output.contiguous(),
               "skip1": skip1.contiguous()},
              os.path.join(d, "expected.safetensors"))
    print(name, config.hidden_act, "eos", config.eos_token_id, tuple(out.last_hidden_state.shape))
    return d


# SD1.x style: legacy eos_token_id 2 (pooled = argmax of ids), EOS = highest id, padded with EOS.
V = 1000
bos, eos = V - 2, V - 1
make("quick_eos2", [[bos, 5, 17, 300, eos] + [eos] * 11,
                    [bos, 42, 7, 7, 900, 13, 650, 2, 80, eos] + [eos] * 6],
     vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
     num_attention_heads=4, max_position_embeddings=16, hidden_act="quick_gelu",
     eos_token_id=2, bos_token_id=bos, pad_token_id=1, projection_dim=16, prefix=True)

# SD2.x style: erf gelu, a real eos id, padded with 0, T < max_position_embeddings;
# the second row holds EOS twice (the first wins) and an id above EOS.
V = 512
bos, eos = 510, 300
make("gelu_eos", [[bos, 5, 17, 3, eos, 0, 0, 0, 0, 0, 0, 0],
                  [bos, 400, 511, 7, 99, 13, 65, 2, 80, 44, eos, eos],
                  [bos, eos, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]],
     vocab_size=V, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
     num_attention_heads=4, max_position_embeddings=20, hidden_act="gelu",
     eos_token_id=eos, bos_token_id=bos, pad_token_id=0, layer_norm_eps=1e-6, projection_dim=16)

# tanh GELU (gelu_new), EOS absent from one row (pooled = position 0, as transformers).
V = 300
make("tanh_noeos", [[1, 2, 3, 250, 299, 0, 0, 0], [10, 20, 30, 40, 50, 60, 70, 80]],
     vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
     num_attention_heads=4, max_position_embeddings=8, hidden_act="gelu_new",
     eos_token_id=299, bos_token_id=298, pad_token_id=0, projection_dim=16)

# A folder whose weights lie about one shape.
V = 64
cfg = dict(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=2, bos_token_id=0, pad_token_id=1,
           num_attention_heads=4, max_position_embeddings=8, eos_token_id=2, projection_dim=8)
d = os.path.join(ROOT, "bad_shape", "text_encoder")
CLIPTextModel(CLIPTextConfig(**cfg)).save_pretrained(d, safe_serialization=True)
w = load_file(os.path.join(d, "model.safetensors"))
bad = [k for k in w if k.endswith("encoder.layers.1.mlp.fc1.weight")]
assert len(bad) == 1
w[bad[0]] = torch.zeros(33, 16)
save_file(w, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})

total = 0
for dp, _, fs in os.walk(ROOT):
    for f in fs:
        total += os.path.getsize(os.path.join(dp, f))
print("fixture bytes:", total)
