"""evaluation.py on real files: CHAOS PNG folders with their DICOM geometry, CHAOS MR labels written to NIfTI/NRRD,
generated PNG folders in every encoding CHAOS uses, and the table and JSON reports."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage

from SlicerEssNet import evaluation, metrics
from SlicerEssNet.errors import ChaosLayoutError, InputImageError, OutputPathError


def write_pngs(folder, slices, mode=None):
    folder.mkdir(parents=True)
    for number, pixels in enumerate(slices):
        image = Image.fromarray(pixels) if mode is None else Image.fromarray(pixels).convert(mode)
        image.save(folder / f"mask_{number:03d}.png")
    return folder


def two_blobs(shape=(6, 32, 28)):
    rng = np.random.default_rng(0)
    ref = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) > 0
    pred = ndimage.binary_dilation(ref, iterations=1) & (rng.random(shape) < 0.97)
    return pred, ref


# --- the CHAOS sample ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chaos_sample(shared_data):
    folder = shared_data / "chaos_ct_sample"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


def test_chaos_sample_folders_score_the_official_numbers(chaos_sample):
    result = evaluation.evaluate_files(chaos_sample / "SampleSubmission", chaos_sample / "Ground")
    # the official sample output: DICE=0.978 RAVD=0.665 ASSD=0.734 MSSD=14 (geometry from DICOM_anon beside them)
    assert round(result["dice"], 3) == 0.978
    assert round(result["ravd"], 3) == 0.665
    assert round(result["assd"], 3) == 0.734
    assert result["mssd"] == pytest.approx(14.0, abs=1e-6)
    assert result["iou"] == pytest.approx(result["dice"] / (2 - result["dice"]), abs=1e-12)
    assert result["spacing"] == pytest.approx([0.7265625, 0.7265625, 2.0])
    assert result["notes"] == [] and result["case"] == str(chaos_sample / "SampleSubmission")
    assert result["ref_voxels"] == sum(int((np.asarray(Image.open(f)) > 0).sum())
                                       for f in (chaos_sample / "Ground").glob("*.png"))


def test_png_geometry_is_the_chaos_readers(chaos_sample):
    from SlicerEssNet.io.chaos import read_chaos_ct

    labels = evaluation.read_label_volume(chaos_sample / "Ground")
    _, liver = read_chaos_ct(chaos_sample)
    assert labels.same_geometry(liver) and np.array_equal(labels.array, liver.array)
    assert labels.spacing == pytest.approx((0.7265625, 0.7265625, 2.0))
    assert labels.origin == pytest.approx((-185.0, -98.0, 1690.5))  # the first DICOM file by name
    np.testing.assert_allclose(labels.direction, np.diag([1.0, 1.0, -1.0]))  # z falls with the file names


def test_a_nifti_prediction_in_position_order_scores_against_name_ordered_pngs(chaos_sample, tmp_path):
    # A prediction saved on the grid a position-sorting DICOM reader gives (k reversed against the CHAOS file
    # names): the same voxels, so it is matched exactly and scores the official numbers.
    from SlicerEssNet.io.volume_files import read_dicom_series, write_volume

    grid = read_dicom_series(chaos_sample / "DICOM_anon")
    assert grid.direction[2, 2] > 0  # GDCM sorted the slices by position: z rises with k
    sample = evaluation.read_label_volume(chaos_sample / "SampleSubmission", png_labels="binary")
    prediction = write_volume(grid.with_array(np.ascontiguousarray(sample.array[::-1])), tmp_path / "sample.nii.gz")
    result = evaluation.evaluate_files(prediction, chaos_sample / "Ground")
    assert (round(result["dice"], 3), round(result["ravd"], 3), round(result["assd"], 3)) == (0.978, 0.665, 0.734)
    assert result["mssd"] == pytest.approx(14.0, abs=1e-6)
    assert any("matched exactly" in note for note in result["notes"])


def test_png_folder_and_dicom_folder_of_different_lengths_are_refused(chaos_sample, tmp_path):
    masks = write_pngs(tmp_path / "Ground", [np.zeros((512, 512), np.uint8)] * 3)
    with pytest.raises(ChaosLayoutError, match="give the matching DICOM folder") as error:
        evaluation.read_label_volume(masks, geometry=chaos_sample / "DICOM_anon")
    assert "\n" not in str(error.value)
    # a PNG prediction lies on the reference's grid, so it must have the reference's slices
    with pytest.raises(ChaosLayoutError, match="78 slices") as error:
        evaluation.evaluate_files(masks, chaos_sample / "Ground")
    assert "the reference is 78 slices of 512x512" in str(error.value)


def test_a_png_prediction_elsewhere_takes_the_reference_geometry(chaos_sample, tmp_path):
    # the sample submission copied (in generated form) to a folder with no DICOM beside it
    sample = evaluation.read_label_volume(chaos_sample / "SampleSubmission")
    write_pngs(tmp_path / "submission", [(s * 63).astype(np.uint8) for s in sample.array])
    result = evaluation.evaluate_files(tmp_path / "submission", chaos_sample / "Ground")
    assert result["notes"] == [] and result["spacing"] == pytest.approx([0.7265625, 0.7265625, 2.0])
    assert round(result["assd"], 3) == 0.734


# --- label files ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chaos_mr_label(shared_data):
    path = shared_data / "chaos_mr_t2" / "mr_t2_01_label.nii.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def test_label_files_against_simpleitk(chaos_mr_label, tmp_path):
    # A prediction made from the real CHAOS MR labels (LAS, 1.25 x 1.25 x 7.7 mm): the liver eroded in-plane and
    # stored as 5 (TotalSegmentator's liver value), written as NRRD on exactly the reference grid.
    reference = sitk.ReadImage(str(chaos_mr_label))
    labels = sitk.GetArrayFromImage(reference)
    liver = labels == 1
    eroded = ndimage.binary_erosion(liver, structure=np.ones((1, 3, 3), bool))
    prediction = sitk.GetImageFromArray(np.where(eroded, 5, labels).astype(np.uint8))
    prediction.CopyInformation(reference)
    prediction_path = tmp_path / "prediction.nrrd"
    sitk.WriteImage(prediction, str(prediction_path))

    result = evaluation.evaluate_files(prediction_path, chaos_mr_label, label=5, ref_label=1)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(reference == 1, prediction == 5)
    assert result["dice"] == pytest.approx(overlap.GetDiceCoefficient(), abs=1e-12)
    assert result["iou"] == pytest.approx(overlap.GetJaccardCoefficient(), abs=1e-12)
    assert 0.8 < result["dice"] < 0.99
    assert result["ravd"] == pytest.approx(100 * (liver.sum() - eroded.sum()) / liver.sum())
    assert result["spacing"] == pytest.approx(list(reference.GetSpacing()))
    # the file's (i, j, k) spacing reaches the distances in the right order
    distances = metrics.surface_distances(eroded, liver, reference.GetSpacing())
    assert (result["assd"], result["mssd"], result["hd95"]) == (distances.assd, distances.mssd, distances.hd95)
    # a one-pixel in-plane erosion moves the border by at most one 1.25 mm pixel almost everywhere (borders that
    # also face a neighbouring slice stay put, at 0), so the mean is under a pixel and HD95 under a 7.7 mm slice
    assert 0 < result["assd"] < 1.25 and 0 < result["hd95"] < 7.7
    # an untouched organ scores perfectly
    kidney = evaluation.evaluate_files(prediction_path, chaos_mr_label, label=2)
    assert (kidney["dice"], kidney["assd"], kidney["mssd"], kidney["ravd"]) == (1.0, 0.0, 0.0, 0.0)


def test_label_files_on_different_grids_are_refused(chaos_mr_label, tmp_path):
    reference = sitk.ReadImage(str(chaos_mr_label))
    shifted = sitk.Image(reference)
    shifted.SetOrigin(tuple(np.add(reference.GetOrigin(), (0.0, 0.0, 7.7))))
    path = tmp_path / "shifted.nii.gz"
    sitk.WriteImage(shifted, str(path))
    with pytest.raises(InputImageError, match="resample the prediction onto the reference grid") as error:
        evaluation.evaluate_files(path, chaos_mr_label)
    assert "origin" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(InputImageError, match="does not exist"):
        evaluation.evaluate_files(tmp_path / "missing.nii.gz", chaos_mr_label)


# --- PNG encodings ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["1-bit", "0/255", "0/63"])
def test_binary_png_folders_in_every_chaos_encoding(tmp_path, encoding):
    pred, ref = two_blobs()
    scale = {"1-bit": 255, "0/255": 255, "0/63": 63}[encoding]  # 1-bit: 255 saved in mode "1" reads back True
    mode = "1" if encoding == "1-bit" else None
    write_pngs(tmp_path / "Ground", [(s * 255).astype(np.uint8) for s in ref], mode="1")
    write_pngs(tmp_path / "Prediction", [(s * scale).astype(np.uint8) for s in pred], mode=mode)
    result = evaluation.evaluate_files(tmp_path / "Prediction", tmp_path / "Ground")
    assert result["dice"] == pytest.approx(metrics.dice(pred, ref), abs=1e-12)
    assert result["assd"] == pytest.approx(metrics.assd(pred, ref), abs=1e-12)
    assert result["spacing"] == [1.0, 1.0, 1.0]
    assert any("unit spacing, distances in voxels" in note for note in result["notes"])


def test_chaos_mr_png_values_map_to_organ_labels(tmp_path):
    rng = np.random.default_rng(1)
    organs = rng.integers(0, 5, size=(3, 20, 24))
    # CHAOS MR masks: liver 63, kidneys 126 and 189, spleen 252, each anywhere inside its documented range
    ranges = {1: (55, 70), 2: (110, 135), 3: (175, 200), 4: (240, 255)}
    pixels = np.zeros(organs.shape, np.uint8)
    for label, (low, high) in ranges.items():
        pixels[organs == label] = rng.integers(low, high + 1, size=int((organs == label).sum()))
    folder = write_pngs(tmp_path / "Ground", list(pixels))
    np.testing.assert_array_equal(evaluation.read_label_volume(folder).array, organs)
    # explicit ranges and explicit binary reading
    np.testing.assert_array_equal(evaluation.read_label_volume(folder, png_labels={7: (1, 255)}).array,
                                  np.where(organs > 0, 7, 0))
    np.testing.assert_array_equal(evaluation.read_label_volume(folder, png_labels="binary").array, organs > 0)
    pixels[0, 0, 0] = 90  # between the liver and right-kidney ranges
    stray = write_pngs(tmp_path / "Stray", list(pixels))
    with pytest.raises(InputImageError, match="outside the label ranges") as error:
        evaluation.read_label_volume(stray)
    assert "\n" not in str(error.value)


def test_unusable_png_folders_are_refused(tmp_path):
    mixed = write_pngs(tmp_path / "Mixed", [np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8)])
    with pytest.raises(InputImageError, match="same size"):
        evaluation.read_label_volume(mixed)
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[2, 2] = (255, 0, 0)
    with pytest.raises(InputImageError, match="colour image"):
        evaluation.read_label_volume(write_pngs(tmp_path / "Colour", [colour]))
    grey_rgb = np.repeat((np.eye(8, dtype=np.uint8) * 255)[..., None], 3, axis=2)
    assert evaluation.read_label_volume(write_pngs(tmp_path / "GreyRGB", [grey_rgb])).array.sum() == 8
    broken = tmp_path / "Broken"
    broken.mkdir()
    (broken / "slice_000.png").write_bytes(b"not a png")
    with pytest.raises(InputImageError, match="not a readable PNG"):
        evaluation.read_label_volume(broken)
    with pytest.raises(InputImageError, match="png_labels"):
        evaluation.read_label_volume(mixed.parent / "GreyRGB", png_labels="organs")


# --- reports -----------------------------------------------------------------------------------------------------------
def cases_of(tmp_path):
    pred, ref = two_blobs()
    write_pngs(tmp_path / "Ground", [(s * 255).astype(np.uint8) for s in ref])
    write_pngs(tmp_path / "Good", [(s * 255).astype(np.uint8) for s in pred])
    write_pngs(tmp_path / "Empty", [np.zeros(ref.shape[1:], np.uint8) for _ in ref])
    return [evaluation.evaluate_files(tmp_path / name, tmp_path / "Ground") for name in ("Good", "Ground", "Empty")]


def test_table_rows_summaries_and_notes(tmp_path):
    good, perfect, empty = cases_of(tmp_path)
    single = evaluation.format_table(good).splitlines()
    assert single[0].split()[:3] == ["case", "Dice", "IoU"] and set(single[1]) == {"-", " "}
    assert single[2].split()[1] == f"{good['dice']:.4f}" and single[2].split()[-1] == str(good["ref_voxels"])
    assert single[3].startswith("note (")

    lines = evaluation.format_table([good, perfect, empty]).splitlines()
    table = lines[:7]  # header, rule, 3 cases, mean, sd; then pooled (Dice and IoU only)
    assert len({len(line) for line in table}) == 1  # columns aligned
    assert lines[7].startswith("pooled") and len(lines[7]) < len(table[0])
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:8]}
    assert rows["mean"][0] == f"{np.mean([good['dice'], 1.0, 0.0]):.4f}"
    assert rows["sd"][0] == f"{np.std([good['dice'], 1.0, 0.0], ddof=1):.4f}"
    assert rows["mean"][-1] == f"{good['ref_voxels']:.0f}"
    # the mean ASSD leaves out the empty case's inf, and says so
    assert rows["mean"][3] == f"{np.mean([good['assd'], 0.0]):.3f}"
    assert any("ASSD mm mean and sd leave out 1 case" in line for line in lines)
    assert str(tmp_path / "Empty") in " ".join(table) and "inf" in " ".join(table)
    pooled = metrics.OverlapCounts(good["tp"], good["fp"], good["fn"]) + metrics.OverlapCounts(
        perfect["tp"], 0, 0) + metrics.OverlapCounts(0, 0, empty["fn"])
    assert rows["pooled"][:2] == [f"{pooled.dice:.4f}", f"{pooled.iou:.4f}"]


def test_json_is_strict_and_written_atomically(tmp_path, monkeypatch):
    results = cases_of(tmp_path)
    target = tmp_path / "report.json"
    text = evaluation.to_json(results, target)
    assert target.read_text() == text

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    loaded = json.loads(text, parse_constant=refuse)
    assert loaded[0]["dice"] == pytest.approx(results[0]["dice"]) and loaded[2]["assd"] is None
    assert loaded[2]["notes"] and loaded[1]["spacing"] == [1.0, 1.0, 1.0]
    with pytest.raises(OutputPathError):
        evaluation.to_json(results, tmp_path / "missing" / "report.json")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["report.json"]

    # A disk that fills up halfway through writing the next report: the previous one must still be there, whole.
    written = []

    def disk_full_halfway(self, data, *args, **kwargs):
        with open(self, "w", encoding="utf-8") as stream:
            stream.write(data[: len(data) // 2])
        written.append(Path(self))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patched:
        patched.setattr(Path, "write_text", disk_full_halfway)
        with pytest.raises((OSError, OutputPathError)):
            evaluation.to_json(results[:1], target)
    assert written, "the report is written with Path.write_text: the failure above must have happened midway"
    assert target.read_text() == text and json.loads(target.read_text()) == loaded
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["report.json"]  # no half-written temporary
