#!/usr/bin/env python3
# Baseline for the ft-merge benchmark: PEFT's merge_and_unload() + save_pretrained
# on the directories benches/merge/make_1b.py writes.
#
# Pinned environment: Python 3.11.7, torch==2.15.0 (CPU), transformers==5.24.0,
# peft==0.21.2, safetensors==0.8.0.
#
#   /usr/bin/time -v python3 benches/merge/baseline_peft.py \
#       /work/scratch/merge1b/base /work/scratch/merge1b/adapter /work/scratch/merge1b/out-peft
"""See the header comment."""

import sys
import time

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: baseline_peft.py BASE ADAPTER OUT")
    base, adapter, out = sys.argv[1:]
    t0 = time.time()
    # The stored dtype (bf16), as `merge.dtype: auto` does.
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    model = PeftModel.from_pretrained(model, adapter)
    t1 = time.time()
    merged = model.merge_and_unload()
    t2 = time.time()
    merged.save_pretrained(out, max_shard_size="1GB")
    t3 = time.time()
    print(
        f"load {t1 - t0:.1f} s, merge {t2 - t1:.1f} s, save {t3 - t2:.1f} s, "
        f"total {t3 - t0:.1f} s (torch threads {torch.get_num_threads()})"
    )


if __name__ == "__main__":
    main()
