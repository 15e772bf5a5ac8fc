#!/usr/bin/env bash
# The GPU check: one script for a short window on a GPU machine (see ../../../shared/DESIGN.md,
# "GPU work"). Builds the CUDA kernels, their tests and the model tests for sm_90a (or uses an
# existing build), runs every CUDA-vs-CPU kernel test, the model tests on the CUDA backend
# (golden logits against transformers, decode-vs-prefill, MTP) and the cuda_*_bench benchmarks,
# writes every log into --out and prints a short summary table last. Each step has a timeout and a
# failed step does not stop the next one. Exit status: 0 when every step passed (or there is no
# GPU to check), 1 otherwise.
#
# Usage: tests/gpu/device_check.sh [--out DIR] [--deps DIR] [--prebuilt DIR] [--force]
#   --out DIR       logs and the summary (default: ./device_check_out)
#   --deps DIR      a prefix of extracted Debian packages (usr/include, usr/lib/<arch>, cmake
#                   configs: Abseil, GTest, nlohmann-json, PCRE2) the machine's image lacks
#   --prebuilt DIR  an existing CUDA build directory instead of configuring and building
#   --force         run the steps even without a GPU (the CUDA tests then skip)
# Budget: about 6 minutes on an H200 machine with 16 cores, build included.
# From a build machine: tests/gpu/make_deps.sh build/gpu-deps, then on the GPU machine (with
# build/gpu-deps carried along): tests/gpu/device_check.sh --deps build/gpu-deps --out "$OUT/dc"
set -u -o pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$PWD/device_check_out"
DEPS=""
PREBUILT=""
FORCE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --deps) DEPS="$2"; shift 2 ;;
    --prebuilt) PREBUILT="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "device_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT" || { echo "device_check: cannot create --out $OUT" >&2; exit 2; }
OUT="$(cd "$OUT" && pwd)"
START=$(date +%s)

# One line per step for the summary: name, status, seconds, detail.
SUMMARY=()
FAILED=0
note() { SUMMARY+=("$(printf '%-28s %-8s %5ss  %s' "$1" "$2" "$3" "$4")"); }

# run_step NAME TIMEOUT_S CMD...: runs CMD with its output in $OUT/NAME.log; returns its status.
run_step() {
  local name="$1" limit="$2"; shift 2
  local t0=$(date +%s) rc
  echo "== $name (timeout ${limit}s): $*" | tee -a "$OUT/steps.log"
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  LAST_SECONDS=$(( $(date +%s) - t0 ))
  echo "   exit $rc after ${LAST_SECONDS}s" | tee -a "$OUT/steps.log"
  return $rc
}

status_of() {  # exit code -> word
  case "$1" in 0) echo ok ;; 124|137) echo TIMEOUT ;; *) echo "FAIL($1)" ;; esac
}

# gtest counts from a log: "passed N failed N skipped N".
gtest_counts() {
  local log="$1" passed failed skipped
  passed=$(grep -oE '^\[  PASSED  \] [0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  failed=$(grep -oE '^\[  FAILED  \] [0-9]+ test' "$log" | grep -oE '[0-9]+' | tail -1)
  skipped=$(grep -oE '^\[  SKIPPED \] [0-9]+ test' "$log" | grep -oE '[0-9]+' | tail -1)
  echo "passed ${passed:-0} failed ${failed:-0} skipped ${skipped:-0}"
}

# ---- the machine --------------------------------------------------------------------------------
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "commit: $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "host: $(uname -n), $(nproc) cores"
  command -v nvcc >/dev/null && nvcc --version | tail -1
} >"$OUT/machine.log" 2>&1
GPU_LINE=""
if command -v nvidia-smi >/dev/null 2>&1; then
  GPU_LINE=$(nvidia-smi --query-gpu=index,name,memory.total,driver_version,clocks.max.sm \
             --format=csv,noheader 2>>"$OUT/machine.log" | head -1)
  nvidia-smi >>"$OUT/machine.log" 2>&1
fi
if [[ -n "$GPU_LINE" ]]; then
  echo "GPU: $GPU_LINE"
