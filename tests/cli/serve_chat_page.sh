#!/usr/bin/env bash
# kiln serve's chat page in headless Chromium: a typed message gets a streamed reply; the screenshot
# is saved as <build>/test-artifacts/chat-page.png.
# Usage: serve_chat_page.sh KILN_BINARY SOURCE_DIR TEST_DATA_DIR
build=$(cd "$(dirname "$1")/.." && pwd)
exec bash "$2/tests/server/run.sh" chat_page_test.py "$1" "$2" "$build/test-artifacts/chat-page.png"
