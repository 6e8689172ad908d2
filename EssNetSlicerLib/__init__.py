"""The Slicer side shared by CT2MRISynthesis and LiverSegmentation (LiverSegmentation depends on CT2MRISynthesis).

Everything that needs no Slicer (jobs, worker process, progress, models) is in the core package ``SlicerEssNet``;
this package holds the little that touches MRML or Qt:

- ``nodes``: volume node <-> ``Volume``, results on the input's exact geometry, subject hierarchy placement
- ``segmentation``: the "Liver" segment (terminology, colour, reference geometry) and its volume in mL
- ``runs``: chained jobs on one input, polled or awaited; ``processing``: runs from nodes, errors, provenance
- ``run_controller``: the timer-polled progress bar and Apply/Cancel button
- ``models_panel``: model choosers, Import model file, Open models folder, Delete cached models
- ``dependencies``: PyTorch through the PyTorch extension, other packages with consent

Submodules are imported where they are used; importing this package costs nothing.
"""
from __future__ import annotations
