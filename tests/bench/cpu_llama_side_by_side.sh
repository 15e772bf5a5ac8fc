#!/usr/bin/env bash
# r2serve's CPU backend and llama.cpp's llama-bench on the same checkpoint, back to back: our
# prefill (512 tokens) and decode at batch 1 and 8 with the bandwidth floor, then llama-bench's
# pp512 and tg16 @ d64 at the same thread count (docs/perf/cpu.md, "Commands", says how llama.cpp
# is built and the checkpoint converted, outside the repository).
#
#   tests/bench/cpu_llama_side_by_side.sh BENCH LLAMA_BENCH GGUF [MODEL]
#   tests/bench/cpu_llama_side_by_side.sh build/release/tests/r2_cpu_model_bench \
#       ../peers/llama-build/bin/llama-bench ../peers/small-bf16.gguf
#
# MODEL: our checkpoint folder [../peers/small-tok]; THREADS [2]; ROUNDS [2].
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,11p' "$0" >&2
  exit 2
fi
bench=$1 llama=$2 gguf=$3
model=${4:-$(dirname "$0")/../../../peers/small-tok}
threads=${THREADS:-2}
for bin in "$bench" "$llama"; do
  [ -x "$bin" ] || { echo "cpu_llama_side_by_side.sh: $bin is not an executable" >&2; exit 2; }
done
[ -f "$gguf" ] || { echo "cpu_llama_side_by_side.sh: no file $gguf" >&2; exit 2; }
[ -f "$model/config.json" ] || { echo "cpu_llama_side_by_side.sh: no config.json in $model" >&2; exit 2; }
for round in $(seq "${ROUNDS:-2}"); do
  echo "=== round $round, $threads threads, $(date -u +%T) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
  OMP_NUM_THREADS=$threads "$bench" model="$model" prompt=512 context=64 steps=16 batches=1,8 \
    2>&1 | grep -E '^(copy|read) bandwidth|^prefill|^decode batch'
  "$llama" -m "$gguf" -t "$threads" --poll 0 -p 512 -n 0 -r 3 2>&1 | grep -E 'pp512'
  "$llama" -m "$gguf" -t "$threads" --poll 0 -p 0 -n 16 -d 64 -r 3 2>&1 | grep -E 'tg16'
done
