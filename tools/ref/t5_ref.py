"""t5_ref.py — golden values for tests/test_t5.c: tiny random T5EncoderModel
folders (the text_encoder_2 of FLUX.1 pipelines) as transformers saves them,
input ids and the last_hidden_state transformers computes (float32, CPU,
no attention mask, as FluxPipeline calls text_encoder_2(ids)[0]).

For each config NAME writes tests/fixtures/t5/NAME/text_encoder_2/
(config.json + weights, reloaded with from_pretrained before the reference
runs, so the golden values come from what is on disk) and
tests/fixtures/t5/NAME/expected.safetensors with
  ids_t7   (2, 7)  int32,  hidden_t7   (2, 7, d_model)   float32
  ids_t64  (2, 64) int32,  hidden_t64  (2, 64, d_model)  float32
(row 0 padded with pad id 0 after an EOS 1, row 1 full of random ids).

  gg_sharded  gated-gelu (gelu_new), d_model 32, d_kv 8 x 4 heads, d_ff 64,
              2 layers, 32 buckets / max distance 128, bfloat16 weights (as
              FLUX ships them; reference on the bf16-rounded weights in
              float32) in 2 shards + model.safetensors.index.json; config.json carries the
              keys FLUX's text_encoder_2 config has (dense_act_fn, is_gated_act,
              tie_word_embeddings false, ...)
  gg_fp16     gated-gelu, d_model 48, d_kv 16 x 4 heads (inner 64 != 48),
              d_ff 64, 3 layers, 8 buckets / max distance 20 (T = 64 reaches
              the clamped far buckets), layer_norm_epsilon 1e-5, float16
              weights in one file (reference on the fp16-rounded weights in
              float32)
  relu_embed  feed_forward_proj "relu" (T5 v1.0 DenseReluDense wi/wo), d_model
              16, d_kv 8 x 2 heads, d_ff 64, 2 layers, 16 buckets / 32, float16;
              the embedding stored only as encoder.embed_tokens.weight (no
              shared.weight)
Error folders (no expected values):
  bad_shape   encoder.block.1.layer.1.DenseReluDense.wi_1.weight is (65, 16)
              instead of (64, 16)
  no_rel_bias encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight
              removed
And tests/fixtures/t5/buckets.safetensors: T5Attention._relative_position_bucket
(bidirectional) for relative positions -L..L: cfg (n, 3) int32 rows
(num_buckets, max_distance, L), bucket_<i> (2L+1) int32.

Run: /opt/refenv/bin/python tools/ref/t5_ref.py
"""
import glob
import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file
from transformers import T5Config, T5EncoderModel
from transformers.models.t5.modeling_t5 import T5Attention

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "t5")
V = 2000   # the tiny T5 tokenizer's vocabulary size
SUB = "text_encoder_2"


def randomize(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "layer_norm" in n:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "relative_attention_bias" in n or "shared" in n or "embed_tokens" in n:
                p.copy_(torch.randn_like(p))
            elif ".q." in n or ".k." in n:
                p.copy_(0.5 * torch.randn_like(p) / p.shape[-1] ** 0.5)
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)


def make_ids(T, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V, (2, T), generator=g)
    n = min(T - 2, 20) if T > 8 else 4
    ids[0, n] = 1             # EOS
    ids[0, n + 1:] = 0        # padding
    return ids


