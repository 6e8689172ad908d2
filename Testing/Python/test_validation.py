"""What check_volume refuses (and accepts), and whether modality_mismatch tells CT from MR on every real scan."""
from __future__ import annotations

import numpy as np
import pytest

from SlicerEssNet.io.chaos import read_chaos_ct
from SlicerEssNet.errors import InputImageError, VolumeTooLargeError, WeightsError
from SlicerEssNet.validation import available_memory_bytes, check_image_header, check_volume, modality_mismatch
from SlicerEssNet.volume import Volume
from SlicerEssNet.io.volume_files import read_volume


def volume(array=None, **geometry) -> Volume:
    if array is None:
        array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    return Volume(array, **geometry)


def refused(candidate, error=InputImageError, match=None, **options) -> str:
    with pytest.raises(error, match=match) as caught:
        check_volume(candidate, **options)
    message = str(caught.value)
    assert "\n" not in message and ": " in message  # one line: the problem, then what to do
    return message


def test_ordinary_and_single_slice_volumes_pass():
    assert check_volume(volume()) is None
    assert check_volume(volume(np.arange(12, dtype=np.int16).reshape(1, 3, 4))) is None
    assert check_volume(volume(np.eye(4, dtype=bool)[np.newaxis])) is None


def test_structure_problems_are_refused():
    refused(volume(np.arange(12.0).reshape(3, 4)), match="2D array")
    refused(volume(np.zeros((2, 3, 4, 2)) + np.arange(2)), match="4D or multi-component")
    refused(volume(np.zeros((2, 0, 4))), match="no voxels")
    refused(volume(np.array([[[1 + 1j, 2]]])), match="voxel type")


@pytest.mark.parametrize("spacing", [(1.0, 0.0, 1.0), (1.0, -2.0, 1.0), (1.0, float("nan"), 1.0),
                                     (1.0, float("inf"), 1.0)])
def test_bad_spacing_is_refused(spacing):
    assert "spacing" in refused(volume(spacing=spacing))


def test_non_orthonormal_or_non_finite_frames_are_refused():
    refused(volume(direction=[[1, 0, 0], [0.5, 1, 0], [0, 0, 1]]), match="orthonormal")
    refused(volume(origin=(0.0, float("nan"), 0.0)), match="non-finite")


def test_nan_and_infinite_voxels_are_counted():
    array = np.ones((3, 4, 5), dtype=np.float32)
    array[1, 2, 3] = np.nan
    array[2, 0, 0] = np.inf
    array[2, 0, 1] = -np.inf
    assert "1 NaN and 2 infinite" in refused(volume(array))


def test_constant_volume_is_refused():
    assert "constant (every voxel is 7)" in refused(volume(np.full((3, 4, 5), 7, dtype=np.int16)))


def test_too_large_is_refused_from_size_alone():
    refused(volume(np.ones((4, 64, 64), dtype=np.float32) * np.arange(64)), VolumeTooLargeError, max_bytes=1000)
    with pytest.raises(VolumeTooLargeError, match="more than the memory available"):
        check_image_header("huge.nii", (100000, 100000, 100000), 1, 2, (1.0, 1.0, 1.0))


def test_header_checks():
    check_image_header("ok.nrrd", (4, 5), 1, 2, (1.0, 1.0))  # 2D is fine
    with pytest.raises(InputImageError, match="4D"):
        check_image_header("t.nii", (4, 5, 6, 7), 1, 2, (1.0, 1.0, 1.0, 1.0))
    with pytest.raises(InputImageError, match="3 components"):
        check_image_header("rgb.nrrd", (4, 5, 6), 3, 1, (1.0, 1.0, 1.0))
    with pytest.raises(InputImageError, match="no voxels"):
        check_image_header("e.nrrd", (4, 0, 6), 1, 1, (1.0, 1.0, 1.0))


def test_available_memory_is_known_here():
    available = available_memory_bytes()
    assert isinstance(available, int) and available > 0


# --- modality ------------------------------------------------------------------------------------------------
def _real_volumes(shared_data):
    data = shared_data
    yield from ((p, "MR") for p in sorted((data / "chaos_mr_t2").glob("mr_t2_??.nii.gz")))
    yield from ((p, "CT") for p in sorted((data / "btcv_ct").glob("ct_??.nii.gz")))
    yield data / "totalseg_examples" / "example_ct_sm.nii.gz", "CT"
    yield data / "totalseg_examples" / "example_mr_sm.nii.gz", "MR"
    yield data / "totalseg_examples" / "example_ct_dicom", "CT"
    yield data / "lits_117" / "ct.nii.gz", "CT"
    yield data / "dcmqi_ct3slice" / "ct", "CT"


def test_every_real_scan_is_recognised_as_its_modality(shared_data):
    """BTCV is clipped to [-125, 275] HU and still counts as CT; CHAOS T2 and TotalSegmentator MR count as MR."""
    checked = 0
    for path, modality in _real_volumes(shared_data):
        scan = read_volume(path)
        other = "CT" if modality == "MR" else "MR"
        assert modality_mismatch(scan, modality) is None, path
        reason = modality_mismatch(scan, other)
        assert reason and "\n" not in reason, path
        checked += 1
    ct, _ = read_chaos_ct(shared_data / "chaos_ct_sample")
    assert modality_mismatch(ct, "CT") is None and modality_mismatch(ct, "MR")
    assert checked >= 40


def test_mismatch_reasons_say_why():
    mr_like = volume(np.random.default_rng(0).gamma(2.0, 100.0, size=(4, 32, 32)))
    assert "looks like MR" in modality_mismatch(mr_like, "CT")
    ct_like = volume(np.where(np.indices((4, 32, 32))[2] < 8, -1000.0, 40.0))
    assert "looks like CT" in modality_mismatch(ct_like, "MRI")
    assert modality_mismatch(ct_like, "ct") is None


def test_unknown_expected_modality_is_a_model_card_error():
    with pytest.raises(WeightsError, match="not one of CT, MR"):
        modality_mismatch(volume(), "PET")


def test_real_label_maps_are_refused_and_real_scans_are_not(shared_data):
    """A segmentation given where the scan belongs is named as such; no real scan is taken for one."""
    scans = 0
    for path, _ in _real_volumes(shared_data):
        assert check_volume(read_volume(path)) is None, path
        scans += 1
    labels = sorted(shared_data.glob("btcv_ct/*_liver.nii.gz"))[:3] + sorted(shared_data.glob("chaos_mr_t2/*_label.nii.gz"))[:3]
    for path in labels:
        message = refused(read_volume(path), match="looks like a label map")
        assert "give the CT or MR scan itself" in message
    assert scans >= 40 and len(labels) == 6


def test_label_maps_of_any_type_are_refused_but_coarse_noisy_images_pass():
    rng = np.random.default_rng(0)
    labels = np.zeros((12, 40, 40), dtype=np.uint8)
    labels[2:10, 5:30, 4:25] = 1
    labels[4:8, 10:20, 25:37] = 7
    refused(volume(labels), match=r"3 distinct values: 0, 1, 7")
    refused(volume(labels.astype(np.float32)), match="looks like a label map")  # a label map saved as float
    refused(volume(labels.astype(bool)), match="2 distinct values")
    # An 8-bit image with under 256 grey levels is still a scan: its noise makes neighbours differ.
    coarse = np.clip(rng.normal(60, 12, labels.shape) + 40 * labels, 0, 255).astype(np.uint8)
    assert len(np.unique(coarse)) < 256 and check_volume(volume(coarse)) is None
