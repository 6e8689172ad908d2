"""``slicer.ScriptedLoadableModule``: the four base classes, following Slicer's
``Base/Python/slicer/ScriptedLoadableModule.py`` minus the developer section (Reload / Edit / Restart buttons).
"""
from __future__ import annotations

import importlib
import logging
import os
import unittest

__all__ = ["ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
           "ScriptedLoadableModuleTest"]


class ScriptedLoadableModule:
    def __init__(self, parent):
        import slicer

        super().__init__()
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = []
        parent.helpText = ""
        parent.acknowledgementText = ""
        module_dir = os.path.dirname(self.parent.path)
        for extension in (".svg", ".png"):
            icon_path = os.path.join(module_dir, "Resources/Icons", self.moduleName + extension)
            if os.path.isfile(icon_path):
                parent.icon = icon_path
                break
        if not hasattr(slicer, "selfTests"):
            slicer.selfTests = {}
        slicer.selfTests[self.moduleName] = self.runTest

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

    def runTest(self, msec=100, **kwargs):
        module = importlib.import_module(self.__module__)
        class_name = self.moduleName + "Test"
        try:
            test_case_class = getattr(module, class_name)
        except AttributeError:
            raise AssertionError(f"Test case class not found: {self.__module__}.{class_name} ")
        test_case = test_case_class()
        test_case.messageDelay = msec
        test_case.runTest(**kwargs)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        import qt
        import slicer

        super().__init__()
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Widget"):
            self.moduleName = self.moduleName[:-6]
        self.developerMode = False
        if not parent:
            self.parent = slicer.qMRMLWidget()
            self.parent.setLayout(qt.QVBoxLayout())
            self.parent.setMRMLScene(slicer.mrmlScene)
        else:
            self.parent = parent
        self.layout = self.parent.layout()
        if not parent:
            self.setup()
            self.parent.show()

    def resourcePath(self, filename):
        import slicer

        return os.path.join(os.path.dirname(slicer.util.modulePath(self.moduleName)), "Resources", filename)

    def cleanup(self):
        pass

    def setup(self):
        pass


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[:-5]
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        import slicer

        if self.isSingletonParameterNode:
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                if node.GetAttribute("ModuleName") != self.moduleName:
                    node.SetAttribute("ModuleName", self.moduleName)
                return node
        else:
            for index in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
                node = slicer.mrmlScene.GetNthNodeByClass(index, "vtkMRMLScriptedModuleNode")
                if node.GetAttribute("ModuleName") == self.moduleName:
                    return node
        return slicer.mrmlScene.AddNode(self.createParameterNode())

    def createParameterNode(self):
        import slicer

        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        if self.isSingletonParameterNode:
            node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.enableScreenshots = False
        self.screenshotScaleFactor = 1.0

    def delayDisplay(self, message, requestedDelay=None, msec=None):
        import slicer

        if hasattr(self, "messageDelay"):
            msec = self.messageDelay
        if msec is None:
            msec = requestedDelay if requestedDelay is not None else 100
        slicer.util.delayDisplay(message, msec)

    def runTest(self):
        logging.warning("No test is defined in " + self.__class__.__name__)
