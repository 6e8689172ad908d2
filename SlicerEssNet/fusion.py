"""Inference-only rewrites of a network that change no result beyond float rounding.

Folding each BatchNorm into the convolution before it saves one memory-bound pass over every activation: about
4 % of the U-Net's time on these CPUs, and it lets oneDNN fuse the bias into the convolution.
"""
from __future__ import annotations

import copy


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
