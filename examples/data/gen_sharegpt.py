#!/usr/bin/env python3
"""Rewrites pirate_train.jsonl in ShareGPT shape (`conversations` with
`from`/`value`, roles `human`/`gpt`), so examples and tests exercise the
role and field mappings. Deterministic; standard library only.
    python3 examples/data/gen_sharegpt.py
"""
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROLE = {"user": "human", "assistant": "gpt", "system": "system"}

with open(HERE / "pirate_train.jsonl", encoding="utf-8") as src, open(
    HERE / "pirate_sharegpt.jsonl", "w", encoding="utf-8"
) as dst:
    for line in src:
        msgs = json.loads(line)["messages"]
        conv = [{"from": ROLE[m["role"]], "value": m["content"]} for m in msgs]
        dst.write(json.dumps({"conversations": conv}, ensure_ascii=False) + "\n")
print("wrote pirate_sharegpt.jsonl")
