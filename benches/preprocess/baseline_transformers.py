#!/usr/bin/env python3
"""The Python baseline for `ft preprocess`: what an axolotl-style pipeline does
per conversation with transformers — render the chat template, tokenize, and
mask everything but the assistant turns (found by rendering each prefix with
`add_generation_prompt` and mapping character spans to tokens via offsets).
No packing (ft also packs, so the comparison favours the baseline).

    pip install transformers==5.24.0 tokenizers==0.23.3 jinja2==3.1.6
    python3 benches/preprocess/baseline_transformers.py TOKENIZER_DIR chats.jsonl
Prints samples, tokens and trainable tokens, so both sides can be compared.
"""
import json
import sys

from transformers import AutoTokenizer


def main():
    tok = AutoTokenizer.from_pretrained(sys.argv[1])
    samples = tokens = trained = 0
    with open(sys.argv[2], encoding="utf-8") as f:
        for line in f:
            msgs = json.loads(line)["messages"]
            text = tok.apply_chat_template(msgs, tokenize=False)
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            spans = []
            for i, m in enumerate(msgs):
                if m["role"] != "assistant":
                    continue
                start = len(tok.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True))
                # Through the end-of-turn token, not the newline after it
                # (what ft and axolotl train with train_on_eos: turn).
                end = len(tok.apply_chat_template(msgs[: i + 1], tokenize=False).rstrip())
                spans.append((start, end))
            mask = [any(s < b and a < e for s, e in spans) for a, b in enc["offset_mapping"]]
            samples += 1
            tokens += len(enc["input_ids"])
            trained += sum(mask)
    print(json.dumps({"samples": samples, "tokens": tokens, "trainable_tokens": trained}))


if __name__ == "__main__":
    main()
