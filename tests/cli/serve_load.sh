#!/usr/bin/env bash
# A bounded load test of kiln serve: 1,000 streaming requests from 64 concurrent openai clients in a
# second process; zero errors, and /metrics agrees with what was sent.
# Usage: serve_load.sh KILN_BINARY SOURCE_DIR TEST_DATA_DIR
exec bash "$2/tests/server/run.sh" load_test.py "$1" "$2"
