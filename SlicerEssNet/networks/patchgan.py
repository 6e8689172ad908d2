"""The 70x70 PatchGAN discriminator of pix2pix / CycleGAN (junyanz ``NLayerDiscriminator``, ``basic``)."""
from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """One real/fake score per 70x70 patch (a 30x30 map for a 256x256 input); no sigmoid, for the LSGAN loss.

    Instance norm without affine parameters, conv biases on: 2,762,689 parameters at ndf 64 on 1 channel.
    """

    def __init__(self, in_channels: int = 1, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        channels = ndf
        for layer in range(1, n_layers + 1):
            stride = 2 if layer < n_layers else 1  # the last widening keeps the resolution
            widened = ndf * min(2 ** layer, 8)
            layers += [nn.Conv2d(channels, widened, 4, stride=stride, padding=1, bias=True),
                       nn.InstanceNorm2d(widened), nn.LeakyReLU(0.2, True)]
            channels = widened
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
