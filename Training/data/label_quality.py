"""How faithful the reference labels are along z, and what that costs a perfect segmentation.

The copy of CHAOS T2-SPIR here was resampled to 7.7 mm slices by its source: the images by interpolation, the
labels by nearest neighbour. Where the new slices are denser than the old ones, a label slice is then repeated
(the old slice nearest to two new ones) while the images in between are blends of two old slices. Each label is
thus the anatomy of the nearest *old* slice, up to half an old slice away (3.9 mm for 8.98 -> 7.7 mm) from where
its image lies. ``repeated_label_slices`` finds that pattern in a label volume; ``nearest_resampling_dice``
measures, on a finely sliced label (BTCV, 3 mm), the 3D Dice between the anatomy at the new positions and what
nearest-neighbour resampling from the coarser old slices puts there: the score a segmentation that found the
true anatomy exactly would get against such labels.
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


def label_survey(mr_cases: list, ct_cases: list) -> dict:
    """The repeats in each MR label, the old spacing the commonest repeat period implies, and what nearest
    resampling from that spacing costs the (finely sliced) CT livers: recorded in a study's results."""
    from SlicerEssNet.io.volume_files import read_volume

    repeats, periods, new_mm = {}, [], None
    for case in mr_cases:
        label = read_volume(case.label)
        repeats[case.patient] = repeated_label_slices(label.array, slice_axis(label))
        periods += np.diff(repeats[case.patient]).tolist()
        new_mm = float(max(label.spacing))
    result = {"repeats": repeats, "new_mm": new_mm, "period": None, "old_mm": None, "nearest_resampling_dice": None}
    if not periods:
        return result
    result["period"] = int(np.bincount(periods).argmax())
    result["old_mm"] = old_spacing_from_repeats(new_mm, result["period"])
    scores, fine_mm = [], None
    for case in ct_cases:
        if case.reader != "file" or not case.label:
            continue
        label = read_volume(case.label)
        fine_mm = float(max(label.spacing))
        if fine_mm >= result["old_mm"] / 2:  # too coarse to stand for the anatomy between old slices
            continue
        scores.append(nearest_resampling_dice(np.asarray(label.array) > 0, slice_axis(label), fine_mm,
                                              result["old_mm"], new_mm))
    if scores:
        result["nearest_resampling_dice"] = {"mean": float(np.mean(scores)), "min": float(np.min(scores)),
                                             "max": float(np.max(scores)), "n": len(scores), "fine_mm": fine_mm}
    return result


def survey_lines(survey: dict) -> list:
    lines = [f"{patient}: label slice repeated after slice {', '.join(map(str, ks)) if ks else 'none'}"
             for patient, ks in survey["repeats"].items()]
    with_repeats = sum(1 for ks in survey["repeats"].values() if ks)
    lines.append(f"{with_repeats} of {len(survey['repeats'])} MR labels repeat a slice")
    if survey["period"] is None:
        return lines
    lines.append(f"most common repeat period {survey['period']} slices: old slices about {survey['old_mm']:.2f} mm "
                 f"apart, resampled to {survey['new_mm']:.2f} mm")
    cost = survey["nearest_resampling_dice"]
    if cost:
        lines.append(f"nearest resampling {survey['old_mm']:.2f} -> {survey['new_mm']:.2f} mm on {cost['n']} CT livers "
                     f"({cost['fine_mm']:.1f} mm slices): 3D Dice against the true anatomy {cost['mean']:.3f} "
                     f"(min {cost['min']:.3f}, max {cost['max']:.3f})")
    return lines


def survey(data_root=None) -> list:
    """Lines for ``python -m Training label-quality`` over the real data folder."""
    from .cohorts import real_cases

    cases = real_cases(data_root)
    if not cases["MR"]:
        raise FileNotFoundError("no CHAOS MR patients under the data folder: pass --data-root")
    return survey_lines(label_survey(cases["MR"], cases["CT"]))
