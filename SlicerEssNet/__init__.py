"""SlicerEssNet core: CT -> synthetic MR with EssNet and liver segmentation on MR with a U-Net.

Importable inside and outside 3D Slicer. Importing this package is cheap: torch, SimpleITK and the other
heavy packages are imported by the submodules that need them, when they need them.
"""
from __future__ import annotations

__version__ = "0.1.0"
