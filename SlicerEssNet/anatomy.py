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
# Chosen from the data (docs/results/ship/REPORT.md, "anatomy kept"): on the 5 held-out CT patients the shipped
# CT -> MR model keeps 0.85-0.93 where its synthetic MR shows the liver well, and 0.70 on the one where it lost part
# of it (btcv_17); the model shipped before fell to 0.41-0.45 where it lost the liver. TotalSegmentator's example CT: 0.92.
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
