#!/usr/bin/env bash
# Runs the core's torch-free tests on the Pythons Slicer ships, in venvs beside the project venv:
#   3.9  -> .venv-py39  : Python 3.9 (Slicer 5.8) with the OLDEST releases requirements.txt allows, each floor's
#                         last patch release (numpy 1.26.4, SimpleITK 2.3.1, nibabel 5.0.1, pydicom 2.4.4,
#                         scipy 1.11.4, pillow 10.0.1, safetensors 0.4.5), the versions a Slicer 5.8 user can have;
#   3.12 -> .venv-py312 : Python 3.12 (Slicer 5.10+) with the NEWEST releases (numpy 2.x).
# No torch: Slicer installs it on demand, and the checks are about the Python and numpy the core meets. Steps:
# import every core module (those that need torch must fail only for that), then pytest on the test files
# that do not need torch (TESTS below; their torch-only tests skip with "could not import 'torch'").
# For developers before a release or after touching old-Python-sensitive code; CI does not run it (too slow).
#
# Usage: scripts/check_oldest_python.sh [3.9|3.12|all]        (default 3.9)
#   PYTHON39=/path/to/python3.9 PYTHON312=/path/to/python3.12 override where the interpreters are found
#   (PATH, then pyenv's versions). A venv is (re)filled when the pins below or requirements*.txt change.
#
# Last results (the real-data tests read ../shared/data; about 1 minute each on 2 cores, venv included):
#   3.9.18, numpy 1.26.4, scipy 1.11.4, SimpleITK 2.3.1, nibabel 5.0.1, pydicom 2.4.4, pillow 10.0.1,
#   safetensors 0.4.5, pytest 8.4.2, hypothesis 6.141.1: every core module imports (the four network files
#   need torch, as designed); 219 passed, 43 skipped (42 need torch, 1 needs a non-root user); no core fix needed.
#   3.12.1, numpy 2.5.5, scipy 1.18.1, SimpleITK 2.5.7, nibabel 5.4.2, pydicom 3.0.2, pillow 13.0.0,
#   safetensors 0.8.0, pytest 9.2.0, hypothesis 6.170.17: same imports; 218 passed, 44 skipped (the extra one
#   checks what only a 3.9 parser refuses).
# Not covered here: code paths that need torch (networks, weights, inference, pipeline, jobs and CLI with a
# model) are checked on 3.9 only by test_python_compatibility.py, which reads their source.
set -euo pipefail
cd "$(dirname "$0")/.."

TESTS=(
    test_python_compatibility test_chaos test_volume_io test_loader_fuzz test_validation test_preprocessing
    test_metrics test_evaluation test_model_store test_cli test_jobs test_cmake_lists
)
# Left out: test_geometry, test_inference, test_networks, test_weights and test_training_* import torch at the
# top; test_slicer_modules and test_ui_files need slicer-core and PySide6, which have no Python 3.9 builds.

find_python() {  # find_python 3.9 -> path of a python3.9
    local version=$1 override=$2 candidate
    if [[ -n $override ]]; then echo "$override"; return; fi
    # A pyenv shim is on PATH even when that version is not active, so each candidate must really run.
    for candidate in "$(command -v "python$version" || true)" \
            "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/"python$version"; do
        if [[ -x $candidate ]] && "$candidate" -c "import sys; assert sys.version.startswith('$version.')" \
                2>/dev/null; then
            echo "$candidate"; return
        fi
    done
    echo "python$version not found: install it (pyenv install $version) or set PYTHON${version/./}=/path" >&2
    exit 2
}

oldest_pins() {  # requirements.txt's "name>=X.Y" -> "name==X.Y.*": the floor release with its bug fixes
    sed -n 's/^\([A-Za-z0-9_.-]*\)>=\([0-9.]*\).*$/\1==\2.*/p' requirements.txt
}

