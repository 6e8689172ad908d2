"""A run: one or more chained core jobs (synthesis, then segmentation) on one input volume, polled or awaited.

The input is written to a private temporary folder, each step is a ``SlicerEssNet.jobs.JobRequest`` whose input is
the previous step's output, and the outputs are read back only when every step succeeded. The scene is never
touched here: the module logic turns the outputs into nodes afterwards, on the main thread. Whatever happens, the
temporary folder is removed when the run ends.

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
    """Chained jobs on one input ``Volume``; see the module docstring."""

    def __init__(self, runner, inputVolume, steps: List[RunStep], *, device: str = "auto",
                 allowModalityMismatch: bool = False):
        if not steps:
            raise ValueError("a run needs at least one step")
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

    # --- steps --------------------------------------------------------------------------------------------------
    def _stepPath(self, index: int) -> Path:
        return self._folder / f"{index}-{self.steps[index].output}{INTERMEDIATE_SUFFIX}"

    def _startStep(self) -> None:
        index = self._stepIndex
        step = self.steps[index]
        source = self._input if index == 0 else self._stepPath(index - 1)
        request = JobRequest(task=step.task, input_path=str(source), output_path=str(self._stepPath(index)),
                             model=step.model, device=self.device,
                             allow_modality_mismatch=self.allowModalityMismatch,
                             test_time_augmentation=step.testTimeAugmentation,
                             anatomy_check=step.anatomyCheck)
        self._job = self.runner.start(request)

    def poll(self) -> str:
        """Advance without blocking: collect the current job's events, start the next step, read the outputs."""
        if self.state != RUNNING:
            return self.state
        jobState = self._job.poll()
        if jobState == RUNNING:
            return self.state
        self._collect(self._job)
        if jobState == SUCCEEDED and self._stepIndex + 1 < len(self.steps):
            self._stepIndex += 1
            try:
                self._startStep()
            except Exception as error:  # noqa: BLE001 - a run must always end in a state, never hang
                self._finish(FAILED, f"could not start {self.steps[self._stepIndex].describe()}: {error}",
                             type(error).__name__)
            return self.state
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
            self.reports.append(job.report)

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
