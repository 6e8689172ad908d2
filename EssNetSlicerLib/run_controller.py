"""The GUI side of a run: a ``qt.QTimer`` polls it, the progress bar shows % and ETA, Apply turns into Cancel.

Slicer's event loop keeps running between polls, so the application never freezes while a model works. Only
widget methods common to PythonQt (Slicer) and PySide6 are called (setters and signals, no property reads).
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

POLL_INTERVAL_MS = 250
PROGRESS_STEPS = 1000


class RunController:
    """Drives one run at a time for a module widget.

    ``applyButton``, ``progressBar`` and ``statusLabel`` come from the module's ``.ui``. ``onFinished(run)`` is
    called once, on the main thread, when the run ends (whatever its state).
    """

    def __init__(self, applyButton, progressBar, statusLabel, applyText: str = "Apply"):
        import qt

        self.applyButton = applyButton
        self.progressBar = progressBar
        self.statusLabel = statusLabel
        self.applyText = applyText
        self.run = None
        self._onFinished: Optional[Callable] = None
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self.poll)
        self.progressBar.setRange(0, PROGRESS_STEPS)
        self.progressBar.setVisible(False)

    @property
    def running(self) -> bool:
        return self.run is not None

    def start(self, run, onFinished: Callable) -> None:
        self.run = run
        self._onFinished = onFinished
        self.applyButton.setText("Cancel")
        self.applyButton.setToolTip("Stop the running job; nothing is added to the scene.")
        self.applyButton.setEnabled(True)
        self.progressBar.setValue(0)
        self.progressBar.setFormat("%p%")
        self.progressBar.setVisible(True)
        self._show(run.status())
        self._timer.start()

    def cancel(self) -> None:
        if self.run is not None:
            self.statusLabel.setText("Cancelling...")
            self.applyButton.setEnabled(False)
            self.run.cancel()

    def poll(self) -> None:
        run = self.run
        if run is None:
            self._timer.stop()
            return
        state = run.poll()
        status = run.status()
        self._show(status)
        if run.finished:
            self._timer.stop()
            self.run = None
            self.applyButton.setText(self.applyText)
            self.applyButton.setToolTip("")
            self.applyButton.setEnabled(True)
            self.progressBar.setVisible(state == "succeeded")
            callback, self._onFinished = self._onFinished, None
            if callback is not None:
                callback(run)

    def _show(self, status) -> None:
        self.progressBar.setValue(int(round(status.fraction * PROGRESS_STEPS)))
        self.progressBar.setFormat(f"{status.fraction * 100:.0f}%")
        text = status.text
        if status.warnings:
            text += "  Warning: " + status.warnings[-1]
        self.statusLabel.setText(text)
        logging.debug("EssNet run: %s", text)

    def stop(self) -> None:
        """Cancel and stop polling (module cleanup, scene close)."""
        if self.run is not None:
            self.run.cancel()
            self.run.wait(timeout=10)
        self._timer.stop()
        self.run = None
