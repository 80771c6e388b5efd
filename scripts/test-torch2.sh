#!/usr/bin/env bash
# The LibTorch 2.x leg of the test suite: clinic built against the pinned
# PyTorch wheel's LibTorch (CUDA build; CUDA found through this machine's
# toolkit, no GPU needed) in build-torch2/, and the whole suite run there. The
# CUDA instances of the device tests skip without a GPU (scripts/gpu-check.sh
# runs them on one).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --torch wheel
start=$(date +%s)
prefix=$(build-torch2/venv/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
cmake -S . -B build-torch2/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$prefix" -DCLINIC_BUILD_TESTS=ON "$@" >/dev/null
cmake --build build-torch2/build -j "$(nproc)"
echo "build (LibTorch 2.x): $(( $(date +%s) - start ))s" >&2
# The TensorBoard-reader oracle of the first leg serves this one too.
if [ -x build/oracle-venv/bin/python ]; then
  ln -sfn "$PWD/build/oracle-venv" build-torch2/build/oracle-venv
else
  scripts/oracle-venv.sh build-torch2/build/oracle-venv
fi
cd build-torch2/build && ctest -j "$(nproc)" --output-on-failure
