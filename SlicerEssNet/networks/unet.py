"""The classic U-Net (Ronneberger et al. 2015) with batch norm and transposed-conv upsampling, 64..1024 wide."""
from __future__ import annotations

import torch
from torch import nn

from .input_shape import check_spatial_multiple


class DoubleConv(nn.Sequential):
    """(3x3 conv without bias -> batch norm -> ReLU) twice; padding keeps the size, so skips line up exactly."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(True),
        )


class Up(nn.Module):
    """Double the resolution with a 2x2 transposed conv, concatenate the encoder's skip, then a DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """Four poolings, widths base..16*base; ``num_classes`` logits per pixel (1 = one sigmoid foreground).

    31,036,481 parameters at base 64, 1 channel in and 1 out (the ~31M of Rafiq et al.).
    """

    required_multiple = 16  # four 2x2 poolings

    def __init__(self, in_channels: int = 1, num_classes: int = 1, base: int = 64):
        super().__init__()
        widths = [base * 2 ** level for level in range(5)]
        self.inc = DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[level], widths[level + 1])) for level in range(4))
        self.up = nn.ModuleList(Up(widths[level + 1], widths[level]) for level in reversed(range(4)))
        self.outc = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_spatial_multiple(x, self.required_multiple, type(self).__name__)
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.up:
            x = up(x, skips.pop())
        return self.outc(x)
