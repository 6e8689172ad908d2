"""The ``qt`` module Slicer's PythonQt provides, built from PySide6 (real Qt widgets, offscreen).

Two PythonQt behaviours the modules rely on are reproduced: every ``QObject`` has a ``name`` attribute (its object
name; ``slicer.util.childWidgetVariables`` reads it) and ``QUiLoader`` knows Slicer's and CTK's widget classes.
Designer connections typed ``vtkMRMLScene*`` are carried by ``PyObject`` signals here; a connection that cannot be
made raises instead of printing a warning, so a broken ``.ui`` fails the tests.
"""
from __future__ import annotations

import types


def build_qt_module(custom_widget_classes) -> types.ModuleType:
    from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets

    qt = types.ModuleType("qt")
    for source in (QtCore, QtGui, QtWidgets, QtUiTools):
        for name in dir(source):
            if not name.startswith("_"):
                setattr(qt, name, getattr(source, name))

    if not isinstance(getattr(QtCore.QObject, "name", None), property):
        QtCore.QObject.name = property(lambda self: self.objectName(), lambda self, value: self.setObjectName(value))

    class QUiLoader(QtUiTools.QUiLoader):
        """QUiLoader that builds the stand-in Slicer/CTK widgets and refuses broken connections."""

        def __init__(self, *args):
            super().__init__(*args)
            for widget_class in custom_widget_classes:
                self.registerCustomWidget(widget_class)

        def load(self, device, parent=None):
            if isinstance(device, str):
                file = QtCore.QFile(device)
                file.open(QtCore.QIODevice.OpenModeFlag.ReadOnly)
                device = file
            text = bytes(device.readAll()).decode("utf-8").replace("(vtkMRMLScene*)", "(PyObject)")
            buffer = QtCore.QBuffer()
            buffer.setData(text.encode("utf-8"))
            buffer.open(QtCore.QIODevice.OpenModeFlag.ReadOnly)
            problems = []

            def handler(mode, context, message):
                if "connect" in message or "unknown" in message.lower():
                    problems.append(message)

            previous = QtCore.qInstallMessageHandler(handler)
            try:
                widget = super().load(buffer, parent) if parent is not None else super().load(buffer)
            finally:
                QtCore.qInstallMessageHandler(previous)
            if problems:
                raise RuntimeError(f"the .ui file did not load cleanly: {problems[0]}")
            return widget

    qt.QUiLoader = QUiLoader
    return qt
