"""Where the models' slices come from and how their results go back, exactly.

Two steps, each with an exact inverse:

1. ``CanonicalFrame``: permute and flip the voxel axes (never resample) so that the array reads
   ``(slice, row, col)`` = (inferior -> superior, anterior -> posterior, patient right -> patient left), the
   radiological axial view every model is trained on. The slice axis is the voxel axis closest to the patient's
   superior-inferior axis, so an oblique volume is still sliced along its own slices.
2. ``SliceGrid``: resample each slice in-plane to the model's grid (a fixed pixel spacing, or the field of view
   fitted to a fixed size), aspect preserved and the padding recorded, and back to exactly the input's pixels.

torch is imported only inside ``SliceGrid.to_model``/``from_model``, so this module loads without it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputImageError, WeightsError
from .volume import Volume

# LPS component of each canonical axis: slice +S (z), row +P (y), column +L (x).
_SLICE, _ROW, _COLUMN = 2, 1, 0
_TIE = 1e-9  # equal scores choose the volume's own axes (k for slices, j for rows)


class CanonicalFrame:
    """A permutation and flips of the three array axes; ``to_canonical``/``from_canonical`` are exact inverses.

    ``axes[n]`` is the array axis (of the ``[k, j, i]`` array) that becomes canonical axis n; ``flips[n]`` says
    whether canonical axis n runs against it.
    """

    def __init__(self, axes, flips) -> None:
        self.axes = tuple(int(a) for a in axes)
        self.flips = tuple(bool(f) for f in flips)
        if sorted(self.axes) != [0, 1, 2] or len(self.flips) != 3:
            raise ValueError(f"axes {self.axes} must be a permutation of (0, 1, 2) with three flips")

    def __repr__(self) -> str:
        return f"CanonicalFrame(axes={self.axes}, flips={self.flips})"

    def __eq__(self, other) -> bool:
        return isinstance(other, CanonicalFrame) and (self.axes, self.flips) == (other.axes, other.flips)

    def __hash__(self) -> int:
        return hash((self.axes, self.flips))

    # --- construction ----------------------------------------------------------------------------------
    @classmethod
    def of(cls, volume: Volume) -> "CanonicalFrame":
        return cls.from_direction(volume.direction)

    @classmethod
    def from_direction(cls, direction) -> "CanonicalFrame":
        """The frame for a direction matrix whose column v is the LPS unit vector of voxel axis v (i, j, k)."""
        direction = np.asarray(direction, dtype=np.float64).reshape(3, 3)
        if not np.all(np.isfinite(direction)):
            raise InputImageError("the volume's direction matrix is not finite: fix the image header")
        magnitude = np.abs(direction)
        best = magnitude[_SLICE].max()
        slice_axis = next(v for v in (2, 1, 0) if magnitude[_SLICE, v] >= best - _TIE)
        first, second = (v for v in (1, 0, 2) if v != slice_axis)  # row candidate first: j, then i
        keep = magnitude[_ROW, first] + magnitude[_COLUMN, second]
        swap = magnitude[_ROW, second] + magnitude[_COLUMN, first]
        row_axis, column_axis = (second, first) if swap > keep + _TIE else (first, second)
        voxel_axes = (slice_axis, row_axis, column_axis)
        components = (_SLICE, _ROW, _COLUMN)
        flips = tuple(direction[c, v] < 0 for c, v in zip(components, voxel_axes))
        # voxel axis v (i=0, j=1, k=2) is array axis 2 - v
        return cls(tuple(2 - v for v in voxel_axes), flips)

    # --- arrays --------------------------------------------------------------------------------------
    def _flip_index(self) -> tuple:
        return tuple(slice(None, None, -1) if flip else slice(None) for flip in self.flips)

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """A view of ``array`` (``[k, j, i, ...]``) in canonical ``(slice, row, col, ...)`` order; no copy."""
        extra = tuple(range(3, np.ndim(array)))
        return np.transpose(array, self.axes + extra)[self._flip_index()]

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """The exact inverse of ``to_canonical``: a view in the volume's own ``[k, j, i, ...]`` order."""
        extra = tuple(range(3, np.ndim(array)))
        inverse = tuple(int(a) for a in np.argsort(self.axes))
        return np.transpose(array[self._flip_index()], inverse + extra)

    def canonical_shape(self, shape) -> tuple:
        return tuple(int(shape[a]) for a in self.axes)

    def canonical_spacing(self, spacing) -> tuple:
        """``(slice_mm, row_mm, col_mm)`` from a volume's ``(i, j, k)`` spacing."""
        return tuple(float(spacing[2 - a]) for a in self.axes)

    def to_canonical_volume(self, volume: Volume) -> Volume:
        """The same voxels at the same patient positions, as a volume whose array is the canonical view."""
        array = self.to_canonical(volume.array)
        corner = np.zeros(3)  # (i, j, k) of the voxel that becomes canonical (0, 0, 0)
        columns = []
        for a, flip in zip(self.axes, self.flips):
            voxel = 2 - a
            if flip:
                corner[voxel] = volume.array.shape[a] - 1
            columns.append(volume.direction[:, voxel] * (-1.0 if flip else 1.0))
        origin = volume.ijk_to_lps() @ np.append(corner, 1.0)
        # canonical array axes (slice, row, col) are the new volume's (k, j, i)
        direction = np.column_stack(columns[::-1])
        spacing = self.canonical_spacing(volume.spacing)[::-1]
        return Volume(array, spacing, tuple(origin[:3]), direction)


