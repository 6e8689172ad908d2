"""Which patients exist, how each is read, and the seeded patient-level split (never slice-level).

Real data (``../shared/data``): CT = BTCV (``btcv_ct``) plus any CHAOS CT folder (``chaos_ct_sample``), liver 0/1;
MR = CHAOS T2-SPIR (``chaos_mr_t2``), liver = label 1. CT and MR patients are different people (unpaired).
Phantoms (``demo``): the same layout, generated into the run folder.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
CHAOS_OTHER_ORGANS = (2, 3, 4)  # right kidney, left kidney, spleen (the phantoms use the same values)


@dataclass(frozen=True)
class Case:
    """One patient volume with its liver label."""

    patient: str
    modality: str  # "CT" or "MR"
    image: str  # a file, or a CHAOS CT folder when ``reader == "chaos_ct"``
    label: Optional[str] = None
    reader: str = "file"  # "file" (read_volume) or "chaos_ct" (read_chaos_ct)
    liver_value: int = 1
    source: str = ""
    # Label values of the other organs the label file marks (CHAOS MR: right kidney 2, left kidney 3, spleen 4),
    # in the order of the auxiliary organ head's classes 1, 2, ...; empty: the label marks the liver only.
    other_organs: tuple = ()

    def to_dict(self) -> dict:
        return asdict(self)


def load_case(case: Case, other_organs: bool = False):
    """``(image, liver)`` Volumes on the same grid; ``liver`` is uint8 0/1. ``other_organs``: a third Volume from
    the same label read, the case's other organs (uint8, 0 none, k = ``case.other_organs[k - 1]``), or None when
    its label marks the liver only."""
    import numpy as np

    if case.reader == "chaos_ct":
        from SlicerEssNet.io.chaos import read_chaos_ct

        image, label = read_chaos_ct(case.image)
    else:
        from SlicerEssNet.io.volume_files import read_volume

        image = read_volume(case.image)
        label = read_volume(case.label)
    values = np.asarray(label.array)
    liver = image.with_array((values == case.liver_value).astype(np.uint8))
    if not other_organs:
        return image, liver
    if not case.other_organs:
        return image, liver, None
    organs = np.zeros(values.shape, dtype=np.uint8)
    for number, value in enumerate(case.other_organs, start=1):
        organs[values == value] = number
    return image, liver, image.with_array(organs)


def real_cases(data_root=None) -> dict:
    """``{"CT": [...], "MR": [...]}`` found under the shared data folder (empty lists when absent)."""
    root = Path(data_root) if data_root else DEFAULT_DATA_ROOT
    ct, mr = [], []
    for image in sorted((root / "btcv_ct").glob("ct_??.nii.gz")):
        label = image.with_name(image.name.replace(".nii.gz", "_liver.nii.gz"))
        if label.exists():
            ct.append(Case(f"btcv_{image.name[3:5]}", "CT", str(image), str(label), source="BTCV"))
    for folder in sorted(root.glob("chaos_ct*")):
        if (folder / "DICOM_anon").is_dir() and (folder / "Ground").is_dir():
            ct.append(Case(f"chaos_{folder.name}", "CT", str(folder), None, reader="chaos_ct", source="CHAOS CT"))
    for image in sorted((root / "chaos_mr_t2").glob("mr_t2_??.nii.gz")):
        label = image.with_name(image.name.replace(".nii.gz", "_label.nii.gz"))
        if label.exists():
            mr.append(Case(f"chaos_mr_{image.name[6:8]}", "MR", str(image), str(label), source="CHAOS MR T2-SPIR",
                           other_organs=CHAOS_OTHER_ORGANS))
    return {"CT": ct, "MR": mr}


def phantom_cases(folder, n_ct: int, n_mr: int, seed: int = 0) -> dict:
    from .phantoms import write_phantom_set

    written = write_phantom_set(folder, n_ct, n_mr, seed)
    return {
        "CT": [Case(f"phantom_ct_{i:02d}", "CT", str(a), str(b), source="phantom") for i, (a, b) in
               enumerate(written["CT"])],
        "MR": [Case(f"phantom_mr_{i:02d}", "MR", str(a), str(b), source="phantom",
                    other_organs=CHAOS_OTHER_ORGANS) for i, (a, b) in
               enumerate(written["MR"])],
    }


def split_patients(cases: list, n_val: int, seed: int) -> dict:
    """Seeded patient-level split into ``train`` and ``val`` (lists of patient ids, sorted)."""
    patients = sorted({case.patient for case in cases})
    if n_val >= len(patients):
        raise ValueError(f"cannot hold out {n_val} of {len(patients)} patients: lower the validation count")
    shuffled = patients[:]
    random.Random(seed).shuffle(shuffled)
    return {"train": sorted(shuffled[n_val:]), "val": sorted(shuffled[:n_val])}


def low_data_subset(train_patients: list, count: int, seed: int) -> list:
    """The ``count`` real MR patients of the low-data arms: a seeded subset of the training patients."""
    shuffled = sorted(train_patients)
    random.Random(seed + 101).shuffle(shuffled)
    return sorted(shuffled[: min(count, len(shuffled))])


def make_split(cases: dict, ct_val: int, mr_val: int, low_data: int, seed: int) -> dict:
    ct = split_patients(cases["CT"], ct_val, seed)
    mr = split_patients(cases["MR"], mr_val, seed)
    return {"seed": seed, "CT": ct, "MR": mr, "MR_low_data": low_data_subset(mr["train"], low_data, seed)}


def select(cases: list, patients: list) -> list:
    wanted = set(patients)
    return [case for case in cases if case.patient in wanted]
