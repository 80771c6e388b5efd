#!/usr/bin/env bash
# Installs clinic's Debian 12 dependencies; does nothing when they are present.
set -euo pipefail
PACKAGES=(
  g++ cmake ninja-build pkgconf ccache
  libtorch-dev libopenblas0-openmp python3-torch
  libyaml-cpp-dev libfmt-dev libspdlog-dev libcli11-dev libgtest-dev
  libsentencepiece-dev sentencepiece libjemalloc-dev libicu-dev python3-venv
  nlohmann-json3-dev gnuplot-nox
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
