"""Inner features of one forward pass, for the training-only heads (organ head, deep supervision): they learn from
features the U-Net computes anyway, and the U-Net that is validated and shipped is left without a hook."""
from __future__ import annotations

import torch
from torch import nn


def forward_with_outputs(network: nn.Module, modules: list, x: torch.Tensor):
    """``(network(x), [the output of each of modules, in the order given])``; the hooks live for this call only."""
    outputs = {}
    hooks = [module.register_forward_hook(
        lambda _module, _inputs, output, index=index: outputs.__setitem__(index, output))
        for index, module in enumerate(modules)]
    try:
        result = network(x)
    finally:
        for hook in hooks:
            hook.remove()
    return result, [outputs[index] for index in range(len(modules))]
