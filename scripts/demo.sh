#!/usr/bin/env bash
# The main job on a fresh machine: install into .venv, train the demo models on generated phantoms (no data to
# fetch, no GPU), and apply them through the command line to a phantom CT and MR.
# Usage: bash scripts/demo.sh [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh
# No OpenMP wait policy here: training and the CLI each set their own (SlicerEssNet.runtime.WAIT_POLICIES).
export MPLBACKEND=Agg
exec .venv/bin/python -m Training run --preset demo --run-dir "${1:-runs/demo}"
