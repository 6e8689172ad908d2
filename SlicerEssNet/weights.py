"""Weights on disk: safe reading, saving a network with its model card, and loading it back checked.

A model is two files side by side: ``<name>.safetensors`` (the tensors) and ``<name>.json`` (the ``ModelCard``,
which carries the SHA256 of the first). Nothing here ever unpickles arbitrary objects: ``.safetensors`` holds no
code by design, and ``.pt/.pth/.ckpt`` state dicts go only through ``torch.load(weights_only=True)``, whose
restricted unpickler refuses anything but tensors and plain containers.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Tuple

from .atomic import atomic_path
from .errors import (ArchitectureMismatchError, ChecksumMismatchError, DeviceError, ModelNotFoundError,
                     UnsafeWeightsError, WeightsError)
from .model_card import ModelCard

SAFETENSORS = ".safetensors"
PICKLED = (".pt", ".pth", ".ckpt")
WEIGHT_SUFFIXES = (SAFETENSORS,) + PICKLED
CARD = ".json"


@dataclass
class LoadedModel:
    """A model ready to run: its card, the network (float32, eval mode, on the requested device) and its file.

    ``prepared`` keeps the inference engine's rewritten copy of the network per device (BatchNorm folded,
    channels_last), so a cohort pays for that once, not per volume: treat ``network`` as read-only once it ran.
    """

    card: ModelCard
    network: object
    path: Path
    prepared: dict = field(default_factory=dict, repr=False, compare=False)


# --- files ------------------------------------------------------------------------------------------
def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_paths(path) -> Tuple[Path, Path]:
    """``(<path>.safetensors, <path>.json)`` for a path given with or without either suffix."""
    path = Path(path).expanduser()
    if path.suffix.lower() in (SAFETENSORS, CARD):
        path = path.with_suffix("")
    return path.with_name(path.name + SAFETENSORS), path.with_name(path.name + CARD)


def locate_model(path_or_card_path) -> Tuple[Path, Path]:
    """``(weights, card)`` for a weights file, its card, or the shared stem; both must exist."""
    path = Path(path_or_card_path).expanduser()
    suffix = path.suffix.lower()
    if suffix == CARD:
        if not path.is_file():
            raise ModelNotFoundError(f"model card {path} not found: check the path")
        weights = next((path.with_suffix(s) for s in WEIGHT_SUFFIXES if path.with_suffix(s).is_file()), None)
        if weights is None:
            raise ModelNotFoundError(
                f"model card {path} has no weights beside it ({path.stem}{SAFETENSORS}): put the weights next to it")
        return weights, path
    if suffix not in WEIGHT_SUFFIXES:
        stem_weights = path.with_name(path.name + SAFETENSORS)
        if stem_weights.is_file():
            path = stem_weights
        elif path.exists():
            raise WeightsError(
                f"{path} is not a weights file SlicerEssNet reads: give a .safetensors file (or a .pt/.pth/.ckpt "
                f"state dict) with its model card")
        elif path.name == str(path_or_card_path):  # a bare name: the store finds (or downloads) it
            raise ModelNotFoundError(f"{path.name!r} is not a file here; a model name is loaded with "
                                     f"SlicerEssNet.model_store.ModelStore().load({path.name!r})")
        else:
            raise ModelNotFoundError(f"model {path} not found: give a weights file or a registry model name")
    if not path.is_file():
        raise ModelNotFoundError(f"weights file {path} not found: check the path")
    card = path.with_suffix(CARD)
    if not card.is_file():
        raise WeightsError(
            f"{path} has no model card {card.name} beside it: copy the card saved with the weights next to it "
            f"(weights alone do not say how to use them)")
    return path, card


# --- reading ----------------------------------------------------------------------------------------
def read_state_dict(path) -> dict:
    """The tensors of a weights file, on the CPU, as stored; never runs code from the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"weights file {path} not found: check the path")
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as error:  # safetensors reports bad bytes as SafetensorError, OSError, ValueError...
            raise _corrupt(path, error) from None
    if suffix in PICKLED:
        return _read_pickled_state_dict(path)
    raise WeightsError(
        f"{path.name} is not a weights file SlicerEssNet reads: use .safetensors (or a .pt/.pth/.ckpt state dict)")


def _read_pickled_state_dict(path: Path) -> dict:
    import pickle

    import torch

    try:
        content = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refused a global or opcode: the pickle wants to build something other than tensors
        refused = re.search(r"GLOBAL (\S+?)(?: |$|\.?\n)", str(error))
        what = f" ({refused.group(1)})" if refused else ""
        raise UnsafeWeightsError(
            f"{path} is a pickle that asks to run code or build objects{what} and was not loaded: export the "
            f"weights as .safetensors or a plain tensor state dict from a source you trust") from None
    except Exception as error:  # truncated zip, empty file, bad storage: torch raises RuntimeError/EOFError/...
        raise _corrupt(path, error) from None
    return _plain_state_dict(content, path)


