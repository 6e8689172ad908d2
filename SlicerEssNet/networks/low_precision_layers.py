"""Drop-in inference layers that keep autocast's bf16/fp16 through the memory-bound steps between convolutions.

CPU autocast runs instance norm and reflection padding in fp32, so every one of them casts its input up and the
next convolution casts it back down: on the ResNet-9 generator those casts and PyTorch's NCHW round trip inside
instance norm cost a third of the time. These layers compute the same thing in the dtype they are given (norm
statistics still accumulate in fp32). Used only by the inference rewrite in ``SlicerEssNet.fusion``; training
keeps the standard layers.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn


def _in_own_dtype(x: torch.Tensor):
    """Autocast switched off around a half-precision input (it would cast it to fp32); nothing for fp32, so
    devices without autocast support never see an autocast call."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


class GroupedInstanceNorm(nn.Module):
    """``InstanceNorm2d`` without running statistics, as ``group_norm`` with one group per channel.

    ``group_norm`` has a channels_last kernel; instance norm reshapes to ``(1, N*C, H, W)`` for batch norm, which
    copies a channels_last tensor to NCHW and back.
    """

    def __init__(self, norm: nn.InstanceNorm2d):
        super().__init__()
        self.channels, self.eps = norm.num_features, norm.eps
        self.weight, self.bias = (norm.weight, norm.bias) if norm.affine else (None, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _in_own_dtype(x):
            weight = None if self.weight is None else self.weight.to(x.dtype)
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return nn.functional.group_norm(x, self.channels, weight, bias, self.eps)


class InputDtypeReflectionPad2d(nn.Module):
    """``ReflectionPad2d`` that returns the dtype it was given (padding only copies values)."""

    def __init__(self, pad: nn.ReflectionPad2d):
        super().__init__()
        self.padding = tuple(pad.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _in_own_dtype(x):
            return nn.functional.pad(x, self.padding, mode="reflect")
