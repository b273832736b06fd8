#!/usr/bin/env bash
# kiln serve with the default model, driven by the official openai client: completions and chat,
# streamed and not (same seed, same text), n, logprobs, stop, echo, usage, API key, errors.
# Usage: serve_openai_client.sh KILN_BINARY SOURCE_DIR TEST_DATA_DIR
exec bash "$2/tests/server/run.sh" openai_client_test.py "$1" "$2"
