"""What the two module widgets and logics share, written once: the template's parameter node plumbing, the
models panel wiring, dependency checks, waiting for a run and cancelling it, and the self-tests' running order.

Each module keeps its own ``setup()``, Apply check, Apply/finish handlers and ``startX``/``applyResults``; these
mixins come first in the class bases (``class XWidget(EssNetWidgetMixin, ScriptedLoadableModuleWidget, ...)``).
"""
from __future__ import annotations

import os
import sys
from typing import Dict, Optional

import vtk

import slicer


class EssNetWidgetMixin:
    """Template widget plumbing. The module sets ``self.ui``, ``self.logic``, ``self.runController`` and
    ``self.modelFields`` (a ``ModelChoice`` -> parameter node field name) in ``setup()`` and defines
    ``_checkCanApply()``."""

    def _initState(self) -> None:
        # Called before the base constructor: without a parent it builds the GUI (calls setup()) right away.
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.runController = None
        self.modelsPanel = None
        self.modelFields: Dict[object, str] = {}

    def _setupModels(self, choices: Dict[object, str]) -> None:
        """Wire the models panel for ``choices`` (ModelChoice -> field) and the Apply button."""
        from .models_panel import ModelsPanel

        self.modelFields = choices
        self.modelsPanel = ModelsPanel(self.ui, list(choices), self._selectedModel, statusLabel=self.ui.statusLabel,
                                       ensureDependencies=lambda: self.logic.ensureDependencies(interactive=True))
        self.ui.applyButton.clicked.connect(self.onApplyButton)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.modelsPanel.refresh()
        self._checkCanApply()

    def modelSetter(self, field: str):
        """The callback a ``ModelChoice`` calls when the user picks a model: store it in the parameter node."""

        def store(name: Optional[str]) -> None:
            if self._parameterNode is not None:
                setattr(self._parameterNode, field, name or "")

        return store

    def _selectedModel(self, choice) -> Optional[str]:
        if self._parameterNode is None:
            return None
        return getattr(self._parameterNode, self.modelFields[choice]) or None

    def cleanup(self) -> None:
        if self.runController is not None:
            self.runController.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        if self.modelsPanel is not None:
            self.modelsPanel.refresh()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        if self.runController is not None:
            self.runController.stop()  # the run's input is going away
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode and not firstVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _showApplyState(self, reason: Optional[str], readyTip: str) -> bool:
        """Enable Apply (tool tip says what it does) or disable it (tool tip says what is missing)."""
        if self.runController is not None and self.runController.running:
            return False  # the button is Cancel while a job runs
        self.ui.applyButton.setEnabled(reason is None)
        self.ui.applyButton.setToolTip(reason or readyTip)
        return True


class EssNetLogicMixin:
    """Dependencies, waiting and cancelling for a module logic that starts ``EssNetSlicerLib.runs`` runs."""

    def _initRuns(self, jobRunner) -> None:
        self.jobRunner = jobRunner  # None: a worker process per job (EssNetSlicerLib.runs.defaultJobRunner)
        self.currentRun = None

    def requirementsPath(self) -> str:
        moduleFile = sys.modules[type(self).__module__].__file__
        return os.path.join(os.path.dirname(os.path.abspath(moduleFile)), "Resources", "requirements.txt")

    def ensureDependencies(self, interactive: bool = True, install: bool = False) -> None:
        """PyTorch (via the PyTorch extension) and the packages of Resources/requirements.txt; see dependencies.py."""
        from .dependencies import ensureDependencies

        ensureDependencies(self.requirementsPath(), requester=self.moduleName, interactive=interactive,
                           install=install)

    def _startRun(self, inputVolume, steps, device: str, allowModalityMismatch: bool):
        from .processing import startRun

        self.currentRun = startRun(inputVolume, steps, jobRunner=self.jobRunner, device=device,
                                   allowModalityMismatch=allowModalityMismatch)
        return self.currentRun

    def _waitFor(self, run, timeout: Optional[float], progressCallback) -> None:
        """Block until ``run`` ends; past ``timeout`` seconds it is cancelled (and ends as "cancelled")."""
        if run.wait(timeout=timeout, progressCallback=progressCallback) == "running":
            run.cancel()
            run.wait(progressCallback=progressCallback)

    def cancel(self) -> None:
        """Cancel the run started last (from a progress callback or another thread)."""
        if self.currentRun is not None:
            self.currentRun.cancel()


class EssNetTestMixin:
    """The self-tests' running order: checks that need no PyTorch first, then the model runs where PyTorch is
    installed, each on a cleared scene; and the cleanups, because Slicer calls ``runTest`` directly rather than
    through unittest's ``run()``, which would otherwise run them."""

    def skipUnlessModelsCanRun(self) -> None:
        """Skip this test, saying what is missing, where Slicer lacks PyTorch or a package the module lists.

        Under ctest, ``slicer.testing.runUnitTest`` runs every ``test_*`` method on its own and never calls
        ``runTest``: each test that runs a model must check for itself.
        """
        import inspect

        from EssNetSlicerLib import dependencies

        missing = [] if dependencies.torchAvailable() else ["PyTorch (install the PyTorch extension, then open "
                                                             "the PyTorch Utils module)"]
        requirements = os.path.join(os.path.dirname(os.path.abspath(inspect.getfile(type(self)))), "Resources",
                                    "requirements.txt")
        missing += dependencies.missingRequirements(dependencies.readRequirements(requirements))
        if missing:
            self.skipTest("needs " + ", ".join(missing) + " to run the model")

    def runSteps(self, withoutTorch, withTorch) -> None:
        from EssNetSlicerLib import dependencies

        try:
            for step in withoutTorch:
                self.setUp()
                step()
            if not dependencies.torchAvailable():
                self.delayDisplay("PyTorch is not installed (PyTorch extension): the model runs are skipped")
                return
            for step in withTorch:
                self.setUp()
                step()
        finally:
            self.doCleanups()
