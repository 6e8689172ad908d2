"""Small affine and intensity jitter on model-grid slices, then the training crop. Never flips: a mirrored
abdomen puts the liver on the wrong side, which no scan shows."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(images: torch.Tensor, labels, generator: torch.Generator, rotate_deg: float, scale: float,
                  translate_px: float, elastic_px: float = 0.0):
    """Rotate/scale/shift each image (bilinear) and its label (nearest); outside the slice is background (-1/0).

    ``elastic_px`` > 0 adds a smooth random deformation: displacements of up to that many pixels on a coarse
    grid, interpolated bicubically (the U-Net paper's augmentation for few annotated images).
    """
    n, _, height, width = images.shape
    u = torch.rand(n, 4, generator=generator) * 2 - 1
    angle = u[:, 0] * math.radians(rotate_deg)
    zoom = 1.0 + u[:, 1] * scale
    shift_x = u[:, 2] * translate_px * 2.0 / width
    shift_y = u[:, 3] * translate_px * 2.0 / height
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    if elastic_px > 0:  # drawn only when asked for: runs without it keep their random stream
        grid = grid + elastic_displacement(n, height, width, elastic_px, generator)
    # grid_sample pads with 0; shifting by +1 makes the padding land on -1, the normalised background.
    moved = F.grid_sample(images + 1.0, grid, mode="bilinear", align_corners=False) - 1.0
    if labels is None:
        return moved, None
    moved_labels = F.grid_sample(labels[:, None].float(), grid, mode="nearest", align_corners=False)
    return moved, moved_labels[:, 0].to(labels.dtype)


def elastic_displacement(n: int, height: int, width: int, amplitude_px: float, generator: torch.Generator,
                         control_points: int = 5) -> torch.Tensor:
    """A smooth displacement field (N, H, W, 2) in ``grid_sample``'s normalised (x, y) units."""
    coarse = (torch.rand(n, 2, control_points, control_points, generator=generator) * 2 - 1) * amplitude_px
    coarse = coarse * torch.tensor([2.0 / width, 2.0 / height]).view(1, 2, 1, 1)
    field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    return field.permute(0, 2, 3, 1)


def intensity_jitter(images: torch.Tensor, generator: torch.Generator, scale: float, gamma: float) -> torch.Tensor:
    """Contrast (gamma) and gain jitter on [0, 1]-mapped intensities, so the -1 background stays -1."""
    n = images.shape[0]
    u = torch.rand(n, 2, generator=generator) * 2 - 1
    unit = ((images + 1.0) / 2.0).clamp(0.0, 1.0)
    unit = unit ** torch.exp(u[:, 0] * gamma).view(n, 1, 1, 1) * (1.0 + u[:, 1] * scale).view(n, 1, 1, 1)
    return (unit * 2.0 - 1.0).clamp(-1.0, 1.0)


def bias_field_jitter(images: torch.Tensor, generator: torch.Generator, strength: float,
                      control_points: int = 4) -> torch.Tensor:
    """A smooth multiplicative field ``exp(U(-strength, strength))`` on a coarse grid, bicubically spread over
    the slice, on [0, 1]-mapped intensities (the -1 background stays -1).

    MR receive coils leave a slow brightness falloff across the field of view that varies by patient and by
    slice: the liver dome at the top of a T2 stack can be half as bright as the same liver lower down.
    """
    n, _, height, width = images.shape
    coarse = (torch.rand(n, 1, control_points, control_points, generator=generator) * 2 - 1) * strength
    field = torch.exp(F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True))
    unit = ((images + 1.0) / 2.0).clamp(0.0, 1.0)
    return (unit * field * 2.0 - 1.0).clamp(-1.0, 1.0)


