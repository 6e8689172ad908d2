"""Training jobs side by side, each in a worker process of its own (``python -m Training run --workers N``).

The study's networks are small, so a training step is hundreds of small ops that two cores share badly: on the
project's 2-core machine two jobs at 1 thread each finish in 0.86x the time of one after the other at 2 threads
(``docs/EXPERIMENTS.md``, "time of a seed"). A worker is a fresh process that reopens the run folder (``config.json``), reads
only the data its job trains on and writes only that job's folder; the study process then reloads the finished
job like any other, so results, timings, reports and resuming are those of a run without workers. The jobs of a
seed are queued as soon as what they learn from exists: the real-only U-Net and both synthesis models first
(the stage-1 gate waits on them), the arms of real MR or CT alone beside them, the arms of synthetic MR once the
gate has chosen each model. ``workers.json`` in the run folder records when each job ran and on how many threads.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from SlicerEssNet.errors import EssNetError

from ..stages.checkpoint import read_json, write_json
from ..stages.loop import job_done


class TrainingJobFailed(EssNetError):
    pass


@dataclass(frozen=True)
class Job:
    """One training job of the study: a stage-2 arm (``arm``) or a synthesis model (``tag``)."""
    key: str  # its name in timings.json: "seed0/arm_real", "seed0/stage1_essnet_attempt2"
    folder: str  # its job folder, relative to the run folder
    seed: int
    arm: str = ""
    synthetic_cases: tuple = ()  # the synthetic MR an arm learns from (read from disk by the worker)
    tag: str = ""  # "essnet" or "cyclegan"
    essnet: bool = False
    attempt: int = 0
    stage1_seed: int = 0

    @property
    def progress_key(self) -> str:
        """Its name in the study's progress: the arm, whichever synthesis attempt its data came from."""
        return f"seed{self.seed}/arm_{self.arm}" if self.arm else self.key


