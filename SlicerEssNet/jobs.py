"""Jobs: one ``process_file`` call described in JSON, run in a thread or in a worker process.

A ``JobRequest`` is the one description of a run that the Slicer modules and the batch script submit (the CLI
calls ``process_file`` with the same arguments in its own process): one step, or a chain (CT -> synthetic MR ->
liver) computed in memory in one worker, with no intermediate file.

The Slicer modules run their work as jobs so the GUI never freezes: a timer polls ``Job.poll()`` for progress,
Cancel calls ``Job.cancel()``, and scripts call ``Job.wait()``. A worker process is the default in Slicer: a
PyTorch crash, an out-of-memory kill or a hard cancel takes the worker down, never Slicer. Both runners give the
same guarantees: a job that fails or is cancelled leaves no output file behind.

Worker protocol: ``python -m SlicerEssNet worker REQUEST.json`` prints one event per line on stdout, each
``@essnet {json}`` with ``event`` = ``progress`` | ``warning`` | ``done`` | ``error``; logs go to stderr.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

from .progress import CancelToken, Progress

log = logging.getLogger(__name__)

EVENT_PREFIX = "@essnet "
RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"


@dataclass
class JobRequest:
    task: str  # "synthesize" | "segment"
    input_path: str
    output_path: str
    model: Optional[str] = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: Optional[int] = None
    allow_modality_mismatch: bool = False
    largest_component: bool = True
    test_time_augmentation: bool = False  # segmentation only: 5 views per slice, 4-5x the time
    anatomy_check: bool = False  # CT -> MR: the liver on the CT and on the synthetic MR compared (anatomy.py)
    # segment only: translate the input with this CT -> MR model first, in memory (a chain of two steps), and
    # keep that synthetic MR at ``synthetic_output_path`` when one is given
    synthesis_model: Optional[str] = None
    synthetic_output_path: Optional[str] = None

    @property
    def output_paths(self) -> List[str]:
        return [self.output_path] + ([self.synthetic_output_path] if self.synthetic_output_path else [])

    @property
    def steps(self) -> int:
        return 2 if self.synthesis_model is not None else 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "JobRequest":
        data = json.loads(text)
        return cls(**{key: value for key, value in data.items() if key in cls.__dataclass_fields__})

    def options(self) -> dict:
        return {
            "device": self.device, "precision": self.precision, "batch_size": self.batch_size,
            "allow_modality_mismatch": self.allow_modality_mismatch, "largest_component": self.largest_component,
            "test_time_augmentation": self.test_time_augmentation, "anatomy_check": self.anatomy_check,
        }


def remove_partial_outputs(output_path) -> None:
    """Delete temporary files a killed writer may have left beside ``output_path`` (see ``atomic_path``)."""
    output_path = Path(output_path)
    if output_path.parent.is_dir():
        for leftover in output_path.parent.glob(f".{output_path.name}.*.partial*"):
            try:
                leftover.unlink()
            except OSError:
                pass


class Job:
    """A running or finished job. ``poll()`` never blocks; ``wait()`` does."""

    def __init__(self, request: JobRequest):
        self.request = request
        self.state = RUNNING
        self.progress: Optional[Progress] = None
        self.step = 0  # of a chain: 0 while the synthesis runs, then 1
        self.error: Optional[str] = None
        self.error_type: Optional[str] = None  # the core exception's class name, e.g. "InputImageError"
        self.warnings: List[str] = []
        self.report: Optional[dict] = None
        self._events: "queue.Queue[dict]" = queue.Queue()
        self._finished = threading.Event()

    # Both runners feed events into the queue; the caller's thread applies them, so Qt code never sees another
    # thread's writes half-done.
    def _apply(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.progress = Progress.from_dict(event)
            self.step = int(event.get("step", 0))
        elif kind == "warning":
            self.warnings.append(event.get("message", ""))
        elif kind == "done":
            self.report = event.get("report")
            self.state = SUCCEEDED
        elif kind == "error":
            self.error = event.get("message", "unknown error")
            self.error_type = event.get("type")
            self.state = CANCELLED if event.get("type") == "CancelledError" else FAILED

    def poll(self) -> str:
        while True:
            try:
                self._apply(self._events.get_nowait())
            except queue.Empty:
                return self.state

    def wait(self, timeout: Optional[float] = None) -> str:
        self._finished.wait(timeout)
        return self.poll()

    @property
    def finished(self) -> bool:
        return self._finished.is_set() and self._events.empty()

    def cancel(self) -> None:
        raise NotImplementedError


def _execute(request: JobRequest, emit, cancel: Optional[CancelToken]) -> None:
    """Run one request, turning everything that happens into events. Shared by both runners."""
    from .errors import CancelledError, EssNetError
    from .pipeline import process_file

    last_step = request.steps - 1
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = process_file(
                request.task, request.input_path, request.output_path, request.model,
                synthesis_model=request.synthesis_model, synthetic_output_path=request.synthetic_output_path,
                synthesis_progress=lambda p: emit(dict(event="progress", step=0, **p.to_dict())),
                progress=lambda p: emit(dict(event="progress", step=last_step, **p.to_dict())), cancel=cancel,
                **request.options())
        for warning in caught:
            emit({"event": "warning", "message": str(warning.message)})
        emit({"event": "done", "report": asdict(report)})
    except CancelledError as error:
        emit({"event": "error", "type": "CancelledError", "message": str(error)})
    except EssNetError as error:
        emit({"event": "error", "type": type(error).__name__, "message": str(error)})
    except MemoryError:
        emit({"event": "error", "type": "MemoryError",
              "message": "ran out of memory: close other programs, or crop the volume before processing"})
    except Exception as error:  # noqa: BLE001 - the job must always end with an event
        log.error("unexpected error in job:\n%s", traceback.format_exc())
        emit({"event": "error", "type": type(error).__name__,
              "message": f"unexpected error ({type(error).__name__}: {error}); see the log for details"})
    finally:
        for path in request.output_paths:
            remove_partial_outputs(path)


# --- in-process ----------------------------------------------------------------------------------------------
class _ThreadJob(Job):
    def __init__(self, request: JobRequest):
        super().__init__(request)
        self._cancel = CancelToken()
        self._thread = threading.Thread(target=self._run, name="SlicerEssNet job", daemon=True)

    def _run(self) -> None:
        try:
            _execute(self.request, self._events.put, self._cancel)
        finally:
            self._finished.set()

    def cancel(self) -> None:
        self._cancel.cancel()


class InProcessJobRunner:
    """Runs jobs in a thread of this process (torch releases the GIL while it computes)."""

    def start(self, request: JobRequest) -> Job:
        job = _ThreadJob(request)
        job._thread.start()
        return job


# --- worker process ------------------------------------------------------------------------------------------
class _ProcessJob(Job):
    """A worker process, followed without threads: the worker's events go to a file that ``poll()`` reads on.

    Inside Slicer, Python threads barely run while Qt idles (PythonQt keeps the GIL), so a reader thread would
    deliver progress late; a QTimer calling ``poll()`` needs none. The worker runs in a process group (POSIX) of
    its own, because in Slicer it is started through the ``PythonSlicer`` launcher, which runs the interpreter as
    a child and passes no signal on: ``cancel()`` stops the whole tree, not the launcher alone.
    """

    def __init__(self, request: JobRequest, process: subprocess.Popen, folder: Path, existed_before: List[bool]):
        super().__init__(request)
        self._process = process
        self._folder = folder
        self._events_file = open(folder / "events.txt", "rb")
        self._pending = b""
        self._cancelled = False
        self._saw_end = False
        self._existed_before = existed_before

    def _read_events(self) -> None:
        data = self._events_file.read()
        if not data:
            return
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace")
            if not text.startswith(EVENT_PREFIX):
                continue
            event = json.loads(text[len(EVENT_PREFIX):])
            if self._cancelled and event.get("event") == "done":
                continue  # finished as the user pressed Cancel: it stays cancelled (the output is removed)
            self._saw_end = self._saw_end or event.get("event") in ("done", "error")
            self._events.put(event)

    def _tree_alive(self) -> bool:
        if self._process.poll() is None:
            return True
        if os.name != "posix":
            return False
        try:
            os.killpg(self._process.pid, 0)  # anyone left in the worker's group (the launcher's child)?
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def poll(self) -> str:
        if not self._finished.is_set():
            self._read_events()
            if not self._tree_alive():
                self._end()
        return super().poll()

    def _end(self) -> None:
        self._read_events()
        code = self._process.returncode
        if self._cancelled and not self._saw_end:
            self._events.put({"event": "error", "type": "CancelledError",
                              "message": "cancelled by the user: no output was written"})
        elif not self._saw_end:
            detail = next((line for line in reversed(self._stderr_lines()) if line.strip()), "no message")
            self._events.put({"event": "error", "type": "WorkerDied",
                              "message": f"the worker process stopped unexpectedly (exit code {code}: {detail}); "
                                         "nothing was written - try again, or use the CPU if the GPU ran out of memory"})
        for path, existed in zip(self.request.output_paths, self._existed_before):
            if (self._cancelled or not self._saw_end) and not existed:
                # Written in the moment between Cancel and the stop, or one of a chain's two files before the
                # worker died: both outputs, or neither.
                try:
                    Path(path).unlink()
                except OSError:
                    pass
            remove_partial_outputs(path)
        self._events_file.close()
        shutil.rmtree(self._folder, ignore_errors=True)
        self._finished.set()

    def _stderr_lines(self) -> List[str]:
        try:
            return (self._folder / "stderr.txt").read_text(errors="replace").splitlines()[-20:]
        except OSError:
            return []

    def wait(self, timeout: Optional[float] = None) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() == RUNNING and not self._finished.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return self.poll()

    def cancel(self) -> None:
        """Stop the worker and everything it started; returns within about 5 s (graceful first, then killed)."""
        self._cancelled = True
        if not self._tree_alive():
            return
        _signal_tree(self._process, graceful=True)
        deadline = time.monotonic() + 5.0
        while self._tree_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._tree_alive():
            _signal_tree(self._process, graceful=False)


def _signal_tree(process: subprocess.Popen, graceful: bool) -> None:
    """SIGTERM (the worker then stops between batches and cleans up) or SIGKILL to the worker's whole process group;
    on Windows, taskkill /T (the tree)."""
    import signal

    if os.name == "posix":
        try:
            os.killpg(process.pid, signal.SIGTERM if graceful else signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return
    subprocess.run(["taskkill", "/T", "/PID", str(process.pid)] + ([] if graceful else ["/F"]),
                   capture_output=True, creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))


def hidden_window_options() -> dict:
    """Popen options that start a worker without a console window on Windows (as slicer.util.launchConsoleProcess
    does); a new session on POSIX, so the worker's whole tree can be signalled."""
    if os.name == "posix":
        return {"start_new_session": True}
    startup = subprocess.STARTUPINFO()
    startup.dwFlags |= subprocess.STARTF_USESHOWWINDOW
    startup.wShowWindow = 0  # SW_HIDE
    return {"startupinfo": startup,
            "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)}


class SubprocessJobRunner:
    """Runs each job in ``<python> -m SlicerEssNet worker``; in Slicer pass the path of ``PythonSlicer``."""

    def __init__(self, python_executable: Optional[str] = None, env: Optional[dict] = None):
        self.python_executable = python_executable or sys.executable
        self.env = env

    def start(self, request: JobRequest) -> Job:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="essnet-job-"))
        (folder / "request.json").write_text(request.to_json())
        env = dict(os.environ if self.env is None else self.env)
        package_parent = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env["PYTHONUNBUFFERED"] = "1"
        existed_before = [Path(path).exists() for path in request.output_paths]
        with open(folder / "events.txt", "wb") as events, open(folder / "stderr.txt", "wb") as errors:
            process = subprocess.Popen(
                [self.python_executable, "-m", "SlicerEssNet", "worker", str(folder / "request.json")],
                stdin=subprocess.DEVNULL, stdout=events, stderr=errors, env=env, **hidden_window_options())
        return _ProcessJob(request, process, folder, existed_before)


def run_worker(request_file) -> int:
    """The worker side: run the request and print events; exit 0 on success, 1 otherwise."""
    import signal

    request = JobRequest.from_json(Path(request_file).read_text())
    cancel = CancelToken()
    # Cancel arrives as SIGTERM: stop between batches and clean up instead of dying mid-write.
    signal.signal(signal.SIGTERM, lambda *_: cancel.cancel())
    ending = {}

    def emit(event: dict) -> None:
        if event.get("event") in ("done", "error"):
            ending["event"] = event["event"]
        sys.stdout.write(EVENT_PREFIX + json.dumps(event) + "\n")
        sys.stdout.flush()

    _execute(request, emit, cancel)
    return 0 if ending.get("event") == "done" else 1
