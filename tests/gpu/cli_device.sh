#!/usr/bin/env bash
# On the GPU machine: `kiln generate --device cuda` end to end on fixtures of every family, next to --device cpu
# (greedy ids of the same prompts; a near tie may part them, except for gpt2, which must give the CPU's ids),
# chunked prefill, and the refusal of an unknown device (one line).   tests/gpu/cli_device.sh <kiln binary>
set -uo pipefail
KILN=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
fx="$root/tests/fixtures/models"
tmp=$(mktemp -d)
status=0
ids() { grep -o '"token_ids":\[[^]]*\]' "$1" | tr '\n' ' '; }
for f in llama3-gqa-bf16 qwen3-qknorm mistral-swa llama2-mha-f32 gpt2-learned-f32 gptj-rotary-f16 neox-parallel-bf16 \
  falcon-7b-mqa-bf16 falcon-newarch-gqa-f16 mpt-alibi-clip-f32 bloom-alibi-bf16 gemma-mqa-bf16 gemma2-gqa-f32; do
  for d in cpu cuda; do
    if ! "$KILN" generate --model "$fx/$f" --prompt-ids 1,5,9,200,7,33,4 -n 16 -t 0 --json --quiet --device $d \
      >"$tmp/$f.$d.json" 2>"$tmp/$f.$d.err"; then
      echo "FAILED: generate $f --device $d: $(cat "$tmp/$f.$d.err")"
      status=1
    fi
  done
  c=$(ids "$tmp/$f.cpu.json") g=$(ids "$tmp/$f.cuda.json")
  if [[ -n "$c" && "$c" == "$g" ]]; then
    echo "same ids cpu/cuda: $f $g"
  else
    echo "ids differ cpu/cuda: $f cpu $c cuda $g"
    [[ "$f" == gpt2-learned-f32 ]] && status=1
  fi
done
# Chunked prefill through the CLI: 3-token chunks give the ids of the one-chunk run above.
"$KILN" generate --model "$fx/llama3-gqa-bf16" --prompt-ids 1,5,9,200,7,33,4 -n 16 -t 0 --json --quiet --device cuda \
  --max-num-tokens 3 >"$tmp/chunk.json" || status=1
a=$(ids "$tmp/chunk.json") b=$(ids "$tmp/llama3-gqa-bf16.cuda.json")
[[ -n "$a" && "$a" == "$b" ]] && echo "chunked == unchunked on cuda" || echo "chunked differs on cuda: $a vs $b"
# The same for learned positions (gpt2): chunks start at their positions.
"$KILN" generate --model "$fx/gpt2-learned-f32" --prompt-ids 1,5,9,200,7,33,4 -n 16 -t 0 --json --quiet --device cuda \
  --max-num-tokens 3 >"$tmp/chunk2.json" || status=1
a=$(ids "$tmp/chunk2.json") b=$(ids "$tmp/gpt2-learned-f32.cuda.json")
[[ -n "$a" && "$a" == "$b" ]] && echo "gpt2 chunked == unchunked on cuda" || echo "gpt2 chunked differs on cuda: $a vs $b"
# --dtype: the automatic type is f16 (the upload line says so); --dtype bf16 computes in bf16 and still runs.
for t in auto bf16 f16; do
  if ! "$KILN" generate --model "$fx/gemma-mqa-bf16" --prompt-ids 1,5,9,200,7,33,4 -n 16 -t 0 --json --device cuda \
    --dtype $t >"$tmp/dt.$t.json" 2>"$tmp/dt.$t.err"; then
    echo "FAILED: generate --dtype $t: $(tail -1 "$tmp/dt.$t.err")"
    status=1
  fi
  echo "--dtype $t: $(grep -o 'computing in [bf0-9]*' "$tmp/dt.$t.err") $(ids "$tmp/dt.$t.json")"
done
grep -q "computing in f16" "$tmp/dt.auto.err" && grep -q "computing in bf16" "$tmp/dt.bf16.err" || {
  echo "FAILED: --dtype auto/bf16 did not upload as f16/bf16"
  status=1
}
[[ "$(ids "$tmp/dt.auto.json")" == "$(ids "$tmp/dt.f16.json")" ]] || { echo "FAILED: --dtype auto != f16"; status=1; }
# --kv-cache-dtype fp8 runs on both devices (ids may part at near ties: the GPU rounds its own f16 K/V), and a
# bench run with it reports the cache type.
for d in cpu cuda; do
  if ! "$KILN" generate --model "$fx/llama3-gqa-bf16" --prompt-ids 1,5,9,200,7,33,4 -n 16 -t 0 --json --quiet \
    --device $d --kv-cache-dtype fp8 >"$tmp/fp8.$d.json" 2>"$tmp/fp8.$d.err"; then
    echo "FAILED: generate --kv-cache-dtype fp8 --device $d: $(tail -1 "$tmp/fp8.$d.err")"
    status=1
  fi
  echo "--kv-cache-dtype fp8 --device $d: $(ids "$tmp/fp8.$d.json")"
done
if "$KILN" bench throughput --model "$fx/llama3-gqa-bf16" --device cuda --kv-cache-dtype fp8 --isl 32 --osl 8 \
  --num-requests 8 --json --quiet >"$tmp/fp8.bench.json" 2>"$tmp/fp8.bench.err"; then
  grep -q '"kv_cache_dtype":"fp8_e4m3"' "$tmp/fp8.bench.json" || grep -q '"kv_cache_dtype": "fp8_e4m3"' "$tmp/fp8.bench.json" ||
    { echo "FAILED: bench --kv-cache-dtype fp8 did not report fp8_e4m3"; status=1; }
else
  echo "FAILED: bench --kv-cache-dtype fp8 --device cuda: $(tail -1 "$tmp/fp8.bench.err")"
  status=1
fi
"$KILN" generate --model "$fx/llama3-gqa-bf16" --prompt-ids 1,2 -n 2 --device tpu 2>&1 | head -1
rm -rf "$tmp"
exit $status
