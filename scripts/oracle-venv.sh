#!/usr/bin/env bash
# Test oracles (never needed to run clinic): a Python venv with the real
# TensorBoard event reader, which the test suite uses to check clinic's event
# files. Installs into build/oracle-venv; does nothing when it is there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-build/oracle-venv}
PINS=(tensorboard==2.21.0)
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import tensorboard' 2>/dev/null; then
  exit 0
fi
rm -rf "$VENV"
PY=$(command -v python3 || true)
[ -n "$PY" ] || { echo "oracle-venv: no python3; the TensorBoard reader test will be skipped" >&2; exit 0; }
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "${PINS[@]}" >&2
