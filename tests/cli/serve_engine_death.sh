#!/usr/bin/env bash
# kiln serve when the engine dies (a simulated device fault): the request in flight fails naming it, /health answers
# 503 with the reason, new requests get 503, the process exits non-zero within seconds.
# Usage: serve_engine_death.sh KILN_BINARY SOURCE_DIR SHARED_DIR
exec bash "$2/tests/server/run.sh" engine_death_test.py "$1" "$2"
