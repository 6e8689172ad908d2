#!/usr/bin/env bash
# The main job on a fresh machine: install into .venv, train the demo models on generated phantoms (no data to
# fetch, no GPU), and apply them through the command line to a phantom CT and MR.
# Usage: bash scripts/demo.sh [OUTPUT_DIR]
set -euo pipefail
# A folder given relative to where the command was typed stays there (the script itself runs from the repository).
OUTPUT_DIR=${1:-}
if [ -n "$OUTPUT_DIR" ] && [ "${OUTPUT_DIR#/}" = "$OUTPUT_DIR" ]; then
  OUTPUT_DIR="$PWD/$OUTPUT_DIR"
fi
cd "$(dirname "$0")/.."
source scripts/install.sh
# No OpenMP wait policy here: training and the CLI each set their own (SlicerEssNet.runtime.WAIT_POLICIES).
export MPLBACKEND=Agg
exec .venv/bin/python -m Training run --preset demo --run-dir "${OUTPUT_DIR:-runs/demo}"
