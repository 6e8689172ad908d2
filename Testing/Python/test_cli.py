"""``python -m SlicerEssNet`` as a user runs it: real files in, exact geometry out, one-line errors, exit codes."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from SlicerEssNet.weights import create_untrained_model

from conftest import REPO


def run_cli(*args, env_extra=None, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "SlicerEssNet", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("torch")  # the models need torch; `evaluate` runs without it
    folder = tmp_path_factory.mktemp("tiny")
    create_untrained_model("synthesis", folder / "tiny_ct2mr", width=4)
    create_untrained_model("segmentation", folder / "tiny_liver", width=4)
    return {"synthesis": folder / "tiny_ct2mr.safetensors", "segmentation": folder / "tiny_liver.safetensors"}


def assert_same_geometry(a_path, b_path):
    a, b = sitk.ReadImage(str(a_path)), sitk.ReadImage(str(b_path))
    assert a.GetSize() == b.GetSize()
    assert a.GetSpacing() == b.GetSpacing()
    assert a.GetOrigin() == b.GetOrigin()
    assert a.GetDirection() == b.GetDirection()


@pytest.mark.data
def test_synthesize_and_segment_keep_the_input_geometry_exactly(shared_data, tiny, tmp_path):
    """The 'done when' of the core issue, verbatim."""
    ct = shared_data / "totalseg_examples" / "example_ct_sm.nii.gz"
    mr = shared_data / "totalseg_examples" / "example_mr_sm.nii.gz"
    out_mr = tmp_path / "out.nii.gz"
    done = run_cli("synthesize", ct, out_mr, "--model", tiny["synthesis"], "--quiet")
    assert done.returncode == 0, done.stderr
    assert_same_geometry(ct, out_mr)
    assert sitk.ReadImage(str(out_mr)).GetPixelID() == sitk.sitkFloat32

    out_label = tmp_path / "liver.nrrd"
    done = run_cli("segment", mr, out_label, "--model", tiny["segmentation"])
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stderr and "ETA" not in done.stderr.splitlines()[-1]
    assert_same_geometry(mr, out_label)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out_label)))
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1}


@pytest.mark.data
def test_segment_takes_test_time_augmentation_and_synthesize_does_not(shared_data, tiny, tmp_path):
    mr = shared_data / "totalseg_examples" / "example_mr_sm.nii.gz"
    done = run_cli("segment", mr, tmp_path / "liver.nii.gz", "--model", tiny["segmentation"], "--quiet", "--tta")
    assert done.returncode == 0, done.stderr
    assert "test-time augmentation" in done.stderr  # the report's note says the views were averaged
    assert_same_geometry(mr, tmp_path / "liver.nii.gz")
    refused = run_cli("synthesize", mr, tmp_path / "mr.nii.gz", "--model", tiny["synthesis"], "--tta")
    assert refused.returncode == 2 and "--tta" in refused.stderr and not (tmp_path / "mr.nii.gz").exists()


@pytest.mark.data
def test_preview_shows_input_and_result_side_by_side(shared_data, tiny, tmp_path):
    from PIL import Image

    mr = shared_data / "chaos_mr_t2" / "mr_t2_01.nii.gz"
    done = run_cli("segment", mr, tmp_path / "liver.nii.gz", "--model", tiny["segmentation"], "--quiet", "--preview")
    assert done.returncode == 0, done.stderr
    picture = np.asarray(Image.open(tmp_path / "liver_preview.png"))
    assert picture.ndim == 3 and picture.shape[2] == 3
    # Three rows of two panels; the 1.25 mm in-plane pixels are square, so each panel is as wide as it is tall.
    assert picture.shape[1] == 2 * 256 + 4 and picture.shape[0] == 3 * 256 + 2 * 4
    left = picture[:256, :256].astype(int)
    assert left.std() > 10  # the MR itself, not a blank panel


@pytest.mark.data
def test_segment_from_ct_goes_through_synthetic_mr_and_a_plain_ct_is_told_how(shared_data, tiny, tmp_path):
    """--from-ct chains the CT -> MR model before the liver U-Net (as the Liver Segmentation module's *input is CT*
    does), in memory; the labels lie on the CT's grid. A CT given without it is refused, naming the option."""
    ct = shared_data / "totalseg_examples" / "example_ct_sm.nii.gz"
    out = tmp_path / "liver.nii.gz"
    refused = run_cli("segment", ct, out, "--model", tiny["segmentation"])
    assert refused.returncode == 1 and "looks like CT" in refused.stderr and "--from-ct" in refused.stderr
    assert not out.exists()
    done = run_cli("segment", ct, out, "--model", tiny["segmentation"], "--from-ct",
                   "--synthesis-model", tiny["synthesis"])
    assert done.returncode == 0, done.stderr
    assert "example_ct_sm.nii.gz CT -> MR" in done.stderr and "example_ct_sm.nii.gz liver" in done.stderr
    assert "(30 slices, tiny_ct2mr -> tiny_liver," in done.stderr
    assert_same_geometry(ct, out)
    assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(out))))) <= {0, 1}
    usage = run_cli("segment", ct, tmp_path / "other.nii.gz", "--synthesis-model", tiny["synthesis"])
    assert usage.returncode == 2 and "add --from-ct" in usage.stderr and not (tmp_path / "other.nii.gz").exists()


def test_the_set_up_venv_runs_the_cli_from_any_folder(tmp_path):
    """scripts/install.sh puts the checkout on the venv's path: `python -m SlicerEssNet` works in a cohort's own
    folder, with no PYTHONPATH."""
    import sysconfig
    from pathlib import Path

    line = Path(sysconfig.get_paths()["purelib"]) / "slicer_essnet_checkout.pth"
    if not line.is_file():
        pytest.skip("this interpreter was not set up by scripts/install.sh (no slicer_essnet_checkout.pth)")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", "SlicerEssNet", "models", "list"], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and "liver-unet-mr" in done.stdout, done.stderr


