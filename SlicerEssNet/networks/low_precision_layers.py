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


class ConvReLU(nn.Module):
    """A convolution (batch norm already folded into it) and the ReLU after it, as one oneDNN call on the CPU.

    Apart, the ReLU is a second pass over an activation that has just left the cache: on 2 cores that pass cost
    as much as 70 % of the convolution before it (bf16, 24 channels at 128 px: 7.6 ms together, 4.6 ms fused).
    oneDNN's pointwise post-op is the kernel ``torch.compile`` emits; where it is missing (another device, a
    build without it) or the dtype is neither fp32 nor bf16, this is exactly ``relu(conv(x))``.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        self._cast: dict = {}  # dtype -> (weight, bias): inference weights never change

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _cpu_autocast_dtype() or x.dtype
        op = pointwise_convolution(dtype) if x.device.type == "cpu" else None
        if op is None:
            return torch.relu_(self.conv(x))
        if dtype not in self._cast:
            bias = None if self.conv.bias is None else self.conv.bias.detach().to(dtype)
            self._cast[dtype] = (self.conv.weight.detach().to(dtype), bias)
        weight, bias = self._cast[dtype]
        conv = self.conv
        return op(x.to(dtype), weight, bias, conv.padding, conv.stride, conv.dilation, conv.groups, "relu", [], "")

    def _apply(self, fn, *args, **kwargs):  # .to(), .half(), ...: the cached casts would be stale
        self._cast = {}
        return super()._apply(fn, *args, **kwargs)


def fusable_convolution(conv) -> bool:
    return isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


_POINTWISE: dict = {}


def pointwise_convolution(dtype=torch.float32):
    """oneDNN's fused convolution op if this torch has it and it runs here in ``dtype`` (fp32 or bf16; probed once
    per dtype), else None. oneDNN's bf16 path needs AVX512 or AVX-NE-CONVERT: on AVX2-only CPUs it refuses."""
    if dtype not in _POINTWISE:
        _POINTWISE[dtype] = None
        op = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
        if dtype in (torch.float32, torch.bfloat16) and op is not None and torch.backends.mkldnn.is_available():
            try:
                probe = op(torch.ones(1, 1, 4, 4, dtype=dtype), torch.ones(1, 1, 3, 3, dtype=dtype), None, [1, 1],
                           [1, 1], [1, 1], 1, "relu", [], "")
                if probe.shape == (1, 1, 4, 4) and float(probe[0, 0, 1, 1]) == 9.0:
                    _POINTWISE[dtype] = op
            except (RuntimeError, TypeError, NotImplementedError):
                pass
    return _POINTWISE[dtype]


def _autocast_query():
    """``() -> dtype or None``: the dtype CPU autocast gives a convolution, None outside autocast. Chosen once
    here, not per call: it runs before every fused convolution."""
    try:
        torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4: the CPU-only spellings
        return lambda: torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return lambda: torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None


_cpu_autocast_dtype = _autocast_query()
