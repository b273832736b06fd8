#!/usr/bin/env bash
# The tests read their data from the repository alone: nothing the test suite, its scripts or the build use may
# point at the shared folder beside the checkout (a clone does not have it). bench/ (the peer benchmarks) and
# docs/ may. Usage: self_contained.sh KILN_BINARY SOURCE_DIR TEST_DATA_DIR
set -euo pipefail
src=$2 data=$3
cd "$src"
if hits=$(grep -rnE '\.\./shared|KILN_SHARED_DIR|/work/shared' tests scripts tools CMakeLists.txt src \
  --exclude=self_contained.sh); then
  echo "FAIL: references to the shared folder:"
  echo "$hits"
  exit 1
fi
# The vocabularies unpacked by the build are the archive's eleven files, beside their test pairs.
n=$(find "$data/llama.cpp-vocab" -name "*.gguf" 2>/dev/null | wc -l || true)
pairs=$(find "$data/llama.cpp-vocab" -name "*.gguf.inp" 2>/dev/null | wc -l || true)
[[ $n -eq 11 && $pairs -eq 11 ]] || { echo "FAIL: $n vocabularies and $pairs test inputs in $data/llama.cpp-vocab"; exit 1; }
echo "self-contained: no reference to ../shared; $n vocabularies unpacked"
