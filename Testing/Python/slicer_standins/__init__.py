"""Stand-ins for the Qt side of 3D Slicer, around the REAL MRML of the ``slicer-core`` wheel.

``slicer-core`` gives the scene, the nodes, the module logics and Slicer's own ``slicer/util.py``; it lacks
``qt``, ``ctk``, ``slicer.app``, ``slicer.modules``, ``slicer.ScriptedLoadableModule``,
``slicer.parameterNodeWrapper`` and ``slicer.i18n``. ``install()`` provides exactly those, following the reference
behaviours: testing mode on (dialog helpers return their canned values, ``tryWithErrorDisplay`` re-raises), no main
window, a singleton parameter node per module. Qt itself is real (PySide6, offscreen).

    import slicer_standins
    slicer_standins.install()
    scene = slicer_standins.new_scene()
    module = slicer_standins.load_module("CT2MRISynthesis/CT2MRISynthesis.py")
"""
from __future__ import annotations

import os
import sys
import types

from .application import Application, load_module, new_scene, register_segmentation_converters

__all__ = ["install", "new_scene", "load_module"]

_installed = False


def install() -> None:
    """Install the stand-ins once per process; later calls are no-ops."""
    global _installed
    if _installed:
        return
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import slicer

    from . import i18n, mrml_widgets, parameter_node_wrapper, scripted_loadable_module
    from .qt_module import build_qt_module

    app = Application(testing=True)
    sys.modules["qt"] = build_qt_module(mrml_widgets.CUSTOM_WIDGETS)

    ctk = types.ModuleType("ctk")
    ctk.ctkCollapsibleButton = mrml_widgets.ctkCollapsibleButton
    sys.modules["ctk"] = ctk

    slicer.app = app
    slicer.modules = types.SimpleNamespace(
        volumes=types.SimpleNamespace(), segmentations=types.SimpleNamespace(),
        subjecthierarchy=types.SimpleNamespace())
    for widget_class in mrml_widgets.CUSTOM_WIDGETS:
        setattr(slicer, widget_class.__name__, widget_class)
    for name, module in (("ScriptedLoadableModule", scripted_loadable_module),
                         ("parameterNodeWrapper", parameter_node_wrapper), ("i18n", i18n)):
        sys.modules[f"slicer.{name}"] = module
        setattr(slicer, name, module)
    register_segmentation_converters()
    new_scene()
    _installed = True
