"""A picture to look at instead of numbers: input and result side by side on a few axial slices.

Written with Pillow alone (already a core requirement), in the canonical frame so every preview shows anterior
up and the patient's right on the image left, whatever the voxel order of the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .volume import Volume

LIVER_RGB = (221, 130, 101)  # the colour the Slicer module gives the Liver segment


def _to_uint8(image: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (image.astype(np.float32) - low) / max(high - low, 1e-6)
    return (np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


def window_of(array: np.ndarray) -> tuple:
    sample = array[:: max(1, array.shape[0] // 16)].astype(np.float32)
    return tuple(float(v) for v in np.percentile(sample, (1, 99)))


def physical_resize(slice_rgb, row_mm: float, col_mm: float, height: int):
    """Resize so pixels are square in millimetres and the panel is ``height`` pixels tall."""
    from PIL import Image

    rows, cols = slice_rgb.shape[:2]
    width = max(1, int(round(height * (cols * col_mm) / (rows * row_mm))))
    return np.asarray(Image.fromarray(slice_rgb).resize((width, height), Image.BILINEAR))


def write_preview(source: Volume, result: Volume, path, *, labels: bool, slices: int = 3, height: int = 256) -> Path:
    """Rows of [input | result] (labels: [input | input + liver overlay]) at evenly spaced slices; PNG, atomic."""
    from .geometry import CanonicalFrame

    frame = CanonicalFrame.of(source)
    image = frame.to_canonical(source.array)
    other = frame.to_canonical(result.array)
    _, row_mm, col_mm = frame.canonical_spacing(source.spacing)
    in_window = window_of(image)
    out_window = None if labels else window_of(other)
    picks = np.linspace(0, image.shape[0] - 1, num=min(slices, image.shape[0]) + 2)[1:-1].round().astype(int)
    picks = picks if len(picks) else np.array([0])
    rows = []
    for index in picks:
        grey = grey_rgb(image[index], in_window)
        right = with_liver(grey, other[index] == 1) if labels else grey_rgb(other[index], out_window)
        rows.append([physical_resize(p, row_mm, col_mm, height) for p in (grey, right)])
    return save_sheet(rows, path)


def grey_rgb(image: np.ndarray, window: tuple) -> np.ndarray:
    """One slice as an RGB array under ``window`` (low, high)."""
    return np.repeat(_to_uint8(image, *window)[..., None], 3, axis=2)


def with_liver(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``rgb`` with the liver voxels tinted in the Liver segment's colour."""
    tinted = rgb.copy()
    tinted[mask] = (0.45 * tinted[mask] + 0.55 * np.array(LIVER_RGB)).astype(np.uint8)
    return tinted


def save_sheet(rows, path) -> Path:
    """Rows of equally tall RGB panels, 4 px white gaps, right-padded to one width; PNG, written atomically."""
    from PIL import Image

    lines = []
    for panels in rows:
        height = panels[0].shape[0]
        gap = np.full((height, 4, 3), 255, np.uint8)
        line = panels[0]
        for panel in panels[1:]:
            line = np.concatenate([line, gap, panel], axis=1)
        lines.append(line)
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines]
    sheet = np.concatenate([np.concatenate([line, np.full((4, width, 3), 255, np.uint8)]) for line in lines])[:-4]
    path = Path(path)
    with atomic_path(path) as temporary:
        Image.fromarray(sheet).save(temporary, format="PNG")
    return path
