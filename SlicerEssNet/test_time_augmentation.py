"""Test-time augmentation for segmentation: each slice is seen a few times, slightly zoomed and rotated, and the
class probabilities, mapped back onto the slice, are averaged.

No flips: the networks never saw a mirrored abdomen (the liver on the wrong side), so a flipped view would be a
different, unseen kind of image, not another look at the same one. The zooms and rotations stay inside the
range the shipped U-Net was trained with (8 degrees, 8 % zoom). On the four validation patients the views raised
the real-only U-Net's mean 3D Dice by 0.003 and lowered the shipped real+ct U-Net's by 0.002 (docs/EXPERIMENTS.md),
for five network passes (3-5x the wall time, Testing/benchmarks/inference.py).
"""
from __future__ import annotations

import math

# (zoom, rotation in degrees) of each view; the first is the slice as it is.
VIEWS = ((1.0, 0.0), (0.92, 0.0), (1.08, 0.0), (1.0, 6.0), (1.0, -6.0))


def averaged_probabilities(probabilities_of, x, pad_value: float, views=VIEWS):
    """The mean over ``views`` of ``probabilities_of`` (model-grid ``(N, C, H, W)`` -> ``(N, K, H, W)``), each
    view's output warped back onto the unwarped slice. ``pad_value`` fills what a view moves in from outside."""
    total = None
    for zoom, degrees in views:
        if zoom == 1.0 and degrees == 0.0:
            probabilities = probabilities_of(x).float()
        else:
            seen = _warp(x - pad_value, _rotation_zoom(x, zoom, degrees), padding="zeros") + pad_value
            # Back onto the slice with the inverse view (zoom 1/z, the opposite angle). Near the border the
            # inverse view has no prediction: the nearest edge value stands in.
            probabilities = _warp(probabilities_of(seen).float(), _rotation_zoom(x, 1.0 / zoom, -degrees),
                                  padding="border")
        total = probabilities if total is None else total + probabilities
    return total / len(views)


def _rotation_zoom(x, zoom: float, degrees: float):
    """A batch of ``affine_grid`` matrices: output pixel -> input position, about the slice's centre."""
    import torch

    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    height, width = x.shape[-2:]
    # affine_grid works in [-1, 1] on each axis; on a non-square slice a rotation must be done in pixels.
    aspect = width / height
    matrix = torch.tensor([[cos, -sin / aspect, 0.0], [sin * aspect, cos, 0.0]], dtype=torch.float32,
                          device=x.device)
    return matrix.expand(x.shape[0], 2, 3)


def _warp(x, theta, padding: str):
    import torch.nn.functional as F

    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)
