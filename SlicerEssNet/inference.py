"""The batched slice inference engine that both modules, the CLI and Training's evaluation share.

A volume is never copied whole: slices stream from a (possibly strided) canonical view of the input in batches,
are normalised, resampled to the model grid, run through the network under autocast, mapped back to their own
grid and written straight into a preallocated output (again through a view). Memory therefore grows with the
batch, not with the volume's length. Cancellation is checked between batches; a CUDA out-of-memory error retries
the batch with half the batch size.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import CancelledError, DeviceError
from .fusion import prepare_for_inference, uses_instance_norm
from .progress import CancelToken, ProgressCallback, ProgressTracker
from .runtime import autocast_dtype, convolution_memory_format, import_torch, select_device

log = logging.getLogger(__name__)

# Pixels per batch on the CPU, measured on 2 cores (Testing/benchmarks/inference.py): the U-Net runs fastest at
# about 4 slices of 256x256, instance-normed generators at 1-2 (their per-slice statistics are memory-bound and
# fall out of cache in bigger batches). Either way a 512-slice volume costs no more memory than a 20-slice one.
# GPUs take far more (they are latency-bound at small batches).
CPU_BATCH_PIXELS = 4 * 256 * 256
CPU_BATCH_PIXELS_INSTANCE_NORM = 2 * 256 * 256
GPU_BATCH_PIXELS = 64 * 256 * 256


@dataclass
class SliceTask:
    """What to do with each slice: the intensity map in, the grid, and what the network's output means."""

    grid: object  # geometry.SliceGrid
    in_scale: float  # normalised = clip(x * in_scale + in_offset, -1, 1)
    in_offset: float
    output: str = "image"  # "image": out = y * out_scale + out_offset; "labels": argmax over classes
    out_scale: float = 1.0
    out_offset: float = 0.0
    pad_value: float = -1.0  # the model-space value of 'nothing here' (background after normalisation)
    test_time_augmentation: bool = False  # "labels" only: average the probabilities of a few zoomed/rotated views


