"""A check beyond the validation patients: the U-Nets on an MR of another contrast.

Every validation patient is CHAOS T2-SPIR, so model selection cannot see what a U-Net does on the other MR users
bring. The one other MR with a liver outline in the shared data is TotalSegmentator's example
(``totalseg_examples/example_mr_sm.nii.gz``, 20 slices at 3 mm, a T1-like contrast: bright fat, dark liver). Its
outline (label 5 of ``example_seg_mr.nii.gz``) is TotalSegmentator's prediction, not manual truth: a check of
robustness, scored and reported apart, never used to pick a checkpoint.
"""
from __future__ import annotations

from pathlib import Path

from .cohorts import DEFAULT_DATA_ROOT
from .evaluate import PER_VOLUME, as_loaded_model, mean_sd, predict

IMAGE = "totalseg_examples/example_mr_sm.nii.gz"
OUTLINE = "totalseg_examples/example_seg_mr.nii.gz"
LIVER = 5  # TotalSegmentator's class number for the liver


def other_mr_case(data_root=None):
    """``(image, liver)`` Volumes (liver 0/1), or None where the files are absent."""
    import numpy as np

    from SlicerEssNet.volume_io import read_volume

    root = Path(data_root) if data_root else DEFAULT_DATA_ROOT
    if not (root / IMAGE).exists() or not (root / OUTLINE).exists():
        return None
    outline = read_volume(root / OUTLINE)
    return read_volume(root / IMAGE), outline.with_array((outline.array == LIVER).astype(np.uint8))


def score_other_mr(case, networks_per_seed: dict, card_of) -> dict:
    """``{arm: {"per_seed": {seed: scores}, "dice": mean_sd, "assd": mean_sd}}`` for every U-Net given
    (``networks_per_seed``: ``{seed: {arm: network}}``; ``card_of(seed)``: the card it is run under)."""
    from SlicerEssNet.metrics import evaluate

    image, liver = case
    scores = {}
    for seed, networks in networks_per_seed.items():
        for arm, network in networks.items():
            prediction = predict(as_loaded_model(network, card_of(int(seed))), image)
            result = evaluate(prediction, liver, label=1)
            scores.setdefault(arm, {"per_seed": {}})["per_seed"][str(seed)] = {k: result[k] for k in PER_VOLUME}
    for arm, entry in scores.items():
        for key in ("dice", "assd"):
            entry[key] = mean_sd([s[key] for s in entry["per_seed"].values()])
    return scores
