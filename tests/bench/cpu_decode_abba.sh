#!/usr/bin/env bash
# Two builds of r2_cpu_model_bench in ABBA order (A, B, B, A, ...), the standard decode command,
# one line per run and a summary per build: batch 1 and batch 8 tokens/s and the batch 8 / batch 1
# ratio (docs/perf/cpu.md, "Comparing two builds": consecutive runs on the reference machine
# alternate between faster and slower memory, so ABAB would favour one build).
#
#   tests/bench/cpu_decode_abba.sh ROUNDS BENCH_A BENCH_B [MODEL]
#   tests/bench/cpu_decode_abba.sh 6 /tmp/bench_old build/release/tests/r2_cpu_model_bench
#
# MODEL: a checkpoint folder [../peers/small-tok]; THREADS [2] sets OMP_NUM_THREADS.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
rounds=$1 a=$2 b=$3
model=${4:-$(dirname "$0")/../../../peers/small-tok}
for bin in "$a" "$b"; do
  [ -x "$bin" ] || { echo "cpu_decode_abba.sh: $bin is not an executable" >&2; exit 2; }
done
[ -f "$model/config.json" ] || { echo "cpu_decode_abba.sh: no config.json in $model" >&2; exit 2; }
log=$(mktemp)
run() {
  local out copy b1 b8
  out=$(OMP_NUM_THREADS=${THREADS:-2} "$1" model="$model" prompt=512 context=64 steps=16 \
    batches=1,8 2>&1) || { echo "$out" >&2; exit 1; }
  copy=$(echo "$out" | sed -n 's/^copy bandwidth \([0-9.]*\).*/\1/p')
  b1=$(echo "$out" | sed -n 's/^decode batch  1: *\([0-9.]*\) tokens.*/\1/p')
  b8=$(echo "$out" | sed -n 's/^decode batch  8: *\([0-9.]*\) tokens.*/\1/p')
  echo "$(date -u +%T) $2 copy_GBps $copy b1 $b1 b8 $b8 ratio $(awk -v x="$b1" -v y="$b8" \
    'BEGIN { printf "%.2f", y / x }')" | tee -a "$log"
}
for _ in $(seq "$rounds"); do run "$a" A; run "$b" B; run "$b" B; run "$a" A; done
for side in A B; do
  awk -v s="$side" '$2 == s { b1[++n] = $6; b8[n] = $8; r[n] = $10; if ($10 >= 3) k++ }
    function med(v, n,   i, j, t) {
      for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) {
        t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
      return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }
    END { printf "%s: %d runs, medians: batch 1 %.1f, batch 8 %.1f tokens/s, ratio %.2f; %d runs >= 3x\n",
          s, n, med(b1, n), med(b8, n), med(r, n), k }' "$log"
done
rm -f "$log"
