"""Training jobs side by side in worker processes (``--workers``): the same study, the same results, jobs that
overlap in time, a failure that stops the run with one clear line, and a resume that trains nothing again."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import time
from pathlib import Path

import pytest
import torch

from test_training_demo import _micro_preset


def _micro(arms, section: str = "", **changes):
    """The micro preset with these arms, and some options of one section changed."""
    preset = _micro_preset()
    preset.arms = arms
    if section:
        setattr(preset, section, dataclasses.replace(getattr(preset, section), **changes))
    return preset


def _started_jobs(meeting) -> list:
    """The keys in ``meeting/started``, one line per worker that started (complete lines only)."""
    path = Path(meeting) / "started"
    return path.read_text().split("\n")[:-1] if path.exists() else []


def _train_once_a_second_job_started(run_dir, job, device):
    """The study's worker target, ``train_in_worker``, behind a meeting point: each worker first appends its job's
    key to ``meeting/started`` beside the run folder; the first job to start then waits (before it trains, so before
    it can end) until another job's worker has done so, and writes ``meeting/met``. ``met`` exists only if a second
    job started while the first was still running: overlap shown by events, not by clocks. A pool that runs its
    jobs one after the other never writes it (its first job gives up waiting after 120 s)."""
    from Training.study.study import train_in_worker

    meeting = Path(run_dir).parent / "meeting"
    meeting.mkdir(exist_ok=True)
    with open(meeting / "started", "a") as started:  # one short append per worker: lines never interleave
        started.write(job.key + "\n")
    try:
        os.close(os.open(str(meeting / "first"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        pass  # not the first job: train at once
    else:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            others = [key for key in _started_jobs(meeting) if key != job.key]
            if others:
                (meeting / "met").write_text(json.dumps({"first": job.key, "started_meanwhile": others}))
                break
            time.sleep(0.05)
    train_in_worker(run_dir, job, device)


@pytest.mark.slow
def test_two_workers_give_the_results_of_one_process_and_run_jobs_side_by_side(tmp_path, monkeypatch):
    from Training.study import study
    from Training.study.study import Study

    # Spawned workers unpickle their target by name: this module is importable there (the parent's sys.path).
    monkeypatch.setattr(study, "WORKER_TARGET", "test_training_workers:_train_once_a_second_job_started")
    # One thread everywhere in both runs, whatever the machine or the caller's OMP_NUM_THREADS: each worker gets
    # the budget split in two (at least one), and the study process, which translates and scores, takes the
    # budget whenever the engine imports torch. Float sums then add up in the same order in every job, so the
    # numbers can be compared exactly (Adam turns a last-bit difference into a visible one within steps).
    monkeypatch.setenv("SLICERESSNET_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what the alone run trains at before the engine first runs
    try:
        alone = Study(tmp_path / "alone", _micro_preset(), stream=io.StringIO()).run()
        log = io.StringIO()
        run_dir = tmp_path / "side-by-side"
        beside = Study(run_dir, _micro_preset(), stream=log, workers=2).run()
    finally:
        torch.set_num_threads(threads)

    # Every job trains at one thread in both, from the same seeds: the same numbers exactly.
    assert json.dumps(beside["summary"]) == json.dumps(alone["summary"])
    assert json.dumps(beside["shape_consistency"]) == json.dumps(alone["shape_consistency"])
    assert json.dumps(beside["on_ct"]) == json.dumps(alone["on_ct"])

    workers = json.loads((run_dir / "workers.json").read_text())
    jobs = {f"seed0/arm_{arm}" for arm in _micro_preset().arms} | {"seed0/stage1_essnet", "seed0/stage1_cyclegan"}
    assert set(workers) == jobs and {entry["workers"] for entry in workers.values()} == {2}
    # Side by side: a second job's worker started while the first job was still waiting to train (see above).
    meeting = tmp_path / "meeting"
    assert (meeting / "met").exists(), "no second job started while the first was running: jobs ran one by one"
    met = json.loads((meeting / "met").read_text())
    assert met["first"] in jobs and met["started_meanwhile"] and set(met["started_meanwhile"]) <= jobs - {met["first"]}
    started = _started_jobs(meeting)
    assert sorted(started) == sorted(jobs)  # each job's worker started once
    # The study's clock: a seed's wall time beside the sum of what its jobs cost.
    wall = json.loads((run_dir / "wall_clock.json").read_text())["seed0"]
    assert wall["workers"] == 2 and wall["resumed"] is False and wall["seconds"] > 0
    progress = [line for line in log.getvalue().splitlines() if "training jobs done" in line]
    assert len(progress) == 8 and progress[-1].startswith("[study] progress: 8 of 8")

    # Run again: every job reloads, no worker starts, nothing is timed again.
    timings = (run_dir / "timings.json").read_text()
    again = Study(run_dir, _micro_preset(), stream=io.StringIO(), workers=2).run()
    assert json.dumps(again["summary"]) == json.dumps(beside["summary"])
    assert (run_dir / "timings.json").read_text() == timings
    assert json.loads((run_dir / "workers.json").read_text()) == workers
    assert _started_jobs(meeting) == started


@pytest.mark.slow
def test_the_next_seeds_first_jobs_are_queued_before_the_seed_ends(tmp_path, monkeypatch):
    """No worker waits idle while a seed's last arms train: the next seed's jobs are queued behind them."""
    from Training.study.job_pool import JobPool
    from Training.study.study import Study

    events = []
    submit, run_seed = JobPool.submit, Study.run_seed

    def recording_submit(pool, jobs, first=False):
        events.extend(job.key for job in jobs)
        return submit(pool, jobs, first)

    def recording_run_seed(study, seed):
        events.append(f"run_seed {seed}")
        return run_seed(study, seed)

    monkeypatch.setattr(JobPool, "submit", recording_submit)
    monkeypatch.setattr(Study, "run_seed", recording_run_seed)
    preset = _micro(("real", "monai"))
    preset.seeds = (0, 1)
    run_dir = tmp_path / "run"
    Study(run_dir, preset, stream=io.StringIO(), workers=2).run()
    assert events.index("seed1/arm_real") < events.index("run_seed 1")
    assert events.index("seed1/arm_monai") < events.index("run_seed 1")
    clock = json.loads((run_dir / "wall_clock.json").read_text())
    assert clock["seed0"]["began_early"] is False and clock["seed1"]["began_early"] is True


@pytest.mark.slow
def test_a_job_that_fails_in_its_worker_stops_the_study_with_one_line_and_leaves_no_result(tmp_path):
    from Training.study.job_pool import TrainingJobFailed
    from Training.study.study import Study

    # The two heads cannot be combined: train_segmentation refuses, inside the worker.
    preset = _micro(("real", "monai"), "segmentation", deep_supervision=1, organ_weight=0.5)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingJobFailed) as failure:
        Study(run_dir, preset, stream=io.StringIO(), workers=2).run()
    message = str(failure.value)
    assert "\n" not in message and "seed0/arm_real failed in its worker process" in message
    assert "run the same command again" in message
    assert not (run_dir / "seed0" / "arms" / "real" / "done.json").exists()
    assert not (run_dir / "results.json").exists()


@pytest.mark.slow
def test_the_gate_retries_through_the_workers(tmp_path):
    """A failed synthesis model is trained again by a worker, ahead of everything waiting on it."""
    from Training.study.study import Study

    preset = _micro(("real", "real+essnet"), "synthesis", min_shape_consistency=1.01, max_attempts=2)
    run_dir = tmp_path / "run"
    results = Study(run_dir, preset, stream=io.StringIO(), workers=2).run()
    stage = results["per_seed"]["0"]["stage1"]["essnet"]
    assert [a["seed"] for a in stage["attempts"]] == [0, 1000]
    workers = json.loads((run_dir / "workers.json").read_text())
    assert {"seed0/stage1_essnet", "seed0/stage1_essnet_attempt2", "seed0/arm_real"} <= set(workers)
    folder = results["per_seed"]["0"]["arms"]["real+essnet"]["folder"]
    assert f"seed0/arm_{folder}" in workers


def test_auto_workers_share_the_cores_on_a_cpu_and_stay_one_elsewhere(monkeypatch):
    from Training.study.job_pool import auto_workers

    for threads, expected in (("1", 1), ("2", 2), ("3", 2), ("8", 4), ("32", 6)):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        monkeypatch.delenv("SLICERESSNET_THREADS", raising=False)
        assert auto_workers("cpu", distributed=False) == expected, threads
    assert auto_workers("cuda:0", distributed=False) == 1
    assert auto_workers("cpu", distributed=True) == 1


def test_workers_on_the_command_line(tmp_path):
    from Training.__main__ import build_parser
    from Training.study.study import Study
    from Training.stages.distributed import DistributedContext

    parser = build_parser()
    assert parser.parse_args(["run"]).workers == "auto"
    assert parser.parse_args(["run", "--workers", "3"]).workers == 3
    for wrong in ("0", "-1", "two"):
        with pytest.raises(SystemExit):
            parser.parse_args(["run", "--workers", wrong])
    with pytest.raises(ValueError, match="torchrun"):
        Study(tmp_path / "run", _micro_preset(), DistributedContext(world_size=2), workers=2)
