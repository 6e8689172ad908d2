"""metrics.py against independent references: SimpleITK's overlap and Hausdorff filters, a KD-tree over border
voxels (the CHAOS evaluation's own method), MONAI's surface metrics, shapes with known answers, and the official
CHAOS sample."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.spatial import cKDTree

from SlicerEssNet import metrics
from SlicerEssNet.errors import EmptyMaskWarning, InputImageError
from SlicerEssNet.volume import Volume

SPACING = (0.7, 0.9, 2.5)  # (i, j, k) mm: all different, so a reversed or shuffled spacing shows


def blob(seed: int, shape=(20, 40, 36), margin: int = 2, smooth: float = 2.5) -> np.ndarray:
    """A random smooth 3D shape (several lobes, holes possible) that keeps `margin` voxels off the image edge."""
    noise = np.random.default_rng(seed).standard_normal(shape)
    mask = ndimage.gaussian_filter(noise, smooth) > 0.02
    if margin:
        inner = np.zeros(shape, bool)
        inner[margin:-margin, margin:-margin, margin:-margin] = True
        mask &= inner
    return mask


def to_image(mask: np.ndarray, spacing=SPACING) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(spacing)
    return image


def kdtree_surface_distances(pred, ref, spacing):
    """The CHAOS evaluation's method: border voxels to physical points, nearest neighbours by KD-tree."""
    cross = ndimage.generate_binary_structure(3, 1)
    scale = np.asarray(spacing, float)[::-1]
    points = [np.argwhere(m ^ ndimage.binary_erosion(m, structure=cross, border_value=1)) * scale for m in (pred, ref)]
    return cKDTree(points[1]).query(points[0])[0], cKDTree(points[0]).query(points[1])[0]


# --- overlap ----------------------------------------------------------------------------------------------------
def test_overlap_counts_formulas_and_pooling():
    counts = metrics.OverlapCounts(tp=30, fp=10, fn=20)
    assert counts.dice == pytest.approx(60 / 90)
    assert counts.iou == pytest.approx(30 / 60)
    assert (counts.predicted, counts.reference) == (40, 50)
    total = counts + metrics.OverlapCounts(5, 0, 1)
    assert total == metrics.OverlapCounts(35, 10, 21)
    assert sum([counts, metrics.OverlapCounts(5, 0, 1)]) == total
    # both empty: nothing to disagree about
    assert metrics.OverlapCounts(0, 0, 0).dice == 1.0 and metrics.OverlapCounts(0, 0, 0).iou == 1.0
    assert metrics.OverlapCounts(0, 3, 0).dice == 0.0


def test_overlap_counts_of_label_arrays_count_non_zero_as_foreground():
    pred = np.array([[0, 2, 2], [0, 0, 1]])
    ref = np.array([[True, True, False], [False, False, True]])
    assert metrics.overlap_counts(pred, ref) == metrics.OverlapCounts(tp=2, fp=1, fn=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_and_iou_match_simpleitk_label_overlap(seed):
    pred, ref = blob(seed), blob(seed + 100)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(to_image(ref), to_image(pred))
    assert metrics.dice(pred, ref) == pytest.approx(overlap.GetDiceCoefficient(), abs=1e-12)
    assert metrics.iou(pred, ref) == pytest.approx(overlap.GetJaccardCoefficient(), abs=1e-12)
    assert 0.1 < metrics.dice(pred, ref) < 0.9  # a real partial overlap, not a trivial case


def test_offset_cubes_have_the_analytic_dice_and_iou():
    side, offset = 10, 3
    pred, ref = np.zeros((20, 20, 20), bool), np.zeros((20, 20, 20), bool)
    ref[2:2 + side, 4:4 + side, 5:5 + side] = True
    pred[2:2 + side, 4:4 + side, 5 + offset:5 + offset + side] = True
    # overlap side^2 (side - offset) of side^3 each
    assert metrics.dice(pred, ref) == pytest.approx((side - offset) / side)
    assert metrics.iou(pred, ref) == pytest.approx((side - offset) / (side + offset))


def test_ravd_is_the_unsigned_percent_volume_difference():
    ref, pred = np.zeros((10, 10, 10), bool), np.zeros((10, 10, 10), bool)
    ref[:5] = True  # 500 voxels
    pred[:4] = True  # 400 voxels
    assert metrics.ravd(pred, ref) == pytest.approx(20.0)
    assert metrics.ravd(ref, pred) == pytest.approx(25.0)


def test_per_slice_dice_along_each_axis_and_empty_slices():
    pred, ref = blob(3, margin=3), blob(4, margin=3)
    for axis in range(3):
        scores = metrics.per_slice_dice(pred, ref, axis=axis)
        expected = [metrics.dice(np.take(pred, n, axis), np.take(ref, n, axis)) for n in range(pred.shape[axis])]
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
    # the first 3 slices are empty in both: 1.0 by convention, or nan when asked
    assert np.all(metrics.per_slice_dice(pred, ref)[:3] == 1.0)
    marked = metrics.per_slice_dice(pred, ref, empty=np.nan)
    assert np.all(np.isnan(marked[:3])) and np.all(np.isfinite(marked[3:-3]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2 ** 32 - 1), st.floats(0.0, 0.6)), min_size=1, max_size=6))