class SliceEngine:
    def __init__(self, network, *, device: str = "auto", precision: str = "auto", batch_size: Optional[int] = None,
                 threads: Optional[int] = None, prepared: Optional[dict] = None):
        """``prepared``: a dict (``LoadedModel.prepared``) that keeps the rewritten network per device across runs;
        copying and folding cost about 20 ms, a tenth of a small model's whole volume."""
        self.torch = import_torch(threads)
        self.device, self.device_note = select_device(device)
        self.autocast = autocast_dtype(self.device, precision)
        self.requested_batch_size = batch_size
        self._copy_stream = None  # created on first CUDA upload
        self.instance_norm = uses_instance_norm(network)
        self.memory_format = convolution_memory_format(self.device)
        key = str(self.device)
        if prepared is not None and key in prepared:
            self.network = prepared[key]
            return
        # a copy: the caller's network is left as it was
        network = prepare_for_inference(network).to(self.device, memory_format=self.memory_format)
        self.network = network
        if prepared is not None:
            prepared[key] = network

    # ------------------------------------------------------------------------------------------------------
    def batch_size_for(self, model_shape) -> int:
        if self.requested_batch_size:
            return max(1, int(self.requested_batch_size))
        if self.device.type == "cuda":
            pixels = GPU_BATCH_PIXELS
        else:
            pixels = CPU_BATCH_PIXELS_INSTANCE_NORM if self.instance_norm else CPU_BATCH_PIXELS
        return int(max(1, min(64, pixels // max(1, model_shape[0] * model_shape[1]))))

    def run(self, source: np.ndarray, destination: np.ndarray, task: SliceTask, *,
            progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> None:
        """Fill ``destination[n]`` from ``source[n]`` for every slice n (both ``(n, rows, cols)``, views allowed).

        The next batch is uploaded before the current one is computed: on CUDA the copy runs on its own stream
        from pinned memory and overlaps the network; on the CPU it is the same loop with nothing to overlap.
        """
        total = source.shape[0]
        tracker = ProgressTracker(total, progress)
        tracker.update(0)
        batch = self.batch_size_for(task.grid.model_shape)
        start, staged = 0, None
        while start < total:
            if cancel is not None and cancel.cancelled:
                raise CancelledError("cancelled by the user: no output was written")
            stop = min(total, start + batch)
            try:
                if staged is None or staged[:2] != (start, stop):
                    staged = (start, stop, self._upload(source[start:stop]))
                current = staged[2]
                following = min(total, stop + batch)
                staged = (stop, following, self._upload(source[stop:following])) if stop < total else None
                destination[start:stop] = self._download(self._compute(current, task))
            except Exception as error:  # noqa: BLE001 - only CUDA OOM is handled, the rest re-raised
                if not self._is_out_of_memory(error):
                    raise
                if batch == 1:
                    raise DeviceError(
                        "the GPU ran out of memory even for one slice: close other GPU programs or use --device cpu"
                    ) from None
                staged = None
                self.torch.cuda.empty_cache()
                batch = max(1, batch // 2)
                log.warning("GPU out of memory: retrying with batch size %d", batch)
                continue
            start = stop
            tracker.update(start)

    def _is_out_of_memory(self, error: Exception) -> bool:
        oom = getattr(self.torch.cuda, "OutOfMemoryError", ())
        return self.device.type == "cuda" and (isinstance(error, oom) or "out of memory" in str(error))

    def _autocast_context(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return self.torch.autocast(device_type=self.device.type, dtype=self.autocast)

    def _upload(self, slices: np.ndarray):
        """Host slices -> (tensor on the device, copy-done event or None, pinned host buffer kept alive)."""
        torch = self.torch
        host = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32))[:, None]
        if self.device.type != "cuda":
            return host.to(self.device), None, None
        host = host.pin_memory()
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(device=self.device)
        with torch.cuda.stream(self._copy_stream):
            on_device = host.to(self.device, non_blocking=True)
        done = torch.cuda.Event()
        done.record(self._copy_stream)
        return on_device, done, host

    def _compute(self, staged, task: SliceTask):
        """Normalise, resample to the model grid, run the network, map back: a tensor on the device."""
        torch = self.torch
        x, copied, _ = staged
        if copied is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(copied)
            x.record_stream(stream)
        with torch.inference_mode():
            x = (x * task.in_scale + task.in_offset).clamp_(-1.0, 1.0)
            x = task.grid.to_model(x, pad_value=task.pad_value)
            if task.output == "labels":
                return self._labels(x, task)
            y = self._network(x)
            return task.grid.from_model(y)[:, 0] * task.out_scale + task.out_offset

    def _network(self, x):
        """The network's output in fp32 (autocast inside, as the engine's precision says)."""
        x = x.contiguous(memory_format=self.memory_format)
        with self._autocast_context():
            y = self.network(x)
        return y.float()

    def _labels(self, x, task: SliceTask):
        """Class probabilities (averaged over views with test-time augmentation), mapped back, then the argmax."""
        torch = self.torch

        def probabilities_of(view):
            y = self._network(view)
            return torch.sigmoid(y) if y.shape[1] == 1 else torch.softmax(y, dim=1)

        if task.test_time_augmentation:
            from .test_time_augmentation import averaged_probabilities

            probabilities = averaged_probabilities(probabilities_of, x, task.pad_value)
        else:
            probabilities = probabilities_of(x)
        if probabilities.shape[1] <= 2:
            # One foreground probability (sigmoid, or p1 of two classes) resampled alone: p0 = 1 - p1 and
            # resampling is linear, so resampled p1 > resampled p0 exactly where resampled p1 > 0.5.
            foreground = task.grid.from_model(probabilities[:, -1:])
            return (foreground[:, 0] > 0.5).to(torch.uint8)
        return task.grid.from_model(probabilities).contiguous().argmax(dim=1).to(torch.uint8)

    @staticmethod
    def _download(result) -> np.ndarray:
        return result.cpu().numpy()
