"""The CycleGAN ResNet generator (Johnson et al.; junyanz ``resnet_9blocks``) that EssNet uses for CT <-> MR."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ArchitectureMismatchError
from .input_shape import check_spatial_multiple


class ResnetBlock(nn.Module):
    """Two reflection-padded 3x3 convs with instance norm, added back onto the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=True), nn.InstanceNorm2d(channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=True), nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


UPSAMPLING = ("transposed", "resize")


def upsample_block(in_channels: int, out_channels: int, upsampling: str) -> list:
    """x2 upsampling to ``out_channels``: the paper's stride-2 transposed convolution, or resize-convolution.

    A stride-2 3x3 transposed convolution overlaps unevenly (odd output pixels get one kernel tap per axis, even
    ones two), which prints a period-2 checkerboard that training must learn to cancel (Odena et al., Distill
    2016). Nearest x2 then a 3x3 convolution gives every output pixel the same taps, so the cause is gone.
    """
    if upsampling == "transposed":
        return [nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=True)]
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
            nn.Conv2d(in_channels, out_channels, 3, bias=True)]


class ResnetGenerator(nn.Module):
    """c7s1-ngf, two stride-2 downsamplings, ``n_blocks`` residual blocks, two x2 upsamplings, c7s1-out.

    Instance norm without affine parameters, so every conv keeps its bias (11,365,633 parameters at ngf 64,
    1 channel in and out). ``final="tanh"`` bounds the image to [-1, 1]; ``final=None`` leaves raw outputs
    (the segmenter's logits). ``upsampling``: ``"transposed"`` (the paper's, and what cards without the key
    mean) or ``"resize"`` (nearest x2 + 3x3 conv: no checkerboard; the same parameter count).
    """

    required_multiple = 4  # two stride-2 stages

    def __init__(self, in_channels: int = 1, out_channels: int = 1, ngf: int = 64, n_blocks: int = 9,
                 final: str | None = "tanh", upsampling: str = "transposed"):
        super().__init__()
        if final not in ("tanh", None):
            raise ArchitectureMismatchError(
                f"resnet_generator final must be 'tanh' or null, not {final!r}: fix the architecture")
        if upsampling not in UPSAMPLING:
            raise ArchitectureMismatchError(
                f"resnet_generator upsampling must be one of {', '.join(UPSAMPLING)}, not {upsampling!r}: "
                f"fix the architecture")
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=True), nn.InstanceNorm2d(ngf),
                  nn.ReLU(True)]
        for factor in (1, 2):
            layers += [nn.Conv2d(ngf * factor, ngf * factor * 2, 3, stride=2, padding=1, bias=True),
                       nn.InstanceNorm2d(ngf * factor * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for factor in (4, 2):
            layers += upsample_block(ngf * factor, ngf * factor // 2, upsampling)
            layers += [nn.InstanceNorm2d(ngf * factor // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7, bias=True)]
        if final == "tanh":
            layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_spatial_multiple(x, self.required_multiple, type(self).__name__)
        return self.model(x)
