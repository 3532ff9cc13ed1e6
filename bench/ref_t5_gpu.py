"""PyTorch/transformers side of the T5 GPU benchmark (bench/run_t5_vae_gpu.sh); not a test.

  ref_t5_gpu.py build DIR                 DIR/text_encoder_2: T5EncoderModel with FLUX.1's
      text_encoder_2 config (t5-v1_1-xxl encoder: 24 layers, d_model 4096, d_ff 10240, 64 heads x 64,
      gated-gelu), transformers' own random init done on the GPU in bf16, saved bf16 (~9.5 GB)
  ref_t5_gpu.py step DIR TOKENS DTYPE ITERS   time one encoder forward, batch 1, eager
      (the token ids of bench_t5.c)
TINY=1 / REF_DEVICE=cpu: see ref_common.py.
"""
import sys

import torch

from ref_common import DEVICE, DTYPES, TINY, bench_hash, building, exact_fp32, load, report, time_calls


def config():
    from transformers import T5Config
    size = dict(d_model=64, d_ff=160, num_layers=2, num_heads=4, d_kv=16) if TINY else \
        dict(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64)
    return T5Config(vocab_size=32128, feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                    relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
                    num_decoder_layers=size["num_layers"], **size)


def build(d):
    from transformers import T5EncoderModel
    torch.manual_seed(0)
    with building(torch.bfloat16):
        m = T5EncoderModel(config())
    m.save_pretrained(f"{d}/text_encoder_2", max_shard_size="5GB")


def step(d, tokens, dtype, iters):
    from transformers import T5EncoderModel
    exact_fp32()
    m, load_s = load(lambda: T5EncoderModel.from_pretrained(d, subfolder="text_encoder_2", dtype=DTYPES[dtype]))
    ids = (bench_hash(tokens, 0) % m.config.vocab_size).reshape(1, tokens).to(DEVICE)
    times, out, weights = time_calls(lambda: m(input_ids=ids).last_hidden_state, iters)
    report("transformers", "t5_encoder", dtype, times, out, weights, load_s, batch=1, tokens=tokens,
           attn=m.config._attn_implementation)


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2])
    else:
        step(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
