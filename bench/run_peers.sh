#!/usr/bin/env bash
# kiln against the PyTorch peers of ../shared/peers/ on one GPU, in one device call, on the shape those
# peers build (Llama-3.1-8B, random bf16 weights, ISL 128 / OSL 128): kiln bench, then each peer, then a
# table of output tok/s and kiln's ratio to each peer. Raw outputs go to $OUT (the device call's folder)
# or bench-out/.
#
#   bash bench/run_peers.sh prepare      # on the build machine: peers and a CUDA build of kiln into .peers/
#   bash bench/run_peers.sh run          # on the GPU machine (device call: carry [".peers"]): the ratio table
#   bash bench/run_peers.sh acceptance   # on the GPU machine: issue 7's acceptance runs and every config
#
# The GPU image has no fmt/CLI11/pcre2/utf8proc, so kiln is built where they are (prepare) and carried with
# the shared libraries it needs; without .peers/bin/kiln, run tries to build kiln in place and says so
# when it cannot. Where kiln cannot use the GPU (no CUDA backend in the build, no GPU) its rows read
# "cuda backend not available", other failures give their one-line error, and the peers are measured anyway.
#
# Environment: BATCHES (kiln and the eager peer, "1 32 64 128"), COMPILED_BATCHES (the torch.compile peer,
# which compiles once per batch size: "1 64"), PEERS ("eager compiled"), ISL/OSL (kiln's: 128/128, the
# peers' shape), KILN_CUDA (prepare: ON), JOBS (prepare: 2), STEP_TIMEOUT (seconds per kiln or peer run,
# 300).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=${1:-run}
BATCHES=${BATCHES:-"1 32 64 128"}
COMPILED_BATCHES=${COMPILED_BATCHES:-"1 64"}
PEERS=${PEERS:-"eager compiled"}
ISL=${ISL:-128}
OSL=${OSL:-128}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
CONFIG=bench/configs/llama-3.1-8b.json
out=${OUT:-$root/bench-out}
mkdir -p "$out"