else
  GPU_LINE="none (nvidia-smi missing or lists no device)"
  echo "GPU: $GPU_LINE"
  if [[ $FORCE -eq 0 ]]; then
    note "gpu" "none" 0 "no GPU here: nothing to check (--force runs the steps anyway)"
    echo
    echo "==== device_check summary (logs in $OUT) ===="
    printf '%s\n' "${SUMMARY[@]}"
    exit 0
  fi
fi
echo "GPU: $GPU_LINE" >>"$OUT/machine.log"

# ---- dependencies from --deps -------------------------------------------------------------------
if [[ -n "$DEPS" ]]; then
  DEPS="$(cd "$DEPS" && pwd)" || { echo "device_check: no --deps dir" >&2; exit 2; }
  ARCH_LIB="lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
  export CMAKE_PREFIX_PATH="$DEPS/usr:$DEPS${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export CPATH="$DEPS/usr/include${CPATH:+:$CPATH}"
  export LIBRARY_PATH="$DEPS/usr/$ARCH_LIB:$DEPS/usr/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export LD_LIBRARY_PATH="$DEPS/usr/$ARCH_LIB:$DEPS/usr/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PKG_CONFIG_PATH="$DEPS/usr/$ARCH_LIB/pkgconfig:$DEPS/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export PKG_CONFIG_SYSROOT_DIR="$DEPS"
fi

# ---- build --------------------------------------------------------------------------------------
if [[ -n "$PREBUILT" ]]; then
  BUILD="$(cd "$PREBUILT" && pwd)" || { echo "device_check: no --prebuilt dir" >&2; exit 2; }
  note "build" "prebuilt" 0 "$BUILD"
else
  BUILD="$SRC/build/device-check"
  if run_step configure 90 cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DR2_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DR2_BUILD_SERVER=OFF -DR2_BUILD_FUZZ=OFF; then
    note "configure" ok "$LAST_SECONDS" ""
    TARGETS=(r2_cuda_tests r2_model_tests)
    for t in $(ninja -C "$BUILD" -t targets all 2>/dev/null | grep -oE '^tests/r2_cuda_[a-z0-9_]*_bench' \
               | sort -u); do
      TARGETS+=("$(basename "$t")")
    done
    if run_step build 330 cmake --build "$BUILD" -j"$(nproc)" --target "${TARGETS[@]}"; then
      note "build" ok "$LAST_SECONDS" "${TARGETS[*]}"
    else
      rc=$?; FAILED=1
      note "build" "$(status_of $rc)" "$LAST_SECONDS" "see build.log; running what was built"
      grep -E 'error|FAILED' "$OUT/build.log" | head -5 | sed 's/^/    /'
    fi
  else
    rc=$?; FAILED=1
    note "configure" "$(status_of $rc)" "$LAST_SECONDS" "$(grep -m1 -E 'Error|error' "$OUT/configure.log")"
  fi
fi

# ---- tests --------------------------------------------------------------------------------------
# run_gtest NAME TIMEOUT BINARY [ARGS...]
run_gtest() {
  local name="$1" limit="$2" bin="$3"; shift 3
  if [[ ! -x "$bin" ]]; then
    FAILED=1; note "$name" "MISSING" 0 "$bin not built"; return
  fi
  run_step "$name" "$limit" "$bin" --gtest_color=no "$@"
  local rc=$?
  [[ $rc -ne 0 ]] && FAILED=1
  note "$name" "$(status_of $rc)" "$LAST_SECONDS" "$(gtest_counts "$OUT/$name.log")"
}
# 240 s: the sampling and KV-format tests added CPU-reference work to this binary.
run_gtest cuda_tests 240 "$BUILD/tests/r2_cuda_tests"
# The model tests on the CUDA backend: golden (vs transformers), forward, MTP; bounds in
# tests/unit/model/model_test_util.h (LogitsBound).
run_gtest model_tests_cuda 120 "$BUILD/tests/r2_model_tests" --gtest_filter='*cuda*:*Cuda*'

