"""The label survey along z: repeated slices are found, and the cost of nearest-neighbour resampling agrees with
SimpleITK's own nearest-neighbour resampler doing the same two steps."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from Training.data.label_quality import (nearest_resampling_dice, old_spacing_from_repeats, repeated_label_slices,
                                    survey)


def test_repeated_slices_are_found_and_empty_repeats_ignored():
    label = np.zeros((6, 4, 4), np.uint8)
    label[2:4, 1:3, 1:3] = 1  # slices 2 and 3 equal
    label[4, 1, 1] = 1
    assert repeated_label_slices(label, 0) == [2]  # 0 == 1 are empty: not a repeat
    assert repeated_label_slices(np.moveaxis(label, 0, 2), 2) == [2]


def test_repeat_period_gives_the_old_spacing():
    assert old_spacing_from_repeats(7.7, 7) == pytest.approx(7.7 * 7 / 6)
    with pytest.raises(ValueError, match="at least 2"):
        old_spacing_from_repeats(7.7, 1)


def _ball(fine_mm: float, radius_mm: float = 40.0) -> np.ndarray:
    z = np.arange(0, 2 * radius_mm + 20, fine_mm) - radius_mm - 10
    y, x = np.mgrid[-50:51, -50:51].astype(float)
    return (z[:, None, None] ** 2 + y ** 2 + x ** 2) <= radius_mm ** 2  # (z, y, x), 1 mm in-plane


def _sitk_nearest_dice(fine: np.ndarray, fine_mm: float, old_mm: float, new_mm: float) -> float:
    image = sitk.GetImageFromArray(fine.astype(np.uint8))
    image.SetSpacing((1.0, 1.0, fine_mm))

    def resample(source, spacing, count):
        reference = sitk.Image(source.GetSize()[0], source.GetSize()[1], count, sitk.sitkUInt8)
        reference.SetSpacing((1.0, 1.0, spacing))
        return sitk.Resample(source, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)

    extent = (fine.shape[0] - 1) * fine_mm
    old = resample(image, old_mm, int(np.floor(extent / old_mm)) + 1)
    count = int(np.ceil(((old.GetSize()[2] - 1) * old_mm) / new_mm))
    truth = sitk.GetArrayFromImage(resample(image, new_mm, count)) > 0
    resampled = sitk.GetArrayFromImage(resample(old, new_mm, count)) > 0
    return 2.0 * (truth & resampled).sum() / (truth.sum() + resampled.sum())


def test_resampling_cost_matches_simpleitk_and_vanishes_without_resampling():
    fine = _ball(0.5)
    ours = nearest_resampling_dice(fine, 0, 0.5, 8.98, 7.7, phases=1)
    assert ours == pytest.approx(_sitk_nearest_dice(fine, 0.5, 8.98, 7.7), abs=1e-9)
    assert 0.9 < ours < 0.999
    assert nearest_resampling_dice(fine, 0, 0.5, 7.5, 7.5) == 1.0  # same positions: nothing lost
    with pytest.raises(ValueError, match="empty"):
        nearest_resampling_dice(np.zeros_like(fine), 0, 0.5, 9.0, 7.7)


def test_survey_of_the_shared_chaos_labels(shared_data):
    lines = survey(shared_data)
    assert any(line.startswith("most common repeat period 7 slices") for line in lines), lines
    assert "3D Dice against the true anatomy" in lines[-1]
