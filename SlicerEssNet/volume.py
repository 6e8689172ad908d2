"""A volume: a voxel array plus the geometry that places it in the patient.

The array is indexed ``[k, j, i]`` (slice, row, column), the order of ``SimpleITK.GetArrayFromImage`` and of
Slicer's ``slicer.util.arrayFromVolume``. Geometry follows ITK: ``spacing`` and ``origin`` are given in
``(i, j, k)`` order, ``origin`` and ``direction`` in LPS millimetres, and column ``c`` of ``direction`` is the
unit LPS vector along voxel axis ``c``. Slicer's IJK-to-RAS matrix is the same thing with the first two
rows negated; both conversions live here so nobody writes them twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# LPS <-> RAS: negate x and y.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    array: np.ndarray
    spacing: tuple = (1.0, 1.0, 1.0)
    origin: tuple = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    # --- matrices ---------------------------------------------------------------------------------
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix taking homogeneous voxel indices (i, j, k, 1) to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction * np.asarray(self.spacing)[np.newaxis, :]
        matrix[:3, 3] = self.origin
        return matrix

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix taking (i, j, k, 1) to RAS millimetres: Slicer's IJKToRAS."""
        return _LPS_TO_RAS @ self.ijk_to_lps()

    @classmethod
    def from_ijk_to_lps(cls, array: np.ndarray, matrix) -> "Volume":
        matrix = np.asarray(matrix, dtype=np.float64)
        columns = matrix[:3, :3]
        spacing = np.linalg.norm(columns, axis=0)
        if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
            from .errors import InputImageError

            raise InputImageError(
                f"voxel spacing {tuple(float(s) for s in spacing)} is zero, negative or not finite: fix the image "
                "header"
            )
        return cls(array, tuple(spacing), tuple(matrix[:3, 3]), columns / spacing[np.newaxis, :])

    @classmethod
    def from_ijk_to_ras(cls, array: np.ndarray, matrix) -> "Volume":
        """Build from Slicer's IJKToRAS (a 4x4 numpy array or anything ``np.asarray`` takes)."""
        return cls.from_ijk_to_lps(array, _LPS_TO_RAS @ np.asarray(matrix, dtype=np.float64))

    # --- convenience ------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self.array.shape)

    def with_array(self, array: np.ndarray) -> "Volume":
        """A new volume on exactly this geometry."""
        if tuple(array.shape[:3]) != tuple(self.array.shape[:3]):
            raise ValueError(f"array shape {array.shape} does not match the volume's {self.array.shape}")
        return Volume(array, self.spacing, self.origin, self.direction.copy())

    def same_geometry(self, other: "Volume", atol: float = 0.0) -> bool:
        return (
            self.array.shape[:3] == other.array.shape[:3]
            and np.allclose(self.spacing, other.spacing, rtol=0, atol=atol)
            and np.allclose(self.origin, other.origin, rtol=0, atol=atol)
            and np.allclose(self.direction, other.direction, rtol=0, atol=atol)
        )

    # --- SimpleITK --------------------------------------------------------------------------------
    @classmethod
    def from_sitk(cls, image) -> "Volume":
        import SimpleITK as sitk

        return cls(
            sitk.GetArrayFromImage(image),
            image.GetSpacing(),
            image.GetOrigin(),
            np.asarray(image.GetDirection()).reshape(3, 3),
        )

    def to_sitk(self):
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(self.array)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(tuple(self.direction.ravel()))
        return image


def volume_from_image(image) -> Volume:
    """A ``Volume`` with exactly the image's geometry; a 2D image becomes one slice of 1 mm."""
    import SimpleITK as sitk

    if image.GetDimension() == 3:
        return Volume.from_sitk(image)
    spacing = tuple(image.GetSpacing()) + (1.0,)
    origin = tuple(image.GetOrigin()) + (0.0,)
    direction = np.eye(3)
    direction[:2, :2] = np.asarray(image.GetDirection()).reshape(2, 2)
    return Volume(sitk.GetArrayFromImage(image)[np.newaxis], spacing, origin, direction)
