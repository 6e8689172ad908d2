"""The iteration loop both stages share: resume, step, log with ETA, checkpoint atomically, mark done.

A job folder holds ``checkpoint.pt`` (rewritten every ``checkpoint_every`` iterations, at most one epoch apart)
and, once finished, ``done.json``. Killing the process at any moment loses at most the iterations since the
last checkpoint; starting again continues from there on the same schedule (see ``sampling.py``).
The checkpoint also carries the job's own clock: the wall seconds its iterations took, summed over the sessions
a kill interrupted (up to their last checkpoint), so the time a job cost survives restarts and a finished job
that is only reloaded adds nothing to it.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Optional

from SlicerEssNet.progress import Progress

from .checkpoint import load_checkpoint, read_json, save_checkpoint, write_json


class TensorBoardLog:
    """Scalars to TensorBoard when the optional ``tensorboard`` package is installed; silent otherwise."""

    def __init__(self, folder, enabled: bool):
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional: results.json has every curve anyway
                return
            self.writer = SummaryWriter(str(folder))

    def add(self, record: dict, iteration: int) -> None:
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, iteration)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def job_done(job_dir) -> Optional[dict]:
    return read_json(Path(job_dir) / "done.json")


def run_loop(job_dir, *, label: str, total: int, step: Callable[[int], dict], get_state: Callable[[], dict],
             set_state: Callable[[dict], None], checkpoint_every: int, context, log_every: int = 25,
             after_step: Optional[Callable[[int, dict], Optional[dict]]] = None, stream=None) -> dict:
    """Run iterations ``[start, total)`` where ``start`` comes from the checkpoint; return the final state.

    ``step(i)`` trains one iteration and returns scalar losses; ``after_step(i, state)`` may evaluate and return
    extra scalars (validation scores) recorded in the history. The history of logged records lives in the
    checkpoint, so curves survive a restart.
    """
    job_dir = Path(job_dir)
    stream = stream or sys.stderr
    checkpoint_path = job_dir / "checkpoint.pt"
    state = load_checkpoint(checkpoint_path)
    start, history, earlier_seconds = 0, [], 0.0
    if state is not None:
        set_state(state["training"])
        start, history = int(state["iteration"]), list(state["history"])
        earlier_seconds = float(state.get("seconds", 0.0))  # checkpoints written before the clock: 0
        if context.is_main:
            print(f"[{label}] resuming at iteration {start}/{total} from {checkpoint_path}", file=stream, flush=True)
    tensorboard = TensorBoardLog(job_dir / "tensorboard", context.is_main)
    started = time.perf_counter()

    def seconds() -> float:
        return round(earlier_seconds + time.perf_counter() - started, 1)

    window: dict = {}  # losses since the last log line: the curves show means, not single noisy batches
    for iteration in range(start, total):
        record = step(iteration)
        for key, value in record.items():
            window.setdefault(key, []).append(value)
        done = iteration + 1
        extra = after_step(done, record) if after_step else None
        if extra or done % log_every == 0 or done == total:
            means = {key: sum(values) / len(values) for key, values in window.items()}
            window = {}
            entry = {"iteration": done, **means, **(extra or {})}
            history.append(entry)
            tensorboard.add(entry, done)
            if context.is_main:
                elapsed = time.perf_counter() - started
                eta = elapsed / (done - start) * (total - done)
                progress = Progress(done, total, elapsed, eta, "iterations").format()
                losses = " ".join(f"{k}={v:.4g}" for k, v in entry.items() if k not in ("iteration", "lr")
                                  and isinstance(v, float))
                print(f"[{label}] {progress} {losses}", file=stream, flush=True)
        if done % checkpoint_every == 0 and done < total and context.is_main:
            save_checkpoint({"iteration": done, "history": history, "training": get_state(), "seconds": seconds()},
                            checkpoint_path)
        if done % checkpoint_every == 0:
            context.barrier()  # ranks leave together: nobody races ahead of a checkpoint being written
    tensorboard.close()
    reloaded = start >= total  # finished in an earlier session: kept as it was, its clock untouched
    final = {"iteration": total, "history": history, "training": get_state(),
             "seconds": earlier_seconds if reloaded else seconds()}
    if context.is_main and not reloaded:
        save_checkpoint(final, checkpoint_path)
    return final


def mark_done(job_dir, summary: dict) -> None:
    write_json(summary, Path(job_dir) / "done.json")
