#!/usr/bin/env bash
# One device call for the executor's GPU fast path (device sampling, CUDA graphs): its gpu tests with
# memcheck on the sampling and graph tests, then kiln bench latency (with and without graphs) and throughput
# at 128/128 on the Llama-3.1-8B shape. Binaries come gzipped in <dir>/bins.tgz with <dir>/lib (made by
# tests/gpu/prepare_device.sh, then tar czf). Logs and JSON go to $OUT; a summary goes to stdout.
#   bash tests/gpu/perf_device.sh .dev/perf
set -uo pipefail
D=$(realpath "${1:-.dev/perf}")
OUT=${OUT:-/tmp/kiln-out}
mkdir -p "$OUT"
start=$SECONDS
if [[ -f "$D/bins.tgz" ]]; then (cd "$D" && tar xzf bins.tgz); fi
export LD_LIBRARY_PATH="$D/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export PATH="/usr/local/cuda/bin:$PATH"
export KILN_MODEL_FIXTURES=$PWD/tests/fixtures/models
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv >"$OUT/device.txt" 2>&1
if ! "$D/cuda_sampling_test" --gtest_list_tests >/dev/null 2>>"$OUT/device.txt"; then
  echo "using lib-fallback" >>"$OUT/device.txt"
  export LD_LIBRARY_PATH="$D/lib-fallback:$LD_LIBRARY_PATH"
fi
cat "$OUT/device.txt"
LOG=$OUT/tests.log
: >"$LOG"

# 1. gpu tests in parallel, memcheck on the sampling and graph tests beside them (small problems).
run_test() {
  local name=$1
  shift
  (timeout "${TEST_TIMEOUT:-110}" "$@" --gtest_color=no >"/tmp/t.$name.log" 2>&1; echo "exit $? ($name)" >>"/tmp/t.$name.log") &
}
run_test sampling "$D/cuda_sampling_test"
run_test graph "$D/cuda_graph_test"
run_test runtime "$D/cuda_runtime_test"
KILN_TEST_DEVICE=cuda run_test executor "$D/runtime_executor_test" \
  "--gtest_filter=-*GreedyTokensAreTheSameAloneOrAmong31Others*:*ChunkedPrefillEqualsUnchunked*:*PrefixCacheHitEqualsMiss*:*PreemptedRequestsEqualUninterrupted*"
run_test memcheck-sampling compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 "$D/cuda_sampling_test" \
  "--gtest_filter=*Penalt*:*Ties*:*GreedyAndTop*"
run_test memcheck-graph compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 "$D/cuda_graph_test" \
  "--gtest_filter=*FullBucket*:*Executor*"
wait
for n in sampling graph runtime executor memcheck-sampling memcheck-graph; do
  echo "=== $n" >>"$LOG"
  cat "/tmp/t.$n.log" >>"$LOG"
done
grep -E "^\[  (PASSED|FAILED) |^exit |ERROR SUMMARY|\[ *n [0-9]+:|runs compared" "$LOG"
echo "tests: $((SECONDS - start)) s"

# 2. kiln bench on the Llama-3.1-8B shape (random bf16 weights), each run under its own time limit.
CFG=bench/configs/llama-3.1-8b.json
bench() {
  local name=$1 limit=$2
  shift 2
  if ((SECONDS - start + 20 > ${BUDGET:-285})); then
    echo "$name: skipped (no time left)"
    return
  fi
  local left=$((${BUDGET:-285} - (SECONDS - start)))
  ((limit > left)) && limit=$left
  local t0=$SECONDS
  timeout "$limit" "$D/kiln" bench "$@" --model "$CFG" --random-weights --dtype bf16 --device cuda --json --quiet \
    >"$OUT/$name.json" 2>"$OUT/$name.err"
  echo "$name: exit $? in $((SECONDS - t0)) s"
}
bench lat-graphs 75 latency --batch-size 1,64 --isl 128 --osl 128
bench lat-nographs 60 latency --batch-size 1 --isl 128 --osl 128 --no-cuda-graphs
bench tp-256 90 throughput --isl 128 --osl 128 --num-requests 3000 --max-batch-size 256 --max-num-tokens 8192
bench tp-512 90 throughput --isl 128 --osl 128 --num-requests 3000 --max-batch-size 512 --max-num-tokens 8192
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
for name in ["lat-graphs", "lat-nographs", "tp-256", "tp-512"]:
    p = os.path.join(out, name + ".json")
    try:
        o = json.load(open(p))
    except Exception:
        err = open(os.path.join(out, name + ".err")).read().strip().splitlines() if os.path.exists(os.path.join(out, name + ".err")) else []
        print(f"{name}: no result: {err[-3:] if err else ''}")
        continue
    keys = ["load_s", "graph_captures", "graph_replays", "eager_steps", "device_sampling", "cuda_graphs"]
    print(name, {k: o.get(k) for k in keys})
    for r in o.get("runs", [o]):
        d = {k: r.get(k) for k in ["batch_size", "output_tokens_per_s", "decode_tokens_per_s_per_request", "num_requests", "duration_s", "steps"] if k in r}
        for k in ["ttft_ms", "tpot_ms", "itl_ms"]:
            if isinstance(r.get(k), dict):
                d[k] = {q: round(r[k][q], 3) for q in ["mean", "p50", "p99"] if q in r[k]}
        print("  ", d)
PY
echo "total: $((SECONDS - start)) s"
