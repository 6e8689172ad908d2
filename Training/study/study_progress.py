"""The whole study's progress: training jobs done of those planned, and about how long the rest will take.

Each job's own bar shows its ETA; a study is many jobs (the cpu preset's seed: 7 U-Nets and 2 synthesis models,
70 minutes), so after each one the study says how far it is. The time left is the mean recorded time of the
finished jobs of the same kind (U-Net arm, or synthesis model with its translation) times the jobs of that kind
still to come, falling back to the mean of every finished job, shared among the worker processes when jobs run
side by side (``job_pool.py``). The recorded times (``timings.json``) are what
each job cost, sessions interrupted by a kill included, so a resumed run estimates from the start.
"""
from __future__ import annotations


def job_kind(job: str) -> str:
    """``"arm"`` for a stage-2 U-Net (``seed0/arm_real``), ``"stage1"`` for a synthesis model."""
    return "stage1" if "/stage1_" in job else "arm"


def describe(job: str) -> str:
    """``seed0/arm_real+ct`` -> ``seed 0, arm real+ct``; ``seed1/stage1_essnet_attempt2`` -> ``seed 1, stage 1,
    essnet, attempt 2``."""
    seed, _, name = job.partition("/")
    name = name.replace("stage1_", "stage 1, ", 1).replace("arm_", "arm ", 1).replace("_attempt", ", attempt ")
    return f"{seed.replace('seed', 'seed ', 1)}, {name}"


def format_minutes(seconds: float) -> str:
    minutes = int(round(seconds / 60.0))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


class StudyProgress:
    def __init__(self, planned, log, workers: int = 1):
        self.planned = list(planned)  # job names: "seed0/arm_real", "seed0/stage1_essnet", ...
        self.seconds = {}  # finished job -> its recorded time
        self.log = log
        self.workers = max(1, int(workers))

    def finished(self, job: str, seconds: float) -> None:
        """Record ``job`` as done after ``seconds`` (a retried synthesis model is a job the plan did not have).
        Said once: a job a worker finished is reported when it ends, not again when the study reloads it."""
        if job in self.seconds:
            return
        if job not in self.planned:
            self.planned.append(job)
        self.seconds[job] = float(seconds)
        left = [j for j in self.planned if j not in self.seconds]
        message = (f"progress: {len(self.seconds)} of {len(self.planned)} training jobs done "
                   f"({describe(job)}: {format_minutes(seconds)})")
        if left:
            message += f"; about {format_minutes(self.expected_seconds(left) / min(self.workers, len(left)))} left"
        self.log(message)

    def expected_seconds(self, jobs) -> float:
        by_kind = {}
        for job, seconds in self.seconds.items():
            by_kind.setdefault(job_kind(job), []).append(seconds)
        every = list(self.seconds.values())

        def mean(values):
            return sum(values) / len(values)

        return sum(mean(by_kind.get(job_kind(job), every)) for job in jobs)
