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
from Training.presets import get_preset
from Training.cohorts import phantom_cases
from Training.slices import build_slice_set
from Training.train_synthesis import train_synthesis
from Training.distributed import DistributedContext
preset = get_preset("demo")
preset.synthesis = dataclasses.replace(preset.synthesis, ngf=4, ndf=4, seg_ngf=4, n_blocks=1, seg_n_blocks=1,
                                       crop=32, iterations={total}, decay_from=10, checkpoint_every=5, pool_size=3)
cases = phantom_cases({data!r}, 2, 2)
grid = {{"mode": "spacing", "spacing_mm": 8.0, "size": 32, "multiple_of": 16}}
ct, mr = build_slice_set(cases["CT"], grid), build_slice_set(cases["MR"], grid)
print("ready", flush=True)
train_synthesis({job!r}, ct, mr, preset, seed=1, context=DistributedContext(), essnet=True)
print("finished", flush=True)
'''


def _driver(tmp_path, repo_root, job, total=40):
    script = tmp_path / f"driver_{job.name}.py"
    script.write_text(DRIVER.format(repo=str(repo_root), total=total, data=str(tmp_path / "data"), job=str(job)))
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
    process = subprocess.Popen(_driver(tmp_path, repo_root, killed), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    at_kill = torch.load(killed / "checkpoint.pt", weights_only=True)
    iteration_at_kill = at_kill["iteration"]
    assert 5 <= iteration_at_kill < 40  # killed mid-run, at most checkpoint_every iterations lost
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
