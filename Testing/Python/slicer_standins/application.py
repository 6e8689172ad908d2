"""``slicer.app``, ``slicer.modules`` and scene start-up: what Slicer's application does around the MRML scene.

The scene, the nodes and the module logics are real (``slicer-core``); this file only wires them the way the
application does at start-up: segmentation converter rules registered, the Volumes/Segmentations/Subject
hierarchy logics attached to the scene, and a subject hierarchy item made for every new data node and removed
with it (Slicer's Qt-side subject hierarchy plugin logic does that in the application).
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import types


class CommandOptions:
    def __init__(self, no_main_window: bool = True):
        self.noMainWindow = no_main_window


class _ModuleManager:
    def connect(self, *args):
        return True

    def disconnect(self, *args):
        return True

    def module(self, name):
        import slicer

        return getattr(slicer.modules, name.lower(), None)


class Application:
    """``slicer.app`` for tests: testing mode on (dialogs return canned values), no main window."""

    applicationName = "3D Slicer"
    majorVersion, minorVersion = 5, 13

    def __init__(self, testing: bool = True):
        from PySide6 import QtWidgets

        self._qapplication = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["slicer-standin"])
        self._testing = testing
        self.temporaryPath = tempfile.mkdtemp(prefix="slicer-standin-")
        atexit.register(shutil.rmtree, self.temporaryPath, True)  # Slicer keeps its own; a test run should not
        self.cachePath = self.temporaryPath
        self._module_manager = _ModuleManager()

    def testingEnabled(self) -> bool:
        return self._testing

    def setTestingEnabled(self, enabled: bool) -> None:
        self._testing = bool(enabled)

    def commandOptions(self):
        return CommandOptions()

    def processEvents(self, *args):
        self._qapplication.processEvents()

    def setOverrideCursor(self, cursor):
        self._qapplication.setOverrideCursor(cursor)

    def restoreOverrideCursor(self):
        self._qapplication.restoreOverrideCursor()

    def connect(self, *args):
        return True

    def layoutManager(self):
        return None  # as with --no-main-window: no slice views to show results in

    def topLevelWidgets(self):
        return []  # no qSlicerMainWindow: slicer.util.mainWindow() is None, as with --no-main-window

    def moduleManager(self):
        return self._module_manager


def register_segmentation_converters() -> None:
    import slicer

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    for name in ("vtkBinaryLabelmapToClosedSurfaceConversionRule", "vtkClosedSurfaceToBinaryLabelmapConversionRule",
                 "vtkClosedSurfaceToFractionalLabelmapConversionRule",
                 "vtkFractionalLabelmapToClosedSurfaceConversionRule"):
        factory.RegisterConverterRule(getattr(slicer, name)())


def new_scene():
    """A fresh real ``vtkMRMLScene`` as ``slicer.mrmlScene``, with the module logics Slicer attaches to it."""
    import slicer
    import vtk

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    logics = {}
    for module, class_name in (("volumes", "vtkSlicerVolumesLogic"),
                               ("segmentations", "vtkSlicerSegmentationsModuleLogic"),
                               ("subjecthierarchy", "vtkSlicerSubjectHierarchyModuleLogic")):
        logic = getattr(slicer, class_name)()
        logic.SetMRMLScene(scene)
        logics[module] = logic
        getattr(slicer.modules, module).logic = (lambda value=logic: value)

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def add_subject_hierarchy_item(caller, event, node):
        if node is None or node.GetHideFromEditors() or not node.IsA("vtkMRMLDisplayableNode"):
            return
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        if hierarchy is not None and not hierarchy.GetItemByDataNode(node):
            hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def remove_subject_hierarchy_item(caller, event, node):
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        item = hierarchy.GetItemByDataNode(node) if hierarchy is not None and node is not None else 0
        if item:
            hierarchy.RemoveItem(item, False, False)  # keep the data node: the scene is removing it already

    scene.AddObserver(scene.NodeAddedEvent, add_subject_hierarchy_item)
    scene.AddObserver(scene.NodeAboutToBeRemovedEvent, remove_subject_hierarchy_item)
    scene._standin_keepalive = (logics, add_subject_hierarchy_item, remove_subject_hierarchy_item)
    return scene


class LoadedModule(types.SimpleNamespace):
    """What ``slicer.modules.<name>`` is for a scripted module: its parent object with ``path``, ``title``..."""

    def widgetRepresentation(self):
        if getattr(self, "_widget", None) is None:
            import slicer

            widget_class = getattr(self._python_module, f"{self.name}Widget")
            parent = slicer.qMRMLWidget()
            from PySide6 import QtWidgets

            parent.setLayout(QtWidgets.QVBoxLayout())
            parent.setMRMLScene(slicer.mrmlScene)
            self._widget = widget_class(parent)
            self._widget.setup()
            parent.self = lambda: self._widget
        return self._widget.parent

    def logic(self):
        return None  # scripted modules' logic lives in the widget (slicer.util.getModuleLogic)


def load_module(module_file) -> LoadedModule:
    """Import a scripted module file and instantiate its module class as Slicer's module factory does."""
    import importlib
    import sys

    import slicer

    module_file = os.path.abspath(module_file)
    name = os.path.splitext(os.path.basename(module_file))[0]
    folder = os.path.dirname(module_file)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    python_module = importlib.import_module(name)
    loaded = LoadedModule(name=name, path=module_file, _python_module=python_module, _widget=None)
    getattr(python_module, name)(loaded)
    setattr(slicer.modules, name.lower(), loaded)
    return loaded
