"""Quality of synthetic MR without paired truth: the checkerboard's spectral spike and a classifier two-sample test.

Shape consistency (the anatomy) is ``judge.py``. Here:

- ``nyquist_ratio``: a stride-2 transposed convolution prints a period-2 pattern, a spike at the Nyquist frequency
  of the model grid. The ratio is the power on the Nyquist lines over the power just inside them; smooth images
  (real MR) sit near or below 1, a checkerboard lifts it far above.
- ``two_sample_test`` (Lopez-Paz and Oquab, ICLR 2017): a small CNN learns to tell real MR slices from synthetic
  ones on training patients; its accuracy on held-out patients says how far apart the two are (0.5: it cannot tell
  them apart). Slices of one patient are correlated, so the interval (Wilson, over slices) is optimistic.
"""
from __future__ import annotations

import math

import numpy as np


def nyquist_ratio(images) -> float:
    """Mean power on the Nyquist row and column of the 2D spectra of ``images`` ((N, H, W), H and W even), over the
    mean power of the two lines just inside them."""
    array = np.asarray(images, dtype=np.float64)
    array = array - array.mean(axis=(-2, -1), keepdims=True)
    power = np.abs(np.fft.fft2(array)) ** 2
    power = power.mean(axis=0)
    height, width = power.shape
    nyquist = np.concatenate([power[height // 2, :], power[:, width // 2]])
    inside = np.concatenate([power[height // 2 - 1, :], power[height // 2 - 2, :],
                             power[:, width // 2 - 1], power[:, width // 2 - 2]])
    return float(nyquist.mean() / max(inside.mean(), 1e-12))


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple:
    """95 % Wilson score interval of a proportion."""
    if total == 0:
        return (float("nan"), float("nan"))
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def liver_slices(images, labels) -> list:
    """The slices (H, W) of a model-grid slice stack that contain liver: real and synthetic MR are compared at the
    same anatomical levels, so the classifier cannot tell them apart by the level alone."""
    return [images[k] for k in range(images.shape[0]) if bool(labels[k].any())]


def _centre_crops(slices: list, size: int, generator) -> "torch.Tensor":
    import torch

    crops = []
    for image in slices:
        height, width = image.shape
        jitter = int(generator.integers(-8, 9)), int(generator.integers(-8, 9))
        top = min(max(0, (height - size) // 2 + jitter[0]), height - size)
        left = min(max(0, (width - size) // 2 + jitter[1]), width - size)
        crops.append(torch.as_tensor(np.asarray(image[top:top + size, left:left + size], dtype=np.float32)))
    return torch.stack(crops)[:, None]


def _classifier():
    from torch import nn

    layers, channels = [], 1
    for width in (16, 32, 64, 64):
        layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2)]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1))


def two_sample_test(real_train: list, synthetic_train: list, real_test: list, synthetic_test: list,
                    crop: int = 96, iterations: int = 600, seed: int = 0) -> dict:
    """Accuracy (balanced held-out set) of a CNN trained to tell real from synthetic MR slices, with its interval.

    Each list holds model-grid slices (H, W) at least ``crop`` in size; crops are taken near the centre (the
    abdomen), so the padding around a slice is never what tells the two apart.
    """
    import torch

    smallest = min(min(image.shape) for image in real_train + synthetic_train + real_test + synthetic_test)
    crop = min(crop, smallest - smallest % 16)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    network = _classifier()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    loss_function = torch.nn.BCEWithLogitsLoss()
    batch = 16
    for _ in range(iterations):
        real = [real_train[i] for i in rng.integers(0, len(real_train), batch // 2)]
        fake = [synthetic_train[i] for i in rng.integers(0, len(synthetic_train), batch // 2)]
        x = _centre_crops(real + fake, crop, rng)
        x = torch.where(torch.as_tensor(rng.random(x.shape[0]) < 0.5)[:, None, None, None], x.flip(-1), x)
        y = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))])
        optimizer.zero_grad(set_to_none=True)
        loss_function(network(x)[:, 0], y).backward()
        optimizer.step()
    count = min(len(real_test), len(synthetic_test))  # balanced: chance is exactly 0.5
    real_pick = rng.choice(len(real_test), count, replace=False)
    fake_pick = rng.choice(len(synthetic_test), count, replace=False)
    network.eval()
    with torch.no_grad():
        real_scores = network(_centre_crops([real_test[i] for i in real_pick], crop, rng))[:, 0]
        fake_scores = network(_centre_crops([synthetic_test[i] for i in fake_pick], crop, rng))[:, 0]
    correct = int((real_scores > 0).sum()) + int((fake_scores <= 0).sum())
    total = 2 * count
    low, high = wilson_interval(correct, total)
    return {"accuracy": correct / total, "ci95": [low, high], "test_slices": total,
            "train_slices": {"real": len(real_train), "synthetic": len(synthetic_train)}}
