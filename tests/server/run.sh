#!/usr/bin/env bash
# Runs one server test (tests/server/*.py) with the Python of the test venv that scripts/test.sh makes
# (build/venv, with tests/server/requirements.txt): $KILN_TEST_VENV, else <build>/venv beside the kiln
# binary, else <source>/build/venv.
# Usage: run.sh TEST.py KILN_BINARY SOURCE_DIR [ARGS...]
set -euo pipefail
test=$1 kiln=$2 src=$3
shift 3
build=$(cd "$(dirname "$kiln")/.." && pwd)
for venv in "${KILN_TEST_VENV:-}" "$build/venv" "$src/build/venv"; do
  if [[ -n $venv && -x $venv/bin/python ]] && "$venv/bin/python" -c 'import openai, websocket' 2>/dev/null; then
    cd "$src/tests/server"
    exec "$venv/bin/python" "$test" "$kiln" "$@"
  fi
done
echo "FAIL: no Python venv with the packages of tests/server/requirements.txt; scripts/test.sh makes build/venv" >&2
exit 1
