"""CHAOS layouts: the real CT sample, and faithful MR folders generated with pydicom + PIL at test time."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from generated_dicom import write_slice
from SlicerEssNet.io.chaos import mr_label_map, natural_key, read_chaos_ct, read_chaos_mr
from SlicerEssNet.errors import ChaosLayoutError, InputImageError
from SlicerEssNet.io.volume_files import read_dicom_series, read_volume


def liver_hu_fractions(ct: np.ndarray, liver: np.ndarray) -> tuple:
    """(pooled, mean per slice) fraction of liver pixels within [60, 220] HU, on slices with > 500 liver pixels."""
    mask = liver.astype(bool)
    slices = [k for k in range(ct.shape[0]) if mask[k].sum() > 500]
    values = ct[slices][mask[slices]]
    pooled = float(np.mean((values >= 60) & (values <= 220)))
    per_slice = float(np.mean([np.mean((ct[k][mask[k]] >= 60) & (ct[k][mask[k]] <= 220)) for k in slices]))
    return pooled, per_slice, len(slices)


# --- the real CT sample --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chaos_ct(shared_data):
    return read_chaos_ct(shared_data / "chaos_ct_sample")


def test_ct_sample_liver_mask_lies_on_liver_intensities(chaos_ct):
    """The reference: 95.6% of mask pixels in [60, 220] HU on the 71 slices with > 500 mask pixels, and far less
    with the slice order reversed (what a position-sorting reader gives) or the masks flipped."""
    ct, liver = chaos_ct
    assert ct.array.shape == liver.array.shape == (78, 512, 512)
    assert liver.array.dtype == np.uint8 and set(np.unique(liver.array)) == {0, 1}
    assert ct.same_geometry(liver)
    pooled, per_slice, n_slices = liver_hu_fractions(ct.array, liver.array)
    assert n_slices == 71 and pooled > 0.95 and per_slice > 0.95
    assert liver_hu_fractions(ct.array, liver.array[::-1])[0] < 0.8
    assert liver_hu_fractions(ct.array, liver.array[:, ::-1])[0] < 0.8


def test_ct_sample_rescale_and_geometry_come_from_the_name_ordered_headers(chaos_ct, shared_data):
    ct, _ = chaos_ct
    files = sorted((shared_data / "chaos_ct_sample" / "DICOM_anon").glob("*.dcm"), key=natural_key)
    first, last = (pydicom.dcmread(str(files[i])) for i in (0, -1))
    assert float(first.RescaleIntercept) == -1000.0
    assert np.array_equal(ct.array[0], first.pixel_array.astype(np.int32) - 1000)
    assert np.array_equal(ct.array[-1], last.pixel_array.astype(np.int32) - 1000)
    assert ct.origin == tuple(float(v) for v in first.ImagePositionPatient) and ct.origin[2] == 1690.5
    assert ct.spacing == (0.7265625, 0.7265625, 2.0)
    assert np.array_equal(ct.direction, np.diag([1.0, 1.0, -1.0]))


def test_ct_sample_is_the_same_patient_space_as_gdcms_position_sorted_read(chaos_ct, shared_data):
    """GDCM sorts by position (bottom up): the same voxels, k reversed, at the same patient positions."""
    ct, _ = chaos_ct
    gdcm = read_dicom_series(shared_data / "chaos_ct_sample" / "DICOM_anon")
    assert np.array_equal(gdcm.array, ct.array[::-1])
    corners = np.array([[0, 0, 0, 1], [511, 511, 0, 1], [100, 200, 77, 1]], dtype=float)
    flipped = corners.copy()
    flipped[:, 2] = 77 - corners[:, 2]
    assert np.allclose(corners @ gdcm.ijk_to_lps().T, flipped @ ct.ijk_to_lps().T, atol=1e-6)


def linked_copy(source: Path, destination: Path, skip=()) -> None:
    """A copy of a CHAOS folder made of links (the data stays where it is), leaving out ``skip``."""
    for path in source.rglob("*"):
        if path.is_file() and path.name not in skip:
            target = destination / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.symlink(path, target)
            except OSError:
                shutil.copyfile(path, target)


def test_ct_layout_problems_are_chaos_layout_errors(shared_data, tmp_path):
    sample = shared_data / "chaos_ct_sample"
    linked_copy(sample, tmp_path / "missing", skip={"liver_GT_010.png", "liver_GT_011.png"})
    with pytest.raises(ChaosLayoutError, match="76 masks for 78 DICOM slices") as caught:
        read_chaos_ct(tmp_path / "missing")
    assert "no mask numbered 10, 11" in str(caught.value) and "\n" not in str(caught.value)

    linked_copy(sample, tmp_path / "fewer_slices", skip={"i0077,0000b.dcm"})
    with pytest.raises(ChaosLayoutError, match="78 masks for 77 DICOM slices"):
        read_chaos_ct(tmp_path / "fewer_slices")

    linked_copy(sample, tmp_path / "small_mask", skip={"liver_GT_005.png"})
    Image.new("1", (256, 256)).save(tmp_path / "small_mask" / "Ground" / "liver_GT_005.png")
    with pytest.raises(ChaosLayoutError, match="is \\(256, 256\\) pixels but the slices are \\(512, 512\\)"):
        read_chaos_ct(tmp_path / "small_mask")

    linked_copy(sample / "DICOM_anon", tmp_path / "no_ground" / "DICOM_anon")
    with pytest.raises(ChaosLayoutError, match="needs its Ground"):
        read_chaos_ct(tmp_path / "no_ground")
    with pytest.raises(InputImageError, match="does not exist"):
        read_chaos_ct(tmp_path / "nowhere")


# --- generated CHAOS MR folders ------------------------------------------------------------------------------
ORGAN_GREYS = {1: (55, 63, 70), 2: (110, 126, 135), 3: (175, 189, 200), 4: (240, 252, 255)}


def write_mr_series(dicom_folder: Path, ground: Path, names, z_positions, seed: int, write_masks=True) -> tuple:
    """MR slices (12-bit unsigned, like the Philips originals) and 8-bit PNG masks with CHAOS organ codes."""
    rng = np.random.default_rng(seed)
    dicom_folder.mkdir(parents=True, exist_ok=True)
    ground.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for n, (name, z) in enumerate(zip(names, z_positions)):
        pixels = rng.integers(0, 4096, size=(16, 20)).astype(np.uint16)
        write_slice(dicom_folder / f"{name}.dcm", pixels, (-100.0, -80.0, z), modality="MR", spacing=(1.5, 1.25),
                    instance=n + 1, series_uid=f"1.2.826.0.1.3680043.8.498.{seed}")
        grey = np.zeros((16, 20), dtype=np.uint8)
        truth = np.zeros((16, 20), dtype=np.uint8)
        for label, values in ORGAN_GREYS.items():
            for column, value in enumerate(values):
                grey[label * 3 + n % 2, column + 2 * label] = value
                truth[label * 3 + n % 2, column + 2 * label] = label
        grey[0, 0], grey[0, 1] = 100, 30  # between the ranges: background
        if write_masks:
            Image.fromarray(grey, mode="L").save(ground / f"{name}.png")
        images.append(pixels)
        labels.append(truth)
    return np.stack(images), np.stack(labels)


@pytest.fixture()
def chaos_mr_patient(tmp_path):
    """MR/<id>/T2SPIR and T1DUAL as the challenge ships them; T2 names run opposite to the slice positions."""
    patient = tmp_path / "MR" / "7"
    t2_names = [f"IMG-0004-{n:05d}" for n in range(1, 7)]
    t2 = write_mr_series(patient / "T2SPIR" / "DICOM_anon", patient / "T2SPIR" / "Ground", t2_names,
                         [40.0 - 7.5 * n for n in range(6)], seed=1)
    in_names = [f"IMG-0002-{n:05d}" for n in range(2, 10, 2)]
    out_names = [f"IMG-0002-{n:05d}" for n in range(1, 9, 2)]
    t1_in = write_mr_series(patient / "T1DUAL" / "DICOM_anon" / "InPhase", patient / "T1DUAL" / "Ground",
                            in_names, [8.0 * n for n in range(4)], seed=2)
    t1_out = write_mr_series(patient / "T1DUAL" / "DICOM_anon" / "OutPhase", patient / "T1DUAL" / "unused",
                             out_names, [8.0 * n for n in range(4)], seed=3, write_masks=False)
    return patient, t2, t1_in, t1_out


def test_mr_t2_volume_labels_and_name_order(chaos_mr_patient):
    patient, (pixels, truth), _, _ = chaos_mr_patient
    mr, labels = read_chaos_mr(patient)
    assert np.array_equal(mr.array, pixels) and np.array_equal(labels.array, truth)
    assert labels.array.dtype == np.uint8 and mr.same_geometry(labels)
    # the first name is slice 0 even though it is the highest position: k runs towards the feet
    assert mr.origin == (-100.0, -80.0, 40.0) and mr.spacing == (1.25, 1.5, 7.5)
    assert np.allclose(mr.direction, np.diag([1.0, 1.0, -1.0]))
    # read_volume on the patient folder gives the T2-SPIR series
    image = read_volume(patient)
    assert np.array_equal(image.array, mr.array) and image.same_geometry(mr)


def test_mr_t1_dual_phases_share_their_masks(chaos_mr_patient):
    patient, _, (in_pixels, in_truth), (out_pixels, _) = chaos_mr_patient
    mr_in, labels_in = read_chaos_mr(patient, "T1DUAL_InPhase")
    mr_out, labels_out = read_chaos_mr(patient, "T1DUAL_OutPhase")
    assert np.array_equal(mr_in.array, in_pixels) and np.array_equal(mr_out.array, out_pixels)
    assert np.array_equal(labels_in.array, in_truth) and np.array_equal(labels_out.array, in_truth)
    with pytest.raises(ChaosLayoutError, match="InPhase or DICOM_anon/OutPhase"):
        read_volume(patient / "T1DUAL")
    assert np.array_equal(read_volume(patient / "T1DUAL" / "DICOM_anon" / "OutPhase").array, out_pixels)
    with pytest.raises(ChaosLayoutError, match="unknown CHAOS MR sequence 'T1'"):
        read_chaos_mr(patient, "T1")


def test_mr_sequence_folder_itself_is_accepted(chaos_mr_patient):
    patient, (pixels, truth), _, _ = chaos_mr_patient
    mr, labels = read_chaos_mr(patient / "T2SPIR")
    assert np.array_equal(mr.array, pixels) and np.array_equal(labels.array, truth)


def test_mr_missing_masks_are_named(chaos_mr_patient):
    patient = chaos_mr_patient[0]
    (patient / "T2SPIR" / "Ground" / "IMG-0004-00003.png").unlink()
    with pytest.raises(ChaosLayoutError, match="no mask for 1 of 6 slices \\(IMG-0004-00003\\)") as caught:
        read_chaos_mr(patient)
    assert "\n" not in str(caught.value)


def test_names_sort_naturally(tmp_path):
    """Unpadded numbers still stack in numeric order (2 before 10)."""
    names = [f"IMG-{n}" for n in (1, 2, 10, 11)]
    pixels, truth = write_mr_series(tmp_path / "T2SPIR" / "DICOM_anon", tmp_path / "T2SPIR" / "Ground", names,
                                    [0.0, 5.0, 10.0, 15.0], seed=4)
    mr, labels = read_chaos_mr(tmp_path)
    assert np.array_equal(mr.array, pixels) and np.array_equal(labels.array, truth)


def test_mr_label_ranges():
    grey = np.array([0, 54, 55, 63, 70, 71, 109, 110, 135, 136, 174, 175, 200, 201, 239, 240, 255])
    expected = [0, 0, 1, 1, 1, 0, 0, 2, 2, 0, 0, 3, 3, 0, 0, 4, 4]
    assert mr_label_map(grey).tolist() == expected
