"""Small PySide6 stand-ins for the CTK and qMRML widget classes the modules' ``.ui`` files use.

Each keeps only the behaviour the modules and the parameter node wrapper touch: ``qMRMLNodeComboBox`` lists the
scene's nodes of its ``nodeTypes`` and tells which one is current; ``qMRMLWidget`` passes its scene to its
children through the ``mrmlSceneChanged`` signal wired in the ``.ui``; ``ctkCollapsibleButton`` is a container
with ``text`` and ``collapsed``.
"""
from __future__ import annotations

from PySide6 import QtCore, QtWidgets


class qMRMLWidget(QtWidgets.QWidget):
    mrmlSceneChanged = QtCore.Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None
        self.isEntered = False

    @QtCore.Slot(object)
    def setMRMLScene(self, scene):
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


class ctkCollapsibleButton(QtWidgets.QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.text = ""
        self.collapsed = False

    def setText(self, text):
        self.text = text

    def setCollapsed(self, collapsed):
        self.collapsed = bool(collapsed)


class qMRMLNodeComboBox(QtWidgets.QWidget):
    """A node selector: the scene's nodes of ``nodeTypes`` (a dynamic property set from the ``.ui``)."""

    currentNodeChanged = QtCore.Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None
        self._current_id = None
        self._observers = []

    # --- properties the .ui sets ----------------------------------------------------------------------
    def _flag(self, name, default):
        value = self.property(name)
        return default if value is None else bool(value)

    def nodeTypes(self):
        return list(self.property("nodeTypes") or [])

    def noneEnabled(self):
        return self._flag("noneEnabled", False)

    # --- scene --------------------------------------------------------------------------------------------
    @QtCore.Slot(object)
    def setMRMLScene(self, scene):
        for tag in self._observers:
            self._scene.RemoveObserver(tag)
        self._observers = []
        self._scene = scene
        if scene is not None:
            self._observers = [scene.AddObserver(scene.NodeAddedEvent, self._scene_changed),
                               scene.AddObserver(scene.NodeRemovedEvent, self._scene_changed)]
        self._scene_changed()

    def mrmlScene(self):
        return self._scene

    def nodes(self):
        if self._scene is None:
            return []
        found = []
        for class_name in self.nodeTypes():
            for index in range(self._scene.GetNumberOfNodesByClass(class_name)):
                node = self._scene.GetNthNodeByClass(index, class_name)
                if node.GetHideFromEditors() or (not self._flag("showChildNodeTypes", True)
                                                 and node.GetClassName() != class_name):
                    continue
                found.append(node)
        return found

    def _scene_changed(self, *args):
        ids = [node.GetID() for node in self.nodes()]
        if self._current_id not in ids:
            # Like the real combo box: without a "None" entry the first node is selected.
            self._set_current_id(ids[0] if ids and not self.noneEnabled() else None)

    # --- selection ----------------------------------------------------------------------------------------
    def currentNode(self):
        return self._scene.GetNodeByID(self._current_id) if self._scene is not None and self._current_id else None

    def currentNodeID(self):
        return self._current_id or ""

    @QtCore.Slot(object)
    def setCurrentNode(self, node):
        self._set_current_id(node.GetID() if node is not None else None)

    def setCurrentNodeID(self, node_id):
        self._set_current_id(node_id or None)

    def _set_current_id(self, node_id):
        if node_id == self._current_id:
            return
        self._current_id = node_id
        self.currentNodeChanged.emit(self.currentNode())


class qMRMLSegmentationShow3DButton(QtWidgets.QPushButton):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._segmentation = None

    def setSegmentationNode(self, node):
        self._segmentation = node
        self.setEnabled(node is not None)

    def segmentationNode(self):
        return self._segmentation


CUSTOM_WIDGETS = (qMRMLWidget, ctkCollapsibleButton, qMRMLNodeComboBox, qMRMLSegmentationShow3DButton)