@dataclass
class GridSpec:
    """The model grid, as a model card's ``grid`` states it."""

    mode: str = "spacing"  # "spacing": fixed mm per pixel; "fit": the larger extent fills size x size
    size: int = 256
    spacing_mm: float = 1.5
    multiple_of: int = 16

    def __post_init__(self) -> None:
        if self.mode not in ("spacing", "fit"):
            raise WeightsError(f"model card has unknown grid mode '{self.mode}': use 'spacing' or 'fit'")
        try:
            self.size, self.multiple_of, self.spacing_mm = int(self.size), int(self.multiple_of), float(self.spacing_mm)
        except (TypeError, ValueError):
            raise WeightsError(f"model card grid {self} has a non-numeric value: fix the card") from None
        if self.size < 1 or self.multiple_of < 1 or not (math.isfinite(self.spacing_mm) and self.spacing_mm > 0):
            raise WeightsError(
                f"model card grid {self} is invalid: size and multiple_of must be >= 1, spacing_mm positive"
            )

    @classmethod
    def from_dict(cls, grid: dict) -> "GridSpec":
        unknown = set(grid) - {"mode", "size", "spacing_mm", "multiple_of"}
        if unknown:
            raise WeightsError(f"model card grid has unknown keys {sorted(unknown)}: fix the card")
        return cls(**grid)


@dataclass(frozen=True)
class SliceGrid:
    """How slices of ``in_shape`` pixels go to the model grid and back (``pad`` = top, bottom, left, right)."""

    in_shape: tuple
    in_spacing: tuple
    resized_shape: tuple
    pad: tuple
    model_shape: tuple
    model_spacing: tuple  # mm per model pixel (row, col); extent is kept exactly, so it may differ from spec

    @classmethod
    def plan(cls, in_shape, in_spacing, spec: GridSpec) -> "SliceGrid":
        rows, columns = (int(n) for n in in_shape)
        row_mm, column_mm = (float(s) for s in in_spacing)
        if rows < 1 or columns < 1:
            raise InputImageError(f"slices of {rows} x {columns} pixels are empty: check the volume")
        if not all(math.isfinite(s) and s > 0 for s in (row_mm, column_mm)):
            raise InputImageError(f"pixel spacing ({row_mm}, {column_mm}) mm is not positive: fix the image header")
        extent = (rows * row_mm, columns * column_mm)
        if spec.mode == "spacing":
            resized = tuple(max(1, int(round(e / spec.spacing_mm))) for e in extent)
            model = tuple(int(math.ceil(n / spec.multiple_of)) * spec.multiple_of for n in resized)
        else:
            pixel_mm = max(extent) / spec.size
            resized = tuple(min(spec.size, max(1, int(round(e / pixel_mm)))) for e in extent)
            model = (spec.size, spec.size)
        top, left = (model[0] - resized[0]) // 2, (model[1] - resized[1]) // 2
        pad = (top, model[0] - resized[0] - top, left, model[1] - resized[1] - left)
        model_spacing = (extent[0] / resized[0], extent[1] / resized[1])
        return cls((rows, columns), (row_mm, column_mm), resized, pad, model, model_spacing)

    def to_model(self, batch, pad_value: float = 0.0):
        """``(N, C, rows, cols)`` -> ``(N, C, H, W)``: bilinear, antialiased when shrinking, then padded."""
        import torch.nn.functional as F

        self._check(batch, self.in_shape, "to_model")
        x = batch if batch.is_floating_point() else batch.float()
        if tuple(self.resized_shape) != tuple(self.in_shape):
            x = _resize(x, self.resized_shape, "bilinear")
        top, bottom, left, right = self.pad
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom), mode="constant", value=float(pad_value))
        return x

    def from_model(self, batch, mode: str = "bilinear"):
        """``(N, C, H, W)`` -> ``(N, C, rows, cols)``: padding cropped, resized back to exactly the input pixels.

        ``mode="bilinear"`` for images and class probabilities (take the argmax afterwards); ``"nearest"`` for
        label maps that must keep their values.
        """
        self._check(batch, self.model_shape, "from_model")
        top, _, left, _ = self.pad
        x = batch[..., top:top + self.resized_shape[0], left:left + self.resized_shape[1]]
        if tuple(self.resized_shape) != tuple(self.in_shape):
            x = _resize(x, self.in_shape, mode)
        return x

    @staticmethod
    def _check(batch, shape, where: str) -> None:
        if batch.dim() != 4 or tuple(batch.shape[-2:]) != tuple(shape):
            raise ValueError(f"{where} expects a (N, C, {shape[0]}, {shape[1]}) tensor, got {tuple(batch.shape)}")


def _resize(x, size, mode: str):
    """Resize the last two axes; antialiased where they shrink (bilinear), exact-nearest for labels."""
    import torch.nn.functional as F

    size = (int(size[0]), int(size[1]))
    if mode == "nearest":
        floating = x.is_floating_point()
        y = F.interpolate(x if floating else x.float(), size=size, mode="nearest-exact")
        return y if floating else y.to(x.dtype)
    if mode != "bilinear":
        raise ValueError(f"unknown resize mode '{mode}': use 'bilinear' or 'nearest'")
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    original = x.dtype
    if not x.is_floating_point() or original in _torch_half_types():
        x = x.float()  # antialiased kernels are not implemented for half types on every device
    y = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    return y.to(original) if original.is_floating_point else y


def _torch_half_types() -> tuple:
    import torch

    return (torch.float16, torch.bfloat16)
