"""The study's progress line: jobs done of those planned, and the time left from the finished jobs' times."""
from __future__ import annotations

from Training.study.study_progress import StudyProgress, describe, format_minutes


def test_time_left_is_the_mean_of_finished_jobs_of_the_same_kind_else_of_all():
    lines = []
    progress = StudyProgress(["seed0/arm_real", "seed0/arm_low5", "seed0/stage1_essnet", "seed0/arm_real+essnet"],
                             lines.append)
    progress.finished("seed0/arm_real", 600.0)
    # Two arms at 600 s each, and the synthesis model, of a kind not seen yet, at the mean of all jobs (600 s).
    assert lines[-1] == "progress: 1 of 4 training jobs done (seed 0, arm real: 10 min); about 30 min left"
    progress.finished("seed0/stage1_essnet", 150.0)
    assert lines[-1].endswith("about 20 min left")  # the two arms left, still at 600 s each
    progress.finished("seed0/arm_low5", 960.0)
    assert lines[-1].endswith("about 13 min left")  # one arm at the mean of 600 and 960 s
    progress.finished("seed0/arm_real+essnet", 3700.0)
    assert lines[-1] == "progress: 4 of 4 training jobs done (seed 0, arm real+essnet: 1 h 02 min)"


def test_a_job_outside_the_plan_joins_it():
    lines = []
    progress = StudyProgress(["seed1/stage1_essnet"], lines.append)
    progress.finished("seed1/stage1_essnet", 120.0)
    progress.finished("seed1/stage1_essnet_attempt2", 60.0)
    assert lines[-1] == "progress: 2 of 2 training jobs done (seed 1, stage 1, essnet, attempt 2: 1 min)"


def test_names_and_durations_read_as_a_user_would_say_them():
    assert describe("seed2/arm_low5+essnet_attempt3") == "seed 2, arm low5+essnet, attempt 3"
    assert [format_minutes(s) for s in (0, 29, 31, 3599, 3600, 4230)] == ["0 min", "0 min", "1 min", "1 h 00 min",
                                                                         "1 h 00 min", "1 h 10 min"]