def _plain_state_dict(content, path: Path) -> dict:
    """Unwrap the usual checkpoint shapes ({"state_dict": ...}, DataParallel's "module." prefix) to key -> tensor."""
    import torch

    if isinstance(content, dict):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(content.get(key), dict):
                content = content[key]
                break
    if not isinstance(content, dict) or not content or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items()):
        raise WeightsError(
            f"{path} does not hold a state dict (names -> tensors): save network.state_dict(), not the network")
    if all(key.startswith("module.") for key in content):
        content = {key[len("module."):]: value for key, value in content.items()}
    return content


def _corrupt(path: Path, error: Exception) -> WeightsError:
    detail = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
    return WeightsError(f"weights file {path} is truncated or corrupt ({detail}): download or export it again")


def tensor_shapes(path) -> Dict[str, tuple]:
    """Name -> shape of every tensor in a ``.safetensors`` file, read from its header without loading the data."""
    path = Path(path)
    if path.suffix.lower() != SAFETENSORS:
        return {key: tuple(value.shape) for key, value in read_state_dict(path).items()}
    from safetensors import safe_open

    from .runtime import require_torch

    require_torch()  # safetensors' "pt" view: without torch it would fail as if the file were corrupt

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as error:
        raise _corrupt(path, error) from None


# --- checking ---------------------------------------------------------------------------------------
def expected_shapes(architecture: dict) -> Dict[str, tuple]:
    """Name -> shape of every tensor the described network's state dict holds (built on the meta device: free)."""
    from .runtime import require_torch

    torch = require_torch()

    from .networks import build_network

    with torch.device("meta"):
        network = build_network(architecture)
    return {key: tuple(value.shape) for key, value in network.state_dict().items()}


def check_fits(shapes: Dict[str, tuple], architecture: dict, source) -> None:
    """Raise ``ArchitectureMismatchError`` naming the first tensor that is missing, extra or of the wrong shape."""
    expected = expected_shapes(architecture)
    name = architecture["name"]
    for key, shape in expected.items():
        if key not in shapes:
            raise ArchitectureMismatchError(
                f"{source} lacks {key!r}, which the card's {name} needs: the weights are not the architecture the "
                f"card describes; use the card saved with these weights")
        if tuple(shapes[key]) != shape:
            raise ArchitectureMismatchError(
                f"{source}: {key!r} has shape {list(shapes[key])} but the card's {name} needs {list(shape)}: the "
                f"card's architecture does not match the weights; use the card saved with them")
    for key in shapes:
        if key not in expected:
            raise ArchitectureMismatchError(
                f"{source} has {key!r}, which the card's {name} does not have: the weights are not the "
                f"architecture the card describes; use the card saved with these weights")


def check_checksum(weights: Path, card: ModelCard, card_path=None) -> str:
    """The file's SHA256, after checking it is the one the card promises."""
    if not card.sha256:
        raise WeightsError(
            f"model card {card_path or card.name} has no sha256: re-save the model with weights.save_model")
    digest = file_sha256(weights)
    if digest != card.sha256:
        raise ChecksumMismatchError(
            f"{weights} is not the file its model card describes (SHA256 {digest[:12]}... instead of "
            f"{card.sha256[:12]}...): it is truncated, corrupt or replaced; download or import it again")
    return digest


def check_model(path_or_card_path) -> Tuple[Path, ModelCard]:
    """``(weights, card)`` after checking the card, the checksum and every tensor's name and shape (data unread)."""
    weights, card_path = locate_model(path_or_card_path)
    card = ModelCard.load(card_path)
    card.check_grid_fits_network()
    check_checksum(weights, card, card_path)
    check_fits(tensor_shapes(weights), card.architecture, weights)
    return weights, card


# --- saving and loading -----------------------------------------------------------------------------
def weights_metadata(card: ModelCard) -> str:
    """What a weights file says of itself: its model's name and version, as compact sorted JSON."""
    import json

    return json.dumps({"name": card.name, "version": card.version}, sort_keys=True, separators=(",", ":"))


