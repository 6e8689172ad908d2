"""Starting a run from MRML nodes and turning a finished run into a result or a one-line error.

Both modules' logics go through here, so input checks, the job runner choice, error classes and provenance
attributes on result nodes are the same in CT2MRISynthesis and LiverSegmentation.
"""
from __future__ import annotations

import dataclasses
from typing import List

import slicer
from SlicerEssNet import errors

from .runs import PipelineRun, RunStep, defaultJobRunner

PROVENANCE_PREFIX = "SlicerEssNet."


def startRun(inputVolumeNode, steps: List[RunStep], *, jobRunner=None, device: str = "auto",
             allowModalityMismatch: bool = False) -> PipelineRun:
    """Check the input node, copy its voxels and geometry, and start the job (never blocks for long). Each step's
    model is resolved here, once: a default becomes the registry's name, and its card is read (without torch)."""
    from SlicerEssNet.model_store import ModelStore
    from SlicerEssNet.pipeline import DEFAULT_INPUT_MODALITY, TASKS

    from .nodes import volumeFromNode

    volume = volumeFromNode(inputVolumeNode)
    store = ModelStore()
    named = []
    for step in steps:
        task = TASKS[step.task]
        # In a chain the segmentation reads the synthetic MR: the default on MR, as for an MR input.
        named.append(dataclasses.replace(step, model=store.model_name(step.model, task,
                                                                      DEFAULT_INPUT_MODALITY[task])))
    cards = {step.output: store.card(step.model) for step in named}
    preflight(volume, inputVolumeNode.GetName(), cards[named[0].output], allowModalityMismatch)
    return PipelineRun(jobRunner if jobRunner is not None else defaultJobRunner(), volume, named, device=device,
                       allowModalityMismatch=allowModalityMismatch, cards=cards)


def preflight(volume, name: str, card, allowModalityMismatch: bool) -> None:
    """The checks the worker would make first, made here at once with the specific error class: a wrong input
    fails in a fraction of a second instead of after a worker process has started and loaded torch. ``card``:
    the first step's model card, or None when it cannot be read here (the worker then says why)."""
    from SlicerEssNet.validation import check_volume, modality_mismatch

    check_volume(volume)
    expected = card.input_modality if card is not None else None
    reason = modality_mismatch(volume, expected) if expected and not allowModalityMismatch else None
    if reason:
        raise errors.ModalityMismatchError(
            f"'{name}' does not look like {expected} ({reason}): choose a {expected} volume or a model for this "
            "modality, or allow the modality mismatch (Advanced) to go on anyway")


def raiseIfNotSucceeded(run: PipelineRun) -> None:
    """Turn a run that did not succeed into the core's exception class for its error (one-line message)."""
    if run.state == "succeeded":
        return
    if run.state == "cancelled":
        raise errors.CancelledError("cancelled by the user: nothing was added to the scene")
    if run.state == "running":
        raise RuntimeError("the run has not finished: wait for it (run.wait()) before reading its results")
    errorClass = getattr(errors, run.errorType or "", None)
    if not (isinstance(errorClass, type) and issubclass(errorClass, errors.EssNetError)):
        errorClass = errors.EssNetError
    raise errorClass(run.error or "the job failed without a message; see the log")


def checkStillInScene(node, what: str) -> None:
    if node is None or node.GetScene() is None:
        raise errors.InputImageError(f"the {what} was removed from the scene while the job ran: nothing was added; "
                                     "run it again")


def recordProvenance(node, run: PipelineRun, stepOutput: str) -> None:
    """Which model, device and precision made a result: node attributes, saved with the scene."""
    index = next(i for i, step in enumerate(run.steps) if step.output == stepOutput)
    report = run.reports[index] if index < len(run.reports) else {}
    for key in ("model", "device", "precision", "seconds"):
        if key in report:
            node.SetAttribute(PROVENANCE_PREFIX + key, str(report[key]))
    anatomy = report.get("anatomy")
    if anatomy:
        node.SetAttribute(PROVENANCE_PREFIX + "anatomyKept", f"{anatomy['dice']:.4f}")
    for number, note in enumerate(report.get("notes", []) + run.warnings):
        node.SetAttribute(f"{PROVENANCE_PREFIX}note{number}", str(note))


def anatomyCheckOf(run: PipelineRun):
    """The anatomy check a run's synthesis step made (``SlicerEssNet.anatomy.AnatomyCheck``), or None."""
    from SlicerEssNet.anatomy import AnatomyCheck

    for report in run.reports:
        if report.get("anatomy"):
            return AnatomyCheck(**report["anatomy"])
    return None


def anatomyStatusText(anatomy) -> str:
    """The status line's sentence for an anatomy check: its result, or the warning when the two livers disagree."""
    if anatomy is None:
        return ""
    if anatomy.low:
        return "Warning: " + anatomy.warning()
    line = anatomy.line()
    return line[0].upper() + line[1:] + "."


def showInSliceViews(background) -> None:
    """Show a volume in the slice views when there are any (nothing to do with --no-main-window)."""
    if slicer.app.layoutManager() is not None:
        slicer.util.setSliceViewerLayers(background=background, fit=True)


def resultName(inputVolumeNode, suffix: str) -> str:
    """"<input name> <suffix>", made unique in the scene."""
    return slicer.mrmlScene.GenerateUniqueName(f"{inputVolumeNode.GetName()} {suffix}")


def modelModalitiesOf(run: PipelineRun, stepOutput: str):
    """(input, output) modality of the model a step used, from the card read when the run started; None when
    it could not be read."""
    card = run.cards.get(stepOutput)
    return card.modalities if card is not None else None
