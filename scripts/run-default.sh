#!/usr/bin/env bash
# The README's run command: installs dependencies, builds the kiln binary (nothing else), fetches the default
# model and generates text with it. Arguments replace the default prompt flags (e.g. --prompt "...").
# The CUDA kernels, slow to compile, are built only when a GPU is usable here (nvidia-smi lists one) or
# KILN_CUDA=ON asks for them; KILN_CUDA=OFF never builds them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cuda=${KILN_CUDA:-}
if [[ -z $cuda ]]; then
  cuda=OFF
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then cuda=AUTO; fi
fi
echo "run-default: building kiln (CUDA backend: $cuda)" >&2
scripts/build.sh -DKILN_CUDA="$cuda" -- kiln_cli
model=$(scripts/fetch-default-model.sh)
if (($# == 0)); then
  set -- --prompt "Gravity is" --max-tokens 64 --temperature 0
fi
exec "${KILN_BUILD_DIR:-build}/bin/kiln" generate --model "$model" "$@"
