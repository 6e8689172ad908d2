#!/usr/bin/env bash
# Creates .venv (once) and installs requirements-dev.txt into it; sourced by demo.sh and test.sh.
# torch==2.13.0 is pinned in requirements-dev.txt: on these machines pip takes the CPU build from local disk.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