def auto_workers(device: str, distributed: bool) -> int:
    """Workers for ``--workers auto``: on a CPU, two or more processes of at least one thread each, within the
    threads the user allows (``SLICERESSNET_THREADS`` / ``OMP_NUM_THREADS``, else the cores); one on a GPU or
    under torchrun. No more than 6: a seed has 6 jobs that need no synthetic MR, and 3 that do."""
    from SlicerEssNet.runtime import thread_budget

    if distributed or not str(device).startswith("cpu"):
        return 1
    budget = thread_budget()
    return 1 if budget < 2 else min(6, max(2, budget // 2))


class JobPool:
    """Queue jobs (``submit``), wait for one (``wait``, ``run``); a context manager that stops its workers on
    the way out. With ``workers`` <= 1 it is never used (the study trains in its own process)."""

    def __init__(self, run_dir, workers: int, device: str, log, on_finished=None, threads: int = 0, target=""):
        """``target``: ``"module:function"``, what a worker process runs as ``function(run_dir, job, device)``
        once ``start_worker`` has set its threads (imported by name then, so nothing heavy loads before)."""
        from SlicerEssNet.runtime import thread_budget

        self.run_dir = Path(run_dir)
        self.workers = max(1, int(workers))
        self.threads = int(threads) or max(1, thread_budget() // self.workers)
        self.device = str(device)
        self.log = log
        self.on_finished = on_finished  # (job, seconds of its own clock)
        self.target = target
        self.queue, self.running, self.ended, self.failed = [], {}, set(), {}
        self.known = set()
        self.condition = threading.Condition()
        self.closing = False
        self.scheduler = None
        self.record = read_json(self.run_dir / "workers.json") or {}

    def __enter__(self):
        if self.workers > 1:
            self.log(f"training jobs side by side: {self.workers} worker processes, {self.threads} "
                     f"thread{'s' if self.threads > 1 else ''} each")
            self.scheduler = threading.Thread(target=self._schedule, name="job-pool", daemon=True)
            self.scheduler.start()
        return self

    def __exit__(self, *exc_info):
        with self.condition:
            self.closing = True
            running = list(self.running.values())
            self.condition.notify_all()
        for _, process, _ in running:  # only on an error: the study waits for every job it queues
            process.terminate()
        for _, process, _ in running:
            process.join(10)
        if self.scheduler is not None:
            self.scheduler.join(10)

    # --- the study's side ---------------------------------------------------------------------------------
    def submit(self, jobs, first: bool = False) -> None:
        """Queue the jobs not finished nor queued before; ``first``: ahead of those already waiting."""
        with self.condition:
            new = [job for job in jobs if job.key not in self.known and job_done(self.run_dir / job.folder) is None]
            self.known.update(job.key for job in new)
            self.queue = new + self.queue if first else self.queue + new
            self.condition.notify_all()

    def wait(self, key: str) -> None:
        """Block until job ``key`` has finished (at once if it was never queued: finished before)."""
        with self.condition:
            while key in self.known and key not in self.ended and not self.failed:
                self.condition.wait(1.0)
            if self.failed:
                failed, why = next(iter(self.failed.items()))
                raise TrainingJobFailed(
                    f"training job {failed} failed in its worker process ({why}; its error is printed above): "
                    "mend the cause and run the same command again, it resumes from the last checkpoints")

    def run(self, job: Job) -> None:
        """Train ``job`` next, and wait for it (what the rest of the study waits on: the gate's retries)."""
        self.submit([job], first=True)
        self.wait(job.key)

    # --- the scheduler thread -------------------------------------------------------------------------------
    def _schedule(self) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads inherited
        while True:
            with self.condition:
                if self.closing:
                    return
                while self.queue and len(self.running) < self.workers and not self.failed:
                    job = self.queue.pop(0)
                    process = context.Process(target=start_worker, name=f"worker {job.key}", daemon=True,
                                              args=(self.target, str(self.run_dir), job, self.threads, self.device,
                                                    os.getpid()))
                    process.start()
                    self.running[job.key] = (job, process, time.time())
                sentinels = [process.sentinel for _, process, _ in self.running.values()]
            if sentinels:
                multiprocessing.connection.wait(sentinels, timeout=1.0)
            else:
                with self.condition:
                    self.condition.wait(1.0)
            self._collect()

    def _collect(self) -> None:
        finished = []
        with self.condition:
            for key, (job, process, started) in list(self.running.items()):
                if process.exitcode is None:
                    continue
                del self.running[key]
                done = job_done(self.run_dir / job.folder)
                if process.exitcode != 0 or done is None:
                    self.failed[key] = f"exit code {process.exitcode}"
                    continue
                self.ended.add(key)
                self.record[key] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                                    "wall_seconds": round(time.time() - started, 1), "threads": self.threads,
                                    "workers": self.workers}
                finished.append((job, float(done.get("seconds") or 0.0)))
            if finished:
                write_json(self.record, self.run_dir / "workers.json")
            self.condition.notify_all()
        for job, seconds in finished:
            if self.on_finished:
                self.on_finished(job.progress_key, seconds)


def start_worker(target: str, run_dir: str, job: Job, threads: int, device: str, study_pid: int) -> None:
    """A worker process: take its thread count and die with the study process, then import ``target``
    (``"module:function"``) and run the job with it."""
    import importlib

    os.environ["OMP_NUM_THREADS"] = str(threads)
    _stop_with(study_pid)
    from SlicerEssNet.runtime import import_torch

    import_torch(threads, wait="short_spin")
    module, _, function = target.partition(":")
    getattr(importlib.import_module(module), function)(run_dir, job, device)


def _stop_with(study_pid: int) -> None:
    """Exit at once if the study process dies (a kill): no orphan keeps training, the run resumes from its
    checkpoints."""
    def watch():
        while os.getppid() == study_pid:
            time.sleep(2.0)
        os._exit(1)

    threading.Thread(target=watch, name="watch-study", daemon=True).start()
