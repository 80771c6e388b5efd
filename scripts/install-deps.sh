#!/usr/bin/env bash
# Installs clinic's Debian 12 dependencies; does nothing when they are present.
#
#   scripts/install-deps.sh               Debian packages (LibTorch 1.13, CPU)
#   scripts/install-deps.sh --torch wheel also LibTorch 2.x from the pinned
#                                         PyTorch wheel (CUDA 13 build, 4.6 GB
#                                         with its nvidia-* wheels) in the venv
#                                         build-torch2/venv; pip keeps the
#                                         downloaded wheels in ~/.cache/pip
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_PIN=torch==2.11.0   # the GPU check machine's version (2.11.0+cu130)
WANT_WHEEL=0
case "${1:-}" in
  "") ;;
  --torch) [ "${2:-}" = wheel ] || { echo "usage: $0 [--torch wheel]" >&2; exit 2; }; WANT_WHEEL=1 ;;
  *) echo "usage: $0 [--torch wheel]" >&2; exit 2 ;;
esac
PACKAGES=(
  g++ cmake ninja-build pkgconf ccache
  libtorch-dev libopenblas0-openmp python3-torch
  libyaml-cpp-dev libfmt-dev libspdlog-dev libcli11-dev libgtest-dev
  libsentencepiece-dev sentencepiece libjemalloc-dev libicu-dev python3-venv
  nlohmann-json3-dev gnuplot-nox libgloo-dev
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

if [ "$WANT_WHEEL" = 1 ]; then
  VENV=build-torch2/venv
  if [ -x "$VENV/bin/python" ] &&
     [ "$("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)" = "${TORCH_PIN#torch==}" ]; then
    exit 0
  fi
  rm -rf "$VENV"
  start=$(date +%s)
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$TORCH_PIN" >&2
  echo "LibTorch ${TORCH_PIN#torch==} wheel in $VENV: $(( $(date +%s) - start ))s" >&2
fi
