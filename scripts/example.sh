#!/usr/bin/env bash
# The main job on a fresh machine: install into .venv, then run the shipped models on the bundled example CT and
# MR (TotalSegmentator's, Apache-2.0): synthetic MR, the liver on MR and CT with volumes in mL, and a picture.
# Usage: bash scripts/example.sh [OUTPUT_DIR]   (default: example-out)
set -euo pipefail
# A folder given relative to where the command was typed stays there (the script itself runs from the repository).
OUTPUT_DIR=${1:-example-out}
if [ "${OUTPUT_DIR#/}" = "$OUTPUT_DIR" ]; then
  OUTPUT_DIR="$PWD/$OUTPUT_DIR"
fi
cd "$(dirname "$0")/.."
source scripts/install.sh
exec .venv/bin/python -m SlicerEssNet example "$OUTPUT_DIR"