def organ_contrast_jitter(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                          strength: float, gamma: float = 0.0) -> torch.Tensor:
    """Brighten or darken the labelled organ alone by ``exp(U(-strength, strength))`` on [0, 1]-mapped values,
    then (``gamma`` > 0) raise the organ's values to a power ``exp(U(-gamma, gamma))``.

    T2 liver brightness relative to its neighbours varies between patients (iron, fat, fibrosis: one CHAOS
    patient's liver is darker than its body average, most are 1.2x brighter), which a global gamma cannot
    mimic. A gain darkens parenchyma and vessels alike; an iron-loaded liver has dark parenchyma and vessels
    that stay bright, which is what a power above 1 does on [0, 1] values. The change fades over a 3-pixel blur
    of the mask, so no sharp artificial edge becomes a cue.
    """
    n = images.shape[0]
    factor = torch.exp((torch.rand(n, generator=generator) * 2 - 1) * strength).view(n, 1, 1, 1)
    mask = (labels[:, None] > 0).float()
    mask = F.avg_pool2d(mask, 3, stride=1, padding=1, count_include_pad=False)
    unit = ((images + 1.0) / 2.0).clamp(0.0, 1.0)
    changed = unit * factor
    if gamma > 0:  # drawn only when asked for: runs without it keep their random stream
        power = torch.exp((torch.rand(n, generator=generator) * 2 - 1) * gamma).view(n, 1, 1, 1)
        changed = changed.clamp(0.0, 1.0) ** power
    unit = unit + (changed - unit) * mask
    return (unit * 2.0 - 1.0).clamp(-1.0, 1.0)


def crop_or_pad(images: torch.Tensor, labels, size: int, generator=None):
    """A ``size x size`` window: random where the slice is larger (``generator`` given), centred otherwise;
    padded with background where the slice is smaller."""
    _, _, height, width = images.shape
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if pad_h or pad_w:
        padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        images = F.pad(images, padding, value=-1.0)
        if labels is not None:
            labels = F.pad(labels, padding, value=0)
        height, width = images.shape[-2:]

    def offset(extent):
        if extent <= size:
            return 0
        if generator is None:
            return (extent - size) // 2
        return int(torch.randint(0, extent - size + 1, (1,), generator=generator))

    top, left = offset(height), offset(width)
    images = images[..., top : top + size, left : left + size]
    if labels is not None:
        labels = labels[..., top : top + size, left : left + size]
    return images, labels


def random_appearance(images: torch.Tensor, generator: torch.Generator, layers: int = 4, width: int = 2,
                      share: float = 1.0) -> torch.Tensor:
    """A random appearance for each image, anatomy untouched: a shallow network of random 1x1 / 3x3 convolutions
    with leaky ReLUs (a fresh one per image), blended with the input by a random weight and stretched back to
    [-1, 1] over the body; pixels at the -1 background stay there. ``share``: the fraction of images changed.

    Any monotone or non-monotone remapping of tissue brightness, plus a little texture, is on offer (fat bright or
    dark, liver above or below muscle), so a network shown these learns the organ's shape and its neighbours
    rather than one scanner's contrast (the global intensity non-linear augmentation of Ouyang et al., IEEE TMI
    2022, doi 10.1109/TMI.2022.3224067).
    It also makes CT slices usable beside real MR without a translation network.
    """
    n, channels, height, width_px = images.shape
    chosen = torch.rand(n, generator=generator) < share
    if not bool(chosen.any()):
        return images
    x = images
    inputs = channels
    for layer in range(layers):
        outputs = channels if layer == layers - 1 else width
        kernel = 3 if float(torch.rand(1, generator=generator)) < 0.5 else 1
        weight = torch.randn(n * outputs, inputs, kernel, kernel, generator=generator)
        bias = torch.randn(n * outputs, generator=generator) * 0.5
        x = F.conv2d(x.reshape(1, n * inputs, height, width_px), weight, bias, padding=kernel // 2, groups=n)
        x = x.reshape(n, outputs, height, width_px)
        if layer < layers - 1:
            x = F.leaky_relu(x, 0.2)
        inputs = outputs
    body = images > -0.999
    flat = x.masked_fill(~body, float("nan")).flatten(1)
    low = flat.nanquantile(0.005, dim=1).view(n, 1, 1, 1)
    high = flat.nanquantile(0.995, dim=1).view(n, 1, 1, 1)
    low, high = torch.nan_to_num(low, nan=0.0), torch.nan_to_num(high, nan=1.0)
    stretched = ((x - low) / (high - low).clamp_min(1e-6) * 2.0 - 1.0).clamp(-1.0, 1.0)
    alpha = torch.rand(n, 1, 1, 1, generator=generator)
    changed = torch.where(body, alpha * stretched + (1.0 - alpha) * images, images)
    return torch.where(chosen.view(n, 1, 1, 1), changed, images)
