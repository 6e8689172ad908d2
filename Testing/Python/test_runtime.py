"""Where torch runs: OpenMP wait policies set before torch loads, device, precision and memory layout choices."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from SlicerEssNet.errors import DeviceError
from SlicerEssNet.runtime import WAIT_POLICIES, autocast_dtype, convolution_memory_format, select_device

REPO = Path(__file__).resolve().parents[2]

# A fresh interpreter: the wait policy only counts before torch is first imported.
PROBE = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from SlicerEssNet.runtime import import_torch
torch = import_torch(1, wait=sys.argv[2])
print(json.dumps({name: os.environ.get(name) for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}))
"""


def _probe(wait: str, **environment) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(environment)
    result = subprocess.run([sys.executable, "-c", PROBE, str(REPO), wait], env=env, capture_output=True,
                            text=True, check=True, timeout=120)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_wait_policies_are_set_before_torch_loads_and_the_users_choice_wins():
    assert _probe("passive") == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}
    assert _probe("short_spin") == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"}
    assert _probe("short_spin", GOMP_SPINCOUNT="7", OMP_WAIT_POLICY="ACTIVE") == {
        "OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "7"}
    # Either variable set by the user means the user chose: nothing is added to it.
    assert _probe("short_spin", OMP_WAIT_POLICY="PASSIVE") == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}
    assert _probe("passive", GOMP_SPINCOUNT="50") == {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "50"}
    assert set(WAIT_POLICIES) == {"passive", "short_spin"}


def test_training_asks_for_the_short_spin_policy(monkeypatch):
    """``python -m Training run`` imports torch through ``import_torch(..., wait="short_spin")``."""
    import SlicerEssNet.runtime as runtime
    import Training.__main__ as entry

    asked = []

    class Stop(Exception):
        pass

    def fake_import_torch(threads=None, wait="passive"):
        asked.append(wait)
        raise Stop

    monkeypatch.setattr(runtime, "import_torch", fake_import_torch)
    with pytest.raises(Stop):
        entry.main(["run", "--preset", "demo", "--run-dir", "unused"])
    assert asked == ["short_spin"]


THREADS_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
from SlicerEssNet.runtime import default_thread_count, import_torch
torch = import_torch()  # what SliceEngine does when no thread count is passed
print(torch.get_num_threads(), default_thread_count())
"""


@pytest.mark.parametrize("environment, expected", [
    ({"OMP_NUM_THREADS": "1"}, 1),  # the test runner's and a second training job's choice
    ({"SLICERESSNET_THREADS": "1", "OMP_NUM_THREADS": "2"}, 1),  # the project's own variable first
    ({"OMP_NUM_THREADS": "not a number"}, None),  # ignored: the core count
    ({}, None),
])
def test_the_engine_keeps_the_thread_count_the_user_asked_for(environment, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SLICERESSNET_THREADS")}
    env.update(environment)
    result = subprocess.run([sys.executable, "-c", THREADS_PROBE, str(REPO)], env=env, capture_output=True,
                            text=True, check=True, timeout=120)
    threads, cores = (int(v) for v in result.stdout.split())
    assert threads == (expected if expected is not None else cores)


def test_device_and_precision_choices():
    import torch

    device, note = select_device("cpu")
    assert device.type == "cpu" and note is None
    if not torch.cuda.is_available():
        device, note = select_device("cuda")
        assert device.type == "cpu" and "CUDA was requested" in note
    assert autocast_dtype(torch.device("cpu"), "fp32") is None
    assert autocast_dtype(torch.device("cpu"), "bf16") is torch.bfloat16
    with pytest.raises(DeviceError, match="unknown precision 'fp8'"):
        autocast_dtype(torch.device("cpu"), "fp8")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        select_device("tpu")


def test_convolutions_run_channels_last_except_on_mps():
    import torch

    assert convolution_memory_format(torch.device("cpu")) is torch.channels_last
    assert convolution_memory_format("cuda:1") is torch.channels_last
    assert convolution_memory_format("mps") is torch.contiguous_format
