"""A stage-2 arm trained for a few steps on phantoms with a training-only head, checked for what every such head
promises: validation and the returned network see the plain U-Net with no hook left, best.pt holds the U-Net
alone, and the resumable checkpoint keeps the head."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from SlicerEssNet.networks.unet import UNet
from Training.stages.distributed import DistributedContext
from Training.study.presets import get_preset
from Training.stages.train_segmentation import train_segmentation


def no_hooks_left(network) -> bool:
    return all(not module._forward_hooks and not module._forward_pre_hooks for module in network.modules())


def train_tiny_arm(folder, real, synthetic, **segmentation) -> set:
    """Train 6 steps with ``segmentation`` options; every network validated is the plain U-Net with no hook left.
    Returns the names of the tensors in the resumable checkpoint."""
    preset = get_preset("demo")
    preset.segmentation = dataclasses.replace(preset.segmentation, base=4, crop=32, batch_size=2, eval_every=3,
                                              checkpoint_every=3, decay_from=3, **segmentation)
    seen = []

    def validate(network):
        seen.append(type(network))
        assert no_hooks_left(network)
        return 0.5

    network, history, _ = train_segmentation(folder, real, synthetic, preset, 0, DistributedContext(),
                                             validate=validate, total=6)
    assert type(network) is UNet and set(seen) == {UNet}
    assert all(np.isfinite(record["loss"]) for record in history)
    best = torch.load(folder / "best.pt", weights_only=True)["network"]
    assert set(best) == set(network.state_dict())  # best (and so the shipped weights) hold the U-Net alone
    return set(torch.load(folder / "checkpoint.pt", weights_only=True)["training"]["network"])
