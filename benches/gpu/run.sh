#!/usr/bin/env bash
# One GPU run: builds nothing. Checks ft's CUDA kernels against their CPU
# references, trains QLoRA on a random-init Llama-3.2-1B shape with ft and with
# PyTorch + PEFT + bitsandbytes (../shared/bench/peft_baseline.py) in the same
# call, and prints one table. Expects, under .gpu/ (ignored by git):
#   ft.xz, kernels_test.xz, train_tiny.xz, nf4_dequant_bench.xz, gemm_bench.xz
#                       release builds with --features cuda (xz -9): ft, the
#                       ft-kernels and ft-train/train_tiny test binaries, and
#                       kernels/examples/{nf4_dequant_bench,gemm_bench}
#   tok/tokenizer.json.gz, tok/tokenizer_config.json   Llama 3.1 tokenizer
#   peft_baseline.py    copy of ../shared/bench/peft_baseline.py
#   bnb/                bitsandbytes 0.50.2 wheel, libbitsandbytes_cuda130.so only
# Usage (repo root on the GPU machine): bash benches/gpu/run.sh [SECTION...]
# Sections (default all but diag): kernels gemm gemmbench qlora dequant ft peft;
# diag traces 2 steps of a 2-layer cut of the 1B shape with cubecl's
# compilation/autotune log (where the first CUDA step's host time goes).
# FT_STEPS (default 8) and FT_TIMEOUT (default 200 s) bound the ft run;
# FT_AUTOTUNE sets cubecl's autotune level for it (default minimal: at balanced, ft on wgpu
# gets a non-finite loss at step 2 from some autotuned kernel, see benches/README.md), FT_DTYPE its
# model.dtype (default auto = bf16 on CUDA); FT_ATTENTION_BLOCK_MIB (default 256) sizes
# attention's row blocks (each block: ~4 f32 tensors of that size; fewer blocks, fewer launches);
# FT_CUBLAS_ORDER=sync puts cuBLAS back on its own stream with two host syncs per product
# (default `stream`: on cubecl's stream, no host sync).
set -u
G=.gpu
W=/tmp/ft-gpu
OUT=${OUT:-/tmp/ft-gpu-out}
SECTIONS=" ${*:-kernels gemmbench qlora dequant ft peft} "
want() { [[ "$SECTIONS" == *" $1 "* ]]; }
mkdir -p "$W" "$OUT" "$W/bin"
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1 RUST_BACKTRACE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?') date $(date -u +%FT%TZ) sections:$SECTIONS"
unxz() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"; }
for b in ft kernels_test train_tiny nf4_dequant_bench gemm_bench; do
  [ -f "$G/$b.xz" ] && unxz "$G/$b.xz" "$W/bin/$b" && chmod +x "$W/bin/$b"
done
mkdir -p "$W/tok" && gunzip -c "$G/tok/tokenizer.json.gz" > "$W/tok/tokenizer.json" && cp "$G/tok/tokenizer_config.json" "$W/tok/"
# The test binaries read fixtures through the CARGO_MANIFEST_DIR baked in at build time.
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }

peak_during() { # peak_during LABEL CMD...: runs CMD; samples memory and utilization every 100 ms
  local label=$1; shift
  nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits -lms 100 > "$W/smi-$label.txt" &
  local smi=$!
  local t0=$(date +%s.%N)
  "$@"; local rc=$?
  kill $smi 2>/dev/null; wait $smi 2>/dev/null
  local peak=$(cut -d, -f1 "$W/smi-$label.txt" | sort -n | tail -1)
  # GPU utilization in 5-second windows (what share of the time a kernel was running).
  local util=$(awk -F', ' '{s+=$2; n++} n==50 {printf "%d ", s/n; s=0; n=0}' "$W/smi-$label.txt")
  echo "[$label] rc=$rc wall_s=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t0}") smi_peak_MiB=$peak util%/5s: $util"
  echo "$label rc=$rc smi_peak_MiB=$peak" >> "$W/summary.txt"
}

if want kernels; then
  echo "== CUDA kernels vs CPU references (one thread: the TF32 switch is process-wide)"
  peak_during kernels timeout 240 "$W/bin/kernels_test" cuda --include-ignored --test-threads=1 2>&1 | grep -E "^test |SKIPPED|panicked|test result|error" | head -40
fi
if want gemm; then
  for order in stream sync; do
    echo "== cuBLAS gemm vs burn's autodiff on the CPU, FT_CUBLAS_ORDER=$order"
    FT_CUBLAS_ORDER=$order timeout 60 "$W/bin/kernels_test" gemm --test-threads=1 2>&1 | grep -E "^test |SKIPPED|panicked|warning|test result|error" | head
  done
