#!/usr/bin/env bash
# `kiln chat` on the default model, greedy: the model's chat template renders the conversation, a second turn
# computes only the tokens after the cached prefix, /reset then the first question again reuses the cache and
# gives the first reply again, --chat-template replaces the tokenizer's template, and a missing template file
# is one line on stderr with exit code 2. Usage: chat.sh KILN_BINARY SOURCE_DIR TEST_DATA_DIR
set -euo pipefail
kiln=$1
cache=${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}
model=$cache/SmolLM2-135M-Instruct.Q4_1.gguf
if [[ ! -f $model ]]; then
  echo "FAIL: the default model is absent ($model); run scripts/fetch-default-model.sh" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

printf 'What is the capital of France?\nAnd of Italy?\n/reset\nWhat is the capital of France?\n/exit\n' |
  "$kiln" chat --model "$model" -t 0 -n 24 >"$tmp/out" 2>"$tmp/err"
python3 - "$tmp/out" "$tmp/err" <<'PY'
import re, sys
out = open(sys.argv[1]).read().splitlines()
stats = re.findall(r"computed (\d+) of (\d+) prompt tokens", open(sys.argv[2]).read())
assert len(out) == 3 and all(line.strip() for line in out), out
assert len(stats) == 3, stats
(c1, n1), (c2, n2), (c3, n3) = [(int(a), int(b)) for a, b in stats]
assert c1 == n1, stats                 # nothing cached yet
assert n2 > n1 and c2 < n2 - n1 + 8, stats  # the second turn reuses the first turn and its reply
assert n3 == n1 and c3 == 1, stats      # after /reset the same prompt is a cached prefix (one token recomputed)
assert out[2] == out[0], out            # and greedy gives the same reply
print("chat ok:", stats, out)
PY

# A template of our own: only the messages' text, so the prompt is a few tokens.
printf '{%% for m in messages %%}{{ m["content"] }}{%% endfor %%}' >"$tmp/plain.jinja"
echo "Paris" | "$kiln" chat --model "$model" -t 0 -n 4 --chat-template "$tmp/plain.jinja" >/dev/null 2>"$tmp/err2"
n=$(grep -o 'of [0-9]* prompt tokens' "$tmp/err2" | grep -o '[0-9]*')
[[ -n $n && $n -le 3 ]] || { echo "FAIL: --chat-template not used: $(cat "$tmp/err2")"; exit 1; }

rc=0
echo hi | "$kiln" chat --model "$model" --chat-template "$tmp/absent.jinja" >/dev/null 2>"$tmp/err3" || rc=$?
[[ $rc -eq 2 && $(wc -l <"$tmp/err3") -eq 1 ]] || { echo "FAIL: rc $rc, stderr: $(cat "$tmp/err3")"; exit 1; }
echo "chat template flag and errors ok"
