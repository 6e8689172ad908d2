"""A stage-1 run killed with SIGKILL and started again continues from its last checkpoint and ends exactly where
an uninterrupted run ends (same data order, augmentation, pools, optimiser state and LR schedule)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

DRIVER = r'''
import sys, dataclasses
sys.path.insert(0, {repo!r})
import torch
torch.set_num_threads(1)
from Training.study.presets import get_preset
from Training.data.cohorts import phantom_cases
from Training.data.slices import build_slice_set
from Training.stages.train_synthesis import train_synthesis
from Training.stages.distributed import DistributedContext
preset = get_preset("demo")
preset.synthesis = dataclasses.replace(preset.synthesis, ngf=4, ndf=4, seg_ngf=4, n_blocks=1, seg_n_blocks=1,
                                       crop=32, iterations={total}, decay_from=10, checkpoint_every=5, pool_size=3)
cases = phantom_cases({data!r}, 2, 2)
grid = {{"mode": "spacing", "spacing_mm": 8.0, "size": 32, "multiple_of": 16}}
ct, mr = build_slice_set(cases["CT"], grid), build_slice_set(cases["MR"], grid)
pause_at, marker = {pause_at!r}, {marker!r}
if pause_at is not None:
    # Stop before training iteration pause_at and wait there to be killed: the kill lands at a known point.
    import os, time
    import Training.stages.train_synthesis as stage
    run_loop = stage.run_loop

    def paused_run_loop(*args, step, **options):
        def paused_step(iteration):
            if iteration == pause_at:
                open(marker, "w").close()
                time.sleep(300)
                os._exit(3)  # never killed: end without a checkpoint or done.json, the test fails
            return step(iteration)
        return run_loop(*args, step=paused_step, **options)

    stage.run_loop = paused_run_loop
print("ready", flush=True)
train_synthesis({job!r}, ct, mr, preset, seed=1, context=DistributedContext(), essnet=True)
print("finished", flush=True)
'''


def _driver(tmp_path, repo_root, job, total=40, pause_at=None):
    """The command that trains ``job``; with ``pause_at``, the run writes ``paused`` beside the job folder before
    iteration ``pause_at`` (0-based) and waits there to be killed."""
    script = tmp_path / f"driver_{job.name}.py"
    script.write_text(DRIVER.format(repo=str(repo_root), total=total, data=str(tmp_path / "data"), job=str(job),
                                    pause_at=pause_at, marker=str(tmp_path / "paused")))
    return [sys.executable, str(script)]


def _final_generators(job):
    state = torch.load(job / "checkpoint.pt", weights_only=True)
    return state["iteration"], state["training"]["generators"]


@pytest.mark.slow
def test_sigkill_then_restart_ends_like_an_uninterrupted_run(tmp_path, repo_root):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    reference = tmp_path / "reference"
    subprocess.run(_driver(tmp_path, repo_root, reference), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    # The event: the run has trained iterations 0-6 (checkpoint_every = 5: the checkpoint of iteration 5 is on
    # disk, 5 and 6 are not) and waits before iteration 7. The kill lands there, however fast or slow the run.
    process = subprocess.Popen(_driver(tmp_path, repo_root, killed, pause_at=7), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "paused").exists():
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the run never reached iteration 7"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert (killed / "checkpoint.pt").exists(), "no checkpoint after 7 iterations with checkpoint_every = 5"
    at_kill = torch.load(killed / "checkpoint.pt", weights_only=True)
    iteration_at_kill = at_kill["iteration"]
    assert iteration_at_kill == 5  # the last checkpoint: iterations 5 and 6 are lost and must be trained again
    assert at_kill["seconds"] > 0  # the job's own clock, up to its last checkpoint
    assert not (killed / "done.json").exists()
    assert not list(killed.glob("*.partial*"))  # atomic checkpoints: no half-written file left behind

    restarted = subprocess.run(_driver(tmp_path, repo_root, killed), check=True, env=env, capture_output=True,
                               text=True)
    assert f"resuming at iteration {iteration_at_kill}/40" in restarted.stderr
    done = json.loads((killed / "done.json").read_text())
    # What the job cost: the killed session's seconds to its checkpoint plus the restarted session's.
    assert done["seconds"] > at_kill["seconds"]
    assert done["seconds"] == torch.load(killed / "checkpoint.pt", weights_only=True)["seconds"]
    (end_a, reference_weights), (end_b, resumed_weights) = _final_generators(reference), _final_generators(killed)
    assert end_a == end_b == 40
    for key, value in reference_weights.items():
        torch.testing.assert_close(resumed_weights[key], value, rtol=0, atol=0, msg=key)

    # Started once more, the finished job is only reloaded: checkpoint and clock stay as they were.
    written = (killed / "checkpoint.pt").stat().st_mtime_ns
    subprocess.run(_driver(tmp_path, repo_root, killed), check=True, env=env, capture_output=True)
    assert (killed / "checkpoint.pt").stat().st_mtime_ns == written
    assert json.loads((killed / "done.json").read_text()) == done
