#!/usr/bin/env bash
# Installs everything the tests need into .venv (idempotent) and runs the whole suite.
# Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh
# One torch thread per test process, passive OpenMP waits: tests never race a busy neighbour for the cores.
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE QT_QPA_PLATFORM=offscreen MPLBACKEND=Agg
exec .venv/bin/python -m pytest "$@"
