#!/usr/bin/env python3
# Loads ft's merged model (output_dir/merged of `ft merge-lora`) with plain
# transformers, as a user would, and answers held-out prompts with the chat
# template ft saved there. A manual cross-check (not run in CI); the result
# goes into the merge issue's note.
#
# Pinned: Python 3.11.7, torch==2.15.0 (CPU), transformers==5.24.0.
#
#   python3 tests/check/transformers_loads_merged.py outputs/quickstart/merged \
#       examples/data/pirate_test.jsonl 12 "Captain Byte"
"""See the header comment."""

import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: transformers_loads_merged.py MERGED_DIR PROMPTS.jsonl N EXPECT")
    merged, prompts_path, n, expect = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    prompts = []
    with open(prompts_path) as f:
        for line in f:
            msgs = json.loads(line)["messages"]
            prompts.append(next(m["content"] for m in msgs if m["role"] == "user"))
            if len(prompts) == n:
                break
    hits = 0
    for p in prompts:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=48, do_sample=False)
        answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        ok = expect in answer
        hits += ok
        print(f"{'+' if ok else '-'} {p} -> {answer.strip()}")
    print(f"score {hits}/{len(prompts)}")


if __name__ == "__main__":
    main()
