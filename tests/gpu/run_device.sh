#!/usr/bin/env bash
# On the GPU machine: runs the gpu tests, the micro-benchmarks and compute-sanitizer memcheck over the gpu
# tests, from binaries built elsewhere (the GPU image lacks fmt/gtest). Logs go to $OUT.
#   tests/gpu/run_device.sh <folder with the test binaries and lib/>
set -uo pipefail
BIN=$(realpath "${1:-.dev/bin}")
OUT=${OUT:-/tmp/kiln-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$BIN/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export PATH="/usr/local/cuda/bin:$PATH"
# The fixture-based tests read tests/fixtures/models from this checkout, wherever it sits.
export KILN_MODEL_FIXTURES=${KILN_MODEL_FIXTURES:-$(cd "$(dirname "$0")/../.." && pwd)/tests/fixtures/models}
TESTS=(cuda_cast_test cuda_gemm_test cuda_norm_act_test cuda_rope_kv_test cuda_sampling_test cuda_graph_test cuda_attention_test cuda_decoder_model_test
  cuda_fixtures_test cuda_runtime_test)
[[ -n "${KILN_EXTRA_TESTS:-}" ]] && TESTS+=(${KILN_EXTRA_TESTS})
# Binaries memcheck runs on: all of TESTS, or KILN_SANITIZER_TESTS ("name" or "name:gtest-filter" words).
SANITIZE=("${TESTS[@]}")
[[ -n "${KILN_SANITIZER_TESTS:-}" ]] && SANITIZE=(${KILN_SANITIZER_TESTS})
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv
  nvcc --version | tail -2
  uname -r
} >"$OUT/device.txt" 2>&1
ldd "$BIN/cuda_gemm_test" | grep -i "not found" >>"$OUT/device.txt"
# Binaries built on an older image may need its C++ runtime.
if ! "$BIN/cuda_cast_test" --gtest_list_tests >/dev/null 2>>"$OUT/device.txt"; then
  echo "using lib-fallback" >>"$OUT/device.txt"
  export LD_LIBRARY_PATH="$BIN/lib-fallback:$LD_LIBRARY_PATH"
fi

status=0
for t in "${TESTS[@]}"; do
  ( echo "=== $t"; "$BIN/$t" --gtest_color=no 2>&1 || echo "FAILED: $t" ) >"/tmp/test.$t.log" 2>&1 &
done
wait
for t in "${TESTS[@]}"; do cat "/tmp/test.$t.log" >>"$OUT/tests.log"; done
grep -q "^FAILED: " "$OUT/tests.log" && status=1
grep -E "^\[  (PASSED|FAILED) |FAILED:|tests ran" "$OUT/tests.log"

if [[ "${KILN_SKIP_BENCH:-0}" != 1 ]]; then
  "$BIN/cuda_bench_test" --gtest_also_run_disabled_tests --gtest_filter="${KILN_BENCH_FILTER:-*Bench*}" --gtest_color=no >"$OUT/bench.log" 2>&1
  grep BENCH "$OUT/bench.log"
fi

if [[ "${KILN_SKIP_SANITIZER:-0}" != 1 ]]; then
  # One compute-sanitizer per test binary, in parallel (one GPU, many cores).
  for spec in "${SANITIZE[@]}"; do
    t=${spec%%:*}
    filter='*'
    [[ "$spec" == *:* ]] && filter=${spec#*:}
    (
      echo "=== compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 $t --gtest_filter=$filter"
      timeout "${KILN_SANITIZER_TIMEOUT:-150}" compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 \
        "$BIN/$t" --gtest_color=no --gtest_filter="$filter" 2>&1
      echo "exit $? ($t)"
    ) >"/tmp/sanitizer.$t.log" 2>&1 &
  done
  wait
  for spec in "${SANITIZE[@]}"; do cat "/tmp/sanitizer.${spec%%:*}.log" >>"$OUT/sanitizer.log"; done
  grep -E "^=== |ERROR SUMMARY|^exit |^\[  (PASSED|FAILED) " "$OUT/sanitizer.log"
fi
exit $status
