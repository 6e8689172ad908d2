"""Auxiliary organ supervision for stage 2: a training-only head that also learns the other organs the MR labels
mark (CHAOS: kidneys, spleen), from the same last features as the liver output.

The liver U-Net's errors sit where the liver meets the right kidney, the bowel and the spleen. The CHAOS labels
name those neighbours; a second 1x1 head on the U-Net's last feature map, trained to find them, makes those
features tell the neighbours apart. The head is dropped when the U-Net is validated, saved or shipped, so the
shipped network and its card are unchanged. Slices without organ labels (CT, synthetic MR) add no organ loss.
"""
from __future__ import annotations

import torch
from torch import nn

from .forward_taps import forward_with_outputs
from .losses import CEDiceLoss


class WithOrganHead(nn.Module):
    """``segmenter`` (a core U-Net) plus a 1x1 organ head fed by its last decoder level (what its output conv reads).

    ``forward`` returns ``(liver logits, organ logits)``; ``organ_classes`` counts "none of them" as class 0.
    """

    def __init__(self, segmenter: nn.Module, organ_classes: int):
        super().__init__()
        self.segmenter = segmenter
        self.organ_head = nn.Conv2d(segmenter.outc.in_channels, organ_classes, 1)

    def forward(self, x: torch.Tensor):
        # The last decoder level's output is what the output convolution reads.
        liver, (features,) = forward_with_outputs(self.segmenter, [self.segmenter.up[-1]], x)
        return liver, self.organ_head(features)


class OrganLoss(nn.Module):
    """CE + soft Dice over the slices whose organs are known (target -1 throughout marks a slice without them)."""

    def __init__(self, dice_weight: float = 1.0):
        super().__init__()
        self.loss = CEDiceLoss(dice_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        known = target[:, 0, 0] >= 0
        if not bool(known.any()):
            return logits.sum() * 0.0  # keeps the head in the graph (DDP expects every parameter used)
        return self.loss(logits[known], target[known])
