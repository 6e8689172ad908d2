"""Whole-volume synthesis and segmentation: check, slice canonically, run the engine, map back exactly.

This is the one place that strings the core together; the CLI, the worker process behind the Slicer modules and
Training's evaluation all call it, so every path sees the same preprocessing and the same geometry.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

from .errors import ModalityMismatchError, ModalityMismatchWarning, OutputPathError, WeightsError
from .progress import CancelToken, ProgressCallback
from .volume import Volume

log = logging.getLogger(__name__)

TASKS = {"synthesize": "synthesis", "segment": "segmentation"}
# Without --model: CT -> MR synthesis, and liver segmentation on MR.
DEFAULT_INPUT_MODALITY = {"synthesis": "CT", "segmentation": "MR"}


@dataclass
class RunReport:
    """What happened, for logs, the worker protocol and the modules' status line."""

    model: str
    device: str
    precision: str
    slices: int
    model_grid: tuple
    seconds: float = 0.0
    notes: List[str] = field(default_factory=list)
    anatomy: Optional[dict] = None  # a CT -> MR run's ``AnatomyCheck.to_dict()`` (anatomy.py), when asked for
    # a chain (CT -> MR, then segment): each step's own report, as dicts; this report then sums them up
    steps: List[dict] = field(default_factory=list)


def resolve_model(model, task: str):
    """A LoadedModel from None (the task's default), a registry name, or a path to weights (card beside them)."""
    from .weights import LoadedModel, load_model

    if isinstance(model, LoadedModel):
        loaded = model
    else:
        from .model_store import ModelStore

        store = ModelStore()
        wanted = TASKS.get(task, task)
        model = store.model_name(model, wanted, DEFAULT_INPUT_MODALITY.get(wanted))
        candidate = Path(str(model)).expanduser()
        path = candidate if candidate.suffix and candidate.exists() else store.resolve(str(model))
        loaded = load_model(path)
    wanted = TASKS.get(task, task)
    if loaded.card.task != wanted:
        raise WeightsError(
            f"model '{loaded.card.name}' is a {loaded.card.task} model, not a {wanted} model: choose a {wanted} model"
        )
    return loaded


def run_model(volume: Volume, loaded, *, device: str = "auto", precision: str = "auto",
              batch_size: Optional[int] = None, progress: Optional[ProgressCallback] = None,
              cancel: Optional[CancelToken] = None, allow_modality_mismatch: bool = False,
              test_time_augmentation: bool = False, report: Optional[RunReport] = None) -> Volume:
    """Run a loaded model over every slice of ``volume``; the result lies on exactly the input's grid.

    ``test_time_augmentation``: segmentation only, average five zoomed/rotated views of each slice
    (``test_time_augmentation.py``): five network passes (4-5x the time).
    """
    import time

    from .geometry import CanonicalFrame, SliceGrid
    from .inference import SliceEngine, SliceTask
    from .preprocessing import intensity_transform, volume_statistics
    from .validation import check_volume, modality_mismatch

    started = time.perf_counter()
    card = loaded.card
    if test_time_augmentation and card.task != "segmentation":
        raise ValueError(f"test-time augmentation averages class probabilities: model '{card.name}' is a "
                         f"{card.task} model; turn it off or choose a segmentation model")
    check_volume(volume)
    reason = modality_mismatch(volume, card.input_modality)
    if reason:
        message = (f"the input does not look like {card.input_modality} ({reason}) but model '{card.name}' expects "
                   f"{card.input_modality}")
        if not allow_modality_mismatch:
            raise ModalityMismatchError(
                f"{message}: check the input, or allow it (--allow-modality-mismatch) to go on anyway")
        warnings.warn(message, ModalityMismatchWarning, stacklevel=2)

    frame = CanonicalFrame.of(volume)
    source = frame.to_canonical(volume.array)
    _, row_mm, col_mm = frame.canonical_spacing(volume.spacing)
    grid = SliceGrid.plan(source.shape[1:], (row_mm, col_mm), model_grid_spec(card))

    preprocessing = card.preprocessing
    scale, offset = intensity_transform(preprocessing, volume_statistics(volume.array, preprocessing))
    if card.task == "segmentation":
        task = SliceTask(grid, scale, offset, output="labels", test_time_augmentation=test_time_augmentation)
        output = np.zeros(volume.array.shape, dtype=np.uint8)
    else:
        out_scale, out_offset = _output_map(card.postprocessing)
        task = SliceTask(grid, scale, offset, output="image", out_scale=out_scale, out_offset=out_offset)
        output = np.zeros(volume.array.shape, dtype=np.float32)

    engine = SliceEngine(loaded.network, device=device, precision=precision, batch_size=batch_size,
                         prepared=loaded.prepared)
    if engine.device_note and report is None:  # with a report, the caller shows its notes
        log.warning(engine.device_note)
    engine.run(source, frame.to_canonical(output), task, progress=progress, cancel=cancel)

    if report is not None:
        report.model = card.name
        report.device = str(engine.device)
        report.precision = str(engine.autocast).replace("torch.", "") if engine.autocast is not None else "fp32"
        report.slices = source.shape[0]
        if test_time_augmentation:
            report.notes.append("test-time augmentation: probabilities averaged over 5 views of each slice")
        report.model_grid = tuple(grid.model_shape)
        report.seconds = time.perf_counter() - started
        if engine.device_note:
            report.notes.append(engine.device_note)
        if reason:
            report.notes.append(f"modality check: {reason}")
    return volume.with_array(output)


