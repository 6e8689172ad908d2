"""Training for SlicerEssNet: EssNet (CycleGAN + segmentation branch) CT -> MR, its plain-CycleGAN ablation,
and the liver U-Net study on real + synthetic MR.

Stands on the core package (networks, I/O, geometry, preprocessing, metrics, weights); never imports Slicer.
Three floors, each importing only those below it: ``data`` (cohorts, slices, augmentation), ``stages`` (the
training of both stages) and ``study`` (study, job pool, reports, presets, the ship run); ``__main__`` on top.
Committed results live outside the package, in ``docs/results/``.
Run ``python -m Training run --preset demo`` for the main job, ``python -m Training report RUN_DIR`` to
regenerate a report and its figures.
"""
from __future__ import annotations
