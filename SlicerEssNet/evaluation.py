"""Score label files against reference files: the ``evaluate`` command, cohort scripts and Training's reports.

Each side is a label volume that ``io.volume_files.read_volume`` reads (NIfTI, NRRD, MHA, DICOM...) or a CHAOS-style
folder of PNG masks (``Ground/``, ``SampleSubmission/``):

- PNG slices are stacked in (natural) file-name order, as ``chaos.py`` stacks them: CHAOS orders slices by name,
  not by DICOM position. PNG rows and columns are the volume's j and i, as they align with the DICOM pixels.
- Values become labels by ``png_labels``: ``"binary"`` (``> 0`` is 1: CHAOS CT masks, 1-bit or 0/63 or 0/255),
  ``"chaos_mr"`` (liver 55-70 -> 1, right kidney 110-135 -> 2, left kidney 175-200 -> 3, spleen 240-255 -> 4), a
  dict ``{label: (low, high)}`` of inclusive ranges, or ``"auto"`` (default): a folder whose only non-zero value
  is one value is binary, a folder with several non-zero values uses the CHAOS MR ranges.
- Geometry: from ``geometry`` when given (a DICOM folder, a volume file or a ``Volume``), else from a
  ``DICOM_anon`` folder beside the PNG folder (the CHAOS layout; ``DICOM_anon/InPhase`` for T1-DUAL), else unit
  spacing at the origin, in which case the distances are in voxels and the result's notes say so. A DICOM folder
  is read by ``chaos.read_chaos_image``, in file-name order like the masks: the first and last file by name give
  the origin and slice step, exactly what the CHAOS evaluation code uses.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ChaosLayoutError, InputImageError
from .volume import Volume

PNG_SUFFIXES = (".png",)


# --- one case -------------------------------------------------------------------------------------------------------
def evaluate_files(pred_path, ref_path, label: int = 1, ref_label: Optional[int] = None, geometry=None,
                   png_labels="auto") -> dict:
    """``metrics.evaluate`` of two label files or PNG folders; the dict also names both paths (``case`` is the
    prediction path).

    A PNG prediction folder carries no geometry of its own: unless ``geometry`` is given it lies on the
    reference's grid (which is what a PNG submission to CHAOS means).
    """
    from .metrics import evaluate

    notes: List[str] = []
    reference = read_label_volume(ref_path, geometry=geometry, png_labels=png_labels, notes=notes)
    prediction = read_label_volume(pred_path, geometry=reference if geometry is None else geometry,
                                   png_labels=png_labels, notes=notes)
    result = evaluate(prediction, reference, label=label, ref_label=ref_label)
    result["notes"] = notes + result["notes"]
    return {"case": str(pred_path), "prediction": str(pred_path), "reference": str(ref_path), **result}


def read_label_volume(path, geometry=None, png_labels="auto", notes: Optional[List[str]] = None) -> Volume:
    """A label ``Volume`` from a volume file, a DICOM folder or a folder of PNG masks (see the module notes)."""
    path = Path(path)
    if not path.exists():
        raise InputImageError(f"{path} does not exist: give a label volume file or a folder of PNG masks")
    if path.is_dir() and _png_files(path):
        return read_png_labels(path, geometry=geometry, png_labels=png_labels, notes=notes)
    from .io.volume_files import read_volume

    return read_volume(path)


def read_png_labels(folder, geometry=None, png_labels="auto", notes: Optional[List[str]] = None) -> Volume:
    """Stack a folder of PNG masks (sorted by name) into a label ``Volume``."""
    folder = Path(folder)
    files = _png_files(folder)
    if not files:
        raise InputImageError(f"{folder} holds no .png file: give a folder of PNG masks")
    raw = np.stack(_read_png_slices(files))
    labels = _png_values_to_labels(raw, png_labels, folder)
    source = geometry if geometry is not None else _dicom_beside(folder)
    if source is None:
        if notes is not None:
            notes.append(f"{folder.name}: no geometry (no DICOM_anon beside it): unit spacing, distances in voxels")
        return Volume(labels)
    reference = _geometry_volume(source)
    if reference.shape != labels.shape:
        raise ChaosLayoutError(
            f"{folder} has {labels.shape[0]} masks of {labels.shape[1]}x{labels.shape[2]} but "
            f"{'the reference' if isinstance(source, Volume) else source} is {reference.shape[0]} slices of "
            f"{reference.shape[1]}x{reference.shape[2]}: give the matching DICOM folder or reference")
    return Volume(labels, reference.spacing, reference.origin, reference.direction)


def _geometry_volume(source) -> Volume:
    if isinstance(source, Volume):
        return source
    source = Path(source)
    if source.is_dir():
        from .io.chaos import read_chaos_image

        return read_chaos_image(source)  # file-name order, the order the PNG masks follow
    from .io.volume_files import read_volume

    return read_volume(source)


def _dicom_beside(folder: Path) -> Optional[Path]:
    """The CHAOS slice folder beside a mask folder: ``DICOM_anon``, or for T1-DUAL its ``InPhase`` series (in-
    and opposed-phase share one grid and one ``Ground``)."""
    from .io.chaos import DICOM_FOLDER, dicom_files

    for candidate in (folder.parent / DICOM_FOLDER, folder.parent / DICOM_FOLDER / "InPhase"):
        if candidate.is_dir() and dicom_files(candidate):
            return candidate
    return None


def _png_files(folder: Path) -> List[Path]:
    from .io.chaos import natural_key

    return sorted((f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in PNG_SUFFIXES), key=natural_key)


def _read_png_slices(files: Sequence[Path]) -> List[np.ndarray]:
    from PIL import Image

    slices = []
    for name in files:
        try:
            with Image.open(name) as image:
                pixels = np.asarray(image)
        except (OSError, ValueError) as error:
            raise InputImageError(f"{name} is not a readable PNG ({error}): replace or remove it") from None
        if pixels.ndim == 3:
            colour = pixels[..., :3]
            if not (np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2])):
                raise InputImageError(f"{name} is a colour image: save the masks as single-channel PNG")
            pixels = colour[..., 0]
        if slices and pixels.shape != slices[0].shape:
            raise InputImageError(
                f"{name} is {pixels.shape[0]}x{pixels.shape[1]} but {files[0].name} is "
                f"{slices[0].shape[0]}x{slices[0].shape[1]}: every mask of a folder must have the same size")
        slices.append(pixels)
    return slices


def _png_values_to_labels(raw: np.ndarray, png_labels, folder: Path) -> np.ndarray:
    if png_labels == "auto":
        nonzero = np.unique(raw[raw != 0])
        png_labels = "binary" if nonzero.size <= 1 else "chaos_mr"
    if png_labels == "binary":
        return (raw > 0).astype(np.uint8)
    if png_labels == "chaos_mr":
        from .io.chaos import MR_LABEL_RANGES

        png_labels = {label: (low, high) for low, high, label in MR_LABEL_RANGES}
    ranges = png_labels
    if not isinstance(ranges, dict):
        raise InputImageError(
            f"png_labels={png_labels!r} is not understood: use 'auto', 'binary', 'chaos_mr' or {{label: (low, high)}}")
    labels = np.zeros(raw.shape, dtype=np.uint8)
    covered = raw == 0
    for label, (low, high) in ranges.items():
        inside = (raw >= low) & (raw <= high)
        labels[inside] = int(label)
        covered |= inside
    if not covered.all():
        stray = np.unique(raw[~covered])[:5].tolist()
        raise InputImageError(
            f"{folder} has mask values {stray} outside the label ranges {ranges}: pass png_labels='binary' or ranges "
            "that cover them")
    return labels


# --- reports --------------------------------------------------------------------------------------------------------
_COLUMNS: Tuple[Tuple[str, str, str], ...] = (
    ("dice", "Dice", "{:.4f}"),
    ("iou", "IoU", "{:.4f}"),
    ("ravd", "RAVD %", "{:.3f}"),
    ("assd", "ASSD mm", "{:.3f}"),
    ("mssd", "MSSD mm", "{:.3f}"),
    ("hd95", "HD95 mm", "{:.3f}"),
    ("pred_voxels", "pred vox", "{:d}"),
    ("ref_voxels", "ref vox", "{:d}"),
)

# a mean of voxel counts is not a count
_SUMMARY_FORMS = {"pred_voxels": "{:.0f}", "ref_voxels": "{:.0f}"}


def format_table(results: Union[dict, List[dict]]) -> str:
    """An aligned plain-text table, one row per case; several cases add mean and sample-SD rows (over the finite
    values) and a pooled row (Dice and IoU of one confusion matrix over every case, the paper's form). Notes follow."""
    from .metrics import OverlapCounts

    cases = [results] if isinstance(results, dict) else list(results)
    header = ["case"] + [title for _, title, _ in _COLUMNS]
    rows = [[str(case.get("case", f"#{number + 1}"))] + [_cell(case.get(key), form) for key, _, form in _COLUMNS]
            for number, case in enumerate(cases)]
    if len(cases) > 1:
        for name, reduce in (("mean", np.mean), ("sd", _sample_sd)):
            rows.append([name] + [_cell(_summary(cases, key, reduce), _SUMMARY_FORMS.get(key, form))
                                  for key, _, form in _COLUMNS])
        pooled = sum((OverlapCounts(int(c["tp"]), int(c["fp"]), int(c["fn"])) for c in cases), OverlapCounts(0, 0, 0))
        rows.append(["pooled"] + [_cell(pooled.dice, "{:.4f}"), _cell(pooled.iou, "{:.4f}")]
                    + [""] * (len(_COLUMNS) - 2))
    widths = [max(len(row[column]) for row in [header] + rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[0]) if column == 0 else cell.rjust(widths[column])
                       for column, cell in enumerate(row)).rstrip() for row in [header] + rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    for key, title, _ in _COLUMNS if len(cases) > 1 else ():
        left_out = sum(1 for case in cases if isinstance(case.get(key), float) and not math.isfinite(case[key]))
        if left_out:
            lines.append(f"note: the {title} mean and sd leave out {left_out} case(s) whose value is inf or nan")
    for case in cases:
        for note in case.get("notes", []):
            lines.append(f"note ({case.get('case', '')}): {note}")
    return "\n".join(lines)


def to_json(results: Union[dict, List[dict]], path=None) -> str:
    """Strict JSON text of the results (``inf``/``nan`` become ``null``; the notes say why); written atomically
    to ``path`` when given."""
    text = json.dumps(_json_ready(results), indent=2, allow_nan=False) + "\n"
    if path is not None:
        from .atomic import atomic_path

        with atomic_path(path) as temporary:
            Path(temporary).write_text(text, encoding="utf-8")
    return text


def _json_ready(value):
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    return value if value is None or isinstance(value, str) else str(value)


def _sample_sd(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if values.size > 1 else math.nan


def _summary(cases: List[dict], key: str, reduce) -> Optional[float]:
    values = np.asarray([case.get(key) for case in cases if case.get(key) is not None], dtype=float)
    values = values[np.isfinite(values)]
    return float(reduce(values)) if values.size else None


def _cell(value, form: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return form.format(value)

