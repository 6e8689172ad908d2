"""Jobs in a thread and in a worker process: success, progress, cancel, a worker that dies - and never an
output file left behind by a job that did not succeed."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

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


def hold_after_first_batch(process_file, limit_s=60.0):
    """``process_file`` whose job, once its first batch is done and reported, waits there until it is cancelled
    (or killed; at most ``limit_s``). A cancel or a kill sent after that progress event therefore always lands in a
    running job, however fast the job or slow the machine: the tests wait for the event, not for luck."""
    def held(*args, progress, cancel, **options):
        holding = [True]

        def report(update):
            progress(update)
            if holding[0] and 0 < update.done < update.total:
                holding[0] = False
                deadline = time.monotonic() + limit_s
                while not cancel.cancelled and time.monotonic() < deadline:
                    time.sleep(0.01)  # a worker's SIGTERM handler runs here and sets the token

        return process_file(*args, progress=report, cancel=cancel, **options)

    return held


WORKER_PYTHON = """#!{python}
# The worker's interpreter for these tests (SubprocessJobRunner(python_executable=...), as Slicer passes
# PythonSlicer): ``python -m SlicerEssNet worker REQUEST``, with each job held after its first batch.
import runpy, sys
sys.path.insert(0, {tests!r})
import SlicerEssNet.pipeline as pipeline
from test_jobs import hold_after_first_batch
pipeline.process_file = hold_after_first_batch(pipeline.process_file)
assert sys.argv[1:3] == ["-m", "SlicerEssNet"], sys.argv
sys.argv = ["SlicerEssNet"] + sys.argv[3:]
runpy.run_module("SlicerEssNet", run_name="__main__", alter_sys=True)
"""


def held_runner(kind, folder, monkeypatch):
    """A runner of ``kind`` whose jobs are held after their first batch (``hold_after_first_batch``)."""
    if kind == "thread":
        import SlicerEssNet.pipeline as pipeline

        # jobs._execute imports process_file when the job starts, so it finds this one.
        monkeypatch.setattr(pipeline, "process_file", hold_after_first_batch(pipeline.process_file))
        return InProcessJobRunner()
    python = folder / "held_worker_python"
    python.write_text(WORKER_PYTHON.format(python=sys.executable, tests=str(Path(__file__).resolve().parent)))
    python.chmod(0o755)
    return SubprocessJobRunner(python_executable=str(python))


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


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_cancel_leaves_no_output(setup, kind, monkeypatch):
    name = f"cancelled_{kind}.nii.gz"
    job = held_runner(kind, setup, monkeypatch).start(request(setup, name))
    # The event: the first batch is done and reported; the job now waits there, so it cannot finish first.
    assert wait_for(job, lambda j: j.progress is not None and j.progress.done >= 1)
    assert job.state == "running"
    job.cancel()
    assert job.wait(timeout=60) == CANCELLED
    assert "cancel" in job.error
    assert job.progress.done == 1 < job.progress.total  # stopped before the next batch, not at the end
    assert not (setup / name).exists() and not list(setup.glob(f".{name}*"))


def test_a_worker_that_dies_is_a_clear_failure(setup, monkeypatch):
    name = "killed.nii.gz"
    job = held_runner("process", setup, monkeypatch).start(request(setup, name))
    assert wait_for(job, lambda j: j.progress is not None and j.progress.done >= 1)
    assert job.state == "running"  # held after its first batch: the kill lands in a running worker
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


@pytest.fixture
def launcher(tmp_path, monkeypatch):
    """A stand-in of the shape of Slicer's ``PythonSlicer``: a parent that runs the interpreter as a child, waits
    for it, and passes no signal on (a CTK launcher installs no handler: SIGTERM ends it, not its child). The
    interpreter it runs holds each job after its first batch (``held_runner``), so Cancel always lands mid-job."""
    interpreter = held_runner("process", tmp_path, monkeypatch).python_executable
    script = tmp_path / "PythonSlicer"
    script.write_text(f"#!{sys.executable}\nimport subprocess, sys\n"
                      f"sys.exit(subprocess.call([{interpreter!r}] + sys.argv[1:]))\n")
    script.chmod(0o755)
    return script


@pytest.mark.skipif(os.name != "posix", reason="the launcher stand-in is a POSIX script")
def test_cancel_behind_a_launcher_stops_the_whole_tree_and_writes_nothing(setup, launcher):
    psutil = pytest.importorskip("psutil")
    name = "cancelled_behind_launcher.nii.gz"
    job = SubprocessJobRunner(python_executable=str(launcher)).start(request(setup, name))
    assert wait_for(job, lambda j: j.progress is not None and j.progress.done >= 1)
    tree = [psutil.Process(job._process.pid)] + psutil.Process(job._process.pid).children(recursive=True)
    assert len(tree) >= 2, "the launcher and the interpreter it started"
    job.cancel()
    assert job.wait(timeout=60) == CANCELLED and "cancel" in job.error
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, f"still running after Cancel: {alive}"
    assert not (setup / name).exists() and not list(setup.glob(f".{name}*"))


def test_progress_arrives_through_poll_alone_without_helper_threads(setup):
    """In Slicer a QTimer calls poll(); Python threads barely run there, so following a worker must need none."""
    import threading

    before = threading.active_count()
    job = SubprocessJobRunner().start(request(setup, "polled.nii.gz"))
    assert threading.active_count() == before, "no reader thread"
    assert wait_for(job, lambda j: j.state == SUCCEEDED, timeout=180), job.error
    assert job.progress is not None and job.progress.done == job.progress.total == 40


def test_workers_start_hidden_on_windows_and_in_their_own_group_elsewhere(tmp_path, monkeypatch):
    """No console window per job on Windows (as slicer.util.launchConsoleProcess starts processes); on POSIX a
    session of its own, so Cancel reaches the launcher's child. Checked on the options Popen receives."""
    import subprocess
    import types

    from SlicerEssNet import jobs

    started = []

    def fake_popen(arguments, **options):
        started.append(options)
        return types.SimpleNamespace(pid=0, returncode=0, poll=lambda: 0)

    monkeypatch.setattr(jobs.subprocess, "Popen", fake_popen)
    job_request = JobRequest(task="segment", input_path=str(tmp_path / "in.nii.gz"),
                             output_path=str(tmp_path / "out.nii.gz"))
    SubprocessJobRunner().start(job_request)
    assert started[-1]["start_new_session"] is True and started[-1]["stdin"] == subprocess.DEVNULL

    class StartupInfo:
        dwFlags, wShowWindow = 0, 1

    monkeypatch.setattr(jobs, "os", types.SimpleNamespace(name="nt", environ=os.environ, pathsep=os.pathsep,
                                                          fdopen=os.fdopen))
    for name, value in (("STARTUPINFO", StartupInfo), ("STARTF_USESHOWWINDOW", 1),
                        ("CREATE_NEW_PROCESS_GROUP", 0x200), ("CREATE_NO_WINDOW", 0x08000000)):
        monkeypatch.setattr(subprocess, name, value, raising=False)
    SubprocessJobRunner().start(job_request)
    options = started[-1]
    assert "start_new_session" not in options
    assert options["startupinfo"].dwFlags & 1 and options["startupinfo"].wShowWindow == 0  # SW_HIDE
    assert options["creationflags"] & 0x08000000 and options["creationflags"] & 0x200


