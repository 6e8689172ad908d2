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
# The venv's Python finds SlicerEssNet and Training from any folder, so `python -m SlicerEssNet segment ...`
# works in a cohort's own folder once .venv is activated (a .pth line: no packaging step, no copy to go stale).
SITE_PACKAGES=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
printf '%s\n' "$PWD" > "$SITE_PACKAGES/slicer_essnet_checkout.pth"
