#!/usr/bin/env bash
# The `kiln generate --json` contract on a trained llama2.c model: greedy ids equal the published
# golden ids, one logprobs entry per token with K sorted alternatives, text decoded, streaming mode
# prints the same text as --json. Usage: generate_json.sh KILN_BINARY SOURCE_DIR TEST_DATA_DIR
set -euo pipefail
kiln=$1 src=$2
model=$src/tests/fixtures/llama2c/stories260K/stories260K.bin
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$kiln" generate --model "$model" --prompt-ids 1 --max-tokens 32 --temperature 0 --logprobs 5 --json --quiet >"$tmp/a.json"
python3 - "$tmp/a.json" <<'PY'
import json, math, sys
o = json.load(open(sys.argv[1]))
golden = [403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337,
          410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385]
assert o["prompt_ids"] == [1], o["prompt_ids"]
assert o["token_ids"] == golden, o["token_ids"]
assert o["finish_reason"] == "length"
assert isinstance(o["text"], str) and o["text"].startswith("Once upon a time"), o["text"]
assert len(o["logprobs"]) == 32
for e, t in zip(o["logprobs"], golden):
    assert e["token_id"] == t
    top = e["top"]
    assert len(top) == 5
    assert top[0]["id"] == t and abs(top[0]["logprob"] - e["logprob"]) < 1e-12
    assert all(top[i]["logprob"] >= top[i + 1]["logprob"] for i in range(4))
    assert all(x["logprob"] <= 0 for x in top)
    assert sum(math.exp(x["logprob"]) for x in top) <= 1 + 1e-9
print("json contract ok")
PY

# An fp8 KV cache (K and V rounded to e4m3) on this trained model: the same greedy ids (measured: the chosen
# tokens' logprobs move by at most 0.12 nats), and the chosen logprobs are not bitwise the f32 cache's.
"$kiln" generate --model "$model" --prompt-ids 1 --max-tokens 32 --temperature 0 --logprobs 5 --json --quiet \
  --kv-cache-dtype fp8 >"$tmp/a8.json"
python3 - "$tmp/a.json" "$tmp/a8.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert b["token_ids"] == a["token_ids"], b["token_ids"]
d = [abs(x["logprob"] - y["logprob"]) for x, y in zip(a["logprobs"], b["logprobs"])]
assert max(d) < 0.25 and max(d) > 0, d
print("fp8 KV cache ok: chosen logprobs within", round(max(d), 3))
PY

# Text prompt: BOS is added, and streamed text equals the JSON text for the same seed.
"$kiln" generate --model "$model" --prompt "Once upon a time" --max-tokens 40 --temperature 0.8 --seed 7 --json --quiet >"$tmp/b.json"
"$kiln" generate --model "$model" --prompt "Once upon a time" --max-tokens 40 --temperature 0.8 --seed 7 --quiet >"$tmp/b.txt"
python3 - "$tmp/b.json" "$tmp/b.txt" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
streamed = open(sys.argv[2], encoding="utf-8").read()
assert o["prompt_ids"][0] == 1, o["prompt_ids"]
assert len(o["token_ids"]) == 40 or o["finish_reason"] == "stop"
assert streamed == o["text"] + "\n", (streamed, o["text"])
print("streaming == json ok")
PY

# Without a tokenizer (a checkpoint folder with no tokenizer files), --prompt-ids works and text is null.
mkdir -p "$tmp/notok"
cp "$model" "$tmp/notok/model.bin"
"$kiln" generate --model "$tmp/notok/model.bin" --prompt-ids 1,403 --max-tokens 4 --temperature 0 --json --quiet >"$tmp/c.json"
python3 - "$tmp/c.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
assert o["text"] is None and len(o["token_ids"]) == 4 and o["prompt_ids"] == [1, 403], o
print("no-tokenizer ok")
PY
echo "generate_json passed"
