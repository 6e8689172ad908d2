#!/usr/bin/env bash
# Installs everything the tests need into .venv (idempotent) and runs the whole suite.
# Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
# One torch thread per test process, passive OpenMP waits: tests never race a busy neighbour for the cores.
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE QT_QPA_PLATFORM=offscreen MPLBACKEND=Agg
exec .venv/bin/python -m pytest "$@"
