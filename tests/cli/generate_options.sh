#!/usr/bin/env bash
# Options that used to be ignored or clamped in silence: --threads -1 is refused; --max-tokens beyond the
# context says so on stderr; --logprobs without --json prints one line per token with its logprob; --json
# logprobs carry each token's text beside its id; an empty line in --prompts-file is skipped with a warning.
# Usage: generate_options.sh KILN_BINARY SOURCE_DIR TEST_DATA_DIR
set -euo pipefail
kiln=$1 src=$2
model=$src/tests/fixtures/llama2c/stories260K/stories260K.bin  # context 512
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
  echo "FAIL: $*"
  exit 1
}

# --threads -1: exit 2, one line naming the option.
rc=0
"$kiln" generate --model "$model" --prompt-ids 1 --threads -1 >"$tmp/out" 2>"$tmp/err" || rc=$?
[[ $rc -eq 2 && $(wc -l <"$tmp/err") -eq 1 ]] && grep -q -- "--threads must be >= 0" "$tmp/err" ||
  fail "--threads -1: rc $rc, $(cat "$tmp/err")"
"$kiln" generate --model "$model" --prompt-ids 1 --threads 1 -n 2 -t 0 --quiet >/dev/null || fail "--threads 1"
echo "ok   --threads -1 refused: $(cat "$tmp/err")"

# --max-tokens past the context: a warning naming the numbers, and generation ends at the context.
"$kiln" generate --model "$model" --prompt-ids 1,403,407 --max-tokens 600 -t 0 --json >"$tmp/long.json" 2>"$tmp/err"
grep -q "warning: --max-tokens 600 does not fit: the prompt has 3 tokens and the model's context is 512" "$tmp/err" ||
  fail "no --max-tokens warning: $(cat "$tmp/err")"
python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); n=len(o["token_ids"]); assert n<=509 and (n==509)==(o["finish_reason"]=="length"), (o["finish_reason"], n)' "$tmp/long.json" ||
  fail "generation past the context"
echo "ok   --max-tokens beyond the context warns: $(grep warning "$tmp/err")"

# --logprobs 2 without --json: the text, then one line per token: its text (JSON-quoted), logprob, top 2.
"$kiln" generate --model "$model" --prompt-ids 1 -n 5 -t 0 --logprobs 2 --quiet >"$tmp/lp.txt"
"$kiln" generate --model "$model" --prompt-ids 1 -n 5 -t 0 --logprobs 2 --json --quiet >"$tmp/lp.json"
python3 - "$tmp/lp.txt" "$tmp/lp.json" <<'PY'
import json, re, sys
lines = open(sys.argv[1]).read().splitlines()
o = json.load(open(sys.argv[2]))
assert lines[0] == o["text"], (lines[0], o["text"])
rows = lines[1:]
assert len(rows) == 5, lines
for row, e in zip(rows, o["logprobs"]):
    m = re.fullmatch(r'(".*?") (-?\d+\.\d{4})  top: (".*?") (-?\d+\.\d{4}), (".*?") (-?\d+\.\d{4})', row)
    assert m, row
    # JSON logprobs: the token's text beside its id, for the token and each alternative.
    assert isinstance(e["token"], str) and json.loads(m.group(1)) == e["token"], (row, e)
    assert abs(float(m.group(2)) - e["logprob"]) < 1e-3, (row, e)
    assert [t["token"] for t in e["top"]] == [json.loads(m.group(3)), json.loads(m.group(5))], (row, e)
    assert all(isinstance(t["id"], int) for t in e["top"]), e
# The pieces spell the text (SentencePiece drops the first leading space of a text, not of a piece).
assert "".join(e["token"] for e in o["logprobs"]).lstrip() == o["text"].lstrip(), o
print("ok   --logprobs prints", len(rows), "token lines:", rows[0])
PY

# An empty line in --prompts-file: skipped with a warning naming it; the other prompts run.
printf 'Once upon\n\nThe cat\n' >"$tmp/prompts.txt"
"$kiln" generate --model "$model" --prompts-file "$tmp/prompts.txt" -n 3 -t 0 --json >"$tmp/p.jsonl" 2>"$tmp/err" ||
  fail "--prompts-file with an empty line: $(cat "$tmp/err")"
grep -q "warning: --prompts-file .*prompts.txt: line 2 is empty; skipped" "$tmp/err" || fail "no warning: $(cat "$tmp/err")"
[[ $(wc -l <"$tmp/p.jsonl") -eq 2 ]] || fail "$(wc -l <"$tmp/p.jsonl") outputs for 2 prompts"
echo "ok   empty prompt line skipped: $(grep warning "$tmp/err")"
echo "generate options ok"