def test_pooled_iou_is_exactly_d_over_2_minus_d(cases):
    pairs = []
    for seed, flip_fraction in cases:
        rng = np.random.default_rng(seed)
        ref = rng.random((16, 16)) < 0.4
        pairs.append((ref ^ (rng.random((16, 16)) < flip_fraction), ref))
    pooled_dice, pooled_iou = metrics.pooled_dice_iou(pairs)
    if math.isfinite(pooled_dice):
        assert pooled_iou == pytest.approx(pooled_dice / (2 - pooled_dice), abs=1e-12)


def test_pooled_differs_from_the_mean_of_slice_scores():
    # one big well-segmented slice and one tiny badly segmented slice
    big_ref = np.zeros((40, 40), bool)
    big_ref[5:35, 5:35] = True
    big_pred = big_ref.copy()
    big_pred[5:8] = False
    small_ref, small_pred = np.zeros((40, 40), bool), np.zeros((40, 40), bool)
    small_ref[0:2, 0:2] = True
    small_pred[1:3, 1:3] = True
    pairs = [(big_pred, big_ref), (small_pred, small_ref)]
    pooled_dice, pooled_iou = metrics.pooled_dice_iou(pairs)
    total = metrics.overlap_counts(big_pred, big_ref) + metrics.overlap_counts(small_pred, small_ref)
    assert (pooled_dice, pooled_iou) == (total.dice, total.iou)
    mean_dice = np.mean([metrics.dice(p, r) for p, r in pairs])
    mean_iou = np.mean([metrics.iou(p, r) for p, r in pairs])
    assert pooled_dice > 0.9 > mean_dice
    assert mean_iou != pytest.approx(mean_dice / (2 - mean_dice), abs=1e-3)  # the identity needs pooling
    with pytest.raises(InputImageError):
        metrics.pooled_dice_iou([])


# --- surfaces -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis, spacing_mm", [(0, SPACING[2]), (1, SPACING[1]), (2, SPACING[0])])
def test_parallel_slabs_are_exactly_three_voxels_apart(axis, spacing_mm):
    # Slabs filling the whole image across `axis`: with border_value=1 only their inner faces are borders, so every
    # distance is exactly 3 voxels along `axis`, in that axis's spacing.
    shape = (12, 16, 14)
    pred, ref = np.zeros(shape, bool), np.zeros(shape, bool)
    index = [slice(None)] * 3
    index[axis] = slice(0, 4)
    ref[tuple(index)] = True
    index[axis] = slice(0, 7)
    pred[tuple(index)] = True
    distances = metrics.surface_distances(pred, ref, SPACING)
    assert distances.pred_to_ref.size == distances.ref_to_pred.size == ref.size // shape[axis]
    for value in (distances.assd, distances.mssd, distances.hd95):
        assert value == pytest.approx(3 * spacing_mm, abs=1e-9)


def ellipsoid_sphere(shape, centre, radius_mm, spacing):
    """A physical sphere on an anisotropic grid (an ellipsoid in voxels)."""
    k, j, i = np.indices(shape)
    squares = [((axis - c) * s) ** 2 for axis, c, s in zip((i, j, k), centre, spacing)]
    return sum(squares) <= radius_mm ** 2


