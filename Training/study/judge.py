"""The fixed judge of synthetic MR: shape consistency without paired truth (SynSeg-Net's idea).

The judge is the MR liver U-Net shipped before the long synthesis run (``Training/judge/``, a byte-identical
copy, so git stores it once). It stays the judge when a newer U-Net is shipped, so shape consistency compares
across runs: the judge reads the synthetic MR of a CT patient, and its liver is scored against the CT liver label.
"""
from __future__ import annotations

from pathlib import Path

JUDGE = Path(__file__).resolve().parents[1] / "judge" / "liver-unet-mr.safetensors"


def load_judge():
    from SlicerEssNet.weights import load_model

    return load_model(JUDGE)


def synthetic_mr(generator, ct):
    """The synthetic MR of ``ct`` (a Volume) as users get it: the core engine at its default precision."""
    import warnings

    from SlicerEssNet.pipeline import run_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_model(ct, generator, device="cpu")


def judged_liver(judge, mr):
    """The judge's liver on ``mr`` (uint8 0/1), the largest component, as ``segment`` gives users."""
    import warnings

    from SlicerEssNet.pipeline import keep_largest_component, run_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labels = run_model(mr, judge, device="cpu", allow_modality_mismatch=True)
    return keep_largest_component(labels.array) == 1


def shape_consistency(generator, judge, volumes: dict, keep: dict = None) -> dict:
    """Per patient and mean 3D Dice of the judge's liver on the synthetic MR against the CT liver label.

    ``volumes``: patient -> (CT Volume, liver Volume). ``keep``: a dict that receives each patient's synthetic MR.
    """
    import numpy as np

    from SlicerEssNet.metrics import dice

    per_patient = {}
    for patient, (ct, liver) in volumes.items():
        mr = synthetic_mr(generator, ct)
        per_patient[patient] = float(dice(judged_liver(judge, mr), liver.array == 1))
        if keep is not None:
            keep[patient] = mr
    values = list(per_patient.values())
    return {"mean": float(np.mean(values)), "min": float(np.min(values)), "per_patient": per_patient}
