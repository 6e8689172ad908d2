"""EssNet's segmentation branch (Huo et al., SynSeg-Net): the ResNet-9 generator body with class logits out."""
from __future__ import annotations

from .resnet_generator import ResnetGenerator


class ResnetSegmenter(ResnetGenerator):
    """``num_classes`` logits per pixel. SynSeg-Net ended this net in a tanh, which bounds the logits to [-1, 1]
    and keeps softmax from ever becoming confident; it is dropped here."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, ngf: int = 64, n_blocks: int = 9):
        super().__init__(in_channels, num_classes, ngf, n_blocks, final=None)
