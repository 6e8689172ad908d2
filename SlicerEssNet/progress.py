"""Progress records, a text progress bar with ETA, and a cancellation token.

The same ``Progress`` record travels from the inference engine to the CLI's bar, to the worker process's
progress lines and to the Slicer modules' progress bars, so ETA arithmetic is written once, here.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional


@dataclass
class Progress:
    done: int
    total: int
    elapsed_s: float = 0.0
    eta_s: Optional[float] = None
    stage: str = "slices"

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)

    def format(self) -> str:
        text = f"{self.fraction * 100:3.0f}% {self.done}/{self.total} {self.stage}"
        if self.eta_s is not None and self.done < self.total:
            text += f", ETA {format_duration(self.eta_s)}"
        elif self.done >= self.total and self.total > 0:
            text += f" in {format_duration(self.elapsed_s)}"
        return text

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Progress":
        return cls(**{key: data[key] for key in ("done", "total", "elapsed_s", "eta_s", "stage") if key in data})


ProgressCallback = Callable[[Progress], None]


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class ProgressTracker:
    """Turns 'done out of total' into Progress records with an ETA from the rate so far."""

    def __init__(self, total: int, callback: Optional[ProgressCallback] = None, stage: str = "slices"):
        self.total = total
        self.callback = callback
        self.stage = stage
        self.started = time.perf_counter()

    def update(self, done: int) -> Progress:
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (self.total - done) if done > 0 else None
        progress = Progress(done, self.total, elapsed, eta, self.stage)
        if self.callback is not None:
            self.callback(progress)
        return progress


class CancelToken:
    """Set from any thread (a Cancel button, a signal handler); checked by the engine between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class TextProgressBar:
    """A one-line bar on stderr: ``[#####-----]  42% 21/50 slices, ETA 0:12``. Redraws at most 10 times a second."""

    def __init__(self, label: str = "", stream=None, width: int = 30):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self._last_draw = 0.0
        self._finished = False

    def __call__(self, progress: Progress) -> None:
        now = time.perf_counter()
        final = progress.done >= progress.total
        if not final and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        filled = int(round(progress.fraction * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        prefix = f"{self.label} " if self.label else ""
        interactive = getattr(self.stream, "isatty", lambda: False)()
        line = f"{prefix}[{bar}] {progress.format()}"
        if interactive:
            self.stream.write("\r" + line + ("\n" if final else ""))
        elif final or progress.done == 0:
            # Logs and CI capture: no carriage-return spam, just the start and the end.
            self.stream.write(line + "\n")
        self.stream.flush()
