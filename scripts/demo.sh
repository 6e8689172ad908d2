#!/usr/bin/env bash
# The main job on a fresh machine: install the runtime into .venv, train the demo models on generated phantoms
# (no data to fetch, no GPU), and apply them through the command line to a phantom CT and MR.
# Usage: bash scripts/demo.sh [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
export OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg
exec .venv/bin/python -m Training run --preset demo --out "${1:-runs/demo}"
