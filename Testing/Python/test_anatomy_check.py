"""Anatomy kept: after CT -> MR the liver on the CT (liver-unet-ct) and on the synthetic MR (liver-unet-mr) are
compared; the CLI prints their Dice, a low one gives a warning that says what to check."""
from __future__ import annotations

import math

import numpy as np
import pytest

from SlicerEssNet.anatomy import WARN_BELOW, AnatomyCheck, anatomy_dice, liver_ml

from test_cli import run_cli


def test_dice_and_volume_against_hand_counts():
    ct = np.zeros((2, 4, 4), np.uint8)
    mr = np.zeros((2, 4, 4), np.uint8)
    ct[0, :2, :2] = 1  # 4 voxels
    mr[0, :2, :] = 1  # 8 voxels, 4 shared
    assert anatomy_dice(ct, mr) == pytest.approx(2 * 4 / (4 + 8))
    assert liver_ml(mr, (2.0, 1.5, 3.0)) == pytest.approx(8 * 9.0 / 1000.0)
    assert math.isnan(anatomy_dice(ct * 0, mr * 0))


def test_warning_below_the_threshold_only():
    kept = AnatomyCheck(WARN_BELOW + 0.01, 1500.0, 1480.0)
    lost = AnatomyCheck(WARN_BELOW - 0.01, 1500.0, 600.0)
    assert kept.warning() is None and not kept.low
    assert lost.low and f"only to Dice {WARN_BELOW - 0.01:.2f}" in lost.warning()
    assert "whole liver in view" in lost.warning()
    assert "no liver" in AnatomyCheck(float("nan"), 0.0, 0.0).warning()


@pytest.mark.data
def test_core_check_equals_two_independent_segmentations(shared_data):
    pytest.importorskip("torch")
    from SlicerEssNet.pipeline import check_anatomy, segment, synthesize
    from SlicerEssNet.io.volume_files import read_volume

    ct = read_volume(shared_data / "totalseg_examples" / "example_ct_sm.nii.gz")
    mr = synthesize(ct, device="cpu")
    check = check_anatomy(ct, mr, device="cpu")
    ct_liver = segment(ct, "liver-unet-ct", device="cpu").array == 1
    mr_liver = segment(mr, "liver-unet-mr", device="cpu", allow_modality_mismatch=True).array == 1
    expected = 2.0 * np.logical_and(ct_liver, mr_liver).sum() / (ct_liver.sum() + mr_liver.sum())
    assert check.dice == pytest.approx(expected, abs=1e-12)
    assert check.ct_liver_ml == pytest.approx(ct_liver.sum() * np.prod(ct.spacing) / 1000.0)
    assert check.mr_liver_ml == pytest.approx(mr_liver.sum() * np.prod(ct.spacing) / 1000.0)


@pytest.mark.data
def test_cli_prints_the_check_and_warns_when_the_translation_lost_the_liver(shared_data, tiny, tmp_path):
    ct = shared_data / "totalseg_examples" / "example_ct_sm.nii.gz"
    done = run_cli("synthesize", ct, tmp_path / "mr.nii.gz", "--quiet", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "anatomy kept: liver Dice" in done.stderr and "liver-unet-ct" in done.stderr
    # An untrained generator keeps no liver: the check must say so, and the output is still written.
    done = run_cli("synthesize", ct, tmp_path / "bad.nii.gz", "--quiet", "--device", "cpu",
                   "--model", tiny["synthesis"])
    assert done.returncode == 0, done.stderr
    assert "warning: example_ct_sm.nii.gz:" in done.stderr and "may not keep the anatomy" in done.stderr \
        or "found no liver" in done.stderr
    assert (tmp_path / "bad.nii.gz").exists()
    done = run_cli("synthesize", ct, tmp_path / "off.nii.gz", "--quiet", "--device", "cpu", "--no-anatomy-check")
    assert done.returncode == 0 and "anatomy" not in done.stderr


@pytest.mark.data
def test_segment_from_ct_reports_the_check_too(shared_data, tmp_path):
    ct = shared_data / "totalseg_examples" / "example_ct_sm.nii.gz"
    done = run_cli("segment", ct, tmp_path / "liver.nii.gz", "--from-ct", "--quiet", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "anatomy kept: liver Dice" in done.stderr


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("torch")
    from SlicerEssNet.weights import create_untrained_model

    folder = tmp_path_factory.mktemp("tiny")
    create_untrained_model("synthesis", folder / "tiny_ct2mr", width=4)
    return {"synthesis": folder / "tiny_ct2mr.safetensors"}
