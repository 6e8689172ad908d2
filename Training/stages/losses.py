"""Loss pieces, each a small named module (the CycleGAN house style): LSGAN, cycle L1, soft Dice, CE + Dice."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LSGANLoss(nn.Module):
    """Least-squares GAN loss: MSE of the patch map to 1 (real) or 0 (fake)."""

    def __init__(self, real_label: float = 1.0, fake_label: float = 0.0):
        super().__init__()
        self.real_label = real_label
        self.fake_label = fake_label

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.full_like(prediction, self.real_label if target_is_real else self.fake_label)
        return F.mse_loss(prediction.float(), target.float())


class CycleL1Loss(nn.Module):
    """``lambda * |reconstruction - original|_1`` (mean over pixels)."""

    def __init__(self, weight: float = 10.0):
        super().__init__()
        self.weight = weight

    def forward(self, reconstruction: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        return self.weight * F.l1_loss(reconstruction.float(), original.float())


class SoftDiceLoss(nn.Module):
    """1 - mean soft Dice over the foreground classes, pooled over the batch (stable on empty slices)."""

    def __init__(self, smooth: float = 1.0, include_background: bool = False):
        super().__init__()
        self.smooth = smooth
        self.include_background = include_background

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(logits.float(), dim=1)
        one_hot = F.one_hot(target.long(), probabilities.shape[1]).permute(0, 3, 1, 2).float()
        if not self.include_background:
            probabilities, one_hot = probabilities[:, 1:], one_hot[:, 1:]
        dims = (0, 2, 3)
        intersection = (probabilities * one_hot).sum(dims)
        denominator = probabilities.sum(dims) + one_hot.sum(dims)
        dice = (2 * intersection + self.smooth) / (denominator + self.smooth)
        return 1.0 - dice.mean()


class CEDiceLoss(nn.Module):
    """Cross-entropy + ``dice_weight`` x soft Dice: the segmentation loss of EssNet's branch and the U-Net."""

    def __init__(self, dice_weight: float = 1.0):
        super().__init__()
        self.dice_weight = dice_weight
        self.dice = SoftDiceLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target.long()) + self.dice_weight * self.dice(logits, target)
