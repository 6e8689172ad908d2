"""Scores, computed the way a user gets results: the core pipeline runs the network over the whole volume on
its native grid (same engine, grid and preprocessing as the CLI and the Slicer modules), then the core's metrics
score it: pooled 2D Dice/IoU over every validation slice (the paper's form) and per-volume 3D Dice, RAVD, ASSD,
MSSD (CHAOS)."""
from __future__ import annotations

import copy
import math
import warnings

import numpy as np

from ..data.cohorts import load_case

PER_VOLUME = ("dice", "iou", "ravd", "assd", "mssd", "hd95")


def as_loaded_model(network, card):
    """An in-memory ``LoadedModel`` (a copy of the network, so inference never touches the training one)."""
    from SlicerEssNet.weights import LoadedModel

    return LoadedModel(card, copy.deepcopy(network).float().eval(), None)


def predict(loaded, volume, allow_modality_mismatch: bool = False, test_time_augmentation: bool = False):
    from SlicerEssNet.pipeline import keep_largest_component, run_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_model(volume, loaded, device="cpu", precision="fp32",
                           allow_modality_mismatch=allow_modality_mismatch,
                           test_time_augmentation=test_time_augmentation)
    if loaded.card.task == "segmentation":
        # What ``pipeline.segment`` gives users: the liver is one organ, stray islands are dropped.
        result = result.with_array(keep_largest_component(result.array))
    return result


def score_segmentation(loaded, cases, volumes=None, allow_modality_mismatch: bool = False,
                       test_time_augmentation: bool = False) -> dict:
    """Pooled and per-volume liver scores of ``loaded`` over ``cases``; ``volumes`` caches (image, liver) pairs;
    ``test_time_augmentation``: as ``--tta`` gives them."""
    from SlicerEssNet.metrics import evaluate, pooled_dice_iou

    per_volume, pairs = {}, []
    for case in cases:
        image, liver = volumes[case.patient] if volumes is not None else load_case(case)
        prediction = predict(loaded, image, allow_modality_mismatch, test_time_augmentation)
        scores = evaluate(prediction, liver, label=1)
        per_volume[case.patient] = {key: scores[key] for key in PER_VOLUME + ("pred_ml", "ref_ml")}
        pairs.append((prediction.array == 1, liver.array == 1))
    pooled_dice, pooled_iou = pooled_dice_iou(pairs)
    return {"pooled_dice_2d": pooled_dice, "pooled_iou_2d": pooled_iou, "per_volume": per_volume,
            **{f"mean_{key}": finite_mean([v[key] for v in per_volume.values()]) for key in PER_VOLUME}}


def mean_volume_dice(loaded, cases, volumes=None) -> float:
    """Model selection score: mean per-volume 3D Dice on the validation patients."""
    from SlicerEssNet.metrics import dice

    scores = []
    for case in cases:
        image, liver = volumes[case.patient] if volumes is not None else load_case(case)
        prediction = predict(loaded, image)
        scores.append(dice(prediction.array == 1, liver.array == 1))
    return float(np.mean(scores))


def finite_mean(values) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else float("nan")


def mean_sd(values) -> dict:
    """``{"mean", "sd", "n"}`` over seeds (sd with n-1; 0 for a single seed)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    sd = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return {"mean": float(np.mean(finite)), "sd": sd, "n": len(finite)}
