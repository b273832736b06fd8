#!/usr/bin/env bash
# On the GPU machine, from a folder carried by a device call: every gpu test (run_device.sh: tests, memcheck),
# the CUDA executor soak and executor tests, the CLI end to end (cli_device.sh), then optional benchmark parts.
#   bash tests/gpu/validate_device.sh <dir> [tests] [latency] [throughput] [configs] [peers]
# <dir> holds bins.tar.xz (a `bin/` made by tests/gpu/prepare_device.sh, then `tar cf - bin | xz -9 > bins.tar.xz`:
# -9 keeps a carried folder under 64 MiB) and, for the peers part, the peer scripts in peers/*.py. Logs go to
# $OUT, a summary to stdout.
set -uo pipefail
D=$(realpath "${1:?usage: validate_device.sh DIR [parts...]}")
shift
parts=" ${*:-tests} "
root=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/kiln-out}
mkdir -p "$OUT"
[[ -d "$D/bin" ]] || (cd "$D" && tar xJf bins.tar.xz)
BIN=$D/bin
# The CPU runtime tests read stories260K from this checkout's tests/fixtures, wherever it sits.
export KILN_FIXTURES_DIR=$root/tests/fixtures
# bench/run_peers.sh finds kiln and the peers in .peers/.
mkdir -p "$root/.peers/bin" "$root/.peers/peers"
cp "$BIN/kiln" "$root/.peers/bin/"
cp -r "$BIN/lib" "$BIN/lib-fallback" "$root/.peers/"
cp "$D"/peers/*.py "$root/.peers/peers/" 2>/dev/null
export LD_LIBRARY_PATH="$BIN/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
"$BIN/kiln" --version >/dev/null 2>&1 || export LD_LIBRARY_PATH="$BIN/lib-fallback:$LD_LIBRARY_PATH"
t0=$SECONDS

if [[ $parts == *" tests "* ]]; then
  # Executor soak and executor tests on CUDA (the bitwise alone-vs-busy forms are CPU-only: cuBLASLt picks kernels
  # by row count), beside the gpu test binaries.
  (
    cd "$BIN" || exit
    KILN_TEST_DEVICE=cuda timeout 300 ./runtime_soak_test --gtest_color=no >"$OUT/soak.log" 2>&1
    echo "exit $? (runtime_soak_test, cuda)" >>"$OUT/soak.log"
    KILN_TEST_DEVICE=cuda timeout 300 ./runtime_executor_test --gtest_color=no \
      "--gtest_filter=-*GreedyTokensAreTheSameAloneOrAmong31Others*:*ChunkedPrefillEqualsUnchunked*:*PrefixCacheHitEqualsMiss*:*PreemptedRequestsEqualUninterrupted*:*PrefillFirstTokensEqualAlone*" \
      >"$OUT/executor.log" 2>&1
    echo "exit $? (runtime_executor_test, cuda)" >>"$OUT/executor.log"
  ) &
  KILN_SKIP_BENCH=1 KILN_SANITIZER_TIMEOUT=${KILN_SANITIZER_TIMEOUT:-200} KILN_SANITIZER_TESTS="${KILN_SANITIZER_TESTS:-\
cuda_fixtures_test:*gemma2*:*bloom*:*gpt2*:*falcon_newarch*:*phi3*:*mpt* \
cuda_sampling_test cuda_graph_test cuda_decoder_model_test cuda_norm_act_test cuda_rope_kv_test cuda_gemm_test \
cuda_attention_test:CudaDecodeAttention.PlanServesOtherContextLengths:CudaPrefillAttention.SlidingWindowSoftcapAndAlibi:CudaGenericAttention.*:CudaAttentionFp8Kv.SanitizerSet \
cuda_runtime_test:*DeviceSampling*:*Preempted*}" \
    bash "$root/tests/gpu/run_device.sh" "$BIN"
  wait
  grep -hE "^\[  (PASSED|FAILED) |^exit " "$OUT/soak.log" "$OUT/executor.log"
  bash "$root/tests/gpu/cli_device.sh" "$BIN/kiln" >"$OUT/cli.log" 2>&1
  echo "cli_device.sh: exit $?"
  grep -E "FAILED|differ|refused" "$OUT/cli.log" | head -20
  grep -hE "fixture-error" "$OUT/tests.log" | head -40
  echo "tests took $((SECONDS - t0)) s"
fi
acc=""
for p in latency throughput configs; do [[ $parts == *" $p "* ]] && acc+="$p "; done
if [[ -n $acc ]]; then
  ACCEPT="$acc" STEP_TIMEOUT=${STEP_TIMEOUT:-150} bash "$root/bench/run_peers.sh" acceptance
  echo "acceptance ($acc) done at $((SECONDS - t0)) s"
fi
if [[ $parts == *" peers "* ]]; then
  BATCHES=${BATCHES:-"1 64"} COMPILED_BATCHES=${COMPILED_BATCHES:-"1"} PEERS=${PEERS:-"eager compiled"} \
    STEP_TIMEOUT=${STEP_TIMEOUT:-150} bash "$root/bench/run_peers.sh" run
  echo "peers done at $((SECONDS - t0)) s"
fi
# A device call brings back at most 8 files from $OUT: pack what is there into one archive named after the parts
# (logs-tests.tgz, logs-latency-throughput.tgz, ...). Archives already there stay as they are, so a call that runs
# this script twice keeps both runs' logs; a caller writing its own logs under $OUT finds them in the archive.
name="logs-$(echo $parts | tr ' ' '-').tgz"
(cd "$OUT" && tar czf "/tmp/$name" --exclude='*.tgz' . && find . -mindepth 1 ! -name '*.tgz' -delete &&
  mv "/tmp/$name" "$name")