fi
if want gemmbench; then
  echo "== GEMMs at training shapes: cuBLAS (f32, TF32) vs burn's matmul, checked against f64"
  timeout 90 "$W/bin/gemm_bench" cuda 2>&1 | tail -20
fi
if want dequant; then
  echo "== NF4 dequant bandwidth (bitsandbytes' shape: 8192 x 32768, double-quant)"
  timeout 90 "$W/bin/nf4_dequant_bench" cuda 2>&1 | tail -20
fi
if want ft; then
  echo "== ft QLoRA, Llama-3.2-1B shape, 4 x 2048, ${FT_STEPS:-8} steps, dtype ${FT_DTYPE:-auto}, autotune ${FT_AUTOTUNE:-minimal}"
  python3 benches/gpu/make_model.py llama-3.2-1b "$W/llama-3.2-1b" "$W/tok" 2>&1 | tail -1
  python3 benches/preprocess/gen_data.py "$W/chats.jsonl" 4000
  sed -e "s/max_steps: 8/max_steps: ${FT_STEPS:-8}/" -e "s/  device: cuda/  device: cuda\n  dtype: ${FT_DTYPE:-auto}/" \
      benches/gpu/qlora_1b.yml > "$W/qlora_1b.yml"
  peak_during ft env CUBECL_AUTOTUNE_LEVEL="${FT_AUTOTUNE:-minimal}" timeout "${FT_TIMEOUT:-200}" "$W/bin/ft" run "$W/qlora_1b.yml" 2>&1 | grep -v "^\s*$" | tail -20
  cp "$W/out-1b/metrics.jsonl" "$OUT/ft-metrics-1b.jsonl" 2>/dev/null
  python3 - "$W/out-1b/metrics.jsonl" <<'PY' 2>&1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
for r in rows:
    print(f"ft step {r['step']}: loss {r['loss']:.4f} tokens {r['tokens']} tok/s {r['tokens_per_s']:.0f}")
steady = [r["tokens_per_s"] for r in rows[2:]] or [r["tokens_per_s"] for r in rows]
if steady:
    print(f"ft steady tok/s (steps 3..): {sum(steady) / len(steady):.0f}")
PY
fi
if want diag; then
  echo "== diag: 2 steps of a 2-layer 1B cut with CUBECL_DEBUG_LOG"
  python3 benches/gpu/make_model.py llama-3.2-1b-2l "$W/llama-2l" "$W/tok" 2>&1 | tail -1
  [ -f "$W/chats.jsonl" ] || python3 benches/preprocess/gen_data.py "$W/chats.jsonl" 4000
  sed -e "s/max_steps: 8/max_steps: 2/" -e "s#/tmp/ft-gpu/llama-3.2-1b#$W/llama-2l#" \
      -e "s#/tmp/ft-gpu/out-1b#$W/out-2l#" benches/gpu/qlora_1b.yml > "$W/diag.yml"
  peak_during diag env CUBECL_AUTOTUNE_LEVEL="${FT_AUTOTUNE:-minimal}" CUBECL_DEBUG_LOG="$W/cubecl.log" timeout "${DIAG_TIMEOUT:-150}" \
      "$W/bin/ft" run "$W/diag.yml" 2>&1 | grep -E "^step|trained|\[diag\]|rror" | tail -8
  echo "cubecl log: $(wc -l < "$W/cubecl.log" 2>/dev/null) lines; lines mentioning compil: $(grep -ci compil "$W/cubecl.log" 2>/dev/null); autotun: $(grep -ci autotun "$W/cubecl.log" 2>/dev/null)"
  gzip -c "$W/cubecl.log" > "$OUT/cubecl-diag.log.gz" 2>/dev/null
fi
if want qlora; then
  echo "== one QLoRA step on CUDA vs PEFT + bitsandbytes (fixtures: f32, then bf16)"
  timeout 120 "$W/bin/train_tiny" on_cuda --ignored --nocapture --test-threads=1 2>&1 | grep -E "rel err|bf16 QLoRA|panicked|test result|SKIPPED" | head
fi
if want peft; then
  echo "== PEFT + bitsandbytes QLoRA, same shape and batch"
  peak_during peft env PYTHONPATH="$G/bnb:$G" OUT="$OUT" BNB_CUDA_VERSION=130 timeout 120 python3 -c '
import peft_baseline as pb, torch
print("device", torch.cuda.get_device_name(0), "torch", torch.__version__)
pb.bnb_dequant()
pb.train("llama-3.2-1b", True, batch=4, seq=2048)
' 2>&1 | grep -E '^\{|^device|^\[peft'
fi
echo "== summary"
cat "$W/summary.txt" 2>/dev/null
