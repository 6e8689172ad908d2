"""Volumes -> normalised model-grid slices, through the core's canonical slicing, SliceGrid and preprocessing.

This mirrors what ``SlicerEssNet.inference.SliceEngine`` does at inference time step for step (intensity map
from ``volume_statistics`` + ``intensity_transform``, clip to [-1, 1], ``SliceGrid.to_model`` with the -1
background), so a trained model sees the same inputs in training and in use. The grid spec and intensity spec
used here are exactly the ones written into the model cards.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .augment import crop_or_pad, intensity_jitter, random_affine


def ct_intensity_spec() -> dict:
    return {"kind": "ct_window", "low": -125, "high": 275}


def mr_intensity_spec() -> dict:
    return {"kind": "mr_percentile", "low_percentile": 0.5, "high_percentile": 99.5}


def intensity_spec(modality: str) -> dict:
    return ct_intensity_spec() if modality == "CT" else mr_intensity_spec()


def grid_card(spacing_mm: float, multiple_of: int, size: int) -> dict:
    """The ``grid`` entry of a model card (the core's GridSpec arguments)."""
    return {"mode": "spacing", "spacing_mm": float(spacing_mm), "size": int(size), "multiple_of": int(multiple_of)}


def to_model_grid(volume, label, spec: dict, grid: dict):
    """``(images, labels)``: float32 ``(slices, H, W)`` in [-1, 1] and uint8 ``(slices, H, W)`` on the model grid."""
    from SlicerEssNet.geometry import CanonicalFrame, GridSpec, SliceGrid
    from SlicerEssNet.preprocessing import intensity_transform, volume_statistics

    frame = CanonicalFrame.of(volume)
    source = frame.to_canonical(volume.array)
    _, row_mm, col_mm = frame.canonical_spacing(volume.spacing)
    slice_grid = SliceGrid.plan(source.shape[1:], (row_mm, col_mm), GridSpec(**grid))
    scale, offset = intensity_transform(spec, volume_statistics(volume.array, spec))
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(source, dtype=np.float32))[:, None]
        x = (x * scale + offset).clamp_(-1.0, 1.0)
        images = slice_grid.to_model(x, pad_value=-1.0)[:, 0]
        labels = None
        if label is not None:
            # Labels travel as probabilities (like the engine's outputs) and are thresholded at 0.5.
            y = torch.from_numpy(np.ascontiguousarray(frame.to_canonical(label.array), dtype=np.float32))[:, None]
            labels = (slice_grid.to_model(y, pad_value=0.0)[:, 0] > 0.5).to(torch.uint8)
    return images.contiguous(), labels.contiguous() if labels is not None else None


@dataclass
class SliceSet:
    """All slices of some patients on the model grid. Volumes keep their own (H, W); batches are cropped."""

    images: list = field(default_factory=list)  # per volume: float16 (slices, H, W)
    labels: list = field(default_factory=list)  # per volume: uint8 (slices, H, W)
    patients: list = field(default_factory=list)  # per volume
    index: list = field(default_factory=list)  # per slice: (volume number, slice number)

    def __len__(self) -> int:
        return len(self.index)

    def add(self, patient: str, images: torch.Tensor, labels: torch.Tensor) -> None:
        number = len(self.images)
        self.images.append(images.to(torch.float16))
        self.labels.append(labels.to(torch.uint8))
        self.patients.append(patient)
        self.index.extend((number, k) for k in range(images.shape[0]))

    def slice_patients(self) -> list:
        return [self.patients[v] for v, _ in self.index]

    def batch(self, indices, crop: int, generator=None, augment=None, elastic: bool = False):
        """``(images (N,1,crop,crop) float32, labels (N,crop,crop) int64)``; random crop + jitter if ``generator``;
        ``elastic``: also the smooth deformation of ``augment.elastic_px`` (stage 2)."""
        images, labels = [], []
        for i in indices:
            volume, k = self.index[i]
            x = self.images[volume][k][None, None].float()
            y = self.labels[volume][k][None]
            if generator is not None and augment is not None:
                x, y = random_affine(x, y, generator, augment.rotate_deg, augment.scale, augment.translate_px,
                                     augment.elastic_px if elastic else 0.0)
            x, y = crop_or_pad(x, y, crop, generator)
            images.append(x)
            labels.append(y)
        images = torch.cat(images, 0)
        if generator is not None and augment is not None:
            images = intensity_jitter(images, generator, augment.intensity_scale, augment.intensity_gamma)
        return images, torch.cat(labels, 0).long()


def build_slice_set(cases: list, grid: dict, loader=None, log=None) -> SliceSet:
    """Read every case (``loader(case) -> (image, liver)``), bring it to the model grid, collect the slices."""
    from .cohorts import load_case

    loader = loader or load_case
    result = SliceSet()
    for case in cases:
        image, liver = loader(case)
        images, labels = to_model_grid(image, liver, intensity_spec(case.modality), grid)
        result.add(case.patient, images, labels)
        if log:
            log(f"  {case.patient}: {images.shape[0]} slices on a {tuple(images.shape[1:])} grid")
    return result
