"""The check beyond the validation patients: U-Nets on TotalSegmentator's T1-like example MR, scored against its
liver outline, and how the report shows it."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from Training.study.other_mr import other_mr_case, score_other_mr
from Training.study.report import _other_mr_lines


def test_other_mr_case_reads_the_liver_of_the_outline(shared_data):
    image, liver = other_mr_case(shared_data)
    outline = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "totalseg_examples/example_seg_mr.nii.gz")))
    assert image.array.shape == liver.array.shape == outline.shape
    assert set(np.unique(liver.array)) == {0, 1}
    assert int(liver.array.sum()) == int((outline == 5).sum()) > 10000  # label 5 alone, not the other organs
    assert other_mr_case(shared_data / "nowhere") is None


def test_scores_match_an_independent_overlap_filter(shared_data, repo_root, tmp_path):
    from SlicerEssNet.weights import load_model
    from Training.study.evaluate import predict

    loaded = load_model(repo_root / "SlicerEssNet" / "models" / "liver-unet-mr.safetensors")
    case = other_mr_case(shared_data)
    sheet = tmp_path / "other_mr.png"
    scores = score_other_mr(case, {"0": {"real": loaded.network}}, lambda seed: loaded.card, sheet=sheet)
    assert sheet.stat().st_size > 1000  # the figure of the outlines
    entry = scores["real"]
    assert set(entry) == {"per_seed", "dice", "assd"} and entry["dice"]["n"] == 1
    prediction = predict(loaded, case[0])
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(sitk.GetImageFromArray(case[1].array.astype(np.uint8)),
                    sitk.GetImageFromArray((prediction.array == 1).astype(np.uint8)))
    assert entry["per_seed"]["0"]["dice"] == pytest.approx(overlap.GetDiceCoefficient(), abs=1e-9)
    assert entry["dice"]["mean"] == entry["per_seed"]["0"]["dice"]


def test_report_lists_every_arm_and_names_the_shipped_one():
    stat = {"mean": 0.69, "sd": 0.08, "n": 3}
    results = {"seeds": [0, 1, 2], "split": {"MR_low_data": ["a"] * 5}, "shipped_arm": "real+ct",
               "other_mr": {"real": {"dice": {"mean": 0.23, "sd": 0.1, "n": 3}, "assd": stat},
                            "real+ct": {"dice": stat, "assd": stat}}}
    text = "\n".join(_other_mr_lines(results, ["other_mr.png"]))
    assert "| real MR only | 0.230 ± 0.100 |" in text
    assert "| real MR + CT with random appearance (beyond the paper) | 0.690 ± 0.080 |" in text
    assert "mean ± sd over 3 seeds" in text and "arm real+ct" in text and "other_mr.png (seed 0)" in text
    assert _other_mr_lines({"other_mr": {}}) == []
