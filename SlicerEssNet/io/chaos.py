"""The CHAOS challenge layout (Kavur et al. 2021): DICOM slices plus one PNG mask per slice.

    CT/<id>/DICOM_anon/i0000,0000b.dcm ...     CT/<id>/Ground/liver_GT_000.png ...   (1-bit, liver > 0)
    MR/<id>/T2SPIR/DICOM_anon/IMG-....dcm      MR/<id>/T2SPIR/Ground/IMG-....png     (8-bit organ codes)
    MR/<id>/T1DUAL/DICOM_anon/{InPhase,OutPhase}/IMG-....dcm   MR/<id>/T1DUAL/Ground/IMG-....png (shared)

Slices are stacked in file-name order, never by position: the challenge's evaluation code says the name order
is authoritative, and in the CT sample it runs opposite to what a position-sorting series reader gives. Masks
align with the stored DICOM pixel array as they are (no in-plane flip).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ChaosLayoutError, InputImageError
from ..volume import Volume
from .dicom_series import read_dicom_slices

DICOM_FOLDER = "DICOM_anon"
GROUND_FOLDER = "Ground"
MR_SEQUENCES = {
    "T2SPIR": (("T2SPIR", DICOM_FOLDER), ("T2SPIR", GROUND_FOLDER)),
    "T1DUAL_InPhase": (("T1DUAL", DICOM_FOLDER, "InPhase"), ("T1DUAL", GROUND_FOLDER)),
    "T1DUAL_OutPhase": (("T1DUAL", DICOM_FOLDER, "OutPhase"), ("T1DUAL", GROUND_FOLDER)),
}
# MR PNG grey values (inclusive ranges) -> label: liver 63, right kidney 126, left kidney 189, spleen 252.
MR_LABEL_RANGES = ((55, 70, 1), (110, 135, 2), (175, 200, 3), (240, 255, 4))
MR_LABEL_NAMES = {0: "background", 1: "liver", 2: "right kidney", 3: "left kidney", 4: "spleen"}


def natural_key(path) -> list:
    """Sort key that orders 'IMG-2' before 'IMG-10' (and equals plain order for zero-padded names)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", Path(path).name)]


def dicom_files(folder) -> list:
    """The ``*.dcm`` files directly in ``folder``, in natural file-name order."""
    folder = Path(folder)
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".dcm"), key=natural_key)


def is_chaos_dicom_folder(folder) -> bool:
    """A CHAOS slice folder: ``DICOM_anon`` with .dcm files, or ``DICOM_anon/InPhase|OutPhase``."""
    folder = Path(folder)
    phase = folder.name in ("InPhase", "OutPhase") and folder.parent.name == DICOM_FOLDER
    named = folder.name == DICOM_FOLDER or phase
    return named and folder.is_dir() and any(p.suffix.lower() == ".dcm" for p in folder.iterdir())


def find_chaos_dicom_folder(folder) -> Path | None:
    """The slice folder ``read_volume`` should read for a CHAOS patient, sequence or slice folder; None if not CHAOS.

    An MR patient folder gives its T2-SPIR series; a T1-DUAL folder is ambiguous (in- and opposed-phase) and
    raises ``ChaosLayoutError`` saying how to choose.
    """
    folder = Path(folder)
    if is_chaos_dicom_folder(folder):
        return folder
    if is_chaos_dicom_folder(folder / DICOM_FOLDER):
        return folder / DICOM_FOLDER
    t1_only = (folder / "T1DUAL").is_dir() and not (folder / "T2SPIR").is_dir()
    if (folder / DICOM_FOLDER / "InPhase").is_dir() or t1_only:
        raise ChaosLayoutError(
            f"{folder} is a CHAOS T1-DUAL folder with in-phase and opposed-phase series: give its "
            "DICOM_anon/InPhase or DICOM_anon/OutPhase folder, or use read_chaos_mr(folder, sequence=...)"
        )
    if is_chaos_dicom_folder(folder / "T2SPIR" / DICOM_FOLDER):
        return folder / "T2SPIR" / DICOM_FOLDER
    return None


def read_chaos_image(dicom_folder, max_bytes: int | None = None) -> Volume:
    """The volume of one CHAOS slice folder, stacked in file-name order (k runs from the first name to the last)."""
    dicom_folder = Path(dicom_folder)
    files = dicom_files(dicom_folder) if dicom_folder.is_dir() else []
    if not files:
        raise ChaosLayoutError(f"no .dcm files in {dicom_folder}: give a CHAOS patient folder (with {DICOM_FOLDER}/)")
    return read_dicom_slices(files, max_bytes=max_bytes, name=str(dicom_folder))


def read_chaos_ct(folder, max_bytes: int | None = None) -> tuple:
    """``(ct, liver)`` of a CHAOS CT patient folder: HU volume and a uint8 0/1 liver mask on the same grid."""
    folder = Path(folder).expanduser()
    if folder.name == DICOM_FOLDER:
        folder = folder.parent
    _require_folder(folder)
    files = dicom_files(folder / DICOM_FOLDER) if (folder / DICOM_FOLDER).is_dir() else []
    if not files:
        raise ChaosLayoutError(f"{folder} has no {DICOM_FOLDER}/*.dcm: give a CHAOS CT patient folder")
    masks = _read_masks(folder / GROUND_FOLDER, files, pair_by_stem=False)
    ct = read_chaos_image(folder / DICOM_FOLDER, max_bytes=max_bytes)
    _check_mask_shape(folder / GROUND_FOLDER, masks, ct)
    liver = np.stack([mask > 0 for mask in masks]).astype(np.uint8)  # 1-bit PNGs read as 0/1: never '== 255'
    return ct, ct.with_array(liver)


