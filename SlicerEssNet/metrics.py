"""Segmentation metrics: overlap (Dice, IoU; per slice, pooled, per volume) and the CHAOS measures in mm.

Conventions, chosen once here so every caller reports the same numbers:

- Masks are numpy arrays; anything that is not ``bool`` counts as foreground where it is non-zero. Arrays are
  indexed ``[k, j, i]`` like ``Volume.array``; ``spacing`` is given in ``(i, j, k)`` order like ``Volume.spacing``
  (it is reversed here to match the array axes). 2D arrays take a 2-item ``(i, j)`` spacing.
- **Overlap**: Dice = 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN). When both masks are empty there is
  nothing to disagree about and both are **1.0** (the usual convention; ``per_slice_dice(empty=...)`` lets a
  caller mark such slices ``nan`` instead and skip them with ``nanmean``).
- **Pooled** Dice/IoU (the paper's form) sum one confusion matrix over all pixels of all slices or volumes; for
  pooled counts IoU = D / (2 - D) holds exactly, which a mean of per-slice scores does not satisfy.
- **RAVD** = |S - R| / R x 100 (percent, unsigned, as CHAOS), S and R the voxel counts of prediction and reference.
- **Surfaces** follow the CHAOS evaluation code: a mask's border is ``mask xor binary_erosion(mask)`` with the
  6-connected cross and ``border_value=1`` (so a mask is not "bordered" where it touches the edge of the image),
  and each border voxel's distance is the Euclidean distance in mm from its centre to the nearest border voxel
  centre of the other mask (SciPy's exact distance transform with ``sampling=spacing``; the same numbers CHAOS
  gets with a KD-tree).

  * ASSD: mean of all directed distances of both directions pooled together,
    (sum d(S->R) + sum d(R->S)) / (n_S + n_R), exactly the CHAOS formula (not the mean of the two directed means).
  * MSSD: the largest of them (the symmetric Hausdorff distance between the borders).
  * HD95: the 95th percentile (numpy's linear interpolation) of the same pooled distances. MedPy, MONAI and
    DeepMind's surface-distance take the larger of the two *directed* 95th percentiles instead; that form is
    ``SurfaceDistances.percentile(95, pooled=False)``. The two agree for similar shapes and differ when one
    border is much longer than the other.

  Empty masks: if exactly one mask has no border voxel the distances are ``inf`` (there is no surface to reach);
  if neither has one they are ``nan`` (undefined; skip with ``nanmean``). RAVD is ``inf`` for an empty reference
  and a non-empty prediction and ``nan`` when both are empty. Each case also issues an ``EmptyMaskWarning`` that
  says which mask was empty.
- Only the voxel spacing enters the distances: directions of a ``Volume`` are orthonormal, so they rotate the
  grid without changing any distance.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence, Tuple

import numpy as np

from .errors import EmptyMaskWarning, InputImageError
from .volume import Volume

# Geometry of the two volumes must agree to this: direction cosines absolutely, spacing and origin in mm
# with a small relative slack, because NIfTI stores them as float32 (1e-6 of a 1700 mm origin is 0.002 mm).
GEOMETRY_ATOL = 1e-4
GEOMETRY_RTOL = 1e-6


# --- overlap --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OverlapCounts:
    """The confusion counts of one prediction against one reference; ``+`` pools them."""

    tp: int
    fp: int
    fn: int

    @property
    def predicted(self) -> int:
        return self.tp + self.fp

    @property
    def reference(self) -> int:
        return self.tp + self.fn

    @property
    def dice(self) -> float:
        denominator = 2 * self.tp + self.fp + self.fn
        return 1.0 if denominator == 0 else 2.0 * self.tp / denominator

    @property
    def iou(self) -> float:
        denominator = self.tp + self.fp + self.fn
        return 1.0 if denominator == 0 else self.tp / denominator

    def __add__(self, other: "OverlapCounts") -> "OverlapCounts":
        if not isinstance(other, OverlapCounts):
            return NotImplemented
        return OverlapCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def __radd__(self, other) -> "OverlapCounts":
        # lets the built-in sum() start from 0
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented


def overlap_counts(pred, ref) -> OverlapCounts:
    pred, ref = _mask_pair(pred, ref)
    tp = int(np.count_nonzero(pred & ref))
    return OverlapCounts(tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(ref)) - tp)


def dice(pred, ref) -> float:
    return overlap_counts(pred, ref).dice


def iou(pred, ref) -> float:
    return overlap_counts(pred, ref).iou


def per_slice_dice(pred, ref, axis: int = 0, empty: float = 1.0) -> np.ndarray:
    """Dice of every slice along ``axis`` (axis 0 of a ``[k, j, i]`` array: the k slices).

    A slice empty in both masks scores ``empty`` (1.0 by the convention above; pass ``np.nan`` to leave such
    slices out of a ``np.nanmean``).
    """
    pred, ref = _mask_pair(pred, ref)
    if pred.ndim < 2:
        raise InputImageError(f"per-slice Dice needs at least 2D masks, got shape {pred.shape}: pass a 2D or 3D mask")
    pred = np.moveaxis(pred, axis, 0).reshape(pred.shape[axis], -1)
    ref = np.moveaxis(ref, axis, 0).reshape(ref.shape[axis], -1)
    tp = np.count_nonzero(pred & ref, axis=1).astype(np.float64)
    denominator = np.count_nonzero(pred, axis=1) + np.count_nonzero(ref, axis=1)
    scores = np.full(len(tp), float(empty))
    nonempty = denominator > 0
    scores[nonempty] = 2.0 * tp[nonempty] / denominator[nonempty]
    return scores


def pooled_dice_iou(pairs: Iterable[Tuple[np.ndarray, np.ndarray]]) -> Tuple[float, float]:
    """(Dice, IoU) of one confusion matrix summed over every ``(pred, ref)`` pair (slices or volumes)."""
    total = None
    for pred, ref in pairs:
        total = overlap_counts(pred, ref) + total if total is not None else overlap_counts(pred, ref)
    if total is None:
        raise InputImageError("no (prediction, reference) pairs to pool: pass at least one pair of masks")
    return total.dice, total.iou


def ravd(pred, ref) -> float:
    """Relative absolute volume difference in percent, |S - R| / R x 100."""
    counts = overlap_counts(pred, ref)
    return _ravd_of(counts)


def _ravd_of(counts: OverlapCounts) -> float:
    if counts.reference == 0:
        if counts.predicted == 0:
            warnings.warn("both masks are empty: RAVD is nan (undefined); check the label values", EmptyMaskWarning,
                          stacklevel=3)
            return math.nan
        warnings.warn("the reference mask is empty: RAVD is inf; check the reference label value", EmptyMaskWarning,
                      stacklevel=3)
        return math.inf
    return abs(counts.predicted - counts.reference) / counts.reference * 100.0


# --- surfaces -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)  # arrays have no single truth value
class SurfaceDistances:
    """Directed border-to-border distances in mm: from each prediction border voxel to the reference border, and
    from each reference border voxel to the prediction border."""

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray

    @property
    def pooled(self) -> np.ndarray:
        return np.concatenate([self.pred_to_ref, self.ref_to_pred])

    @property
    def assd(self) -> float:
        distances = self.pooled
        return float(distances.mean()) if distances.size else math.nan

    @property
    def mssd(self) -> float:
        distances = self.pooled
        return float(distances.max()) if distances.size else math.nan

    @property
    def hd95(self) -> float:
        return self.percentile(95.0)

    def percentile(self, q: float, pooled: bool = True) -> float:
        """The q-th percentile of the pooled distances, or (``pooled=False``) the larger of the two directed ones."""
        distances = self.pooled
        if not distances.size:
            return math.nan
        if np.isinf(distances).any():  # one surface is missing: nothing to interpolate
            return math.inf
        if pooled:
            return float(np.percentile(distances, q))
        return float(max(np.percentile(self.pred_to_ref, q), np.percentile(self.ref_to_pred, q)))


def surface_distances(pred, ref, spacing: Sequence[float] | None = None) -> SurfaceDistances:
    """Border-to-border distances (mm) of two masks on the same grid; ``spacing`` in ``(i, j, k)`` order."""
    pred, ref = _mask_pair(pred, ref)
    sampling = _sampling(spacing, pred.ndim)
    window = _union_window(pred | ref)
    if window is None:
        warnings.warn("both masks are empty: surface distances are nan (undefined); check the label values",
                      EmptyMaskWarning, stacklevel=2)
        return SurfaceDistances(np.zeros(0), np.zeros(0))
    pred_border, ref_border = _border(pred[window]), _border(ref[window])
    for border, name in ((pred_border, "prediction"), (ref_border, "reference")):
        if not border.any():
            warnings.warn(
                f"the {name} mask has no border voxel (empty, or it fills the whole image): surface distances are "
                f"{'nan' if not (pred_border.any() or ref_border.any()) else 'inf'}; check the {name} label value",
                EmptyMaskWarning, stacklevel=2)
    return SurfaceDistances(
        _distances_to(ref_border, pred_border, sampling),
        _distances_to(pred_border, ref_border, sampling),
    )


def assd(pred, ref, spacing: Sequence[float] | None = None) -> float:
    return surface_distances(pred, ref, spacing).assd


def mssd(pred, ref, spacing: Sequence[float] | None = None) -> float:
    return surface_distances(pred, ref, spacing).mssd


def hd95(pred, ref, spacing: Sequence[float] | None = None) -> float:
    return surface_distances(pred, ref, spacing).hd95


def _border(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndimage.binary_erosion(mask, structure=cross, border_value=1)


def _distances_to(target_border: np.ndarray, source_border: np.ndarray, sampling) -> np.ndarray:
    """Distance from each source border voxel to the nearest target border voxel."""
    from scipy import ndimage

    count = int(np.count_nonzero(source_border))
    if not target_border.any():
        return np.full(count, math.inf)
    if count == 0:
        return np.zeros(0)
    return ndimage.distance_transform_edt(~target_border, sampling=sampling)[source_border]


def _union_window(union: np.ndarray):
    """Slices of the bounding box of ``union`` grown by one voxel (clipped to the image).

    Every border voxel of both masks lies inside, so the distance transform over the window is exact; the one-voxel
    margin keeps the erosion's ``border_value=1`` acting only where the mask really touches the image edge.
    """
    if not union.any():
        return None
    window = []
    for axis in range(union.ndim):
        others = tuple(a for a in range(union.ndim) if a != axis)
        present = np.flatnonzero(union.any(axis=others))
        window.append(slice(max(int(present[0]) - 1, 0), min(int(present[-1]) + 2, union.shape[axis])))
    return tuple(window)


# --- volumes --------------------------------------------------------------------------------------------------------
def evaluate(pred: Volume, ref: Volume, label: int = 1, ref_label: int | None = None) -> dict:
    """Every measure of ``pred == label`` against ``ref == ref_label`` (default: the same label).

    The two volumes must cover the same voxels: same shape, spacing, origin and direction, or the same voxel
    centres with the axes stored in another order or direction (the CHAOS file-name order against a
    position-sorted reader, say), which is matched exactly by permuting and flipping, never by resampling.

    Returns a flat JSON-ready dict: ``dice``, ``iou``, ``ravd`` (percent), ``assd``, ``mssd``, ``hd95`` (mm), the
    voxel counts ``pred_voxels``, ``ref_voxels``, ``tp``, ``fp``, ``fn``, the volumes ``pred_ml``/``ref_ml``, the
    labels, the reference ``spacing`` and ``notes`` (one line each: empty masks, axes matched; else empty).
    """
    ref_label = label if ref_label is None else ref_label
    reference_spacing = ref.spacing
    pred, ref, notes = _on_one_grid(pred, ref)
    pred_mask = np.asarray(pred.array) == label
    ref_mask = np.asarray(ref.array) == ref_label
    counts = overlap_counts(pred_mask, ref_mask)
    if counts.predicted == 0:
        notes.append(f"the prediction has no voxel with label {label}: surface distances are inf or nan")
    if counts.reference == 0:
        notes.append(f"the reference has no voxel with label {ref_label}: RAVD and surface distances are inf or nan")
    with warnings.catch_warnings():
        # the notes above say it once, in words that name the labels
        warnings.simplefilter("ignore", EmptyMaskWarning)
        surfaces = surface_distances(pred_mask, ref_mask, ref.spacing)
        volume_difference = _ravd_of(counts)
    voxel_ml = float(np.prod(ref.spacing)) / 1000.0
    return {
        "label": int(label),
        "ref_label": int(ref_label),
        "dice": counts.dice,
        "iou": counts.iou,
        "ravd": volume_difference,
        "assd": surfaces.assd,
        "mssd": surfaces.mssd,
        "hd95": surfaces.hd95,
        "pred_voxels": counts.predicted,
        "ref_voxels": counts.reference,
        "tp": counts.tp,
        "fp": counts.fp,
        "fn": counts.fn,
        "pred_ml": counts.predicted * voxel_ml,
        "ref_ml": counts.reference * voxel_ml,
        "spacing": [float(s) for s in reference_spacing],
        "notes": notes,
    }


def check_same_grid(pred: Volume, ref: Volume) -> None:
    """Raise ``InputImageError`` unless both volumes share shape, spacing, origin and direction."""
    for volume, name in ((pred, "prediction"), (ref, "reference")):
        if np.ndim(volume.array) != 3:
            raise InputImageError(f"the {name} has shape {np.shape(volume.array)}, not 3D: give a 3D label volume")
    mismatch = _grid_mismatch(pred, ref)
    if mismatch is not None:
        raise _grid_error(*mismatch)


def _on_one_grid(pred: Volume, ref: Volume):
    """Both volumes with their arrays on one voxel grid, plus notes; same grid or exactly permuted/flipped axes."""
    try:
        check_same_grid(pred, ref)
        return pred, ref, []
    except InputImageError:
        if np.ndim(pred.array) != 3 or np.ndim(ref.array) != 3:
            raise
        from .geometry import CanonicalFrame

        canonical_pred = CanonicalFrame.of(pred).to_canonical_volume(pred)
        canonical_ref = CanonicalFrame.of(ref).to_canonical_volume(ref)
        if _grid_mismatch(canonical_pred, canonical_ref) is not None:
            raise
    note = "the prediction stores the reference's voxels with its axes in another order or direction: matched exactly"
    return canonical_pred, canonical_ref, [note]


def _grid_mismatch(pred: Volume, ref: Volume):
    """None on one grid, else ``(what, prediction value, reference value)``."""
    if pred.shape != ref.shape:
        return "shape", pred.shape, ref.shape
    for name in ("spacing", "origin", "direction"):
        mine, theirs = np.asarray(getattr(pred, name), float), np.asarray(getattr(ref, name), float)
        rtol = 0.0 if name == "direction" else GEOMETRY_RTOL
        if not np.allclose(mine, theirs, rtol=rtol, atol=GEOMETRY_ATOL):
            return name, _rounded(mine), _rounded(theirs)
    return None


def _grid_error(what: str, pred_value, ref_value) -> InputImageError:
    return InputImageError(
        f"prediction and reference are on different grids ({what} {pred_value} vs {ref_value}): "
        "resample the prediction onto the reference grid")


def _rounded(values: np.ndarray):
    return tuple(round(float(v), 4) for v in values.ravel())


# --- inputs ---------------------------------------------------------------------------------------------------------
def _as_mask(array) -> np.ndarray:
    array = np.asarray(array)
    return array if array.dtype == bool else array != 0


def _mask_pair(pred, ref) -> Tuple[np.ndarray, np.ndarray]:
    pred, ref = _as_mask(pred), _as_mask(ref)
    if pred.shape != ref.shape:
        raise _grid_error("shape", pred.shape, ref.shape)
    return pred, ref


def _sampling(spacing, ndim: int) -> Tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    spacing = tuple(float(s) for s in np.ravel(spacing))
    if len(spacing) != ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputImageError(
            f"spacing {spacing} does not give one positive size per axis of a {ndim}D mask: pass it in (i, j, k) order")
    return spacing[::-1]
