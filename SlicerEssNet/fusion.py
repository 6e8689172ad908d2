"""Inference-only rewrites of a network that change no result beyond float rounding.

Folding each BatchNorm into the convolution before it saves one memory-bound pass over every activation: about
4 % of the U-Net's time on these CPUs, and it lets oneDNN fuse the bias into the convolution.

Autocast runs instance norm and reflection padding in fp32 on the CPU, casting around every one of them, and
instance norm copies channels_last tensors to NCHW and back; ``networks.low_precision_layers`` computes the same
values in the convolutions' own dtype. On 2 cores that took the ResNet-9 generator from 60-64 % to 77-79 %
of the bf16 convolution peak (Testing/benchmarks/inference.py).

Each convolution and the ReLU after it then run as one oneDNN call (``ConvReLU``): the U-Net's ReLUs were a
separate pass over every activation.
"""
from __future__ import annotations

import copy


def prepare_for_inference(network):
    """A copy of ``network`` in eval mode with every rewrite below applied; the caller's network is untouched."""
    return keep_low_precision(fuse_convolution_relu(fold_batch_norm(network)))


def fuse_convolution_relu(network):
    """In place: every Conv2d whose next layer in its Sequential, past a folded norm's Identity, is a ReLU becomes
    one ``ConvReLU``, and that ReLU an Identity. Run after ``fold_batch_norm``."""
    from torch import nn

    from .networks.low_precision_layers import ConvReLU, fusable_convolution

    for module in network.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for index, name in enumerate(names):
            following = next((n for n in names[index + 1:] if not isinstance(module._modules[n], nn.Identity)), None)
            if fusable_convolution(module._modules[name]) and isinstance(module._modules.get(following), nn.ReLU):
                module._modules[name] = ConvReLU(module._modules[name])
                module._modules[following] = nn.Identity()
    return network


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
