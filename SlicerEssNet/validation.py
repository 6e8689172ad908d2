"""Is this volume something the models can process, and does it look like the modality they expect?

Two levels of checking. ``check_image_header`` looks only at what a file header says (dimensions, components,
spacing, size), so ``io.volume_files`` can refuse a 4D file or one bigger than memory before reading any pixels.
``check_volume`` checks a ``Volume`` already in memory, values included. ``modality_mismatch`` reads the
intensities: CT is in Hounsfield units with air far below zero, MR intensities are never strongly negative.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from .errors import InputImageError, VolumeTooLargeError, WeightsError

# Intensity of fat/air boundary in HU: below it there is only air, lung and fat, which every abdominal CT shows
# (outside the body if nowhere else) and no MR intensity ever reaches.
AIR_FAT_HU = -100.0
# Fractions of voxels below AIR_FAT_HU. Real CT in ../shared/data: 18-78 % (BTCV clipped at -125 HU included);
# real MR: 0 %. The thresholds sit far from both.
CT_MIN_AIR_FRACTION = 0.005
MR_MAX_AIR_FRACTION = 0.05
# Voxels looked at by the modality check: a strided subsample is enough for fractions of several percent.
_MODALITY_SAMPLE = 1 << 20
# Slices per chunk when scanning a volume for NaN/inf, so the check never allocates a whole-volume mask.
_SCAN_VOXELS = 1 << 22


def available_memory_bytes() -> int | None:
    """Memory the process could still allocate (Linux MemAvailable, Windows/macOS physical), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if sys.platform == "win32":
        return _windows_available_memory()
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):  # macOS only has the physical total
        try:
            return int(os.sysconf(pages)) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            continue
    return None


def _windows_available_memory() -> int | None:
    import ctypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong)] + [
            (name, ctypes.c_ulonglong)
            for name in ("total_phys", "avail_phys", "total_page", "avail_page", "total_virt", "avail_virt", "ext")
        ]

    status = MemoryStatus()
    status.dwLength = ctypes.sizeof(MemoryStatus)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return None
    return int(status.avail_phys)