def model_grid_spec(card):
    """The card's grid (the card has already checked that it suits the network's strides)."""
    from .geometry import GridSpec

    return GridSpec.from_dict(card.grid)


def _output_map(postprocessing: dict):
    """(scale, offset) taking the network's [-1, 1] to the card's output intensity scale."""
    from .preprocessing import denormalize

    low, high = (float(v) for v in denormalize(np.array([-1.0, 1.0], dtype=np.float64), postprocessing))
    return (high - low) / 2.0, (high + low) / 2.0


def keep_largest_component(labels: np.ndarray, label: int = 1) -> np.ndarray:
    """Keep only the largest 3D connected component of ``label`` (the liver is one organ): removes stray islands."""
    from scipy import ndimage

    mask = labels == label
    components, count = ndimage.label(mask)
    if count <= 1:
        return labels
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    cleaned = labels.copy()
    cleaned[mask & (components != int(sizes.argmax()))] = 0
    return cleaned


# --- the two tasks -----------------------------------------------------------------------------------------
def synthesize(volume: Volume, model=None, **options) -> Volume:
    """CT -> synthetic MR (or MR -> CT with such a model): float32 on exactly the input's grid."""
    return run_model(volume, resolve_model(model, "synthesize"), **options)


def segment(volume: Volume, model=None, *, largest_component: bool = True, **options) -> Volume:
    """Liver segmentation of an MR volume: uint8 labels (1 = liver) on exactly the input's grid."""
    return _finish("segment", run_model(volume, resolve_model(model, "segment"), **options), largest_component)


def _finish(task: str, result: Volume, largest_component: bool) -> Volume:
    """The task's own last step: a segmentation keeps its largest liver component unless asked not to."""
    if task == "segment" and largest_component:
        return result.with_array(keep_largest_component(result.array))
    return result


def check_anatomy(ct: Volume, synthetic_mr: Volume, mr_liver: Optional[np.ndarray] = None, **options):
    """``AnatomyCheck``: the liver ``liver-unet-ct`` finds on ``ct`` against the one ``liver-unet-mr`` finds on its
    ``synthetic_mr`` (or ``mr_liver``, when that segmentation was made already). ``options``: the engine's."""
    from .anatomy import CT_LIVER_MODEL, MR_LIVER_MODEL, AnatomyCheck, anatomy_dice, liver_ml

    engine = {key: value for key, value in _engine_options(options).items() if key not in ("progress",)}
    engine["test_time_augmentation"] = False
    # A report of its own: the run's notes (a missing GPU, ...) were said once by the run itself.
    engine["report"] = RunReport("", "", "", 0, ())
    ct_liver = segment(ct, CT_LIVER_MODEL, **{**engine, "allow_modality_mismatch": False}).array
    if mr_liver is None:
        # Synthetic MR need not pass the MR look-alike check; what matters here is where the liver is.
        mr_liver = segment(synthetic_mr, MR_LIVER_MODEL, **{**engine, "allow_modality_mismatch": True}).array
    return AnatomyCheck(anatomy_dice(ct_liver, mr_liver), liver_ml(ct_liver, ct.spacing),
                        liver_ml(mr_liver, ct.spacing))


