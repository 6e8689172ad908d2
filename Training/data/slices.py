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


def to_model_grid(volume, label, spec: dict, grid: dict, other_organs=None):
    """``(images, labels)``: float32 ``(slices, H, W)`` in [-1, 1] and uint8 ``(slices, H, W)`` on the model grid.

    ``other_organs`` (a uint8 Volume, 0 none, 1..K organs; see ``cohorts.load_case``): a third result,
    uint8 ``(slices, H, W)``, each pixel the organ whose resampled probability is highest and above 0.5.
    """
    from SlicerEssNet.geometry import CanonicalFrame, GridSpec, SliceGrid
    from SlicerEssNet.preprocessing import intensity_transform, volume_statistics

    frame = CanonicalFrame.of(volume)
    source = frame.to_canonical(volume.array)
    _, row_mm, col_mm = frame.canonical_spacing(volume.spacing)
    slice_grid = SliceGrid.plan(source.shape[1:], (row_mm, col_mm), GridSpec(**grid))
    scale, offset = intensity_transform(spec, volume_statistics(volume.array, spec))

    def label_probabilities(array, values):
        # Labels travel as probabilities (like the engine's outputs), one channel per value.
        canonical = torch.from_numpy(np.ascontiguousarray(frame.to_canonical(array)))
        one_hot = torch.stack([(canonical == value) for value in values], 1).to(torch.float32)
        return slice_grid.to_model(one_hot, pad_value=0.0)

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(source, dtype=np.float32))[:, None]
        x = (x * scale + offset).clamp_(-1.0, 1.0)
        images = slice_grid.to_model(x, pad_value=-1.0)[:, 0].contiguous()
        labels = None
        if label is not None:
            labels = (label_probabilities(label.array, [1])[:, 0] > 0.5).to(torch.uint8).contiguous()
        if other_organs is None:
            return images, labels
        count = int(np.max(other_organs.array)) if other_organs.array.size else 0
        organs = torch.zeros_like(images, dtype=torch.uint8)
        if count:
            best, number = label_probabilities(other_organs.array, range(1, count + 1)).max(1)
            organs = torch.where(best > 0.5, number + 1, 0).to(torch.uint8).contiguous()
    return images, labels, organs


@dataclass
class SliceSet:
    """All slices of some patients on the model grid. Volumes keep their own (H, W); batches are cropped."""

    images: list = field(default_factory=list)  # per volume: float16 (slices, H, W)
    labels: list = field(default_factory=list)  # per volume: uint8 (slices, H, W)
    patients: list = field(default_factory=list)  # per volume
    index: list = field(default_factory=list)  # per slice: (volume number, slice number)
    organs: list = field(default_factory=list)  # per volume: uint8 (slices, H, W) of the other organs, or None

    def __len__(self) -> int:
        return len(self.index)

    def add(self, patient: str, images: torch.Tensor, labels: torch.Tensor, organs=None) -> None:
        number = len(self.images)
        self.images.append(images.to(torch.float16))
        self.labels.append(labels.to(torch.uint8))
        self.organs.append(organs.to(torch.uint8) if organs is not None else None)
        self.patients.append(patient)
        self.index.extend((number, k) for k in range(images.shape[0]))

    def organ_classes(self) -> int:
        """1 + the highest organ number any volume marks (class 0: none of them); 1 when none has organs."""
        return 1 + max((int(o.max()) for o in self.organs if o is not None and o.numel()), default=0)

    def slice_patients(self) -> list:
        return [self.patients[v] for v, _ in self.index]

    def batch(self, indices, crop: int, generator=None, augment=None, elastic: bool = False, organs: bool = False):
        """``(images (N,1,crop,crop) float32, labels (N,crop,crop) int64)``; random crop + jitter if ``generator``;
        ``elastic``: also the smooth deformation of ``augment.elastic_px`` (stage 2). ``organs``: a third
        result, the other organs' labels (N,crop,crop) int64, -1 throughout a slice whose volume has none."""
        images, labels, other = [], [], []
        for i in indices:
            volume, k = self.index[i]
            x = self.images[volume][k][None, None].float()
            y = self.labels[volume][k][None]
            known = organs and self.organs[volume] is not None
            if known:  # liver and organs move as one map (nearest sampling keeps the code): bit 0 liver, above organs
                y = y | (self.organs[volume][k][None] << 1)
            if generator is not None and augment is not None:
                x, y = random_affine(x, y, generator, augment.rotate_deg, augment.scale, augment.translate_px,
                                     augment.elastic_px if elastic else 0.0)
            x, y = crop_or_pad(x, y, crop, generator)
            images.append(x)
            labels.append(y & 1)
            if organs:
                other.append((y >> 1).long() if known else torch.full(y.shape, -1, dtype=torch.long))
        images = torch.cat(images, 0)
        if generator is not None and augment is not None:
            images = intensity_jitter(images, generator, augment.intensity_scale, augment.intensity_gamma)
        if organs:
            return images, torch.cat(labels, 0).long(), torch.cat(other, 0)
        return images, torch.cat(labels, 0).long()


def build_slice_set(cases: list, grid: dict, log=None, organs: bool = False) -> SliceSet:
    """Read every case, bring it to the model grid, collect the slices; ``organs``: also the other organs of
    cases whose labels mark them (``Case.other_organs``), from the same label read."""
    from .cohorts import load_case

    result = SliceSet()
    for case in cases:
        image, liver, *other = load_case(case, other_organs=organs)  # other: [] or [organs Volume or None]
        images, labels, *grid_organs = to_model_grid(image, liver, intensity_spec(case.modality), grid, *other)
        result.add(case.patient, images, labels, *grid_organs)
        if log:
            log(f"  {case.patient}: {images.shape[0]} slices on a {tuple(images.shape[1:])} grid")
    return result