def _size_text(n_bytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n_bytes < 1024 or unit == "TiB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024.0
    return ""


def check_memory(needed_bytes: int, what: str, max_bytes: int | None = None) -> None:
    """Refuse before allocating: ``needed_bytes`` must fit in ``max_bytes`` or in the memory available now."""
    limit = max_bytes if max_bytes is not None else available_memory_bytes()
    if limit is not None and needed_bytes > limit:
        source = "the limit given" if max_bytes is not None else "the memory available"
        raise VolumeTooLargeError(
            f"{what} needs {_size_text(needed_bytes)}, more than {source} ({_size_text(limit)}): "
            "crop or downsample it first, or free memory"
        )


def check_image_header(name: str, size, n_components: int, bytes_per_component: int, spacing,
                       max_bytes: int | None = None) -> None:
    """Checks that need only the header. ``size`` and ``spacing`` are in ITK (i, j, k, ...) order.

    The read holds the pixels twice for a moment (the reader's buffer and the numpy copy), hence the factor 2.
    """
    size = [int(s) for s in size]
    if len(size) > 3:
        raise InputImageError(
            f"{name} is {len(size)}D (size {tuple(size)}): choose one time point or channel and save it as a 3D volume"
        )
    if n_components != 1:
        raise InputImageError(
            f"{name} has {n_components} components per voxel (a vector or colour image): "
            "extract one scalar component and save it as a 3D volume"
        )
    if any(s <= 0 for s in size):
        raise InputImageError(f"{name} has no voxels along some axis (size {tuple(size)}): check the file")
    _check_spacing(name, tuple(spacing))
    voxels = int(np.prod(np.asarray(size, dtype=np.float64)))
    check_memory(2 * voxels * int(bytes_per_component), f"{name} ({' x '.join(map(str, size))} voxels)", max_bytes)


def _check_spacing(name: str, spacing: tuple) -> None:
    values = np.asarray(spacing, dtype=np.float64).ravel()
    if values.size not in (2, 3) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise InputImageError(
            f"{name} has voxel spacing {tuple(float(v) for v in values)}: spacing must be positive and finite; "
            "fix the image header"
        )


def check_volume(volume, max_bytes: int | None = None) -> None:
    """Raise an ``InputImageError`` (one line) if ``volume`` cannot be processed; return None if it can.

    A 1-slice volume is valid (it is processed as one slice); a 2D array is not a Volume (add the slice axis).
    ``max_bytes`` bounds the voxel array; without it the working copies processing makes (two float32 arrays of
    the same shape) must fit in the memory available now.
    """
    array = np.asarray(volume.array)
    name = f"the volume {tuple(array.shape)}"
    if array.ndim == 2:
        raise InputImageError(
            f"{name} is a 2D array: a Volume is indexed (slice, row, column); use array[np.newaxis] for one slice"
        )
    if array.ndim != 3:
        raise InputImageError(
            f"{name} has {array.ndim} array dimensions (a 4D or multi-component volume): "
            "choose one time point or component and pass a 3D volume"
        )
    if array.size == 0:
        raise InputImageError(f"{name} has no voxels along some axis: check how it was loaded or cropped")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.iscomplexobj(array):
        raise InputImageError(f"{name} has voxel type {array.dtype}: give real-valued (integer or float) voxels")
    _check_spacing(name, volume.spacing)
    _check_frame(name, volume.origin, volume.direction)
    if max_bytes is not None:
        check_memory(array.nbytes, name, max_bytes)
    else:
        check_memory(2 * array.size * 4, f"processing {name}")
    low, high = _finite_range(name, array)
    if low == high:
        raise InputImageError(
            f"{name} is constant (every voxel is {low:g}): there is nothing to process; check that the right "
            "image was loaded"
        )
    labels = label_map_values(array)
    if labels is not None:
        shown = ", ".join(f"{value:g}" for value in labels[:6]) + (", ..." if len(labels) > 6 else "")
        raise InputImageError(
            f"{name} looks like a label map, not an image ({len(labels)} distinct values: {shown}; regions of one "
            "value each): give the CT or MR scan itself, not a segmentation of it"
        )


def label_map_values(array: np.ndarray, max_labels: int = 256, min_equal: float = 0.75):
    """The sorted values of ``array`` when it is a label map, else None.

    A label map has few non-negative integer values, mostly 0 (background), and is piecewise constant: along a
    row, a voxel that is not background nearly always has its neighbour's value. A scan (CT, MR, even an 8-bit MR
    with under 256 grey levels) has noise, so neighbouring tissue voxels differ. A first look at a sparse grid of
    voxels sends most scans away at once (a CT's air is negative, an MR has hundreds of values); the rest are read
    on every 4th slice.
    """
    if array.dtype == np.bool_:
        array = array.view(np.uint8)
    sample = array[::4] if array.shape[0] >= 8 else array
    for part in (sample[:, ::7, ::13], sample):
        if np.issubdtype(part.dtype, np.floating) and not np.all(np.mod(part, 1) == 0):
            return None
        if part.min() < 0:  # labels count from 0; a CT has air at -1000
            return None
        if np.issubdtype(part.dtype, np.integer) and part.max() < 65536:
            counts = np.bincount(part.ravel())
            values = np.flatnonzero(counts)
            counts = counts[values]
        else:
            values, counts = np.unique(part, return_counts=True)
        if len(values) > max_labels:
            return None
    if values[int(np.argmax(counts))] != 0:  # a label map's background is 0
        return None
    left, right = sample[..., :-1], sample[..., 1:]
    tissue = (left != 0) | (right != 0)
    pairs = int(np.count_nonzero(tissue))
    if pairs == 0:
        return None
    equal = int(np.count_nonzero((left == right) & tissue))
    return [float(v) for v in values] if equal >= min_equal * pairs else None


def _check_frame(name: str, origin, direction) -> None:
    origin = np.asarray(origin, dtype=np.float64)
    direction = np.asarray(direction, dtype=np.float64)
    if not np.all(np.isfinite(origin)) or not np.all(np.isfinite(direction)):
        raise InputImageError(f"{name} has a non-finite origin or direction: fix the image header")
    # Canonical slicing permutes and flips axes, which is only exact for an orthonormal frame.
    if direction.shape != (3, 3) or not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputImageError(
            f"{name} has a direction matrix whose axes are not orthonormal (sheared or scaled): "
            "resample it onto an orthogonal grid first"
        )


def _finite_range(name: str, array: np.ndarray) -> tuple:
    """(min, max) of the array, raising on NaN/inf; scanned in chunks of slices to bound the memory used."""
    if array.dtype == np.bool_:
        array = array.view(np.uint8)
    step = max(1, _SCAN_VOXELS // max(1, array[0].size))
    low, high = np.inf, -np.inf
    n_nan = n_inf = 0
    floating = np.issubdtype(array.dtype, np.floating)
    for start in range(0, array.shape[0], step):
        chunk = array[start:start + step]
        if floating:
            finite = np.isfinite(chunk)
            if not finite.all():
                n_nan += int(np.isnan(chunk).sum())
                n_inf += int(np.isinf(chunk).sum())
                continue
        low = min(low, float(chunk.min()))
        high = max(high, float(chunk.max()))
    if n_nan or n_inf:
        raise InputImageError(
            f"{name} contains {n_nan} NaN and {n_inf} infinite voxels: replace them (e.g. with the background "
            "value) before processing"
        )
    return low, high


def modality_mismatch(volume, expected: str) -> str | None:
    """A short reason when the intensities say ``volume`` is not ``expected`` ("CT" or "MR"); None when they fit.

    CT is in Hounsfield units: air (-1000), lung and fat (about -100) are always in an abdominal scan, at least
    outside the body; a volume without any value below -100 is not CT in HU. MR intensities are never strongly
    negative, so a volume with a sizeable fraction below -100 is CT (or at least not MR).
    """
    modality = str(expected).strip().upper()
    if modality == "MRI":
        modality = "MR"
    if modality not in ("CT", "MR"):
        raise WeightsError(
            f"model card expects input modality '{expected}', which is not one of CT, MR: fix the model card"
        )
    from .preprocessing import strided_sample

    sample = strided_sample(volume.array, _MODALITY_SAMPLE).astype(np.float64).ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return None
    below = float(np.mean(sample < AIR_FAT_HU))
    if modality == "CT" and below < CT_MIN_AIR_FRACTION:
        share = "no voxel" if below == 0 else f"only {100 * below:.2f}% of voxels"
        return (f"{share} below {AIR_FAT_HU:g} (range {sample.min():g} to {sample.max():g}), but CT in Hounsfield "
                "units always shows air and fat there; this looks like MR or a CT not in HU")
    if modality == "MR" and below > MR_MAX_AIR_FRACTION:
        return (f"{100 * below:.0f}% of voxels below {AIR_FAT_HU:g} (minimum {sample.min():g}), but MR intensities "
                "are never strongly negative; this looks like CT in Hounsfield units")
    return None