# ---- benchmarks ---------------------------------------------------------------------------------
BENCH_LINES=()
for bench in "$BUILD"/tests/r2_cuda_*_bench; do
  [[ -x "$bench" ]] || continue
  name="$(basename "$bench")"; name="${name#r2_}"
  run_step "$name" 150 "$bench"
  rc=$?
  [[ $rc -ne 0 ]] && FAILED=1
  note "$name" "$(status_of $rc)" "$LAST_SECONDS" "$(tail -1 "$OUT/$name.log" | cut -c1-70)"
  # A bench's short table is the block after its last line starting with "===" (else its last
  # 8 lines).
  table=$(awk '/^===/{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$OUT/$name.log")
  [[ -z "$table" || $(printf '%s' "$table" | wc -l) -gt 20 ]] && table=$(tail -8 "$OUT/$name.log")
  BENCH_LINES+=("-- $name" "$table")
done

# The device sampler's lines from r2_cuda_tests (tests/unit/cuda/sampling_test.cc): rows compared
# with the host reference, and one call's time at 256 rows x 129,280 (goal: well under 0.2 ms).
SAMPLE_LINES=$(grep -h '^SampleRows' "$OUT/cuda_tests.log" 2>/dev/null)
[[ -n "$SAMPLE_LINES" ]] && BENCH_LINES+=("-- SampleRows (r2_cuda_tests)" "$SAMPLE_LINES")

# The bf16 / fp8 KV cache on CUDA (tests/unit/cuda/kv_dtype_test.cc, kv_dtype_model_test.cc):
# decode against the CPU reading the same cache, the worst case per format and core; the tiny
# models end to end against the CPU with the same cache format. (MLA decode time by format at
# 4K context: the "===" table of cuda_mla_bench above.)
KV_LINES=$(grep -h '^KvDecode' "$OUT/cuda_tests.log" 2>/dev/null | awk '
  { key = $2 " " $3; if (!(key in worst) || $5 + 0 > worst[key] + 0) { worst[key] = $5; b[key] = $7 } }
  END { for (k in worst) printf "KvDecode %-18s worst rel %-9s bound %s\n", k, worst[k], b[k] }' | sort)
KV_MODEL_LINES=$(grep -h ' cache: logits diff to the cpu' "$OUT/cuda_tests.log" 2>/dev/null)
[[ -n "$KV_LINES$KV_MODEL_LINES" ]] &&
  BENCH_LINES+=("-- bf16/fp8 KV cache vs the CPU (r2_cuda_tests)" "$KV_LINES" "$KV_MODEL_LINES")

# Integer weights on CUDA (tests/unit/cuda/int_linear_test.cc, in r2_cuda_tests above): the tiny
# model converted to int8 / int4 end to end against the CPU. (The int8 / int4 GEMV at batch 1 on
# V3's 7168 x 2048 and 2048 x 7168 expert shapes, as GB/s of weight bytes: the "===" table of
# cuda_int_linear_bench above.)
INT_LINES=$(grep -h '^IntModel ' "$OUT/cuda_tests.log" 2>/dev/null)
INT_FAILS=$(grep -hE '^\[  FAILED  \] (CudaIntLinearTest|Formats/CudaIntModelTest)' "$OUT/cuda_tests.log" 2>/dev/null | sort -u)
[[ -n "$INT_LINES$INT_FAILS" ]] &&
  BENCH_LINES+=("-- int8/int4 weights vs the CPU (r2_cuda_tests)" "$INT_LINES" "$INT_FAILS")

# ---- summary ------------------------------------------------------------------------------------
COPY=$(grep -hoE 'copy bandwidth[^0-9]*[0-9.]+ GB/s' "$OUT"/*.log 2>/dev/null | head -1)
{
  echo
  echo "==== device_check summary: $(date -u '+%Y-%m-%d %H:%M UTC'), $(( $(date +%s) - START ))s, logs in $OUT ===="
  echo "GPU: $GPU_LINE"
  echo "commit: $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  [[ -n "$COPY" ]] && echo "$COPY"
  for line in "${BENCH_LINES[@]}"; do printf '%s\n' "$line"; done
  echo "-- steps"
  printf '%s\n' "${SUMMARY[@]}"
} | tee "$OUT/summary.txt"
exit $FAILED
