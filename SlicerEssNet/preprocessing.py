"""Intensity maps between scanner units and the networks' [-1, 1], as model cards record them.

Specs are plain dicts (JSON in the card):

- ``{"kind": "ct_window", "low": -125, "high": 275}``: a fixed HU window -> [-1, 1];
- ``{"kind": "mr_percentile", "low_percentile": 0.5, "high_percentile": 99.5}``: each volume's robust range
  (its percentiles) -> [-1, 1], because MR has no absolute unit;
- ``{"kind": "linear", "low": 0, "high": 1000}``: [low, high] <-> [-1, 1]; used for outputs (synthetic MR is
  written on this documented 0-1000 scale).

Every map is ``normalized = clip(x * scale + offset, -1, 1)``, so the inference engine needs only two numbers
per volume (``intensity_transform``) and applies them slice by slice.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import InputImageError, WeightsError

KINDS = ("ct_window", "mr_percentile", "linear")
# Percentiles come from a regular strided subsample of about this many voxels: a 500-slice CT costs
# milliseconds, and a 1M-voxel sample puts the 0.5/99.5 percentiles within a fraction of a grey level.
STATISTICS_SAMPLE = 1 << 20


def check_spec(spec) -> dict:
    """A validated copy of a preprocessing/postprocessing spec; ``WeightsError`` (one line) if it is unusable."""
    if not isinstance(spec, dict) or "kind" not in spec:
        raise WeightsError(f"model card has no usable preprocessing spec ({spec!r}): it needs a 'kind'; fix the card")
    kind = spec["kind"]
    if kind not in KINDS:
        raise WeightsError(
            f"model card has unknown preprocessing kind '{kind}': expected one of {', '.join(KINDS)}; "
            "update SlicerEssNet or fix the card"
        )
    keys = ("low_percentile", "high_percentile") if kind == "mr_percentile" else ("low", "high")
    try:
        low, high = (float(spec[key]) for key in keys)
    except (KeyError, TypeError, ValueError):
        raise WeightsError(
            f"model card preprocessing '{kind}' needs numeric {keys[0]} and {keys[1]}: fix the card"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise WeightsError(
            f"model card preprocessing '{kind}' has {keys[0]}={low:g} >= {keys[1]}={high:g}: fix the card"
        )
    if kind == "mr_percentile" and not (0.0 <= low and high <= 100.0):
        raise WeightsError(f"model card percentiles {low:g}, {high:g} are outside 0-100: fix the card")
    checked = dict(spec)
    checked.update({keys[0]: low, keys[1]: high})
    return checked


def strided_sample(array, target: int = STATISTICS_SAMPLE) -> np.ndarray:
    """A view taking every n-th voxel along each axis, about ``target`` voxels in all (the whole array if smaller)."""
    array = np.asarray(array)
    if array.size <= target:
        return array
    step = int(math.ceil((array.size / float(target)) ** (1.0 / array.ndim)))
    return array[(slice(None, None, step),) * array.ndim]


def volume_statistics(array, spec) -> dict:
    """What the spec needs from the whole volume, computed once: ``{"low", "high"}`` for ``mr_percentile``."""
    spec = check_spec(spec)
    if spec["kind"] != "mr_percentile":
        return {}
    sample = strided_sample(array).astype(np.float64, copy=False).ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        raise InputImageError("the volume has no finite voxels: nothing to normalise; check the input")
    low, high = np.percentile(sample, [spec["low_percentile"], spec["high_percentile"]])
    if high <= low:  # a mostly-constant image: the full range is the only informative one
        low, high = sample.min(), sample.max()
    return {"low": float(low), "high": float(high)}


def _range(spec: dict, stats) -> tuple:
    if spec["kind"] != "mr_percentile":
        return spec["low"], spec["high"]
    if not stats or "low" not in stats or "high" not in stats:
        raise ValueError("mr_percentile needs the volume's statistics: pass volume_statistics(array, spec)")
    return float(stats["low"]), float(stats["high"])


def intensity_transform(spec, stats=None) -> tuple:
    """``(scale, offset)`` with ``normalized = clip(x * scale + offset, -1, 1)`` mapping [low, high] to [-1, 1]."""
    spec = check_spec(spec)
    low, high = _range(spec, stats)
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        raise InputImageError(
            f"the volume's intensity range is empty ({low:g} to {high:g}): the image is constant; check the input"
        )
    scale = 2.0 / (high - low)
    return scale, -1.0 - low * scale


def normalize(array, spec, stats=None) -> np.ndarray:
    """A float32 copy of ``array`` mapped to [-1, 1] (statistics computed here when not given)."""
    if stats is None:
        stats = volume_statistics(array, spec)
    scale, offset = intensity_transform(spec, stats)
    result = np.asarray(array, dtype=np.float32) * np.float32(scale)
    result += np.float32(offset)
    return np.clip(result, -1.0, 1.0, out=result)


def denormalize(array, spec, stats=None) -> np.ndarray:
    """The inverse map, for network outputs in [-1, 1]: ct_window -> HU, linear -> [low, high].

    ``mr_percentile`` has no fixed scale, so it needs the statistics of the volume it came from.
    """
    spec = check_spec(spec)
    low, high = _range(spec, stats)
    values = np.asarray(array)
    dtype = values.dtype if values.dtype in (np.float32, np.float64) else np.float32
    values = np.clip(values.astype(dtype, copy=False), -1.0, 1.0)
    return ((values + 1.0) * ((high - low) / 2.0) + low).astype(dtype, copy=False)
