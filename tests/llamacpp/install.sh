#!/usr/bin/env bash
# Installs llama.cpp for the tests: the npm package node-llama-cpp with its
# prebuilt Linux x64 CPU binaries only (85 MB, ~15 s), into
# ${FT_LLAMACPP_PREFIX:-~/.cache/ft/llamacpp}. Scripts are not run: the
# package's postinstall would try to download or build other variants.
set -euo pipefail
prefix=${FT_LLAMACPP_PREFIX:-$HOME/.cache/ft/llamacpp}
if [ -f "$prefix/node_modules/node-llama-cpp/dist/index.js" ] &&
   [ -d "$prefix/node_modules/@node-llama-cpp/linux-x64" ]; then
  echo "node-llama-cpp already in $prefix"
  exit 0
fi
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --omit=optional --ignore-scripts \
  node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1
echo "node-llama-cpp installed in $prefix"
