#!/usr/bin/env bash
# The embedded default example, end to end on this machine's CPU.
# Today: fetch the model, build ft, validate the example config and prepare
# its data. Training, merge and export join as their stages land.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-smollm2.sh
cargo build --release -p ft-cli
ft=target/release/ft
"$ft" validate examples/quickstart.yml
"$ft" preprocess examples/quickstart.yml --debug 2