# ---------------------------------------------------------------- prepare (build machine)
prepare() {
  set -e
  local shared=${KILN_SHARED_DIR:-$root/../shared}
  local build=${KILN_PEERS_BUILD_DIR:-build-peers}
  rm -rf .peers
  mkdir -p .peers/peers .peers/bin .peers/lib .peers/lib-fallback
  # The peer scripts live outside the repository; without them kiln alone is measured (run says which are missing).
  if compgen -G "$shared/peers/*.py" >/dev/null; then
    cp "$shared"/peers/*.py .peers/peers/
  else
    echo "run_peers: no peer scripts in $shared/peers (set KILN_SHARED_DIR); only kiln will be measured" >&2
  fi
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA="${KILN_CUDA:-ON}" >/dev/null
  ninja -C "$build" -j "${JOBS:-2}" kiln_cli
  cp "$build/bin/kiln" .peers/bin/
  # What the GPU image lacks travels; the C runtime, the driver and cuBLAS (hundreds of MB, in the image's
  # CUDA toolkit) do not; the C++ runtime travels as a fallback for an older image.
  ldd .peers/bin/kiln | awk '/=> \// {print $3}' | while read -r lib; do
    case $(basename "$lib") in
      libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux* | libcuda.so* | libcublas*) ;;
      libstdc++.so* | libgcc_s.so*) cp -L "$lib" .peers/lib-fallback/ ;;
      *) cp -L "$lib" .peers/lib/ ;;
    esac
  done
  echo "prepared .peers/ ($(du -sh .peers | cut -f1)): $(cd .peers/peers && ls)"
  echo "now, as a device call: command 'bash bench/run_peers.sh run', carry [\".peers\"]"
}

# ---------------------------------------------------------------- kiln on the GPU machine
kiln_bin=""
kiln_missing=""  # why there is no kiln to run, when there is none
# The carried libraries are for kiln alone: the peers' Python keeps the image's own.
kiln_libs="$root/.peers/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
find_kiln() {
  if [[ -x .peers/bin/kiln ]]; then
    kiln_bin=$root/.peers/bin/kiln
    if ! LD_LIBRARY_PATH=$kiln_libs "$kiln_bin" --version >/dev/null 2>"$out/kiln-version.err"; then
      kiln_libs="$root/.peers/lib-fallback:$kiln_libs"
      LD_LIBRARY_PATH=$kiln_libs "$kiln_bin" --version >/dev/null 2>>"$out/kiln-version.err" ||
        kiln_missing="carried kiln does not start: $(tail -1 "$out/kiln-version.err")"
    fi
    return
  fi
  echo "run_peers: no .peers/bin/kiln (run 'bash bench/run_peers.sh prepare' first); building here" >&2
  if cmake -S . -B build-peers -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA=ON >"$out/kiln-build.log" 2>&1 &&
    ninja -C build-peers kiln_cli >>"$out/kiln-build.log" 2>&1; then
    kiln_bin=$root/build-peers/bin/kiln
  else
    kiln_missing="kiln not built here: $(grep -m1 -iE 'error|could not|not found' "$out/kiln-build.log" | cut -c1-160)"
  fi
}

# kiln_bench NAME ARGS...: one kiln bench --json into $out/NAME.json, or its one-line error into NAME.err.
kiln_bench() {
  local name=$1
  shift
  if [[ -n $kiln_missing ]]; then
    echo "$kiln_missing" >"$out/$name.err"
    return
  fi
  echo "run_peers: kiln bench $*" >&2
  local rc=0
  LD_LIBRARY_PATH=$kiln_libs timeout "$STEP_TIMEOUT" "$kiln_bin" bench "$@" --device cuda --json --quiet >"$out/$name.json" 2>"$out/$name.err" || rc=$?
  if ((rc != 0)); then
    rm -f "$out/$name.json"
    ((rc == 124)) && echo "timed out after ${STEP_TIMEOUT} s" >>"$out/$name.err"
    [[ -s "$out/$name.err" ]] || echo "exit code $rc" >"$out/$name.err"
  fi
}

# ---------------------------------------------------------------- the ratio table
table() {
  python3 - "$out" "$BATCHES" "$ISL" "$OSL" <<'PY'
import glob, json, os, sys
out, batches, isl, osl = sys.argv[1], [int(b) for b in sys.argv[2].split()], sys.argv[3], sys.argv[4]

def kiln(b):
    p = os.path.join(out, f"kiln-b{b}.json")
    if os.path.exists(p):
        return json.load(open(p))["output_tokens_per_s"], None
    err = open(os.path.join(out, f"kiln-b{b}.err")).read().strip().splitlines() if os.path.exists(os.path.join(out, f"kiln-b{b}.err")) else ["not run"]
    line = err[-1] if err else "failed"
    if "CUDA backend" in line or "cuda backend" in line:
        return None, "cuda backend not available"
    return None, line[:70]

peers = {}  # (peer, batch) -> tok/s
notes = {}
env = {}
for name, what in [("eager", "hf_eager_generate"), ("compiled", "hf_static_compiled_generate")]:
    p = os.path.join(out, f"peer-{name}.jsonl")
    if not os.path.exists(p):
        continue
    for line in open(p):
        try:
            o = json.loads(line)
        except ValueError:
            continue
        if o.get("what") == what:
            peers[(name, o["batch"])] = o["out_tok_s"]
        elif o.get("what") in ("env", "copy_bw_TBps", "bf16_gemm_TFLOPs", "fp8_gemm_TFLOPs"):
            env[o["what"]] = o.get("value", o.get("gpu"))
    err = os.path.join(out, f"peer-{name}.err")
    if os.path.exists(err) and not any(k[0] == name for k in peers):
        lines = [l for l in open(err).read().splitlines() if l.strip()]
        errors = [l for l in lines if "Error" in l or "error" in l]
        notes[name] = (errors[-1] if errors else lines[-1] if lines else "failed")[:70]

print(f"\nkiln vs PyTorch peers: Llama-3.1-8B shape, random bf16 weights, ISL {isl} / OSL {osl}, output tok/s")
if env:
    print("device: " + ", ".join(f"{k} {v}" for k, v in env.items()))
rows = [("batch", "kiln", "HF eager", "kiln / eager", "HF compiled", "kiln / compiled")]
for b in batches:
    k, why = kiln(b)
    row = [str(b), f"{k:,.1f}" if k is not None else why]
    for name in ("eager", "compiled"):
        v = peers.get((name, b))
        cell = f"{v:,.1f}" if v is not None else notes.get(name, "-")
        ratio = f"{k / v:.2f}x" if (k is not None and v) else "-"
        row += [cell, ratio]
    rows.append(tuple(row))
w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
for i, r in enumerate(rows):
    print("| " + " | ".join(c.ljust(w[j]) for j, c in enumerate(r)) + " |")
    if i == 0:
        print("|" + "|".join("-" * (x + 2) for x in w) + "|")
PY
}

run() {
  {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
    date -u +%Y-%m-%dT%H:%M:%SZ
  } >"$out/device.txt"
  find_kiln
  for b in $BATCHES; do
    kiln_bench "kiln-b$b" throughput --model "$CONFIG" --random-weights --dtype bf16 --isl "$ISL" --osl "$OSL" \
      --num-requests "$b" --max-batch-size "$b" --warmup 1
  done
  [[ -d .peers/peers ]] || echo "run_peers: no .peers/peers/ (run prepare, and carry .peers)" >&2
  for p in $PEERS; do
    local script=.peers/peers/peer_bench.py batches=$BATCHES
    [[ $p == compiled ]] && script=.peers/peers/peer_bench_compiled.py batches=$COMPILED_BATCHES
    echo "run_peers: peer $p: $script $batches" >&2
    if [[ -f $script ]]; then
      # Each peer script takes the batch sizes as arguments and builds the same shape itself.
      local rc=0
      # shellcheck disable=SC2086  # the batch sizes are separate arguments
      PYTHONUNBUFFERED=1 timeout "$STEP_TIMEOUT" python3 "$script" $batches >"$out/peer-$p.jsonl" 2>"$out/peer-$p.err" ||
        rc=$?
      ((rc == 124)) && echo "timed out after ${STEP_TIMEOUT} s" >>"$out/peer-$p.err"
      ((rc != 0 && rc != 124)) && echo "exit code $rc" >>"$out/peer-$p.err"
    else
      echo "$script is missing" >"$out/peer-$p.err"
    fi
  done
  table | tee "$out/table.md"
}

# The acceptance runs of issue 7 and each config at 128/128 (kiln only; figures for docs/benchmarks.md).
acceptance() {
  find_kiln
  local rw=(--random-weights --dtype bf16)
  # ACCEPT picks the parts ("latency throughput configs", all by default) so they can be split over calls.
  # Request counts keep each run under a minute on an H200 (plus ~25 s of random-weight generation):
  # 128/128 at max batch 512 ran 3,000 requests in 24 s. 1000/1000 runs one full wave of 384 requests: 512 would
  # need 134 GB of KV cache at 2,000 tokens each (128 KiB per token), more than the H200 has beside the weights.
  local parts=${ACCEPT:-latency throughput configs}
  if [[ " $parts " == *" latency "* ]]; then
    kiln_bench accept-latency-128 latency --model "$CONFIG" "${rw[@]}" --batch-size 1 --isl 128 --osl 128
    kiln_bench accept-latency-2048 latency --model "$CONFIG" "${rw[@]}" --batch-size 1 --isl 2048 --osl 16
  fi
  if [[ " $parts " == *" throughput "* ]]; then
    kiln_bench accept-128-128 throughput --model "$CONFIG" "${rw[@]}" --isl 128 --osl 128 --num-requests 3000 \
      --max-batch-size 512 --max-num-tokens 8192
    kiln_bench accept-2048-128 throughput --model "$CONFIG" "${rw[@]}" --isl 2048 --osl 128 --num-requests 300 \
      --max-batch-size 256 --max-num-tokens 8192
    # The same workload with every request admitted and prompts first: they then decode together, at batch 300.
    kiln_bench accept-2048-128-prefill-first throughput --model "$CONFIG" "${rw[@]}" --isl 2048 --osl 128 \
      --num-requests 300 --max-batch-size 300 --max-num-tokens 8192 --schedule prefill-first
    kiln_bench accept-1000-1000 throughput --model "$CONFIG" "${rw[@]}" --isl 1000 --osl 1000 --num-requests 384 \
      --max-batch-size 384 --max-num-tokens 8192
    # The same two workloads with an fp8 e4m3 KV cache (bf16 weights; half the bytes decode attention reads).
    kiln_bench accept-2048-128-fp8kv throughput --model "$CONFIG" "${rw[@]}" --isl 2048 --osl 128 \
      --num-requests 300 --max-batch-size 300 --max-num-tokens 8192 --schedule prefill-first --kv-cache-dtype fp8
    kiln_bench accept-1000-1000-fp8kv throughput --model "$CONFIG" "${rw[@]}" --isl 1000 --osl 1000 \
      --num-requests 384 --max-batch-size 384 --max-num-tokens 8192 --kv-cache-dtype fp8
  fi
  if [[ " $parts " == *" configs "* ]]; then
    for c in bench/configs/*.json; do
      [[ "$c" == "$CONFIG" ]] && continue  # measured above
      kiln_bench "config-$(basename "$c" .json)" throughput --model "$c" "${rw[@]}" --isl 128 --osl 128 \
        --num-requests 1000 --max-batch-size 256 --max-num-tokens 8192
    done
  fi
  python3 - "$out" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
for p in sorted(glob.glob(os.path.join(out, "accept-*.err")) + glob.glob(os.path.join(out, "config-*.err"))):
    j = p[:-4] + ".json"
    name = os.path.basename(p)[:-4]
    if os.path.exists(j):
        o = json.load(open(j))
        extra = ""
        if o["mode"] == "latency":
            extra = f", decode {o['decode_tokens_per_s_per_request']:.1f} tok/s, TTFT p50 {o['ttft_ms']['p50']:.1f} ms"
        print(f"{name}: {o['output_tokens_per_s']:,.1f} output tok/s{extra}")
    else:
        lines = open(p).read().strip().splitlines()
        msg = lines[-1] if lines else "failed"
        print(f"{name}: {'cuda backend not available' if 'CUDA backend' in msg else msg}")
PY
}

case $mode in
  prepare) prepare ;;
  run) run ;;
  acceptance) acceptance ;;
  *) echo "usage: bench/run_peers.sh prepare|run|acceptance" >&2; exit 2 ;;
esac