@pytest.mark.parametrize("shift_axis", [0, 2])
def test_sphere_shifted_by_two_voxels(shift_axis):
    # A sphere of radius R shifted by s (s << R): a surface point with normal at angle t to the shift is s|cos t|
    # from the other sphere, so the largest distance is s (at the poles) and the mean over the sphere is s/2.
    spacing, shape, centre = SPACING, (24, 40, 48), (23.5, 19.5, 11.5)
    ref = ellipsoid_sphere(shape, centre, 12.0, spacing)
    moved = list(centre)
    moved[shift_axis] += 2
    pred = ellipsoid_sphere(shape, moved, 12.0, spacing)
    shift_mm = 2 * spacing[shift_axis]
    distances = metrics.surface_distances(pred, ref, spacing)
    assert distances.mssd == pytest.approx(shift_mm, abs=1e-9)
    assert distances.hd95 <= shift_mm + 1e-9
    # the border voxels quantise the surface: allow one voxel along the shift around the continuous value
    assert abs(distances.assd - shift_mm / 2) <= spacing[shift_axis]
    assert metrics.surface_distances(ref, ref, spacing).mssd == 0.0


@pytest.mark.parametrize("seed", [5, 6])
def test_surface_distances_equal_the_chaos_kdtree_method(seed):
    pred, ref = blob(seed, margin=0), blob(seed + 1, margin=0)  # touching the edge exercises border_value=1
    pred_to_ref, ref_to_pred = kdtree_surface_distances(pred, ref, SPACING)
    distances = metrics.surface_distances(pred, ref, SPACING)
    np.testing.assert_allclose(np.sort(distances.pred_to_ref), np.sort(pred_to_ref), atol=1e-9)
    np.testing.assert_allclose(np.sort(distances.ref_to_pred), np.sort(ref_to_pred), atol=1e-9)
    pooled = np.concatenate([pred_to_ref, ref_to_pred])
    assert metrics.assd(pred, ref, SPACING) == pytest.approx(pooled.sum() / pooled.size, abs=1e-9)
    assert metrics.mssd(pred, ref, SPACING) == pytest.approx(pooled.max(), abs=1e-9)
    assert metrics.hd95(pred, ref, SPACING) == pytest.approx(np.percentile(pooled, 95), abs=1e-9)


