"""Training for SlicerEssNet: EssNet (CycleGAN + segmentation branch) CT -> MR, its plain-CycleGAN ablation,
and the liver U-Net study on real + synthetic MR.

Stands on the core package (networks, I/O, geometry, preprocessing, metrics, weights); never imports Slicer.
Run ``python -m Training run --preset demo`` for the main job, ``python -m Training report RUN_DIR`` to
regenerate a report and its figures.
"""
from __future__ import annotations
