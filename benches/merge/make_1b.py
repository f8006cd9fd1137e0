#!/usr/bin/env python3
# A 1B-shaped random Llama and a random PEFT LoRA adapter on it, for the
# ft-merge memory/speed benchmark. The output is NOT committed: write it to
# scratch space.
#
# Pinned environment: Python 3.11.7, torch==2.15.0 (CPU), transformers==5.24.0,
# peft==0.21.2, safetensors==0.8.0.
#
#   python3 benches/merge/make_1b.py /work/scratch/merge1b
#
# writes DIR/base/   (config.json + 3 bf16 shards of <= 1 GB + index; hidden
#                     2048, 16 layers, intermediate 8192, vocab 32000, 32 query
#                     / 8 key-value heads, untied: ~1.1 B parameters, ~2.2 GB)
#        DIR/adapter/ (PEFT LoRA r=16, alpha=32 on q/k/v/o/gate/up/down_proj,
#                      lora_B random so the merge is not the identity)
"""See the header comment."""

import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.initialization import no_init_weights


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_1b.py OUT_DIR")
    out = Path(sys.argv[1])
    t0 = time.time()
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        dtype="bfloat16",
    )
    torch.set_default_dtype(torch.bfloat16)
    with no_init_weights():
        model = LlamaForCausalLM(config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * 0.02)
    model.save_pretrained(out / "base", max_shard_size="1GB")
    print(f"base written in {time.time() - t0:.1f} s")

    torch.manual_seed(1)
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * 0.01)
    peft_model.peft_config["default"].base_model_name_or_path = str(out / "base")
    peft_model.save_pretrained(out / "adapter")
    print(f"adapter written in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
