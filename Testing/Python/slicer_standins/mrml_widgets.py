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


class ctkCollapsibleButton(QtWidgets.QGroupBox):
    """A titled container; ``text`` is the title the .ui sets, ``collapsed`` is kept but not animated."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._collapsed = False

    def _get_text(self):
        return self.title()

    def _set_text(self, text):
        self.setTitle(text)

    def _get_collapsed(self):
        return self._collapsed

    def _set_collapsed(self, collapsed):
        self._collapsed = bool(collapsed)

    text = QtCore.Property(str, _get_text, _set_text)
    collapsed = QtCore.Property(bool, _get_collapsed, _set_collapsed)


class qMRMLNodeComboBox(QtWidgets.QComboBox):
    """A node selector listing the scene's nodes of ``nodeTypes`` (a property set from the ``.ui``) by name.

    Like the real one: without a "None" entry (``noneEnabled``) the first node is selected; the user's choice and
    ``setCurrentNode`` both emit ``currentNodeChanged(vtkMRMLNode*)``.
    """

    currentNodeChanged = QtCore.Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None
        self._current_id = None
        self._ids = []
        self._observers = []
        self.currentIndexChanged.connect(self._user_selected)

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
        nodes = self.nodes()
        self._ids = ([None] if self.noneEnabled() else []) + [node.GetID() for node in nodes]
        self.blockSignals(True)
        try:
            self.clear()
            for node_id in self._ids:
                self.addItem(self.property("noneDisplay") or "None" if node_id is None
                             else self._scene.GetNodeByID(node_id).GetName())
        finally:
            self.blockSignals(False)
        if self._current_id not in self._ids:
            self._set_current_id(self._ids[0] if self._ids else None)
        else:
            self._show_current()

    def _show_current(self):
        self.blockSignals(True)
        try:
            self.setCurrentIndex(self._ids.index(self._current_id) if self._current_id in self._ids else -1)
        finally:
            self.blockSignals(False)

    def _user_selected(self, index):
        if 0 <= index < len(self._ids):
            self._set_current_id(self._ids[index])

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
            self._show_current()
            return
        self._current_id = node_id
        self._show_current()
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
