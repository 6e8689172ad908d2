"""Helpers shared by the networks, weights and model-store tests."""
from __future__ import annotations

import builtins
import hashlib
from pathlib import Path


def sha256(path) -> str:
    """An independent SHA256 (not the code under test's)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def one_line(error) -> str:
    """The message of a ``pytest.raises`` result, checked to be the one informative line users will see."""
    text = str(error.value)
    assert "\n" not in text and len(text) > 20, text
    return text


class Payload:
    """A pickle payload: unpickling it creates the marker file. Tests prove it live, then that it is refused."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').close()",)


def liver_everywhere(path):
    """A tiny segmentation model whose last convolution says "liver" at every voxel (weights 0, biases -20 / +20):
    its masks, and so the liver volumes measured from them, are known in advance. Returns the weights path."""
    import torch

    from SlicerEssNet.weights import create_untrained_model, load_model, save_model

    loaded = load_model(create_untrained_model("segmentation", path, width=4))
    last = [module for module in loaded.network.modules() if isinstance(module, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([-20.0, 20.0]))
    return save_model(loaded.network, loaded.card, path)