newest_pins() {  # requirements.txt's ranges as they are: pip takes the newest releases (numpy 2.x)
    sed -n 's/^\([A-Za-z0-9_.-]*>=[0-9.]*\).*$/\1/p' requirements.txt
}

test_tools() {  # pytest and hypothesis as requirements-dev.txt asks; pip picks releases the Python supports
    grep -E '^(pytest|hypothesis)\b' requirements-dev.txt
}

check() {  # check 3.9 .venv-py39 "pins" python numpy-prefix -> import and test everything in that venv
    local version=$1 venv=$2 pins=$3 python
    python=$(find_python "$version" "$4")
    echo "== Python $version: $python -> $venv"
    if [[ ! -x $venv/bin/python ]]; then
        "$python" -m venv "$venv"
    fi
    local stamp="$pins"$'\n'"$(test_tools)"
    if [[ ! -f $venv/.pins ]] || [[ $(cat "$venv/.pins") != "$stamp" ]]; then
        local requirements
        mapfile -t requirements <<<"$stamp"
        echo "installing: ${requirements[*]}"
        if ! "$venv/bin/python" -m pip install --upgrade "${requirements[@]}" >"$venv/pip.log" 2>&1; then
            tail -20 "$venv/pip.log"; exit 1
        fi
        echo "$stamp" >"$venv/.pins"
    fi
    PYTHONDONTWRITEBYTECODE=1 EXPECTED_NUMPY=$5 "$venv/bin/python" - <<'EOF'
import importlib, os, pkgutil, platform
import numpy, scipy, SimpleITK, nibabel, pydicom, PIL, safetensors, pytest, hypothesis
print("python", platform.python_version(), "| numpy", numpy.__version__, "| scipy", scipy.__version__,
      "| SimpleITK", SimpleITK.Version_VersionString(), "| nibabel", nibabel.__version__, "| pydicom",
      pydicom.__version__, "| pillow", PIL.__version__, "| safetensors", safetensors.__version__, "| pytest",
      pytest.__version__, "| hypothesis", hypothesis.__version__)
if not numpy.__version__.startswith(os.environ["EXPECTED_NUMPY"]):
    raise SystemExit(f"expected numpy {os.environ['EXPECTED_NUMPY']}x here, found {numpy.__version__}")
# Every core module imports without torch; those that need it must fail on torch alone.
import SlicerEssNet
needs_torch, broken = [], []
for module in pkgutil.walk_packages(SlicerEssNet.__path__, "SlicerEssNet."):
    if module.name.endswith("__main__"):  # importing it runs the command line
        continue
    try:
        importlib.import_module(module.name)
    except ModuleNotFoundError as error:
        (needs_torch if error.name == "torch" else broken).append(f"{module.name} ({error})")
    except Exception as error:
        broken.append(f"{module.name} ({type(error).__name__}: {error})")
print("imports need torch:", ", ".join(needs_torch) or "none")
if broken:
    raise SystemExit("imports broken:\n  " + "\n  ".join(broken))
EOF
    local files=()
    for name in "${TESTS[@]}"; do files+=("Testing/Python/$name.py"); done
    # Bytecode, pytest's cache and hypothesis' examples stay out of the shared tree.
    PYTHONDONTWRITEBYTECODE=1 HYPOTHESIS_STORAGE_DIRECTORY="$venv/hypothesis" OMP_NUM_THREADS=1 \
        "$venv/bin/python" -m pytest -q -rfE -p no:cacheprovider "${files[@]}"
}

case "${1:-3.9}" in
    3.9) check 3.9 .venv-py39 "$(oldest_pins)" "${PYTHON39:-}" 1.26. ;;
    3.12) check 3.12 .venv-py312 "$(newest_pins)" "${PYTHON312:-}" 2. ;;
    all) "$0" 3.9 && "$0" 3.12 ;;
    *) echo "usage: $0 [3.9|3.12|all]" >&2; exit 2 ;;
esac
