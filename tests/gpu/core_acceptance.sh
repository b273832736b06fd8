#!/usr/bin/env bash
# On the GPU machine: what the core issue (19) and the memory-plan issue (28) must show on a GPU, in parts that fit
# one device call each (10 minutes):
#   tests   every gpu test and memcheck set (validate_device.sh tests), engine death on CUDA (a real sticky fault)
#   perf    the build before the restructure (DIR/base/kiln) against this one, side by side and interleaved on the same
#           machine: batch-1 latency, 128/128, 2048/128, 1000/1000 on the Llama-3.1-8B shape, random bf16 weights,
#           the same KV budget for both (--kv-cache-bytes 40e9: under either build's own default on an 80 GB H100);
#           a second round of the noisiest two (batch-1 latency, 2048/128)
#   memory  issue 28 on an H100: 2048/128 with 300 requests and 1000/1000 with 384, no memory flags; the printed plan
#           against the peak device memory measured
# Usage: bash tests/gpu/core_acceptance.sh DIR PART...
#   DIR holds bins.tar.xz (tests/gpu/prepare_device.sh of the CUDA build, tar | xz -9) and, for perf, base/kiln (the
#   kiln binary of 51a742c, built the same way). Logs and JSON go to $OUT; a summary table to stdout.
set -uo pipefail
D=$(realpath "${1:?usage: core_acceptance.sh DIR PART...}")
shift
parts=" $* "
root=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/kiln-out}
mkdir -p "$OUT"
[[ -d "$D/bin" ]] || (cd "$D" && tar xJf bins.tar.xz)
export LD_LIBRARY_PATH="$D/bin/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
"$D/bin/kiln" --version >/dev/null 2>&1 || export LD_LIBRARY_PATH="$D/bin/lib-fallback:$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
CONFIG=$root/bench/configs/llama-3.1-8b.json
rw=(--model "$CONFIG" --random-weights --dtype bf16 --device cuda --json --quiet)
t0=$SECONDS

# figure FILE KEY: a number from a bench JSON (latency mode keeps its figures at the top level with one batch size).
figure() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d.get(sys.argv[2]))" "$1" "$2" 2>/dev/null; }

if [[ $parts == *" tests "* ]]; then
  timeout 300 python3 "$root/tests/server/engine_death_test.py" "$D/bin/kiln" --device cuda \
    --model "$root/tests/fixtures/models/llama2-mha-f32" >"$OUT/engine_death.log" 2>&1
  echo "engine death on CUDA: exit $? ($(tail -1 "$OUT/engine_death.log"))"
  KILN_SANITIZER_TIMEOUT=${KILN_SANITIZER_TIMEOUT:-120} bash "$root/tests/gpu/validate_device.sh" "$D" tests
  echo "tests done at $((SECONDS - t0)) s"
fi

if [[ $parts == *" perf "* ]]; then
  [[ -x "$D/base/kiln" ]] || { echo "perf: no $D/base/kiln"; exit 2; }
  kv=(--kv-cache-bytes 40000000000)
  run() {  # run NAME BINARY ARGS...: one bench run, its JSON in $OUT/NAME.json
    local name=$1 bin=$2
    shift 2
    timeout 240 "$bin" bench "$@" "${rw[@]}" "${kv[@]}" >"$OUT/$name.json" 2>"$OUT/$name.err" || echo "FAILED: $name"
  }
  for round in 1 2; do
    for build in base new; do
      bin=$D/bin/kiln
      [[ $build == base ]] && bin=$D/base/kiln
      run "latency-$build-$round" "$bin" latency --batch-size 1 --isl 128 --osl 128
      [[ $round == 1 ]] && run "t128-$build-$round" "$bin" throughput --isl 128 --osl 128 --num-requests 3000 \
        --max-batch-size 512 --max-num-tokens 8192
      run "t2048-$build-$round" "$bin" throughput --isl 2048 --osl 128 --num-requests 300 --max-batch-size 256 \
        --max-num-tokens 8192
      [[ $round == 1 ]] && run "t1000-$build-$round" "$bin" throughput --isl 1000 --osl 1000 --num-requests 384 \
        --max-batch-size 384 --max-num-tokens 8192
      echo "round $round $build done at $((SECONDS - t0)) s"
    done
  done
  printf '%-22s %14s %14s %8s\n' scenario base new new/base
  for s in latency t128 t2048 t1000; do
    for round in 1 2; do
      [[ -f "$OUT/$s-base-$round.json" ]] || continue
      key=output_tokens_per_s
      [[ $s == latency ]] && key=decode_tokens_per_s_per_request
      b=$(figure "$OUT/$s-base-$round.json" $key) n=$(figure "$OUT/$s-new-$round.json" $key)
      printf '%-22s %14s %14s %8s\n' "$s ($round)" "$b" "$n" \
        "$(python3 -c "print(f'{float(\"$n\") / float(\"$b\"):.4f}')" 2>/dev/null)"
    done
  done
fi

if [[ $parts == *" memory "* ]]; then
  for s in "2048 128 300 300" "1000 1000 384 384"; do
    read -r isl osl n mb <<<"$s"
    name=mem-$isl-$osl
    timeout 280 "$D/bin/kiln" bench throughput "${rw[@]}" --isl "$isl" --osl "$osl" --num-requests "$n" \
      --max-batch-size "$mb" --max-num-tokens 8192 >"$OUT/$name.json" 2>"$OUT/$name.err" || echo "FAILED: $name"
    grep "memory plan" "$OUT/$name.err"
    python3 - "$OUT/$name.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["memory_plan"]
planned, peak = p["planned_total_bytes"], d["peak_gpu_memory_bytes"]
print(f"  {sys.argv[1].split('/')[-1]}: {d['output_tokens_per_s']:.1f} output tok/s, {d['preemptions']} preemptions, "
      f"peak {d['peak_running']} running; planned {planned / 2**30:.2f} GiB, measured peak {peak / 2**30:.2f} GiB "
      f"({100 * (peak - planned) / planned:+.2f}%)")
PY
  done
fi
echo "done at $((SECONDS - t0)) s"
# A device call brings back at most 8 files from $OUT: one archive of everything.
(cd "$OUT" && tar czf /tmp/core-acceptance.tgz --exclude='*.tgz' . && find . -mindepth 1 ! -name '*.tgz' -delete &&
  mv /tmp/core-acceptance.tgz .)
