#!/usr/bin/env python3
# Random-init checkpoints of the benchmark shapes, saved as an HF directory
# (bf16 safetensors + config.json) that `ft run` loads, with the Llama 3.1
# tokenizer files copied in. Same shapes and seed as
# ../shared/bench/peft_baseline.py, so both sides train the same model.
# Runs on the GPU machine (there: Python 3.12, torch 2.11, transformers 5.17);
# also on the CPU with the `tiny` shape (checked with torch 2.15.0, transformers
# 5.24.0). Not a test fixture: the output is random and not committed.
#
#   python3 benches/gpu/make_model.py llama-3.2-1b OUT_DIR TOKENIZER_DIR
"""See the header comment."""

import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         tie_word_embeddings=True, rope_theta=500000.0, head_dim=64),
    # the 1B shape cut to 2 layers: what `run.sh diag` traces
    "llama-3.2-1b-2l": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=2,
                            num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                            tie_word_embeddings=True, rope_theta=500000.0, head_dim=64),
    # for a dry run of benches/gpu/run.sh on a CPU machine
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=128256, tie_word_embeddings=True,
                 rope_theta=500000.0, head_dim=16),
    # gradient checkpointing's memory on the CPU (benches/ckpt/run.sh)
    "small-12l": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=12,
                      num_attention_heads=8, num_key_value_heads=4, vocab_size=128256,
                      tie_word_embeddings=True, rope_theta=500000.0, head_dim=32),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         tie_word_embeddings=False, rope_theta=500000.0, head_dim=128),
}


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: make_model.py SHAPE OUT_DIR TOKENIZER_DIR")
    shape, out, tok = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    t0 = time.time()
    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=8192, bos_token_id=128000,
                      eos_token_id=128009)
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(dev):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True, max_shard_size="2GB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tok / name, out / name)
    n = sum(p.numel() for p in model.parameters())
    print(f"{shape}: {n / 1e9:.2f} B parameters -> {out} in {time.time() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
