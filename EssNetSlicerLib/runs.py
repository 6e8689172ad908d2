"""A run: one core job (synthesis, segmentation, or the chain of both) on one input volume, polled or awaited.

The input is written to a private temporary folder (the worker is another process), the steps become one
``SlicerEssNet.jobs.JobRequest`` (a chain runs in memory in one worker, as ``segment --from-ct`` does), and the
outputs are read back only when the job succeeded. The scene is never touched here: the module logic turns the
outputs into nodes afterwards, on the main thread. Whatever happens, the temporary folder is removed when the run
ends.

States are the core jobs' ("running", "succeeded", "failed", "cancelled"). ``poll()`` never blocks (a Qt timer
calls it); ``wait()`` blocks (console scripts, batch and tests call it).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from SlicerEssNet.jobs import CANCELLED, FAILED, RUNNING, SUCCEEDED, JobRequest

# Uncompressed NIfTI: the input is written on the GUI thread, and the core's writer gzips NRRD and MetaImage (seconds
# for a large CT). NIfTI's float32 header rounds the geometry by ~1e-5 mm, which does not matter: the worker only
# reads which axis is axial and the spacing, and results take the input node's own IJK-to-RAS matrix.
INTERMEDIATE_SUFFIX = ".nii"


@dataclass
class RunStep:
    """One job of a run: ``task`` is "synthesize" or "segment"; ``output`` names its result in ``run.outputs``."""

    task: str
    output: str
    model: Optional[str] = None
    label: str = ""
    testTimeAugmentation: bool = False  # segment steps only: average 5 zoomed/rotated views of each slice
    # synthesize steps only: the liver on the CT and on the synthetic MR compared (SlicerEssNet.anatomy)
    anatomyCheck: bool = False

    def describe(self) -> str:
        return self.label or ("synthesis" if self.task == "synthesize" else "liver segmentation")


@dataclass
class RunStatus:
    """What a progress bar and a status line show: overall fraction and one line of text."""

    state: str
    fraction: float
    text: str
    step: int
    steps: int
    warnings: List[str] = field(default_factory=list)


class PipelineRun:
    """One job on one input ``Volume``; see the module docstring. ``cards``: step output -> the model card
    (``SlicerEssNet.model_card.ModelCard``) its model was resolved to when the run started, or None."""

    def __init__(self, runner, inputVolume, steps: List[RunStep], *, device: str = "auto",
                 allowModalityMismatch: bool = False, cards: Optional[Dict[str, object]] = None):
        tasks = [step.task for step in steps]
        if tasks not in (["synthesize"], ["segment"], ["synthesize", "segment"]):
            raise ValueError(f"a run is one step or synthesize then segment, not {tasks}")
        self.cards = dict(cards or {})
        self.runner = runner
        self.steps = list(steps)
        self.device = device
        self.allowModalityMismatch = allowModalityMismatch
        self.state = RUNNING
        self.error: Optional[str] = None
        self.errorType: Optional[str] = None
        self.warnings: List[str] = []
        self.reports: List[dict] = []
        self.outputs: Dict[str, object] = {}
        self.started = time.monotonic()
        self._stepIndex = 0
        self._job = None
        self._folder = Path(tempfile.mkdtemp(prefix="SlicerEssNet-run-"))
        try:
            from SlicerEssNet.io.volume_files import write_volume

            self._input = self._folder / f"input{INTERMEDIATE_SUFFIX}"
            write_volume(inputVolume, self._input)
            self._startStep()
        except BaseException:
            self._cleanup()
            raise

    # --- the job ------------------------------------------------------------------------------------------------
    def _stepPath(self, index: int) -> Path:
        return self._folder / f"{index}-{self.steps[index].output}{INTERMEDIATE_SUFFIX}"

    def _startStep(self) -> None:
        last = self.steps[-1]
        chain = len(self.steps) == 2
        request = JobRequest(task=last.task, input_path=str(self._input),
                             output_path=str(self._stepPath(len(self.steps) - 1)), model=last.model,
                             device=self.device, allow_modality_mismatch=self.allowModalityMismatch,
                             test_time_augmentation=last.testTimeAugmentation,
                             anatomy_check=self.steps[0].anatomyCheck,
                             synthesis_model=self.steps[0].model if chain else None,
                             synthetic_output_path=str(self._stepPath(0)) if chain else None)
        if chain and request.synthesis_model is None:
            raise ValueError("the synthesis step of a chain needs its model named (processing.startRun does)")
        self._job = self.runner.start(request)

    def poll(self) -> str:
        """Advance without blocking: follow the job, read the outputs once it succeeded."""
        if self.state != RUNNING:
            return self.state
        jobState = self._job.poll()
        self._stepIndex = min(getattr(self._job, "step", 0), len(self.steps) - 1)
        if jobState == RUNNING:
            return self.state
        self._collect(self._job)
        if jobState == SUCCEEDED:
            self._readOutputs()
        else:
            self._finish(jobState, self._job.error or f"{self.steps[self._stepIndex].describe()} {jobState}",
                         getattr(self._job, "error_type", None))
        return self.state

    def _collect(self, job) -> None:
        for warning in job.warnings:
            if warning not in self.warnings:
                self.warnings.append(warning)
        if job.report:
            # One report per step: a chain's job carries each step's own report.
            self.reports.extend(job.report.get("steps") or [job.report])

    def _readOutputs(self) -> None:
        from SlicerEssNet.io.volume_files import read_volume

        try:
            for index, step in enumerate(self.steps):
                self.outputs[step.output] = read_volume(self._stepPath(index))
        except Exception as error:  # noqa: BLE001
            self.outputs = {}
            self._finish(FAILED, f"could not read the result back ({error}); run it again", type(error).__name__)
            return
        self._finish(SUCCEEDED)

    def _finish(self, state: str, error: Optional[str] = None, errorType: Optional[str] = None) -> None:
        self.state = state
        self.error = error
        self.errorType = errorType
        self._cleanup()

    def _cleanup(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)

    # --- control ------------------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the current job (a worker process is terminated); the run ends as "cancelled" with no output."""
        if self.state == RUNNING and self._job is not None:
            self._job.cancel()

    def wait(self, timeout: Optional[float] = None, progressCallback: Optional[Callable[[RunStatus], None]] = None,
             interval: float = 0.2) -> str:
        """Block until the run ends (or ``timeout`` seconds pass), calling ``progressCallback`` as it advances."""
        deadline = None if timeout is None else time.monotonic() + timeout
        lastText = None
        while self.poll() == RUNNING:
            if progressCallback is not None:
                status = self.status()
                if status.text != lastText:
                    lastText = status.text
                    progressCallback(status)
            if deadline is not None and time.monotonic() >= deadline:
                break
            self._job.wait(interval)
        if progressCallback is not None and self.state != RUNNING:
            progressCallback(self.status())
        return self.state

    @property
    def finished(self) -> bool:
        return self.state != RUNNING

    # --- reporting ----------------------------------------------------------------------------------------------
    def status(self) -> RunStatus:
        steps = len(self.steps)
        step = self.steps[self._stepIndex]
        prefix = f"Step {self._stepIndex + 1}/{steps} ({step.describe()}): " if steps > 1 else ""
        elapsed = time.monotonic() - self.started
        if self.state == SUCCEEDED:
            return RunStatus(self.state, 1.0, f"Done in {_duration(elapsed)}.", steps, steps, list(self.warnings))
        if self.state == CANCELLED:
            return RunStatus(self.state, 0.0, "Cancelled: nothing was added to the scene.", self._stepIndex + 1, steps,
                             list(self.warnings))
        if self.state == FAILED:
            return RunStatus(self.state, 0.0, f"Failed: {self.error}", self._stepIndex + 1, steps, list(self.warnings))
        progress = self._job.progress if self._job is not None else None
        if progress is None:
            return RunStatus(self.state, self._stepIndex / steps, f"{prefix}starting (loading the model)...",
                             self._stepIndex + 1, steps, list(self.warnings))
        fraction = (self._stepIndex + progress.fraction) / steps
        return RunStatus(self.state, fraction, prefix + progress.format(), self._stepIndex + 1, steps,
                         list(self.warnings))


def _duration(seconds: float) -> str:
    from SlicerEssNet.progress import format_duration

    return format_duration(seconds)


def defaultJobRunner():
    """Jobs in a worker process: Slicer stays responsive, Cancel is a hard stop, a crash or OOM kill spares Slicer.

    Inside Slicer the worker is ``PythonSlicer`` (Slicer's Python with Slicer's environment); elsewhere the current
    interpreter.
    """
    import shutil as _shutil
    import sys

    from SlicerEssNet.jobs import SubprocessJobRunner

    pythonSlicer = _shutil.which("PythonSlicer")
    if pythonSlicer is None:
        logging.getLogger(__name__).info("PythonSlicer not found on PATH: jobs run with %s", sys.executable)
    return SubprocessJobRunner(python_executable=pythonSlicer or sys.executable)
