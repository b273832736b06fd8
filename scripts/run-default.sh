#!/usr/bin/env bash
# The README's run command: installs dependencies, builds kiln, fetches the default model and
# generates text with it. Arguments replace the default prompt flags (e.g. --prompt "...").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
model=$(scripts/fetch-default-model.sh)
if (($# == 0)); then
  set -- --prompt "Gravity is" --max-tokens 64 --temperature 0
fi
exec build/bin/kiln generate --model "$model" "$@"
