#!/usr/bin/env bash
# On the GPU machine: `kiln generate --device cuda` end to end on Llama-family fixtures, next to --device cpu
# (greedy ids of the same prompts; a near tie may part them), chunked prefill, and the refusal of a family the
# CUDA backend does not run (one line, exit 2).   tests/gpu/cli_device.sh <kiln binary>
set -uo pipefail
KILN=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
fx="$root/tests/fixtures/models"
tmp=$(mktemp -d)
status=0
ids() { grep -o '"token_ids":\[[^]]*\]' "$1" | tr '\n' ' '; }
for f in llama3-gqa-bf16 qwen3-qknorm mistral-swa llama2-mha-f32; do
  for d in cpu cuda; do
    if ! "$KILN" generate --model "$fx/$f" --prompt-ids 1,5,9,200,7,33,4 -n 16 -t 0 --json --quiet --device $d \
      >"$tmp/$f.$d.json" 2>"$tmp/$f.$d.err"; then
      echo "FAILED: generate $f --device $d: $(cat "$tmp/$f.$d.err")"
      status=1
    fi
  done
  c=$(ids "$tmp/$f.cpu.json") g=$(ids "$tmp/$f.cuda.json")
  [[ "$c" == "$g" ]] && echo "same ids cpu/cuda: $f $g" || echo "ids differ cpu/cuda: $f cpu $c cuda $g"
done
# Chunked prefill through the CLI: 3-token chunks give the ids of the one-chunk run above.
"$KILN" generate --model "$fx/llama3-gqa-bf16" --prompt-ids 1,5,9,200,7,33,4 -n 16 -t 0 --json --quiet --device cuda \
  --max-num-tokens 3 >"$tmp/chunk.json" || status=1
a=$(ids "$tmp/chunk.json") b=$(ids "$tmp/llama3-gqa-bf16.cuda.json")
[[ -n "$a" && "$a" == "$b" ]] && echo "chunked == unchunked on cuda" || echo "chunked differs on cuda: $a vs $b"
if "$KILN" generate --model "$fx/gpt2-learned-f32" --prompt-ids 1,2 -n 2 --device cuda >"$tmp/r.out" 2>"$tmp/r.err"; then
  echo "FAILED: gpt2 ran on cuda"
  status=1
else
  echo "refusal (exit $?): $(cat "$tmp/r.err")"
fi
"$KILN" generate --model "$fx/llama3-gqa-bf16" --prompt-ids 1,2 -n 2 --device tpu 2>&1 | head -1
rm -rf "$tmp"
exit $status
