#!/usr/bin/env bash
# Configures and builds kiln (Release) into build/ (or $KILN_BUILD_DIR). Arguments before `--` go to cmake,
# after it the ninja targets to build (default: everything), e.g. build.sh -DKILN_CUDA=OFF -- kiln_cli.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${KILN_BUILD_DIR:-build}
jobs=${KILN_JOBS:-$(nproc)}
cmake_args=()
while (($#)) && [[ $1 != -- ]]; do
  cmake_args+=("$1")
  shift
done
(($#)) && shift  # the --
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cmake_args[@]}" >/dev/null
ninja -C "$build_dir" -j "$jobs" "$@"
