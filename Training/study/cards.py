"""Model cards for everything Training produces: the same grid and intensity specs the slices were made with."""
from __future__ import annotations

from ..data.slices import grid_card, intensity_spec
from ..stages.essnet import generator_architecture
from ..stages.segmentation_models import unet_architecture

# Synthetic MR is documented on a 0-1000 scale; synthetic CT comes back in HU over the training window.
MR_OUTPUT = {"kind": "linear", "low": 0, "high": 1000}
CT_OUTPUT = {"kind": "linear", "low": -125, "high": 275}


def model_grid(preset) -> dict:
    return grid_card(preset.data.spacing_mm, preset.data.multiple_of, preset.data.crop)


def synthesis_card(preset, name: str, direction: str, training: dict, description: str = "", metrics=None):
    """Card of a generator; ``direction`` is ``"CT->MR"`` or ``"MR->CT"``."""
    from SlicerEssNet.model_card import ModelCard

    source, target = direction.split("->")
    return ModelCard(
        name=name, version="1.0.0", task="synthesis", description=description,
        architecture=generator_architecture(preset.synthesis),
        input={"modality": source, "preprocessing": intensity_spec(source)},
        output={"modality": target, "postprocessing": MR_OUTPUT if target == "MR" else CT_OUTPUT},
        labels=None, grid=model_grid(preset), training=training, metrics=metrics or {}, licence=preset.license)


def segmentation_card(preset, name: str, training: dict, description: str = "", metrics=None,
                      modality: str = "MR"):
    """Card of the liver U-Net on MR (also the input contract the MONAI peer is evaluated through); with
    ``modality="CT"``, the same network read on CT with the window its CT training slices had."""
    from SlicerEssNet.model_card import ModelCard

    return ModelCard(
        name=name, version="1.0.0", task="segmentation", description=description,
        architecture=unet_architecture(preset.segmentation),
        input={"modality": modality, "preprocessing": intensity_spec(modality)},
        output={"modality": "label"}, labels={"0": "background", "1": "liver"},
        grid=model_grid(preset), training=training, metrics=metrics or {}, licence=preset.license)