def test_surface_measures_agree_with_monai():
    # MONAI erodes with border_value=0, so the masks keep off the image edge, where both border definitions agree.
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    pred, ref = blob(7), blob(8)
    one_hot = [torch.from_numpy(np.stack([~m, m])[None]) for m in (pred, ref)]
    spacing_zyx = list(SPACING[::-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_assd = compute_average_surface_distance(*one_hot, symmetric=True, spacing=spacing_zyx)[0, 0]
        monai_hd95 = compute_hausdorff_distance(*one_hot, percentile=95, spacing=spacing_zyx)[0, 0]
        monai_hd = compute_hausdorff_distance(*one_hot, spacing=spacing_zyx)[0, 0]
    distances = metrics.surface_distances(pred, ref, SPACING)
    assert distances.assd == pytest.approx(float(monai_assd), rel=1e-5)
    assert distances.percentile(95, pooled=False) == pytest.approx(float(monai_hd95), rel=1e-5)
    assert distances.mssd == pytest.approx(float(monai_hd), rel=1e-5)


@pytest.mark.parametrize("seed", [9, 10])
def test_mssd_is_within_a_voxel_of_simpleitk_full_voxel_hausdorff(seed):
    # SimpleITK measures from every voxel of one mask to the nearest voxel of the other; we measure border to
    # border. The nearest voxel of a mask to any point outside it is a border voxel, so the two differ only by
    # (a) border voxels lying inside the other mask, which SimpleITK counts as 0 and we do not, and (b) the
    # farthest outside voxel sitting up to a voxel behind the border. Both effects are at most about a voxel.
    pred, ref = blob(seed), blob(seed + 50)
    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(to_image(pred), to_image(ref))
    assert abs(metrics.mssd(pred, ref, SPACING) - hausdorff.GetHausdorffDistance()) <= max(SPACING)
    assert metrics.mssd(pred, ref, SPACING) > max(SPACING)  # the shapes really differ


def test_empty_masks_give_inf_or_nan_with_a_warning():
    full = blob(11)
    empty = np.zeros_like(full)
    with pytest.warns(EmptyMaskWarning, match="prediction mask has no border voxel"):
        distances = metrics.surface_distances(empty, full, SPACING)
    assert distances.assd == math.inf and distances.mssd == math.inf and distances.hd95 == math.inf
    assert distances.percentile(95, pooled=False) == math.inf
    with pytest.warns(EmptyMaskWarning, match="both masks are empty"):
        assert math.isnan(metrics.assd(empty, empty, SPACING))
    with pytest.warns(EmptyMaskWarning, match="reference mask is empty"):
        assert metrics.ravd(full, empty) == math.inf
    with pytest.warns(EmptyMaskWarning, match="both masks are empty"):
        assert math.isnan(metrics.ravd(empty, empty))
    assert metrics.dice(empty, empty) == 1.0 and metrics.dice(full, empty) == 0.0
    # a mask that fills the whole grid has no border under the CHAOS definition
    with pytest.warns(EmptyMaskWarning, match="fills the whole image"):
        assert metrics.mssd(np.ones_like(full), full, SPACING) == math.inf


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(InputImageError, match="resample the prediction") as shape_error:
        metrics.dice(np.zeros((3, 4, 5)), np.zeros((3, 4, 6)))
    with pytest.raises(InputImageError, match="one positive size per axis") as spacing_error:
        metrics.assd(np.ones((3, 4, 5)), np.ones((3, 4, 5)), spacing=(1.0, 1.0))
    with pytest.raises(InputImageError):
        metrics.assd(np.ones((3, 4, 5)), np.ones((3, 4, 5)), spacing=(1.0, 0.0, 1.0))
    for error in (shape_error, spacing_error):
        assert "\n" not in str(error.value)


# --- volumes ------------------------------------------------------------------------------------------------------
def volume_of(mask, origin=(-185.0, -98.0, 1690.5), direction=None, spacing=SPACING) -> Volume:
    return Volume(mask.astype(np.uint8), spacing, origin, np.eye(3) if direction is None else direction)


def test_evaluate_reports_every_measure_for_the_chosen_labels():
    ref_mask, pred_mask = blob(12), blob(13)
    ref = volume_of(ref_mask)
    pred = Volume(np.where(pred_mask, 2, 0).astype(np.uint8), ref.spacing, ref.origin, ref.direction)
    result = metrics.evaluate(pred, ref, label=2, ref_label=1)
    counts = metrics.overlap_counts(pred_mask, ref_mask)
    distances = metrics.surface_distances(pred_mask, ref_mask, SPACING)
    assert result["dice"] == counts.dice and result["iou"] == counts.iou
    assert result["ravd"] == metrics.ravd(pred_mask, ref_mask)
    assert (result["assd"], result["mssd"], result["hd95"]) == (distances.assd, distances.mssd, distances.hd95)
    assert (result["tp"], result["fp"], result["fn"]) == (counts.tp, counts.fp, counts.fn)
    assert (result["pred_voxels"], result["ref_voxels"]) == (pred_mask.sum(), ref_mask.sum())
    assert result["ref_ml"] == pytest.approx(ref_mask.sum() * np.prod(SPACING) / 1000)
    assert (result["label"], result["ref_label"], result["notes"]) == (2, 1, [])
    # label 1 is absent from the prediction: say so instead of warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = metrics.evaluate(pred, ref, label=1)
    assert empty["dice"] == 0.0 and empty["assd"] == math.inf
    assert any("no voxel with label 1" in note for note in empty["notes"])


def test_evaluate_refuses_volumes_on_different_grids():
    mask = blob(14)
    ref = volume_of(mask)
    flipped = np.diag([1.0, 1.0, -1.0])
    for other, what in (
        (volume_of(mask[:, :, :-1]), "shape"),
        (volume_of(mask, spacing=(0.7, 0.9, 2.0)), "spacing"),
        (volume_of(mask, origin=(-185.0, -98.0, 1690.0)), "origin"),
        (volume_of(mask, direction=flipped), "direction"),
    ):
        with pytest.raises(InputImageError, match="resample the prediction onto the reference grid") as error:
            metrics.evaluate(other, ref)
        assert what in str(error.value) and "\n" not in str(error.value)
    # float32 round-off of a NIfTI header is not a different grid
    rounded = volume_of(mask, origin=tuple(np.float32(v) + 1e-5 for v in ref.origin))
    assert metrics.evaluate(rounded, ref)["dice"] == 1.0
    with pytest.raises(InputImageError, match="not 3D"):
        metrics.evaluate(Volume(mask[0]), Volume(mask[0]))


def test_evaluate_matches_axes_stored_in_another_order_exactly():
    # The reference in CHAOS file-name order (z falls with k); the same voxels stored as a position-sorting reader
    # gives them (k reversed, z rising) and with i and j swapped: the same grid, matched without resampling.
    ref_mask, pred_mask = blob(15), blob(16)
    ref = volume_of(ref_mask, direction=np.diag([1.0, 1.0, -1.0]))
    same_grid = metrics.evaluate(ref.with_array(pred_mask.astype(np.uint8)), ref)
    n_slices = ref_mask.shape[0]
    reversed_k = Volume(pred_mask[::-1].astype(np.uint8), SPACING,
                        (-185.0, -98.0, 1690.5 - SPACING[2] * (n_slices - 1)), np.eye(3))
    swapped_ij = Volume(np.ascontiguousarray(pred_mask.transpose(0, 2, 1)).astype(np.uint8),
                        (SPACING[1], SPACING[0], SPACING[2]), ref.origin,
                        np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]))
    for stored in (reversed_k, swapped_ij):
        result = metrics.evaluate(stored, ref)
        for key in ("dice", "iou", "ravd", "assd", "mssd", "hd95", "tp", "fp", "fn"):
            assert result[key] == pytest.approx(same_grid[key], abs=1e-12), key
        assert result["spacing"] == list(SPACING) and "matched exactly" in result["notes"][0]
    # shifted by half a voxel: not the same voxels, so no silent matching
    half_voxel = Volume(reversed_k.array, SPACING, np.add(reversed_k.origin, (0.35, 0, 0)), np.eye(3))
    with pytest.raises(InputImageError, match="resample the prediction onto the reference grid"):
        metrics.evaluate(half_voxel, ref)


