"""How faithful the reference labels are along z, and what that costs a perfect segmentation.

The copy of CHAOS T2-SPIR here was resampled to 7.7 mm slices by its source: the images by interpolation, the
labels by nearest neighbour. Where the new slices are denser than the old ones, a label slice is then repeated
(the old slice nearest to two new ones) while the images in between are blends of two old slices. Each label
is thus the anatomy of the nearest *old* slice, up to half an old slice (about 4.5 mm) away from where its image
lies. ``repeated_label_slices`` finds that pattern in a label volume; ``nearest_resampling_dice`` measures, on a
finely sliced label (BTCV, 3 mm), the 3D Dice between the anatomy at the new positions and what nearest-
neighbour resampling from the coarser old slices puts there: the score a segmentation that found the true
anatomy exactly would get against such labels.
"""
from __future__ import annotations

import numpy as np


def repeated_label_slices(label: np.ndarray, axis: int) -> list:
    """Indices ``k`` along ``axis`` whose non-empty label slice equals slice ``k + 1`` exactly."""
    slices = np.moveaxis(np.asarray(label), axis, 0)
    return [k for k in range(len(slices) - 1) if slices[k].any() and np.array_equal(slices[k], slices[k + 1])]


def nearest_resampling_dice(label: np.ndarray, axis: int, spacing_mm: float, old_mm: float, new_mm: float,
                            phases: int = 5) -> float:
    """Mean 3D Dice over ``phases`` start offsets between the true anatomy at ``new_mm`` slice positions and the
    label nearest-neighbour resampled there from slices ``old_mm`` apart; ``label`` is sliced ``spacing_mm``
    apart along ``axis`` (finely, so that its nearest slice stands for the anatomy at any position)."""
    fine = np.moveaxis(np.asarray(label) > 0, axis, 0)
    extent = (len(fine) - 1) * spacing_mm
    if not fine.any():
        raise ValueError("the label is empty: nothing to resample")
    if old_mm >= extent:
        raise ValueError(f"old slices {old_mm} mm apart do not fit twice in a label {extent:g} mm long")

    def anatomy_at(z):
        return fine[np.clip(np.round(np.asarray(z) / spacing_mm).astype(int), 0, len(fine) - 1)]

    scores = []
    for phase in np.linspace(0.0, old_mm, phases, endpoint=False):
        old = np.arange(phase, extent, old_mm)
        new = np.arange(old[0], old[-1], new_mm)
        nearest_old = old[np.clip(np.round((new - old[0]) / old_mm).astype(int), 0, len(old) - 1)]
        truth, resampled = anatomy_at(new), anatomy_at(nearest_old)
        total = truth.sum() + resampled.sum()
        scores.append(2.0 * (truth & resampled).sum() / total if total else 1.0)
    return float(np.mean(scores))


def old_spacing_from_repeats(new_mm: float, period: int) -> float:
    """Old slice spacing that repeats one label slice every ``period`` new slices: ``period`` new slices then
    span ``period - 1`` old ones."""
    if period < 2:
        raise ValueError("a repeat period is at least 2 slices")
    return new_mm * period / (period - 1)


def slice_axis(volume) -> int:
    """The array axis of the widest spacing (the acquisition's slice direction)."""
    spacing = np.asarray(volume.spacing, dtype=float)[::-1]  # Volume spacing is (x, y, z); arrays are (k, j, i)
    return int(np.argmax(spacing))


def survey(data_root=None) -> list:
    """Lines for ``python -m Training label-quality``: the repeats in each CHAOS MR label, the old spacing they
    imply, and what nearest resampling from that spacing costs on the BTCV livers."""
    from SlicerEssNet.volume_io import read_volume

    from .cohorts import real_cases

    cases = real_cases(data_root)
    if not cases["MR"]:
        raise FileNotFoundError("no CHAOS MR patients under the data folder: pass --data-root")
    lines, periods = [], []
    for case in cases["MR"]:
        label = read_volume(case.label)
        axis = slice_axis(label)
        repeats = repeated_label_slices(label.array, axis)
        gaps = np.diff(repeats).tolist()
        periods += gaps
        lines.append(f"{case.patient}: {np.asarray(label.array).shape[axis]} slices of "
                     f"{max(label.spacing):.2f} mm, label slice repeated after slice {repeats or 'none'}")
    with_repeats = sum(1 for line in lines if "none" not in line)
    lines.append(f"{with_repeats} of {len(cases['MR'])} CHAOS MR labels repeat a slice")
    if not periods:
        return lines
    period = int(np.bincount(periods).argmax())
    new_mm = float(max(read_volume(cases["MR"][0].label).spacing))
    old_mm = old_spacing_from_repeats(new_mm, period)
    lines.append(f"most common repeat period {period} slices: old slices about {old_mm:.2f} mm apart, "
                 f"resampled to {new_mm:.2f} mm")
    scores = []
    for case in cases["CT"]:
        if case.reader != "file":
            continue
        label = read_volume(case.label)
        axis = slice_axis(label)
        scores.append(nearest_resampling_dice(np.asarray(label.array) > 0, axis, max(label.spacing), old_mm, new_mm))
    if scores:
        lines.append(f"nearest resampling {old_mm:.2f} -> {new_mm:.2f} mm on {len(scores)} BTCV livers "
                     f"({max(read_volume(cases['CT'][0].label).spacing):.1f} mm slices): 3D Dice against the true "
                     f"anatomy {np.mean(scores):.3f} (min {np.min(scores):.3f}, max {np.max(scores):.3f})")
    return lines
