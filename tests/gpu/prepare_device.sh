#!/usr/bin/env bash
# On the build machine: copies the gpu test binaries (and kiln, and the CPU runtime tests the gpu label runs) of
# a CUDA build into a folder that a device call carries, with the shared libraries the GPU image lacks.
#   bash tests/gpu/prepare_device.sh <cuda build dir> <dest, e.g. .dev/bin> [test names...]
# Then, as a device call with carry [<dest>]: bash tests/gpu/run_device.sh <dest>
set -euo pipefail
build=${1:?usage: prepare_device.sh BUILD DEST [tests...]}
dest=${2:?usage: prepare_device.sh BUILD DEST [tests...]}
shift 2
names=("$@")
if [[ ${#names[@]} -eq 0 ]]; then
  names=($(cd "$(dirname "$0")" && ls *_test.cpp | sed 's/\.cpp$//') runtime_soak_test runtime_executor_test)
fi
rm -rf "$dest"
mkdir -p "$dest/lib" "$dest/lib-fallback"
for n in "${names[@]}" kiln; do
  f=$(find "$build" -type f -name "$n" -perm -u+x | head -1)
  if [[ -z "$f" ]]; then
    [[ "$n" == kiln ]] && continue
    echo "prepare_device: $n not built in $build" >&2
    exit 1
  fi
  cp "$f" "$dest/"
done
for f in "$dest"/*; do
  [[ -f "$f" ]] || continue
  ldd "$f" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  case $(basename "$lib") in
    libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux* | libcuda.so* | libcublas* | libnccl*) ;;
    libstdc++.so* | libgcc_s.so*) cp -L "$lib" "$dest/lib-fallback/" ;;
    *) cp -L "$lib" "$dest/lib/" ;;
  esac
done
echo "prepared $dest ($(du -sh "$dest" | cut -f1)): $(cd "$dest" && ls | tr '\n' ' ')"
