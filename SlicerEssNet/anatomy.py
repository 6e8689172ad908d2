"""Anatomy kept: does the synthetic MR show the liver where the CT has it?

No paired MR exists in use, so the check compares two segmentations: the liver found on the CT itself
(``liver-unet-ct``) and the liver found on the synthetic MR (``liver-unet-mr``). Both lie on the CT's grid; their
Dice says how much of the liver's shape the translation kept. ``pipeline.check_anatomy`` computes it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

CT_LIVER_MODEL = "liver-unet-ct"
MR_LIVER_MODEL = "liver-unet-mr"
# Chosen from the data (Training/results/ship/REPORT.md): on the held-out CT patients the shipped models keep
# 0.87-0.94; the synthesis model before them fell to 0.48 on the patient where it lost the liver.
WARN_BELOW = 0.80


@dataclass
class AnatomyCheck:
    dice: float  # liver on the CT vs liver on the synthetic MR
    ct_liver_ml: float
    mr_liver_ml: float
    ct_model: str = CT_LIVER_MODEL
    mr_model: str = MR_LIVER_MODEL

    @property
    def low(self) -> bool:
        return not self.dice >= WARN_BELOW  # NaN (no liver on either) is low too

    def line(self) -> str:
        return (f"anatomy kept: liver Dice {self.dice:.2f} between the CT ({self.ct_model}, {self.ct_liver_ml:.0f} mL) "
                f"and the synthetic MR ({self.mr_model}, {self.mr_liver_ml:.0f} mL)")

    def warning(self) -> Optional[str]:
        if not self.low:
            return None
        if self.dice != self.dice:  # NaN
            return ("the anatomy check found no liver on the CT nor on the synthetic MR: check that the input is an "
                    "abdominal CT with the liver in view")
        return (f"the synthetic MR may not keep the anatomy: the liver found on it agrees with the liver found on "
                f"the CT only to Dice {self.dice:.2f} (below {WARN_BELOW:.2f}); check that the input is an "
                f"abdominal CT with the whole liver in view, and compare the two around the liver before using the "
                f"synthetic MR")

    def to_dict(self) -> dict:
        return asdict(self)


def liver_ml(labels, spacing) -> float:
    """Liver volume in mL: voxels labelled 1 times the voxel volume (mm^3 / 1000)."""
    import numpy as np

    return float(np.count_nonzero(labels == 1) * float(np.prod(spacing)) / 1000.0)


def anatomy_dice(ct_liver, mr_liver) -> float:
    """Dice of two 0/1 label arrays on one grid; NaN when neither has any liver (nothing was compared)."""
    from .metrics import overlap_counts

    counts = overlap_counts(ct_liver == 1, mr_liver == 1)
    return counts.dice if counts.predicted + counts.reference else float("nan")
