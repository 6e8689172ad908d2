"""Inference-only rewrites of a network that change no result beyond float rounding.

Folding each BatchNorm into the convolution before it saves one memory-bound pass over every activation: about
4 % of the U-Net's time on these CPUs, and it lets oneDNN fuse the bias into the convolution.

Autocast runs instance norm and reflection padding in fp32 on the CPU, casting around every one of them, and
instance norm copies channels_last tensors to NCHW and back; ``networks.low_precision_layers`` computes the same
values in the convolutions' own dtype. On 2 cores that took the ResNet-9 generator from 60-64 % to 77-79 %
of the bf16 convolution peak (Testing/benchmarks/inference.py).
"""
from __future__ import annotations

import copy


def prepare_for_inference(network):
    """A copy of ``network`` in eval mode with every rewrite below applied; the caller's network is untouched."""
    return keep_low_precision(fold_batch_norm(network))


def keep_low_precision(network):
    """Swap instance norms (batch statistics only) and reflection pads for their ``low_precision_layers`` twins."""
    from torch import nn

    from .networks.low_precision_layers import GroupedInstanceNorm, InputDtypeReflectionPad2d

    for module in network.modules():
        for name, child in list(module._modules.items()):
            if isinstance(child, nn.InstanceNorm2d) and not child.track_running_stats:
                module._modules[name] = GroupedInstanceNorm(child)
            elif isinstance(child, nn.ReflectionPad2d):
                module._modules[name] = InputDtypeReflectionPad2d(child)
    return network


def fold_batch_norm(network):
    """A copy of ``network`` (in eval mode) with every Conv2d -> BatchNorm2d pair inside a Sequential folded."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(network).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = nn.Identity()
    return folded


def uses_instance_norm(network) -> bool:
    from torch import nn

    return any(isinstance(module, nn.InstanceNorm2d) for module in network.modules())
