#!/usr/bin/env bash
# The README's test command: installs dependencies, builds kiln with its tests, runs every CPU test,
# checks that the gpu tests report themselves skipped where no GPU is visible, then runs the file-parser corruption
# tests and the executor soak again under AddressSanitizer + UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
# ccache keys on paths relative to the checkout, so a fresh clone elsewhere (CI's) reuses earlier compilations.
export CCACHE_BASEDIR="$PWD"
scripts/install-deps.sh --test
jobs=${KILN_JOBS:-$(nproc)}

# CUDA stays on whenever nvcc is here (AUTO), so CI compiles every kernel even on a machine without a GPU; there
# the gpu-labelled tests report themselves skipped.
scripts/build.sh -DKILN_CUDA=AUTO
# The default model is checked against its Hugging Face reference (tests/cli/default_model.sh).
scripts/fetch-default-model.sh >/dev/null
# The server tests (tests/cli/serve_*.sh) drive kiln serve with the official openai client from a venv.
venv=build/venv
if ! cmp -s tests/server/requirements.txt "$venv/requirements.txt" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/server/requirements.txt
  cp tests/server/requirements.txt "$venv/requirements.txt"
fi
ctest --test-dir build -L cpu --output-on-failure -j "$jobs" --timeout 600
# With the CUDA backend built but no GPU here, every gpu-labelled test must report itself skipped, not failed.
if compgen -G "build/tests/cuda_*_test" >/dev/null &&
  ! (command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU '); then
  ctest --test-dir build -L gpu -j "$jobs" --timeout 120 | tee build/gpu-ctest.log | tail -3
  grep -q "tests passed, 0 tests failed" build/gpu-ctest.log
fi

# The public C++ API as a user gets it: install the library, build examples/ against it, run it on the default model.
cmake --install build --prefix build/install >/dev/null
cmake -S examples -B build/examples -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PWD/build/install" >/dev/null
ninja -C build/examples -j "$jobs" >/dev/null
example_out=$(build/examples/generate "$(scripts/fetch-default-model.sh)" "The capital of France is")
grep -q "Paris" <<<"$example_out" || { echo "test.sh: examples/generate printed: $example_out" >&2; exit 1; }

if [[ "${KILN_SKIP_ASAN:-0}" != 1 ]]; then
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_SANITIZE=ON -DKILN_CUDA=OFF >/dev/null
  ninja -C build-asan -j "$jobs" io_corruption_test runtime_soak_test
  export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
  build-asan/tests/io_corruption_test
  build-asan/tests/runtime_soak_test
fi
echo "test.sh: all tests passed"
