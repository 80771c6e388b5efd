#!/usr/bin/env bash
# Configures and builds clinic into ./build (Release, Ninja). Extra args go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
start=$(date +%s)
cmake --build build -j "$(nproc)"
echo "build: $(( $(date +%s) - start ))s" >&2
