"""Resumable training state: written atomically every N iterations, read back without unpickling code.

A checkpoint holds plain state dicts, tensors and numbers only, so it loads with ``torch.load(weights_only=True)``.
Data order and augmentation are pure functions of (seed, iteration) (see ``sampling.py``), so resuming from
iteration t replays exactly the schedule an uninterrupted run would have followed.
"""
from __future__ import annotations

import json
from pathlib import Path

from SlicerEssNet.atomic import atomic_path


def save_checkpoint(state: dict, path) -> None:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def load_checkpoint(path):
    """The saved state, or None when there is none yet."""
    import torch

    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def write_json(data, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")


def read_json(path):
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def _jsonable(value):
    """numpy scalars, paths and tuples in results: written as plain JSON values."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