def save_model(network, card: ModelCard, path, dtype=None) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json`` atomically; fills ``card.sha256``; returns the weights path.

    ``dtype=torch.float16`` halves the file: parameters are stored in fp16, buffers (BatchNorm running
    statistics, counters) keep their own dtype so no statistic loses precision. Loading always gives float32.
    """
    import torch
    from safetensors.torch import save_file

    network = getattr(network, "_orig_mod", network)  # torch.compile wraps; its keys carry a prefix
    if isinstance(network, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        network = network.module
    if dtype is not None and not dtype.is_floating_point:
        raise WeightsError(f"weights can be stored as float16, bfloat16 or float32, not {dtype}: pick one of those")
    card.validate()
    card.check_grid_fits_network()
    parameters = {name for name, _ in network.named_parameters()}
    tensors = {}
    for key, value in network.state_dict().items():
        value = value.detach().to("cpu")
        if dtype is not None and key in parameters and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.clone().contiguous()  # safetensors refuses tensors that share memory
    check_fits({key: tuple(value.shape) for key, value in tensors.items()}, card.architecture,
               f"the network saved as {card.name}")

    weights_path, card_path = model_paths(path)
    with atomic_path(card_path) as card_temporary:
        with atomic_path(weights_path) as weights_temporary:
            # One metadata entry: safetensors writes its metadata map in a random order, and with a single
            # entry the same tensors always give the same bytes (and the card the same sha256).
            save_file(tensors, str(weights_temporary), metadata={"model": weights_metadata(card)})
            digest = file_sha256(weights_temporary)
            card.replace(sha256=digest).save(card_temporary)
    card.sha256 = digest
    return weights_path


def load_model(path_or_card_path, device="cpu") -> LoadedModel:
    """A checked, ready-to-run model from a weights file, its card or their shared stem (a model name goes
    through ``ModelStore.load``, which finds or downloads the file first).

    The SHA256 must match the card (``ChecksumMismatchError``), the tensors must fit the card's architecture
    exactly (``ArchitectureMismatchError`` naming the first bad key), and the file is never unpickled unsafely.
    """
    import torch

    from .networks import build_network

    weights, card_path = locate_model(path_or_card_path)
    card = ModelCard.load(card_path)
    card.check_grid_fits_network()
    check_checksum(weights, card, card_path)
    state = read_state_dict(weights)
    check_fits({key: tuple(value.shape) for key, value in state.items()}, card.architecture, weights)
    state = {key: value.float() if value.is_floating_point() else value for key, value in state.items()}
    with torch.device("meta"):  # no throw-away random initialisation; the state dict supplies every tensor
        network = build_network(card.architecture)
    network.load_state_dict(state, strict=True, assign=True)
    try:
        network = network.to(torch.device(device))
    except (RuntimeError, AssertionError, ValueError, TypeError) as error:
        raise DeviceError(f"cannot put the model on device {device!r} ({str(error).splitlines()[0][:120]}): "
                          f"use 'cpu' or an available GPU") from None
    return LoadedModel(card, network.eval(), weights)


def create_untrained_model(task: str, path, width: int = 4, input_modality: str | None = None,
                           seed: int = 0) -> Path:
    """A tiny, randomly initialised model with a complete, valid card, saved at ``path``; returns the weights path.

    For tests, self-tests and trying the software before trained weights exist. Its outputs mean nothing.
    ``task``: "synthesis" (CT -> MR by default, or MR -> CT) or "segmentation" (liver on MR by default, or CT).
    """
    import torch

    from .networks import build_network, init_weights

    modality = (input_modality or ("CT" if task == "synthesis" else "MR")).upper()
    if task not in ("synthesis", "segmentation"):
        raise WeightsError(f"task {task!r} is not synthesis or segmentation: choose one of them")
    if modality not in ("CT", "MR"):
        raise WeightsError(f"input modality {input_modality!r} is not CT or MR: choose one of them")
    preprocessing = ({"kind": "ct_window", "low": -125, "high": 275} if modality == "CT"
                     else {"kind": "mr_percentile", "low_percentile": 0.5, "high_percentile": 99.5})
    if task == "synthesis":
        architecture = {"name": "resnet_generator", "in_channels": 1, "out_channels": 1, "ngf": width, "n_blocks": 2}
        target = "MR" if modality == "CT" else "CT"
        low, high = (0, 1000) if target == "MR" else (-1000, 1000)  # synthetic MR's documented scale; CT in HU
        output = {"modality": target, "postprocessing": {"kind": "linear", "low": low, "high": high}}
        labels, what = None, f"{modality} -> {target} synthesis"
    else:
        architecture = {"name": "unet", "in_channels": 1, "num_classes": 2, "base": width}
        output, labels = {"modality": "label"}, {"0": "background", "1": "liver"}
        what = f"liver segmentation on {modality}"
    weights_path, _ = model_paths(path)
    card = ModelCard(
        name=weights_path.name[:-len(SAFETENSORS)], version="0.0.0", task=task,
        description=(f"UNTRAINED {what} model with random weights, for testing the software only: its outputs are "
                     f"meaningless. Train a real model with python -m Training."),
        architecture=architecture, input={"modality": modality, "preprocessing": preprocessing}, output=output,
        labels=labels, grid={"mode": "spacing", "spacing_mm": 3.0, "multiple_of": 16},
        training={"preset": "untrained", "data": [], "seed": seed, "split": {}}, metrics={},
        licence="random weights, no training data: no restrictions beyond the SlicerEssNet licence")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = init_weights(build_network(architecture), "normal", gain=0.02)
    return save_model(network, card, weights_path)
