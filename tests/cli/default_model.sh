#!/usr/bin/env bash
# The default model (SmolLM2-135M-Instruct Q4_1 GGUF) against Hugging Face transformers in float64
# (tests/fixtures/default-model/reference.json, made by tools/make_default_model_reference.py):
# prompt ids equal HF's tokenization, greedy ids equal while the reference's top-2 margin is clear,
# top-5 logprobs within 2e-3. The model is fetched by scripts/test.sh (scripts/fetch-default-model.sh).
# Usage: default_model.sh KILN_BINARY SOURCE_DIR TEST_DATA_DIR
set -euo pipefail
kiln=$1 src=$2
cache=${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}
model=$cache/SmolLM2-135M-Instruct.Q4_1.gguf
ref=$src/tests/fixtures/default-model/reference.json
if [[ ! -f $model ]]; then
  echo "FAIL: the default model is absent ($model); run scripts/fetch-default-model.sh" >&2
  exit 1
fi
python3 - "$kiln" "$model" "$ref" <<'PY'
import json, subprocess, sys
kiln, model, ref = sys.argv[1:4]
ref = json.load(open(ref))
fails = 0
for case in ref["cases"]:
    steps = case["steps"]
    out = subprocess.run([kiln, "generate", "--model", model, "--prompt", case["prompt"], "--max-tokens", str(len(steps)),
                          "--temperature", "0", "--logprobs", "5", "--json", "--quiet"],
                         check=True, capture_output=True, text=True).stdout
    o = json.loads(out)
    if o["prompt_ids"] != case["prompt_ids"]:
        print("FAIL prompt ids", repr(case["prompt"]), o["prompt_ids"], case["prompt_ids"]); fails += 1; continue
    compared = 0
    for i, (mine, want) in enumerate(zip(o["logprobs"], steps)):
        ref_top = {t["id"]: t["logprob"] for t in want["top"]}
        my_top = {t["id"]: t["logprob"] for t in mine["top"]}
        worst = max(abs(my_top[k] - v) for k, v in ref_top.items() if k in my_top) if my_top else 1
        margin = want["top"][0]["logprob"] - want["top"][1]["logprob"]
        if worst > 2e-3 or set(ref_top) != set(my_top) and margin > 0.01:
            print(f"FAIL {case['prompt']!r} step {i}: logprob error {worst:.2e}"); fails += 1; break
        compared += 1
        if mine["token_id"] != want["token_id"]:
            if margin > 1e-3:
                print(f"FAIL {case['prompt']!r} step {i}: token {mine['token_id']} != {want['token_id']} (margin {margin:.4f})")
                fails += 1
            break  # the sequences part here (a near tie): nothing after is comparable
    print(f"ok {case['prompt']!r}: {compared} steps compared; text {o['text']!r}")
sys.exit(1 if fails else 0)
PY