def test_a_folder_of_volumes_is_a_cohort(shared_data, tiny, tmp_path):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    source = sitk.ReadImage(str(shared_data / "totalseg_examples" / "example_ct_sm.nii.gz"))
    for name in ("a.nii.gz", "b.nrrd"):
        sitk.WriteImage(source[:, :, :4], str(cohort / name))
    (cohort / "notes.txt").write_text("not an image")
    done = run_cli("synthesize", cohort, tmp_path / "out", "--model", tiny["synthesis"], "--quiet")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_synthetic_mr.nii.gz", "b_synthetic_mr.nii.gz"]


def test_bad_input_gives_one_line_exit_1_and_no_output(tiny, tmp_path):
    not_an_image = tmp_path / "scan.nii.gz"
    not_an_image.write_text("hello")
    out = tmp_path / "out.nii.gz"
    done = run_cli("synthesize", not_an_image, out, "--model", tiny["synthesis"])
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.nii.gz*"))

    missing = run_cli("segment", tmp_path / "nope.nii.gz", out, "--model", tiny["segmentation"])
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_wrong_task_model_and_usage_errors(tiny, tmp_path):
    volume = tmp_path / "v.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(3, 16, 16)).astype(np.float32)), str(volume))
    wrong = run_cli("segment", volume, tmp_path / "o.nii.gz", "--model", tiny["synthesis"])
    assert wrong.returncode == 1 and "not a segmentation model" in wrong.stderr
    usage = run_cli("segment")
    assert usage.returncode == 2
    unknown_device = run_cli("segment", volume, tmp_path / "o.nii.gz", "--model", tiny["segmentation"], "--device", "tpu")
    assert unknown_device.returncode == 1 and "unknown device" in unknown_device.stderr
    assert not (tmp_path / "o.nii.gz").exists()


def test_an_output_folder_that_does_not_exist_is_one_error_line_and_exit_1(tiny, tmp_path):
    """An MR-like volume the tiny model segments without complaint, so the only thing wrong is the output folder
    (a constant volume, as before, was refused for being constant and never reached the output)."""
    volume = tmp_path / "v.nii.gz"
    array = (300 + 50 * np.random.default_rng(1).standard_normal((2, 32, 32))).clip(0, None).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.5, 5.0))
    sitk.WriteImage(image, str(volume))
    folder = tmp_path / "no" / "such" / "dir"
    done = run_cli("segment", volume, folder / "o.nii.gz", "--model", tiny["segmentation"], "--device", "cpu",
                   "--quiet")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1
    assert lines == [f"error: output folder {folder} does not exist: create it or choose another output path"], \
        done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.nii.gz"]


@pytest.mark.data
def test_evaluate_prints_a_table_and_writes_json(shared_data, tmp_path):
    """A prediction that is the reference's label 5 moved by two voxels (and relabelled 1), scored against the
    reference: the overlap counted here with numpy is what the CLI must report."""
    import json

    seg = shared_data / "totalseg_examples" / "example_seg.nii.gz"
    reference = sitk.ReadImage(str(seg))
    truth = sitk.GetArrayFromImage(reference) == 5
    moved = np.zeros_like(truth)
    moved[:, 2:, :] = truth[:, :-2, :]
    assert truth.any() and not np.array_equal(moved, truth)
    prediction = sitk.GetImageFromArray(moved.astype(np.uint8))
    prediction.CopyInformation(reference)
    sitk.WriteImage(prediction, str(tmp_path / "pred.nii.gz"))
    report = tmp_path / "scores.json"
    done = run_cli("evaluate", tmp_path / "pred.nii.gz", seg, "--label", "1", "--reference-label", "5",
                   "--json", report)
    assert done.returncode == 0, done.stderr
    tp = int(np.count_nonzero(moved & truth))
    fp, fn = int(np.count_nonzero(moved & ~truth)), int(np.count_nonzero(~moved & truth))
    dice, iou = 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)
    assert 0.05 < dice < 0.999  # a real, partial overlap
    scores = json.loads(report.read_text())
    flat = scores if isinstance(scores, dict) else scores[0]
    assert (flat["tp"], flat["fp"], flat["fn"]) == (tp, fp, fn)
    assert flat["dice"] == pytest.approx(dice, abs=1e-12) and flat["iou"] == pytest.approx(iou, abs=1e-12)
    voxel_ml = float(np.prod(reference.GetSpacing())) / 1000.0
    assert flat["ref_ml"] == pytest.approx(np.count_nonzero(truth) * voxel_ml, rel=1e-9)
    assert flat["ravd"] == pytest.approx(abs(int(moved.sum()) - int(truth.sum())) / truth.sum() * 100.0, abs=1e-9)
    case = str(tmp_path / "pred.nii.gz")
    row = next(line.split() for line in done.stdout.splitlines() if line.split()[:1] == [case])
    assert row[1:3] == [f"{dice:.4f}", f"{iou:.4f}"]  # the table's Dice and IoU columns


def test_models_commands_use_the_cache_named_by_the_environment(tiny, tmp_path):
    env = {"SLICERESSNET_HOME": str(tmp_path / "home")}
    done = run_cli("models", "import", tiny["segmentation"], env_extra=env)
    assert done.returncode == 0, done.stderr
    listed = run_cli("models", "list", env_extra=env)
    assert listed.returncode == 0 and "tiny" in listed.stdout
    path = run_cli("models", "path", env_extra=env)
    assert str(tmp_path / "home") in path.stdout

