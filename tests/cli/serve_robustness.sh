#!/usr/bin/env bash
# kiln serve under bad input: every bad request's status and OpenAI error body, 413, 429, a client
# leaving mid-stream (cancelled, KV freed), then SIGTERM mid-stream (the stream finishes, exit 0).
# Usage: serve_robustness.sh KILN_BINARY SOURCE_DIR TEST_DATA_DIR
exec bash "$2/tests/server/run.sh" robustness_test.py "$1" "$2"
