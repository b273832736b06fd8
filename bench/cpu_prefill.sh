#!/usr/bin/env bash
# The CPU prefill benchmark (issue 27, point 8): `kiln generate` on prompts of 2,011 and 4,021 tokens, greedy, 32
# new tokens, so one run gives the prefill time, decode speed at that context and the generated ids (to check that
# two builds generate the same). Builds are run interleaved, so a busy machine slows them alike.
# The prompt (bench/data/prefill_4021.ids) is the default model's tokenization of the first 17,000 characters of
# docs/benchmarks.md at commit 51a742c; the 2,011-token prompt is its first 2,011 ids.
#
#   bash bench/cpu_prefill.sh [--runs N] [--threads N] [--lengths "2011 4021"] [--model PATH] KILN [KILN_BASELINE ...]
#
# Prints one line per run (binary, prompt length, prefill wall seconds, process CPU seconds, decode tok/s, the
# machine's 1-minute load average, a hash of the generated ids), then the min and median per binary and length.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3 threads=2 lengths="2011 4021" model=()
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --runs) runs=$2 ;;
    --threads) threads=$2 ;;
    --lengths) lengths=$2 ;;
    --model) model=(--model "$2") ;;
    *) echo "cpu_prefill.sh: unknown flag $1" >&2; exit 2 ;;
  esac
  shift 2
done
[[ $# -ge 1 ]] || { echo "usage: bash bench/cpu_prefill.sh [--runs N] [--threads N] [--lengths L] KILN [KILN ...]" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
all_ids=$(cat bench/data/prefill_4021.ids)
results=$tmp/results
for run in $(seq "$runs"); do
  for n in $lengths; do
    ids=$(echo "$all_ids" | cut -d, -f1-"$n")
    for bin in "$@"; do
      load=$(cut -d' ' -f1 /proc/loadavg)
      /usr/bin/time -f "%U %S" -o "$tmp/time" "$bin" generate "${model[@]}" --prompt-ids "$ids" --max-tokens 32 \
        --temperature 0 --json --threads "$threads" >"$tmp/out.json" 2>"$tmp/err"
      prefill=$(sed -n 's/.*prompt [0-9]* tokens in \([0-9.]*\) s.*/\1/p' "$tmp/err")
      decode=$(sed -n 's/.* s (\([0-9.]*\) tok\/s); finish.*/\1/p' "$tmp/err")
      cpu=$(awk '{printf "%.2f", $1 + $2}' "$tmp/time")
      hash=$(python3 -c "import json,sys,hashlib; print(hashlib.sha1(str(json.load(open(sys.argv[1]))['token_ids']).encode()).hexdigest()[:12])" "$tmp/out.json")
      echo "$bin $n prefill_s=$prefill cpu_s=$cpu decode_tok_s=$decode load=$load ids=$hash" | tee -a "$results"
    done
  done
done
echo "# min / median over $runs runs (prefill wall s, process CPU s incl. load and decode, decode tok/s)"
python3 - "$results" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    kv = dict(x.split("=") for x in f[2:])
    rows[(f[0], int(f[1]))].append(kv)
for (b, n), rs in sorted(rows.items(), key=lambda x: (x[0][1], x[0][0])):
    pre = [float(r["prefill_s"]) for r in rs]
    cpu = [float(r["cpu_s"]) for r in rs]
    dec = [float(r["decode_tok_s"]) for r in rs]
    ids = sorted({r["ids"] for r in rs})
    print(f"{b} {n} tokens: prefill {min(pre):.2f} / {statistics.median(pre):.2f} s, "
          f"cpu {min(cpu):.1f} / {statistics.median(cpu):.1f} s, decode {max(dec):.1f} / {statistics.median(dec):.1f} tok/s, "
          f"ids {','.join(ids)}")
PY