def _anatomy_report(card, ct: Volume, synthetic_mr: Volume, mr_liver, report: RunReport, options: dict) -> None:
    """Fill ``report.anatomy`` for a CT -> MR model; a missing liver model is a note, never a failed run."""
    from .errors import CancelledError, EssNetError

    if (card.input_modality, card.output_modality) != ("CT", "MR"):
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report.anatomy = check_anatomy(ct, synthetic_mr, mr_liver, **options).to_dict()
    except CancelledError:
        raise
    except ModalityMismatchError:
        report.notes.append("anatomy check skipped: the input does not look like a CT, which the check's "
                            "liver-unet-ct reads")
    except EssNetError as error:
        report.notes.append(f"anatomy check skipped: {error}")


def process_file(task: str, input_path, output_path, model=None, *, preview_path=None, synthesis_model=None,
                 synthesis_progress: Optional[ProgressCallback] = None, synthetic_output_path=None,
                 anatomy_check: bool = False, **options) -> RunReport:
    """Read, run, and write the result atomically: a failure or a cancel leaves no output file.

    ``preview_path``: also write a PNG of input and result side by side on a few slices.
    ``synthesis_model`` (segment only; a registry name, a path or a LoadedModel): the input is a CT,
    translated to synthetic MR by that model first, in memory, as the Liver Segmentation module's *input is CT*
    does; the labels lie on the CT's grid. ``synthesis_progress`` follows that first step;
    ``synthetic_output_path`` keeps its synthetic MR too (both files are written, or neither).
    ``anatomy_check`` (a CT -> MR model, alone or before segment): also segment the liver on the CT and on the
    synthetic MR and put their Dice in the synthesis step's report (``check_anatomy``).
    """
    from dataclasses import asdict

    from .io.volume_files import check_writable, read_volume, write_volume

    if task not in TASKS:
        raise ValueError(f"unknown task '{task}': use one of {', '.join(TASKS)}")
    if synthesis_model is None and synthetic_output_path is not None:
        raise ValueError("synthetic_output_path keeps the synthetic MR of a chain: give synthesis_model too")
    outputs = [output_path] + ([synthetic_output_path] if synthetic_output_path is not None else [])
    if synthetic_output_path is not None and Path(synthetic_output_path).resolve() == Path(output_path).resolve():
        raise OutputPathError(f"the synthetic MR and the labels would both be written to {output_path}: give "
                              "them different paths")
    for path in outputs:
        check_writable(path)  # before anything is read or computed
    if synthesis_model is not None and task != "segment":
        raise ValueError("a synthesis model before the task only makes sense for segment")
    for path in outputs:
        if Path(path).exists() and Path(path).resolve() == Path(input_path).resolve():
            raise OutputPathError(f"output {path} is the input itself: choose another output path")
    volume = read_volume(input_path)
    loaded = resolve_model(model, task)
    source, first, synthesis = volume, None, None
    if synthesis_model is not None:
        synthesis = resolve_model(synthesis_model, "synthesize")
        first = RunReport(synthesis.card.name, "", "", 0, ())
        engine_options = {**_engine_options(options), "progress": synthesis_progress, "test_time_augmentation": False}
        source = run_model(volume, synthesis, report=first, **engine_options)
    report = RunReport(loaded.card.name, "", "", 0, ())
    result = run_model(source, loaded, report=report, **_engine_options(options))
    result = _finish(task, result, options.get("largest_component", True))
    if anatomy_check and task == "synthesize":
        _anatomy_report(loaded.card, volume, result, None, report, options)
    elif anatomy_check and synthesis is not None:
        from .anatomy import MR_LIVER_MODEL

        # The user's MR liver model is the check's own when it is the default one: no second pass.
        mr_liver = result.array if loaded.card.name == MR_LIVER_MODEL else None
        _anatomy_report(synthesis.card, volume, source, mr_liver, first, options)
    if first is not None:
        report.steps = [asdict(first), asdict(report)]
        report.anatomy = first.anatomy
        report.model = f"{first.model} -> {report.model}"
        report.seconds += first.seconds
        report.notes = [f"{first.model}: {note}" for note in first.notes] + report.notes
    if synthetic_output_path is not None:
        write_volume(source, synthetic_output_path)
    try:
        write_volume(result, output_path)
    except BaseException:
        if synthetic_output_path is not None:  # both files, or neither
            Path(synthetic_output_path).unlink(missing_ok=True)
        raise
    if preview_path is not None:
        from .preview import write_preview

        write_preview(volume, result, preview_path, labels=task == "segment")
    return report


def _engine_options(options: dict) -> dict:
    allowed = ("device", "precision", "batch_size", "progress", "cancel", "allow_modality_mismatch",
               "test_time_augmentation")
    return {key: value for key, value in options.items() if key in allowed}