def make(name, dtype=None, shard=None, drop_shared=False, flux_keys=False, **cfg):
    d = os.path.join(ROOT, name)
    shutil.rmtree(d, ignore_errors=True)
    sub = os.path.join(d, SUB)
    config = T5Config(vocab_size=V, decoder_start_token_id=0, **cfg)
    model = T5EncoderModel(config).eval()
    randomize(model, sum(name.encode()))
    if dtype is not None:
        model = model.to(dtype)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(sub, safe_serialization=True, **kw)
    if drop_shared:
        f = os.path.join(sub, "model.safetensors")
        w = load_file(f)
        w["encoder.embed_tokens.weight"] = w.pop("shared.weight") if "shared.weight" in w else w["encoder.embed_tokens.weight"]
        w.pop("shared.weight", None)
        save_file(w, f, metadata={"format": "pt"})
    if flux_keys:
        # keys of black-forest-labs/FLUX.1-dev text_encoder_2/config.json
        f = os.path.join(sub, "config.json")
        c = json.load(open(f))
        c.update({"architectures": ["T5EncoderModel"], "dense_act_fn": "gelu_new", "is_gated_act": True,
                  "is_encoder_decoder": True, "output_past": True, "tie_word_embeddings": False,
                  "num_decoder_layers": c["num_layers"], "use_cache": True, "dropout_rate": 0.1})
        json.dump(c, open(f, "w"), indent=2, sort_keys=True)
    files = sorted(os.listdir(sub))
    # reference from what is on disk, in float32
    ref = T5EncoderModel.from_pretrained(sub, dtype=torch.float32).eval()
    eager = T5EncoderModel.from_pretrained(sub, dtype=torch.float32, attn_implementation="eager").eval()
    out = {}
    for T, seed in ((7, 7), (64, 64)):
        ids = make_ids(T, seed + len(name))
        with torch.no_grad():
            h = ref(ids, output_hidden_states=False)[0]
            he = eager(ids)[0]
        out[f"ids_t{T}"] = ids.to(torch.int32).contiguous()
        out[f"hidden_t{T}"] = h.contiguous()
        print(f"{name}: T={T} attn={ref.config._attn_implementation} |h|max={h.abs().max():.3g} "
              f"sdpa-eager rel={((h - he).abs().max() / h.abs().max()).item():.2e}")
    save_file(out, os.path.join(d, "expected.safetensors"))
    print(name, files)
    return sub, files


a_sub, a_files = make("gg_sharded", dtype=torch.bfloat16, shard="100KB", flux_keys=True, d_model=32, d_kv=8, num_heads=4, d_ff=64,
                      num_layers=2, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                      feed_forward_proj="gated-gelu")
assert "model.safetensors.index.json" in a_files and len([f for f in a_files if f.endswith(".safetensors")]) == 2, a_files
make("gg_fp16", dtype=torch.float16, d_model=48, d_kv=16, num_heads=4, d_ff=64, num_layers=3,
     relative_attention_num_buckets=8, relative_attention_max_distance=20, layer_norm_epsilon=1e-5,
     feed_forward_proj="gated-gelu")
make("relu_embed", dtype=torch.float16, drop_shared=True, d_model=16, d_kv=8, num_heads=2, d_ff=64, num_layers=2,
     relative_attention_num_buckets=16, relative_attention_max_distance=32, feed_forward_proj="relu")


def broken(name, edit):
    d = os.path.join(ROOT, name, SUB)
    shutil.rmtree(os.path.join(ROOT, name), ignore_errors=True)
    cfg = T5Config(vocab_size=64, d_model=16, d_kv=8, num_heads=2, d_ff=64, num_layers=2,
                   feed_forward_proj="gated-gelu", decoder_start_token_id=0)
    T5EncoderModel(cfg).to(torch.float16).save_pretrained(d, safe_serialization=True)
    f = os.path.join(d, "model.safetensors")
    w = load_file(f)
    edit(w)
    save_file(w, f, metadata={"format": "pt"})


def bad_shape(w):
    k = "encoder.block.1.layer.1.DenseReluDense.wi_1.weight"
    assert w[k].shape == (64, 16)
    w[k] = torch.zeros(65, 16, dtype=w[k].dtype)


def no_bias(w):
    del w["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]


broken("bad_shape", bad_shape)
broken("no_rel_bias", no_bias)

# bucket tables straight from transformers' function
cfgs = [(32, 128, 2048), (8, 20, 256), (16, 32, 256), (64, 256, 1024), (6, 10, 64), (33, 100, 512), (4, 3, 64)]
tabs = {"cfg": torch.tensor(cfgs, dtype=torch.int32)}
for i, (nb, md, L) in enumerate(cfgs):
    rel = torch.arange(-L, L + 1, dtype=torch.long)
    b = T5Attention._relative_position_bucket(rel, bidirectional=True, num_buckets=nb, max_distance=md)
    tabs[f"bucket_{i}"] = b.to(torch.int32).contiguous()
save_file(tabs, os.path.join(ROOT, "buckets.safetensors"))

total = 0
for dp, _, fs in os.walk(ROOT):
    for f in fs:
        total += os.path.getsize(os.path.join(dp, f))
print("fixture bytes:", total)
