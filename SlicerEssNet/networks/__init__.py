"""The networks, one small class per file, and the factory that builds one from a model card's ``architecture``.

``build_network({"name": "unet", "in_channels": 1, "num_classes": 2, "base": 32})``. Importing this package is
cheap; torch is imported when a network is built.
"""
from __future__ import annotations

import importlib
import inspect

from ..errors import ArchitectureMismatchError, WeightsError

# architecture name -> (module, class); the only names a model card may use
NETWORKS = {
    "resnet_generator": ("resnet_generator", "ResnetGenerator"),
    "patchgan": ("patchgan", "PatchDiscriminator"),
    "resnet_segmenter": ("resnet_segmenter", "ResnetSegmenter"),
    "unet": ("unet", "UNet"),
}

INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")


def network_class(name: str):
    """The class behind an architecture name; unknown names raise ``ArchitectureMismatchError``."""
    if name not in NETWORKS:
        raise ArchitectureMismatchError(
            f"unknown network {name!r}: the architecture name must be one of {', '.join(NETWORKS)}")
    from ..runtime import require_torch

    require_torch()  # the network files build on torch: say how to install it rather than fail on the import
    module, cls = NETWORKS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def architecture_arguments(architecture: dict) -> dict:
    """The keyword arguments of ``architecture`` after checking them against the network's signature.

    Counts and widths must be positive integers (JSON has no int/float distinction a typo can't break).
    """
    if not isinstance(architecture, dict) or not isinstance(architecture.get("name"), str):
        raise ArchitectureMismatchError(
            f"architecture must be an object with a 'name', got {architecture!r}: fix the model card")
    name = architecture["name"]
    parameters = inspect.signature(network_class(name).__init__).parameters
    arguments = {key: value for key, value in architecture.items() if key != "name"}
    for key, value in arguments.items():
        if key not in parameters or key == "self":
            allowed = ", ".join(p for p in parameters if p != "self")
            raise ArchitectureMismatchError(
                f"{name} has no parameter {key!r}: its parameters are {allowed}")
        if isinstance(parameters[key].default, int) and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ArchitectureMismatchError(
                f"{name} parameter {key!r} must be a positive integer, not {value!r}: fix the architecture")
    return arguments


def build_network(architecture: dict):
    """A freshly built (PyTorch-default initialised) network described by ``architecture``."""
    arguments = architecture_arguments(architecture)
    return network_class(architecture["name"])(**arguments)


def required_multiple(architecture: dict) -> int:
    """What H and W of the network's input must divide by (1 when any size works)."""
    architecture_arguments(architecture)
    return getattr(network_class(architecture["name"]), "required_multiple", 1)


def init_weights(network, init_type: str = "normal", gain: float = 0.02):
    """CycleGAN's initialisation: conv weights from ``init_type`` scaled by ``gain``, biases 0, norm scales N(1, gain).

    Returns the network, so ``init_weights(build_network(a))`` reads naturally.
    """
    from torch import nn

    if init_type not in INIT_TYPES:
        raise WeightsError(f"unknown weight initialisation {init_type!r}: use one of {', '.join(INIT_TYPES)}")

    def initialise(module):
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if init_type == "normal":
                nn.init.normal_(module.weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(module.weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(module.weight, gain=gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, gain)
            nn.init.zeros_(module.bias)

    network.apply(initialise)
    return network
