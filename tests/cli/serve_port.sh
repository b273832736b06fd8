#!/usr/bin/env bash
# Two servers on one port: the second fails at once with "port N is in use" and exit code 2 (no "listening"),
# and the first keeps every connection. The first prints "loading" before the model loads and "listening"
# only once it serves. Usage: serve_port.sh KILN_BINARY SOURCE_DIR TEST_DATA_DIR
set -euo pipefail
kiln=$1 src=$2
model=$src/tests/fixtures/llama2c/stories260K/stories260K.bin
tmp=$(mktemp -d)
pid=""
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  [[ -f $tmp/first.log ]] && cat "$tmp/first.log"
  exit 1
}

"$kiln" serve --model "$model" --port 0 --threads 1 --kv-cache-bytes 8388608 2>"$tmp/first.log" &
pid=$!
for _ in $(seq 300); do
  grep -q "listening on" "$tmp/first.log" && break
  kill -0 "$pid" 2>/dev/null || fail "the first server exited"
  sleep 0.1
done
port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/first.log")
[[ -n $port ]] || fail "no listening line"
# "loading" comes first, "listening" last, once /health is 200.
load_line=$(grep -n "loading" "$tmp/first.log" | head -1 | cut -d: -f1)
listen_line=$(grep -n "listening on" "$tmp/first.log" | cut -d: -f1)
[[ -n $load_line && $load_line -lt $listen_line ]] || fail "loading/listening order"
status=$(python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:$port/health').status)")
[[ $status == 200 ]] || fail "/health $status after listening"

rc=0
start=$SECONDS
timeout 30 "$kiln" serve --model "$model" --port "$port" --threads 1 >"$tmp/out2" 2>"$tmp/second.log" || rc=$?
[[ $rc -eq 2 ]] || fail "second server: exit code $rc: $(cat "$tmp/second.log")"
grep -q "^kiln: port $port is in use" "$tmp/second.log" || fail "second server's error: $(cat "$tmp/second.log")"
grep -q "listening" "$tmp/second.log" && fail "the second server says it listens: $(cat "$tmp/second.log")"
((SECONDS - start < 10)) || fail "the second server took $((SECONDS - start)) s to fail"
echo "ok   second server: $(cat "$tmp/second.log")"

# Every new connection still reaches the first server (with SO_REUSEPORT, half would go to a second one).
python3 - "$port" <<'PY'
import json, sys, urllib.request
port = int(sys.argv[1])
for _ in range(10):
    r = urllib.request.urlopen(f"http://127.0.0.1:{port}/health")
    assert r.status == 200 and json.load(r)["status"] == "ok"
print("ok   the first server answers every connection")
PY
kill -TERM "$pid"
wait "$pid" || fail "first server's exit code $?"
pid=""
echo "serve port ok"