# --- the CHAOS sample ---------------------------------------------------------------------------------------------
def test_chaos_sample_submission_scores_the_official_numbers(shared_data):
    import pydicom
    from PIL import Image

    folder = shared_data / "chaos_ct_sample"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    ground = np.stack([np.asarray(Image.open(f)) for f in sorted((folder / "Ground").glob("*.png"))]) > 0
    sample = np.stack([np.asarray(Image.open(f)) for f in sorted((folder / "SampleSubmission").glob("*.png"))]) > 0
    dicoms = sorted((folder / "DICOM_anon").glob("*.dcm"))
    first, last = (pydicom.dcmread(str(dicoms[n]), stop_before_pixels=True) for n in (0, -1))
    slice_mm = np.linalg.norm(np.subtract(last.ImagePositionPatient, first.ImagePositionPatient, dtype=float))
    slice_mm /= len(dicoms) - 1
    row_mm, column_mm = (float(v) for v in first.PixelSpacing)
    spacing = (column_mm, row_mm, slice_mm)
    assert slice_mm == pytest.approx(2.0) and column_mm == pytest.approx(0.7266, abs=1e-4)

    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(to_image(ground, spacing), to_image(sample, spacing))
    assert metrics.dice(sample, ground) == pytest.approx(overlap.GetDiceCoefficient(), abs=1e-12)
    assert metrics.iou(sample, ground) == pytest.approx(overlap.GetJaccardCoefficient(), abs=1e-12)
    # the official sample output: DICE=0.978 RAVD=0.665 ASSD=0.734 MSSD=14
    distances = metrics.surface_distances(sample, ground, spacing)
    assert round(metrics.dice(sample, ground), 3) == 0.978
    assert round(metrics.ravd(sample, ground), 3) == 0.665
    assert round(distances.assd, 3) == 0.734
    assert distances.mssd == pytest.approx(14.0, abs=1e-6)
    # pooled 2D Dice over the slices is the 3D Dice: one confusion matrix either way
    assert metrics.pooled_dice_iou(zip(sample, ground))[0] == pytest.approx(metrics.dice(sample, ground), abs=1e-15)
