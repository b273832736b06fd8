#!/usr/bin/env bash
# `kiln bench throughput|latency` on the CPU backend: a fixture checkpoint and a tiny random-weights
# config; the --json fields are present and agree with each other (output tokens = requests x OSL,
# rates = counts / duration, percentiles ordered), seeds reproduce workloads, datasets (ids and text)
# are read as given, and bad flags fail with one line and exit code 2.
# Usage: bench.sh KILN_BINARY SOURCE_DIR TEST_DATA_DIR
set -euo pipefail
kiln=$1 src=$2
fixture=$src/tests/fixtures/models/llama3-gqa-bf16
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/tiny.json" <<'EOF'
{"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
 "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 256,
 "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "torch_dtype": "bfloat16", "eos_token_id": 2}
EOF
mkdir "$tmp/tinydir" && cp "$tmp/tiny.json" "$tmp/tinydir/config.json"

# The checks every throughput or latency object must pass; extra checks come as a Python expression list.
check() {  # check FILE MODE [PYTHON-CHECKS]
  python3 - "$1" "$2" "${3:-}" <<'PY'
import json, math, sys
o = json.load(open(sys.argv[1]))
mode = sys.argv[2]
assert o["mode"] == mode, o["mode"]
for k in ["model", "architecture", "device", "device_name", "num_parameters", "weight_bytes", "dtype", "threads",
          "seed", "timestamp", "max_batch_size", "max_num_tokens", "kv_cache_bytes", "kv_blocks_total",
          "kv_peak_blocks_used", "kv_peak_usage", "peak_host_rss_bytes", "peak_gpu_memory_bytes", "isl", "osl",
          "steps", "preemptions"]:
    assert k in o, k
assert o["device"] == "cpu" and o["peak_gpu_memory_bytes"] is None
assert o["peak_host_rss_bytes"] > 0 and o["kv_cache_bytes"] > 0
# KV use is sampled as each step's responses go out; a request that ends in its first step is never seen.
assert 0 <= o["kv_peak_blocks_used"] <= o["kv_blocks_total"], (o["kv_peak_blocks_used"], o["kv_blocks_total"])
assert o["kv_peak_blocks_used"] > 0 or o["osl"] == 1
assert abs(o["kv_peak_usage"] - o["kv_peak_blocks_used"] / o["kv_blocks_total"]) < 1e-9

def run_checks(r, osl_fixed):
    n = r["num_requests"]
    assert n >= 1
    for k in ["requests_per_s", "output_tokens_per_s", "total_tokens_per_s", "duration_s"]:
        assert r[k] > 0 and math.isfinite(r[k]), (k, r[k])
    d = r["duration_s"]
    assert abs(r["requests_per_s"] - n / d) <= 1e-6 * r["requests_per_s"]
    assert abs(r["output_tokens_per_s"] - r["output_tokens"] / d) <= 1e-6 * r["output_tokens_per_s"]
    total = r["input_tokens"] + r["output_tokens"]
    assert abs(r["total_tokens_per_s"] - total / d) <= 1e-6 * r["total_tokens_per_s"]
    assert r["total_tokens_per_s"] > r["output_tokens_per_s"]
    if osl_fixed is not None:
        assert r["output_tokens"] == n * osl_fixed, (r["output_tokens"], n, osl_fixed)
    for k in ["ttft_ms", "tpot_ms", "itl_ms", "latency_ms"]:
        s = r[k]
        if s["count"] == 0:
            assert s["mean"] is None and s["p99"] is None, (k, s)
            continue
        assert 0 <= s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"], (k, s)
        assert s["min"] <= s["mean"] <= s["max"], (k, s)
    assert r["ttft_ms"]["count"] == n and r["latency_ms"]["count"] == n
    assert r["itl_ms"]["count"] == r["output_tokens"] - n
    # A request's latency covers its first token and every gap after it.
    assert r["latency_ms"]["mean"] >= r["ttft_ms"]["mean"]
    assert r["latency_ms"]["max"] <= d * 1000 + 1e-6

if mode == "throughput":
    run_checks(o, o["osl"] if isinstance(o["osl"], int) else None)
    assert abs(o["osl"] * o["num_requests"] - o["output_tokens"]) < 1e-6 * o["output_tokens"]
    assert abs(o["isl"] * o["num_requests"] - o["input_tokens"]) < 1e-6 * o["input_tokens"]
else:
    assert len(o["runs"]) >= 1
    for r in o["runs"]:
        run_checks(r, o["osl"])
        assert r["num_requests"] == r["batch_size"] * r["iterations"]
        assert r["input_tokens"] == r["num_requests"] * o["isl"]
        b = r["batch_latency_ms"]
        assert b["count"] == r["iterations"] and 0 < b["min"] <= b["p50"] <= b["max"]
        if o["osl"] > 1:
            assert abs(r["decode_tokens_per_s_per_request"] - 1000 / r["tpot_ms"]["mean"]) < 1e-6 * r["decode_tokens_per_s_per_request"]
for c in filter(None, (c.strip() for c in sys.argv[3].split(";"))):
    assert eval(c), c
print("ok:", sys.argv[1].rsplit("/", 1)[-1])
PY
}

# Throughput on a fixture checkpoint, all requests at once.
"$kiln" bench throughput --model "$fixture" --isl 16 --osl 8 --num-requests 12 --max-batch-size 4 --json \
  >"$tmp/t1.json" 2>"$tmp/t1.err"
check "$tmp/t1.json" throughput 'o["num_requests"] == 12; o["isl"] == 16; o["osl"] == 8; o["output_tokens"] == 96;
  o["input_tokens"] == 192; o["max_batch_size"] == 4; o["random_weights"] == False; o["request_rate"] is None;
  o["architecture"] == "LlamaForCausalLM"; o["preemptions"] == 0; o["schedule"] == "decode-first"'
# The prefill-first schedule serves the same workload.
"$kiln" bench throughput --model "$fixture" --isl 16 --osl 8 --num-requests 12 --max-batch-size 4 --max-num-tokens 24 \
  --schedule prefill-first --json --quiet >"$tmp/t1p.json"
check "$tmp/t1p.json" throughput 'o["schedule"] == "prefill-first"; o["output_tokens"] == 96; o["num_requests"] == 12'
# --step-log: one line per engine step (here 12 x 16 prompt tokens at 24 a step, then decodes), and its summary.
"$kiln" bench throughput --model "$fixture" --isl 16 --osl 8 --num-requests 12 --step-log "$tmp/steps.tsv" \
  --max-batch-size 4 --max-num-tokens 24 --json --quiet >/dev/null
python3 - "$tmp/steps.tsv" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
head, body = rows[0], rows[1:]
assert head[:3] == ["step", "t_ms", "loop_ms"], head
col = {k: i for i, k in enumerate(head)}
assert sum(int(r[col["tokens"]]) for r in body) >= 12 * 16 + 12 * 7, "every prompt token and decode is in a step"
assert all(float(r[col["gpu_ms"]]) == -1 for r in body), "the CPU backend measures no GPU time"
assert any(r[col["decodes"]] == r[col["seqs"]] for r in body) and any(r[col["decodes"]] == "0" for r in body)
print("step log ok:", len(body), "steps")
PY
python3 "$src/bench/step_log_summary.py" "$tmp/steps.tsv" >"$tmp/steps.txt"
grep -q "decode" "$tmp/steps.txt"
if "$kiln" bench throughput --model "$fixture" --schedule sideways --num-requests 1 >/dev/null 2>&1; then
  echo "an unknown --schedule was accepted"; exit 1
fi
# An fp8 KV cache (the CPU stores the rounded values): same workload, reported in the JSON; a bad value is refused.
"$kiln" bench throughput --model "$fixture" --isl 16 --osl 8 --num-requests 12 --max-batch-size 4 \
  --kv-cache-dtype fp8 --json --quiet >"$tmp/t1f.json"
check "$tmp/t1f.json" throughput 'o["kv_cache_dtype"] == "fp8_e4m3"; o["output_tokens"] == 96; o["preemptions"] == 0'
python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["kv_cache_dtype"] == "f32"' "$tmp/t1.json"
if "$kiln" bench throughput --model "$fixture" --kv-cache-dtype int3 --num-requests 1 >/dev/null 2>&1; then
  echo "an unknown --kv-cache-dtype was accepted"; exit 1
fi
# stderr is no terminal here: periodic lines, never carriage returns.
grep -q "requests done" "$tmp/t1.err"
if grep -q $'\r' "$tmp/t1.err"; then echo "carriage return in non-terminal progress"; exit 1; fi

# Random weights: a config file and a folder holding it build the same model; the seed fixes the workload.
"$kiln" bench throughput --model "$tmp/tiny.json" --random-weights --isl-dist uniform:4:40 --osl-dist uniform:1:6 \
  --num-requests 10 --request-rate 500 --seed 7 --json --quiet >"$tmp/t2.json"
"$kiln" bench throughput --model "$tmp/tinydir" --random-weights --isl-dist uniform:4:40 --osl-dist uniform:1:6 \
  --num-requests 10 --request-rate 500 --seed 7 --json --quiet >"$tmp/t3.json"
check "$tmp/t2.json" throughput 'o["random_weights"] == True; o["dtype"] == "bf16"; o["request_rate"] == 500;
  o["isl_dist"] == "uniform:4:40"; o["osl_dist"] == "uniform:1:6"; 4 <= o["isl"] <= 40; 1 <= o["osl"] <= 6'
check "$tmp/t3.json" throughput
python3 - "$tmp/t2.json" "$tmp/t3.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for k in ["input_tokens", "output_tokens", "num_parameters", "isl", "osl"]:
    assert a[k] == b[k], (k, a[k], b[k])
print("same seed, same workload ok")
PY
"$kiln" bench throughput --model "$tmp/tiny.json" --random-weights --isl-dist uniform:4:40 --num-requests 10 \
  --osl 3 --seed 8 --dtype f32 --json --quiet >"$tmp/t4.json"
check "$tmp/t4.json" throughput 'o["dtype"] == "f32"; o["output_tokens"] == 30'

# Datasets: token ids, and text through the model's tokenizer (the llama2.c stories260K fixture).
printf '%s\n' '{"prompt_ids": [1, 2, 3, 4, 5], "output_len": 3}' '' '{"prompt_ids": [9, 8, 7], "output_len": 5}' \
  '{"prompt_ids": [100], "output_len": 1}' >"$tmp/ids.jsonl"
"$kiln" bench throughput --model "$tmp/tiny.json" --random-weights --dataset "$tmp/ids.jsonl" --json --quiet >"$tmp/d1.json"
check "$tmp/d1.json" throughput 'o["num_requests"] == 3; o["input_tokens"] == 9; o["output_tokens"] == 9;
  o["isl_dist"] == "dataset"; o["dataset"].endswith("ids.jsonl")'
"$kiln" bench throughput --model "$tmp/tiny.json" --random-weights --dataset "$tmp/ids.jsonl" --num-requests 2 \
  --json --quiet >"$tmp/d2.json"
check "$tmp/d2.json" throughput 'o["num_requests"] == 2; o["output_tokens"] == 8'
stories=$src/tests/fixtures/llama2c/stories260K/stories260K.bin
printf '%s\n' '{"prompt": "Once upon a time", "output_len": 6}' '{"prompt": "The cat", "output_len": 2}' >"$tmp/text.jsonl"
"$kiln" bench throughput --model "$stories" --dataset "$tmp/text.jsonl" --json --quiet >"$tmp/d3.json"
check "$tmp/d3.json" throughput 'o["num_requests"] == 2; o["output_tokens"] == 8; o["input_tokens"] >= 4'

# Latency: several batch sizes give one object with a run each; one batch size is also flattened.
"$kiln" bench latency --model "$tmp/tiny.json" --random-weights --batch-size 1,3 --isl 12 --osl 5 --iterations 2 \
  --json --quiet >"$tmp/l1.json"
check "$tmp/l1.json" latency '[r["batch_size"] for r in o["runs"]] == [1, 3]; o["max_batch_size"] == 3;
  [r["output_tokens"] for r in o["runs"]] == [10, 30]; "output_tokens_per_s" not in o'
"$kiln" bench latency --model "$fixture" --batch-size 2 --isl 8 --osl 1 --num-requests 5 --json --quiet >"$tmp/l2.json"
check "$tmp/l2.json" latency 'o["runs"][0]["iterations"] == 3; o["num_requests"] == 6; o["output_tokens"] == 6;
  o["tpot_ms"]["count"] == 0; o["output_tokens_per_s"] == o["runs"][0]["output_tokens_per_s"]'

# The tables for people.
"$kiln" bench throughput --model "$fixture" --isl 8 --osl 4 --num-requests 3 --quiet >"$tmp/h1.txt"
"$kiln" bench latency --model "$fixture" --isl 8 --osl 4 --batch-size 1,2 --quiet >"$tmp/h2.txt"
for f in "$tmp/h1.txt" "$tmp/h2.txt"; do
  for w in "output tok/s" "TTFT (ms)" "TPOT (ms)" "ITL (ms)" "peak host RSS" "KV"; do
    grep -q "$w" "$f" || { echo "missing '$w' in $f"; cat "$f"; exit 1; }
  done
done
grep -q "batch size 2" "$tmp/h2.txt"

# Bad input: one line on stderr, exit code 2, nothing on stdout.
printf '%s\n' '{"prompt_ids": [1, 2]}' >"$tmp/no_len.jsonl"
printf '%s\n' '{"prompt_ids": [1, 2], "output_len": 2}' 'not json' >"$tmp/bad.jsonl"
printf '%s\n' '{"prompt": "hello", "output_len": 2}' >"$tmp/text_only.jsonl"
fail() {  # fail EXPECTED-SUBSTRING ARGS...
  local want=$1 rc=0
  shift
  "$kiln" bench "$@" >"$tmp/fail.out" 2>"$tmp/fail.err" || rc=$?
  if [[ $rc -ne 2 || $(wc -l <"$tmp/fail.err") -ne 1 || -s "$tmp/fail.out" ]] || ! grep -q -- "$want" "$tmp/fail.err"; then
    echo "expected exit 2 and one line with '$want' for: kiln bench $*"
    echo "got rc=$rc:"; cat "$tmp/fail.err" "$tmp/fail.out"
    exit 1
  fi
}
T=(throughput --model "$fixture" --quiet)
R=(throughput --model "$tmp/tiny.json" --random-weights --quiet)
# --device cuda fails with one line where the build or the machine cannot run it (CI); a CUDA build on a
# GPU machine runs it instead.
if "$kiln" bench throughput --model "$tmp/tiny.json" --random-weights --device cuda --num-requests 2 --isl 4 --osl 2 \
  --quiet >/dev/null 2>&1; then
  echo "note: --device cuda ran here (CUDA build with a GPU)"
else
  fail "CUDA backend" "${T[@]}" --device cuda
  fail "CUDA backend" latency --model "$tmp/tiny.json" --random-weights --device cuda
fi
fail "cpu, cuda or cuda:N" "${T[@]}" --device tpu
fail "uniform:LO:HI" "${T[@]}" --isl-dist uniform:9
fail "LO <= HI" "${T[@]}" --osl-dist uniform:9:3
fail "not a number" "${T[@]}" --isl-dist normal:x:2
fail "excludes" "${T[@]}" --isl 4 --isl-dist 5
fail "excludes" "${T[@]}" --dataset "$tmp/ids.jsonl" --osl 4
fail "context is 512" "${T[@]}" --isl 500 --osl 100
fail "num-requests must be >= 1" "${T[@]}" --num-requests 0
fail "request-rate" "${T[@]}" --request-rate -2
fail "--dtype bf16" "${T[@]}" --dtype bf16
fail "--dtype must be" "${R[@]}" --dtype int4
fail "needs --model" throughput --random-weights --quiet
fail "config.json" throughput --model "$fixture/model.safetensors" --random-weights --quiet
fail "output_len" "${R[@]}" --dataset "$tmp/no_len.jsonl"
fail "line 2 is not JSON" "${R[@]}" --dataset "$tmp/bad.jsonl"
fail "no tokenizer" "${R[@]}" --dataset "$tmp/text_only.jsonl"
fail "holds only 3" "${R[@]}" --dataset "$tmp/ids.jsonl" --num-requests 9
fail "cannot open" "${R[@]}" --dataset "$tmp/none.jsonl"
fail "batch sizes" latency --model "$fixture" --batch-size 0 --quiet
fail "batch sizes" latency --model "$fixture" --batch-size 2,x --quiet
fail "below --batch-size 4" latency --model "$fixture" --batch-size 4 --max-batch-size 2 --quiet
fail "iterations" latency --model "$fixture" --iterations 0 --quiet
fail "not expected" "${T[@]}" --bogus
fail "A subcommand is required" --quiet
echo "bench passed"