@pytest.mark.parametrize("runner", [InProcessJobRunner(), SubprocessJobRunner()], ids=["thread", "process"])
def test_a_chain_is_one_job_writing_both_outputs(setup, runner):
    """CT -> synthetic MR -> labels in one job: progress names the step, each step reports, both files appear."""
    create_untrained_model("segmentation", setup / "tiny_liver", width=4)
    name = type(runner).__name__
    chain = JobRequest(task="segment", input_path=str(setup / "ct.nii.gz"), output_path=str(setup / f"{name}_liver.nii.gz"),
                       model=str(setup / "tiny_liver.safetensors"), device="cpu", batch_size=8,
                       allow_modality_mismatch=True, synthesis_model=str(setup / "tiny_ct2mr.safetensors"),
                       synthetic_output_path=str(setup / f"{name}_mr.nii.gz"))
    assert JobRequest.from_json(chain.to_json()) == chain
    steps = []
    job = runner.start(chain)
    while job.poll() == "running":
        steps.append(job.step)
        time.sleep(0.01)
    assert job.state == SUCCEEDED, job.error
    assert steps == sorted(steps) and job.step == 1
    assert [step["model"] for step in job.report["steps"]] == ["tiny_ct2mr", "tiny_liver"]
    assert job.report["model"] == "tiny_ct2mr -> tiny_liver"
    for output in ("liver", "mr"):
        assert sitk.ReadImage(str(setup / f"{name}_{output}.nii.gz")).GetSize() == (48, 48, 40)


def test_a_chain_whose_last_write_fails_leaves_neither_output(setup, monkeypatch):
    from SlicerEssNet.errors import OutputPathError
    from SlicerEssNet.io import volume_files
    from SlicerEssNet.pipeline import process_file

    create_untrained_model("segmentation", setup / "tiny_liver", width=4)
    written = []
    original = volume_files.write_volume

    def fail_on_the_labels(volume, path):
        if written:
            raise OutputPathError(f"cannot write to {path} (disk full): free space")
        written.append(path)
        return original(volume, path)

    monkeypatch.setattr(volume_files, "write_volume", fail_on_the_labels)
    with pytest.raises(OutputPathError):
        process_file("segment", setup / "ct.nii.gz", setup / "full_liver.nii.gz", setup / "tiny_liver.safetensors",
                     synthesis_model=setup / "tiny_ct2mr.safetensors", synthetic_output_path=setup / "full_mr.nii.gz",
                     device="cpu", allow_modality_mismatch=True)
    assert written and not (setup / "full_mr.nii.gz").exists() and not (setup / "full_liver.nii.gz").exists()