def read_chaos_mr(folder, sequence: str = "T2SPIR", max_bytes: int | None = None) -> tuple:
    """``(mr, labels)`` of a CHAOS MR patient folder; labels 1 liver, 2 right kidney, 3 left kidney, 4 spleen."""
    if sequence not in MR_SEQUENCES:
        raise ChaosLayoutError(f"unknown CHAOS MR sequence '{sequence}': use one of {', '.join(MR_SEQUENCES)}")
    folder = Path(folder).expanduser()
    _require_folder(folder)
    dicom_parts, ground_parts = MR_SEQUENCES[sequence]
    if folder.name == dicom_parts[0] and not (folder / dicom_parts[0]).is_dir():
        folder = folder.parent  # the sequence folder itself was given
    dicom_folder = folder.joinpath(*dicom_parts)
    files = dicom_files(dicom_folder) if dicom_folder.is_dir() else []
    if not files:
        raise ChaosLayoutError(f"{folder} has no {'/'.join(dicom_parts)}/*.dcm: give a CHAOS MR patient folder")
    ground = folder.joinpath(*ground_parts)
    masks = _read_masks(ground, files, pair_by_stem=True)
    mr = read_chaos_image(dicom_folder, max_bytes=max_bytes)
    _check_mask_shape(ground, masks, mr)
    labels = np.zeros(mr.array.shape, dtype=np.uint8)
    for index, mask in enumerate(masks):
        labels[index] = mr_label_map(mask)
    return mr, mr.with_array(labels)


def mr_label_map(grey: np.ndarray) -> np.ndarray:
    """CHAOS MR PNG grey values -> labels 0-4, by ranges (not exact values); anything else is background."""
    grey = np.asarray(grey)
    labels = np.zeros(grey.shape, dtype=np.uint8)
    for low, high, label in MR_LABEL_RANGES:
        labels[(grey >= low) & (grey <= high)] = label
    return labels


# --- masks --------------------------------------------------------------------------------------------
def _require_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise InputImageError(f"CHAOS folder {folder} does not exist or is not a folder: check the path")


def _read_masks(ground: Path, files: list, pair_by_stem: bool) -> list:
    """One grey-value array per DICOM file, paired by name (MR: same stem) or by sorted order (CT: liver_GT_NNN)."""
    if not ground.is_dir():
        raise ChaosLayoutError(f"{ground} does not exist: a CHAOS folder needs its {GROUND_FOLDER}/ masks")
    pngs = sorted((p for p in ground.iterdir() if p.suffix.lower() == ".png"), key=natural_key)
    pairs = None
    if pair_by_stem:
        by_stem = {p.stem: p for p in pngs}
        matched = [by_stem.get(f.stem) for f in files]
        if all(p is not None for p in matched) and len(pngs) == len(files):
            pairs = matched
        elif any(p is not None for p in matched):
            missing = [f.stem for f, p in zip(files, matched) if p is None]
            extra = len(pngs) - (len(files) - len(missing))
            raise ChaosLayoutError(
                f"{ground} has no mask for {len(missing)} of {len(files)} slices ({_names(missing)})"
                + (f" and {extra} masks without a slice" if extra else "")
                + ": every DICOM slice needs a PNG of the same name; restore the missing masks"
            )
    if pairs is None:
        if len(pngs) != len(files):
            raise ChaosLayoutError(
                f"{ground} has {len(pngs)} masks for {len(files)} DICOM slices{_missing_numbers(pngs, len(files))}: "
                "every slice needs exactly one mask; restore the missing PNGs"
            )
        pairs = pngs
    return [_read_png(p) for p in pairs]


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode not in ("1", "L", "I", "I;16"):
                image = image.convert("L")
            return np.array(image)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise ChaosLayoutError(f"mask {path.name} cannot be read ({error}): restore the PNG") from None


def _check_mask_shape(ground: Path, masks: list, volume: Volume) -> None:
    expected = tuple(volume.array.shape[1:])
    for index, mask in enumerate(masks):
        if mask.ndim != 2 or tuple(mask.shape) != expected:
            raise ChaosLayoutError(
                f"mask {index} in {ground} is {tuple(mask.shape)} pixels but the slices are {expected}: the masks "
                "belong to another series"
            )


def _names(items: list, limit: int = 5) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... {len(items) - limit} more" if len(items) > limit else "")


def _missing_numbers(pngs: list, count: int) -> str:
    """', no mask numbered 10, 11' when the mask names are numbered (liver_GT_000.png ...)."""
    numbers = []
    for p in pngs:
        found = re.findall(r"\d+", p.stem)
        if not found:
            return ""
        numbers.append(int(found[-1]))
    start = min(numbers) if numbers else 0
    missing = sorted(set(range(start, start + count)) - set(numbers))
    return f" (no mask numbered {_names(missing)})" if missing else ""
