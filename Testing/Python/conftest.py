"""Shared fixtures. Torch runs single-threaded in tests: with a busy neighbour on 2 cores the default
OpenMP pool slows down 10-400x, and tests must never be timing-sensitive anyway."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the pure-numpy tests still run
    pass


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real scans beside the project; tests that need them skip with the reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (the tests read ../shared/data beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
