"""Jobs in a thread and in a worker process: success, progress, cancel, a worker that dies - and never an
output file left behind by a job that did not succeed."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import SimpleITK as sitk

from SlicerEssNet.jobs import (CANCELLED, FAILED, SUCCEEDED, InProcessJobRunner, JobRequest, SubprocessJobRunner,
                               remove_partial_outputs)
from SlicerEssNet.weights import create_untrained_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pytest.importorskip("torch")  # the model needs torch; the request and clean-up tests run without it
    folder = tmp_path_factory.mktemp("jobs")
    create_untrained_model("synthesis", folder / "tiny_ct2mr", width=4)
    ct = np.random.default_rng(0).normal(0, 300, size=(40, 48, 48)).astype(np.int16)
    ct[:, :4] = -1000  # air, so it looks like CT
    image = sitk.GetImageFromArray(ct)
    image.SetSpacing((3.0, 3.0, 3.0))
    sitk.WriteImage(image, str(folder / "ct.nii.gz"))
    # A longer job for cancel and kill: enough slices that it is surely still running when they arrive.
    create_untrained_model("synthesis", folder / "slow_ct2mr", width=16)
    long_ct = np.repeat(ct[:1], 400, axis=0)
    sitk.WriteImage(sitk.GetImageFromArray(long_ct), str(folder / "long_ct.nii.gz"))
    return folder


def request(folder, output_name, long=False):
    return JobRequest(task="synthesize", input_path=str(folder / ("long_ct.nii.gz" if long else "ct.nii.gz")),
                      output_path=str(folder / output_name), device="cpu", batch_size=1,
                      model=str(folder / ("slow_ct2mr.safetensors" if long else "tiny_ct2mr.safetensors")))


def wait_for(job, predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job.poll()
        if predicate(job):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("runner", [InProcessJobRunner(), SubprocessJobRunner()], ids=["thread", "process"])
def test_a_job_succeeds_with_progress(setup, runner):
    job = runner.start(request(setup, f"ok_{type(runner).__name__}.nii.gz"))
    assert job.wait(timeout=180) == SUCCEEDED, job.error
    assert job.progress is not None and job.progress.done == job.progress.total == 40
    assert job.report["slices"] == 40
    out = sitk.ReadImage(str(setup / f"ok_{type(runner).__name__}.nii.gz"))
    assert out.GetSize() == (48, 48, 40) and out.GetSpacing() == (3.0, 3.0, 3.0)


@pytest.mark.parametrize("runner", [InProcessJobRunner(), SubprocessJobRunner()], ids=["thread", "process"])
def test_cancel_leaves_no_output(setup, runner):
    name = f"cancelled_{type(runner).__name__}.nii.gz"
    job = runner.start(request(setup, name, long=True))
    assert wait_for(job, lambda j: j.progress is not None and j.progress.done >= 1)
    job.cancel()
    assert job.wait(timeout=60) == CANCELLED
    assert "cancel" in job.error
    assert not (setup / name).exists() and not list(setup.glob(f".{name}*"))


def test_a_worker_that_dies_is_a_clear_failure(setup):
    name = "killed.nii.gz"
    job = SubprocessJobRunner().start(request(setup, name, long=True))
    assert wait_for(job, lambda j: j.progress is not None and j.progress.done >= 1)
    os.kill(job._process.pid, signal.SIGKILL)  # what the kernel's OOM killer does
    assert job.wait(timeout=60) == FAILED
    assert "stopped unexpectedly" in job.error and "\n" not in job.error
    assert not (setup / name).exists()


def test_a_failing_job_reports_one_line(setup):
    bad = JobRequest(task="segment", input_path=str(setup / "missing.nii.gz"), output_path=str(setup / "x.nii.gz"))
    job = InProcessJobRunner().start(bad)
    assert job.wait(timeout=60) == FAILED
    assert "\n" not in job.error and "missing.nii.gz" in job.error
    assert job.error_type == "InputImageError"


def test_leftover_partial_files_are_removed(tmp_path):
    (tmp_path / ".out.nii.gz.abc123.partial.nii.gz").write_text("half")
    (tmp_path / "keep.nii.gz").write_text("other")
    remove_partial_outputs(tmp_path / "out.nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["keep.nii.gz"]


def test_request_round_trips_through_json():
    original = JobRequest(task="segment", input_path="/a", output_path="/b", model="m", batch_size=3)
    assert JobRequest.from_json(original.to_json()) == original
