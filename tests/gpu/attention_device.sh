#!/usr/bin/env bash
# On the GPU machine: the attention benches (each decode/prefill kernel and the copy ceiling) alone on the
# GPU, then cuda_attention_test and memcheck over the kernel tests side by side; logs in $OUT, a summary on stdout.
#   bash tests/gpu/attention_device.sh <folder from prepare_device.sh with cuda_attention_test, cuda_bench_test>
# The folder may hold the two binaries as bins.tar.gz (they are ~50 MB, over a device call's carry limit with
# the tree): tar czf bins.tar.gz cuda_attention_test cuda_bench_test.
set -uo pipefail
D=$(realpath "${1:-.dev/attn}")
if [[ -f "$D/bins.tar.gz" ]]; then tar xzf "$D/bins.tar.gz" -C "$D" || exit 3; fi
OUT=${OUT:-/tmp/out}
export LD_LIBRARY_PATH="$D/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export PATH="/usr/local/cuda/bin:$PATH"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
if ! "$D/cuda_attention_test" --gtest_list_tests >/dev/null 2>&1; then
  echo "using lib-fallback"; export LD_LIBRARY_PATH="$D/lib-fallback:$LD_LIBRARY_PATH"
fi
date +%T
timeout 90 "$D/cuda_bench_test" --gtest_also_run_disabled_tests --gtest_filter='CudaBench.DISABLED_AttentionKernels' \
  --gtest_color=no >"$OUT/bench.log" 2>&1; echo "bench exit $?"
date +%T
( timeout 140 "$D/cuda_attention_test" --gtest_color=no >"$OUT/tests.log" 2>&1; echo "tests exit $?" >>"$OUT/tests.log" ) &
( timeout 140 compute-sanitizer --tool memcheck --error-exitcode 9 "$D/cuda_attention_test" --gtest_color=no \
    --gtest_filter='CudaDecodeAttention.PlanServesOtherContextLengths:CudaPrefillAttention.BothHd128Kernels:CudaDecodeAttention.MatchesCpuOverShapes' \
    >"$OUT/sanitizer.log" 2>&1; echo "sanitizer exit $?" >>"$OUT/sanitizer.log" ) &
wait
date +%T
echo "== tests"; grep -E "^\[  (PASSED|FAILED) |^\[       OK|^\[  FAILED|exit|Failure|rel_err|Expected|which is" "$OUT/tests.log" | head -40
echo "== sanitizer"; grep -E "ERROR SUMMARY|^\[  (PASSED|FAILED) |exit|Invalid|Uninit" "$OUT/sanitizer.log" | head -12
echo "== bench"
grep BENCH "$OUT/bench.log" | awk -F'|' '{gsub(/ +/," ",$3); gsub(/ +/," ",$4); gsub(/ +/," ",$5); gsub(/ +/," ",$6); n=$2; gsub(/ /,"",n); printf "%s|%s|%s|%s|%s\n", substr(n,1,7), $3, $4, $5, $6}'
