#!/usr/bin/env bash
# README command 2: install dependencies, build, run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh -DCLINIC_BUILD_TESTS=ON
scripts/oracle-venv.sh   # the real TensorBoard reader, a test oracle
cd build && ctest -j "$(nproc)" --output-on-failure
cd ..
scripts/test-torch2.sh   # the same suite against LibTorch 2.x (PyPI wheel)
# The GPU check's preparation half (issue 22): packs what travels to a GPU
# machine and checks it fits; the GPU half runs there (scripts/gpu-check.sh).
scripts/gpu-check.sh prepare
