#!/usr/bin/env bash
# Bad input to the kiln CLI: each case must exit with code 2 and print exactly one line on stderr
# that names the problem, never crash. Usage: errors.sh KILN_BINARY SOURCE_DIR TEST_DATA_DIR
set -uo pipefail
kiln=$1 src=$2 data=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

# expect_error NAME PATTERN -- ARGS...: exit code 2, one stderr line matching PATTERN.
expect_error() {
  local name=$1 pattern=$2
  shift 3
  "$kiln" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  # A load summary ("kiln: loaded ...") may precede an error found after loading; the error itself
  # must be one line.
  grep -v '^kiln: loaded ' "$tmp/err" >"$tmp/err1" || true
  local lines
  lines=$(wc -l <"$tmp/err1")
  if [[ $rc -ne 2 || $lines -ne 1 ]] || ! grep -q -E -- "$pattern" "$tmp/err1"; then
    echo "FAIL $name: rc=$rc, $lines stderr lines, want /$pattern/:"
    cat "$tmp/err"
    fails=$((fails + 1))
  else
    echo "ok   $name: $(cat "$tmp/err1")"
  fi
}

stories=$src/tests/fixtures/llama2c/stories260K/stories260K.bin
vocab=$data/llama.cpp-vocab/ggml-vocab-gpt-2.gguf

expect_error missing-file "$tmp/nope.gguf" -- generate --model "$tmp/nope.gguf" --prompt-ids 1
expect_error missing-folder "$tmp/nodir" -- info --model "$tmp/nodir"
mkdir -p "$tmp/empty"
expect_error folder-without-config "config.json" -- generate --model "$tmp/empty" --prompt-ids 1

# A truncated GGUF and one with a corrupt magic.
head -c 1000 "$vocab" >"$tmp/trunc.gguf"
expect_error truncated-gguf "trunc.gguf" -- generate --model "$tmp/trunc.gguf" --prompt-ids 1
printf 'GGUX' | cat - <(tail -c +5 "$vocab") >"$tmp/magic.gguf"
expect_error bad-magic-gguf "magic.gguf" -- info --model "$tmp/magic.gguf"
# A GGUF that is a vocabulary only: no tensors, so no model.
expect_error vocab-only-gguf "ggml-vocab-gpt-2.gguf" -- generate --model "$vocab" --prompt-ids 1

# An unknown architecture in an HF folder.
mkdir -p "$tmp/unknown"
cat >"$tmp/unknown/config.json" <<'JSON'
{"architectures": ["FrobnicatorForCausalLM"], "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 10}
JSON
expect_error unknown-architecture "FrobnicatorForCausalLM" -- generate --model "$tmp/unknown" --prompt-ids 1
# Malformed JSON and a truncated safetensors.
mkdir -p "$tmp/badjson"
echo '{"architectures": ["LlamaForCausalLM"], ' >"$tmp/badjson/config.json"
expect_error malformed-config "config.json" -- info --model "$tmp/badjson"
for fx in "$src"/tests/fixtures/models/*/; do
  if [[ -f "$fx/model.safetensors" ]]; then
    mkdir -p "$tmp/truncst"
    cp "$fx/config.json" "$tmp/truncst/"
    head -c 200 "$fx/model.safetensors" >"$tmp/truncst/model.safetensors"
    expect_error truncated-safetensors "model.safetensors" -- generate --model "$tmp/truncst" --prompt-ids 1
    break
  fi
done
# A truncated llama2.c checkpoint.
head -c 5000 "$stories" >"$tmp/short.bin"
expect_error truncated-llama2c "short.bin" -- generate --model "$tmp/short.bin" --prompt-ids 1

# Bad flags and values.
expect_error unknown-flag "--frobnicate" -- generate --model "$stories" --prompt-ids 1 --frobnicate
expect_error negative-temperature "temperature" -- generate --model "$stories" --prompt-ids 1 --temperature -1
expect_error bad-top-p "top-p" -- generate --model "$stories" --prompt-ids 1 --top-p 1.5
expect_error bad-ids "prompt-ids" -- generate --model "$stories" --prompt-ids 1,x,3
expect_error id-out-of-range "outside the vocabulary" -- generate --model "$stories" --prompt-ids 1,99999
expect_error both-prompts "exactly one" -- generate --model "$stories" --prompt hi --prompt-ids 1
expect_error bad-device "device" -- generate --model "$stories" --prompt-ids 1 --device tpu
expect_error bad-dtype "dtype must be auto, bf16 or f16" -- generate --model "$stories" --prompt-ids 1 --dtype f8
expect_error dtype-on-cpu "applies to --device cuda" -- generate --model "$stories" --prompt-ids 1 --dtype f16
expect_error chat-dtype-on-cpu "applies to --device cuda" -- chat --model "$stories" --dtype bf16
expect_error zero-max-tokens "max-tokens" -- generate --model "$stories" --prompt-ids 1 --max-tokens 0
expect_error no-verb "" --
expect_error prompt-too-long "context" -- generate --model "$stories" --prompt-ids "$(python3 -c 'print(",".join(["5"]*600))')"

if ((fails)); then
  echo "$fails case(s) failed"
  exit 1
fi
echo "all error cases passed"
