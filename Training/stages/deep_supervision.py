"""Deep supervision for stage 2 (nnU-Net's): training-only 1x1 heads on the U-Net's coarser decoder levels.

Each head reads the output of one decoder level (1/2, 1/4, 1/8 of the crop) and is trained on the liver label
taken to that size, the losses weighted 1, 1/2, 1/4, ... and normalised. The heads are dropped when the U-Net is
validated, saved or shipped, so the shipped network and its card are unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .forward_taps import forward_with_outputs


class WithDeepSupervision(nn.Module):
    """``segmenter`` (a core U-Net) plus a head on each of its ``levels`` finest decoder levels below full size.

    ``forward`` returns ``(logits, [coarser logits, finest first])``.
    """

    def __init__(self, segmenter: nn.Module, levels: int):
        super().__init__()
        if not 1 <= levels <= len(segmenter.up) - 1:
            raise ValueError(f"deep supervision of {levels} levels: the U-Net has "
                             f"{len(segmenter.up) - 1} below full size")
        self.segmenter = segmenter
        # segmenter.up[-1] makes the full-size features; up[-2] half size, and so on
        self.levels = [segmenter.up[-2 - level] for level in range(levels)]
        classes = segmenter.outc.out_channels
        self.heads = nn.ModuleList(nn.Conv2d(up.conv[3].out_channels, classes, 1) for up in self.levels)

    def forward(self, x: torch.Tensor):
        logits, features = forward_with_outputs(self.segmenter, self.levels, x)
        return logits, [head(feature) for head, feature in zip(self.heads, features)]


class DeepSupervisionLoss(nn.Module):
    """``loss(logits) + sum_k 2^-k loss(coarser logits_k, label at that size)``, divided by the weights' sum."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, coarser: list, target: torch.Tensor) -> torch.Tensor:
        total, weights = self.loss(logits, target), 1.0
        for level, level_logits in enumerate(coarser, start=1):
            small = F.interpolate(target[:, None].float(), size=level_logits.shape[-2:], mode="nearest")[:, 0]
            weight = 0.5 ** level
            total = total + weight * self.loss(level_logits, small.to(target.dtype))
            weights += weight
        return total / weights
