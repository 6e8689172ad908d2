"""Where and how torch runs: device choice, CPU threads and the OpenMP wait policy.

On a 2-core machine with one other busy process (Slicer's GUI, a second job, a test runner), PyTorch's default
OpenMP pool of spinning threads slows down 10-400x; passive waiting keeps 60-75 % of the quiet speed. The wait
policy is read once, when the OpenMP runtime loads with torch, so ``import_torch`` sets it before the first import.

Inference runs a few large convolutions per batch and loses nothing by sleeping between them ("passive"). A
training step is hundreds of small ops, and waking sleeping threads for each one cost the EssNet step 2.1x on 2
quiet cores; "short_spin" lets threads spin briefly first (libgomp's GOMP_SPINCOUNT, 1000 iterations), which
recovers that and still costs only about 3x beside a busy neighbour, where the default spin costs 10x and more
(Testing/benchmarks/training.py prints both side by side). Variables the user already set always win.
"""
from __future__ import annotations

import functools
import os
import platform
from typing import Optional, Tuple

from .errors import DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


WAIT_POLICIES = {
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "short_spin": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"},  # GOMP_SPINCOUNT overrides PASSIVE's 0
}
WAIT_VARIABLES = tuple(sorted({name for policy in WAIT_POLICIES.values() for name in policy}))


def import_torch(threads: Optional[int] = None, wait: str = "passive"):
    """Import torch with an OpenMP wait policy (``WAIT_POLICIES``; it only takes effect if torch is not imported
    yet) and a deliberate thread count; returns the module."""
    policy = WAIT_POLICIES[wait]
    if not any(name in os.environ for name in WAIT_VARIABLES):  # the user's choice wins
        os.environ.update(policy)
    torch = require_torch()
    if threads is None:
        threads = thread_budget()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch


def require_torch():
    """The torch module, or ``MissingDependencyError`` saying how to install it."""
    try:
        import torch
    except ImportError:
        from .errors import MissingDependencyError

        raise MissingDependencyError(
            "PyTorch is not installed: install it (pip install torch, or the build for your GPU from pytorch.org; "
            "in Slicer, the PyTorch extension), then run again") from None
    return torch


def requested_thread_count() -> int:
    """Threads the user asked for (``SLICERESSNET_THREADS``, else ``OMP_NUM_THREADS``); 0 when neither is set.

    The engine is built after the caller chose its threads (a test runner or a second training job with
    OMP_NUM_THREADS=1): falling back to the core count there would oversubscribe the cores behind its back.
    """
    for name in ("SLICERESSNET_THREADS", "OMP_NUM_THREADS"):
        text = os.environ.get(name, "").strip()
        if text.isdigit() and int(text) > 0:
            return int(text)
    return 0


def thread_budget() -> int:
    """The threads this process may use: what the user asked for, else the cores it can run on."""
    return requested_thread_count() or default_thread_count()


def default_thread_count() -> int:
    """Physical-ish core count: logical CPUs available to this process (affinity-aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def select_device(requested: str = "auto") -> Tuple[object, Optional[str]]:
    """Return ``(torch.device, note)``; ``note`` explains a fallback (a requested GPU that is not there).

    ``auto`` prefers CUDA, then Apple's MPS, then the CPU. A forced device that is missing falls back to the CPU
    with a note rather than failing a whole cohort run; an unknown name is an error.
    """
    torch = import_torch()
    requested = (requested or "auto").lower()
    kind = requested.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise DeviceError(f"unknown device '{requested}': choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
    cuda_ok = torch.cuda.is_available()
    mps_ok = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if kind == "auto":
        if cuda_ok:
            return torch.device("cuda"), None
        if mps_ok:
            return torch.device("mps"), None
        return torch.device("cpu"), None
    if kind == "cuda" and not cuda_ok:
        return torch.device("cpu"), "CUDA was requested but no CUDA GPU is available to PyTorch: running on the CPU"
    if kind == "mps" and not mps_ok:
        return torch.device("cpu"), "MPS was requested but is not available: running on the CPU"
    return torch.device(requested), None


@functools.lru_cache(maxsize=None)
def cpu_supports_fast_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow.
    Read once per process; it leaves torch's thread count alone."""
    torch = require_torch()
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    if "AMX" in capability.upper():
        return True
    if platform.system() == "Linux":
        try:
            with open("/proc/cpuinfo") as handle:
                flags = handle.read()
            return "avx512_bf16" in flags or "amx_bf16" in flags
        except OSError:
            return False
    return False


def autocast_dtype(device, precision: str = "auto"):
    """The dtype to autocast to on ``device``, or None for plain fp32.

    ``auto``: bf16 on CPUs with native bf16 and on CUDA GPUs that support it, fp16 on older GPUs, fp32 otherwise
    (fp16 on these CPUs runs at about 1 GFLOP/s: never chosen automatically there).
    """
    torch = import_torch()
    precision = (precision or "auto").lower()
    if precision not in PRECISION_CHOICES:
        raise DeviceError(f"unknown precision '{precision}': choose one of {', '.join(PRECISION_CHOICES)}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_fast_bf16():
        return torch.bfloat16
    return None


def convolution_memory_format(device):
    """The memory format convolutional networks run fastest in on ``device``: channels_last (NHWC) for oneDNN
    and cuDNN 3x3 convolutions, which both prefer it; the default (NCHW) on MPS, whose kernels do not."""
    torch = require_torch()  # not import_torch: this must not change the caller's thread count
    return torch.contiguous_format if torch.device(device).type == "mps" else torch.channels_last
