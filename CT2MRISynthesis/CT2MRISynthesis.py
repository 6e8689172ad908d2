from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Annotated, Optional

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin
from EssNetSlicerLib.module_base import EssNetLogicMixin, EssNetTestMixin, EssNetWidgetMixin
from SlicerEssNet.runtime import DEVICE_CHOICES

#
# CT2MRISynthesis
#


class CT2MRISynthesis(ScriptedLoadableModule):
    """CT -> synthetic MR with EssNet (a CycleGAN generator with a segmentation branch), on the input's exact grid."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("CT to MRI Synthesis")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Image Synthesis")]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerEssNet developers (SlicerEssNet project)"]
        self.parent.helpText = _("""
Translates an abdominal CT into a synthetic MR image with EssNet (a CycleGAN generator trained jointly with a liver
segmentation branch), slice by slice, on exactly the CT's voxel grid. Optionally also outputs the liver mask of
the synthetic MR. With a model trained in the other direction (its card says MR input) it makes synthetic CT.
The work runs in a separate process: Slicer stays responsive, Cancel stops it, and nothing is added to the scene
unless it succeeds. Scripting: <code>CT2MRISynthesisLogic().process(inputVolume)</code>. See the
<a href="https://github.com/SlicerEssNet/SlicerEssNet/blob/main/docs/SLICER.md">module documentation</a>.
""")
        self.parent.acknowledgementText = _("""
Rafiq et al., "Cross Modality Medical Image Synthesis for Improving Liver Segmentation" (arXiv:2503.00945); SynSeg-Net: Huo et al., IEEE TMI 2019; CycleGAN: Zhu et al.,
ICCV 2017. Training data: CHAOS (Kavur et al., zenodo 10.5281/zenodo.3362844) and BTCV (Landman et al.).
Built on 3D Slicer's scripted module template and PyTorch.
""")
        # The bundled example CT and MR in the Sample Data module (registered once Slicer has started).
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    from EssNetSlicerLib.sample_data import registerSampleData as register

    register(os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "Icons"))


#
# CT2MRISynthesisParameterNode
#


@parameterNodeWrapper
class CT2MRISynthesisParameterNode:
    """
    inputVolume - the CT (or, with an MR -> CT model, the MR) to translate.
    outputVolume - where the synthetic image goes; None creates a new volume.
    createLiverSegmentation - also segment the liver on the synthetic MR.
    model / segmentationModel - model names; "" means the registry's default model for the task.
    device - auto (CUDA, then Apple MPS, then CPU), cpu, cuda or mps.
    allowModalityMismatch - go on (with a warning) when the input does not look like the model's modality.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    createLiverSegmentation: bool = False
    model: str = ""
    segmentationModel: str = ""
    device: Annotated[str, Choice(list(DEVICE_CHOICES))] = "auto"
    allowModalityMismatch: bool = False


#
# CT2MRISynthesisWidget
#


class CT2MRISynthesisWidget(EssNetWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        VTKObservationMixin.__init__(self)
        self._initState()
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        from EssNetSlicerLib.models_panel import ModelChoice
        from EssNetSlicerLib.run_controller import RunController

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CT2MRISynthesis.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = CT2MRISynthesisLogic()
        self.runController = RunController(self.ui.applyButton, self.ui.progressBar, self.ui.statusLabel)
        self.synthesisModelChoice = ModelChoice(self.ui.modelComboBox, "synthesize", self.modelSetter("model"))
        self.segmentationModelChoice = ModelChoice(self.ui.segmentationModelComboBox, "segment",
                                                   self.modelSetter("segmentationModel"), inputModality="MR")
        self._setupModels({self.synthesisModelChoice: "model", self.segmentationModelChoice: "segmentationModel"})

    def _checkCanApply(self, caller=None, event=None) -> None:
        parameters = self._parameterNode
        reason = None
        if parameters is None or not parameters.inputVolume:
            reason = _("Select an input volume.")
        elif not self.synthesisModelChoice.available:
            reason = _("No synthesis model: import a model file (Models section).")
        elif parameters.createLiverSegmentation and not self.segmentationModelChoice.available:
            reason = _("No liver segmentation model: import one or untick the liver mask.")
        elif parameters.createLiverSegmentation and (self.synthesisModelChoice.modalities or ("", "MR"))[1] != "MR":
            reason = _("The liver mask is segmented on synthetic MR: choose a CT-to-MR model or untick it.")
        self._showApplyState(reason, _("Translate the input into a synthetic image."))
        self.ui.segmentationModelComboBox.setEnabled(bool(parameters and parameters.createLiverSegmentation))

    def onApplyButton(self, *args) -> None:
        if self.runController.running:
            self.runController.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the synthesis."), waitCursor=True):
            self.logic.ensureDependencies(interactive=True)
            parameters = self._parameterNode
            inputVolume, outputVolume = parameters.inputVolume, parameters.outputVolume
            run = self.logic.startSynthesis(
                inputVolume, model=parameters.model or None, device=parameters.device,
                liverSegmentation=parameters.createLiverSegmentation,
                segmentationModel=parameters.segmentationModel or None,
                allowModalityMismatch=parameters.allowModalityMismatch)
            self.runController.start(run, lambda run: self.onRunFinished(run, inputVolume, outputVolume))

    def onRunFinished(self, run, inputVolume, outputVolume) -> None:
        self._checkCanApply()
        if run.state == "failed":
            slicer.util.errorDisplay(_("Synthesis failed: ") + str(run.error))
            return
        if run.state != "succeeded":
            return
        with slicer.util.tryWithErrorDisplay(_("Could not add the synthetic image to the scene.")):
            result = self.logic.applyResults(run, inputVolume, outputVolume)
            self._parameterNode.outputVolume = result.volumeNode
            text = run.status().text + " " + _("Output: ") + result.volumeNode.GetName()
            if result.anatomy is not None:
                from EssNetSlicerLib.processing import anatomyStatusText

                text += "\n" + anatomyStatusText(result.anatomy)
            self.ui.statusLabel.setText(text)


#
# CT2MRISynthesisLogic
#


@dataclass
class SynthesisResult:
    volumeNode: object
    segmentationNode: Optional[object] = None
    liverVolumeMl: Optional[float] = None
    anatomy: Optional[object] = None  # SlicerEssNet.anatomy.AnatomyCheck of a CT -> MR run, when it was made


class CT2MRISynthesisLogic(EssNetLogicMixin, ScriptedLoadableModuleLogic):
    """Synthesis from MRML nodes; usable without the GUI (Python console, batch scripts, tests).

    ``process()`` runs to completion and returns the result nodes. ``startSynthesis()`` returns a run that a GUI
    polls (``run.poll()``, ``run.status()``, ``run.cancel()``) before ``applyResults()``. The logic never opens a
    dialog; failures raise ``SlicerEssNet.errors`` exceptions with one-line messages.

    ``jobRunner``: None runs each job in a worker process (``PythonSlicer -m SlicerEssNet worker``);
    ``SlicerEssNet.jobs.InProcessJobRunner()`` runs it in a thread of Slicer's process.
    """

    def __init__(self, jobRunner=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._initRuns(jobRunner)

    def getParameterNode(self):
        return CT2MRISynthesisParameterNode(super().getParameterNode())

    def startSynthesis(self, inputVolume, model: Optional[str] = None, device: str = "auto",
                       liverSegmentation: bool = False, segmentationModel: Optional[str] = None,
                       allowModalityMismatch: bool = False, anatomyCheck: bool = True):
        """Start translating ``inputVolume``; returns the run (see ``EssNetSlicerLib.runs.PipelineRun``)."""
        from EssNetSlicerLib.runs import RunStep

        steps = [RunStep("synthesize", "synthetic", model, anatomyCheck=anatomyCheck)]
        if liverSegmentation:
            steps.append(RunStep("segment", "liver", segmentationModel))
        return self._startRun(inputVolume, steps, device, allowModalityMismatch)

    def applyResults(self, run, inputVolume, outputVolume=None, showResult: bool = True) -> SynthesisResult:
        """Put a finished run's results into the scene: all of them, or (on any error) none."""
        from EssNetSlicerLib import nodes, processing
        from EssNetSlicerLib.segmentation import segmentVolumeMl, setLiverSegment

        processing.raiseIfNotSucceeded(run)
        processing.checkStillInScene(inputVolume, "input volume")
        synthetic = run.outputs["synthetic"].array
        modalities = processing.modelModalitiesOf(run, "synthetic")
        suffix = f"synthetic {modalities[1]}" if modalities else "synthetic"
        with nodes.SceneChanges():
            nodes.checkResultFits(synthetic, inputVolume, "synthetic image")
            if outputVolume is None:
                outputVolume = nodes.addScalarVolumeNode(synthetic, inputVolume,
                                                         processing.resultName(inputVolume, suffix))
            else:
                nodes.setVolumeFromArray(outputVolume, synthetic, inputVolume)
            nodes.showWithAutoWindowLevel(outputVolume)
            nodes.placeBeside(outputVolume, inputVolume)
            processing.recordProvenance(outputVolume, run, "synthetic")
            segmentationNode = liverMl = None
            if "liver" in run.outputs:
                segmentationNode = setLiverSegment(
                    run.outputs["liver"].array, outputVolume, name=processing.resultName(inputVolume, "liver"))
                nodes.placeBeside(segmentationNode, inputVolume)
                processing.recordProvenance(segmentationNode, run, "liver")
                liverMl = segmentVolumeMl(segmentationNode)
        if showResult:
            processing.showInSliceViews(background=outputVolume)
        logging.info("CT2MRISynthesis: %s", run.status().text)
        anatomy = processing.anatomyCheckOf(run)
        if anatomy is not None:
            (logging.warning if anatomy.low else logging.info)("CT2MRISynthesis: %s",
                                                               anatomy.warning() or anatomy.line())
        return SynthesisResult(outputVolume, segmentationNode, liverMl, anatomy)

    def process(self, inputVolume, outputVolume=None, model: Optional[str] = None, device: str = "auto",
                liverSegmentation: bool = False, segmentationModel: Optional[str] = None,
                allowModalityMismatch: bool = False, progressCallback=None, showResult: bool = True,
                timeout: Optional[float] = None, anatomyCheck: bool = True) -> SynthesisResult:
        """Translate ``inputVolume`` and wait for it; returns the result nodes. Can be used without the GUI.

        :param inputVolume: CT scalar volume node (or MR, with an MR -> CT model)
        :param outputVolume: scalar volume node to fill; None creates one beside the input
        :param model: model name or path to a .safetensors file; None is the registry's default
        :param device: "auto", "cpu", "cuda" or "mps"
        :param liverSegmentation: also segment the liver on the synthetic MR (``segmentationModel``)
        :param progressCallback: called with an ``EssNetSlicerLib.runs.RunStatus`` (``.fraction``, ``.text``)
        :param timeout: seconds; the run is cancelled when it takes longer
        :param anatomyCheck: CT -> MR only: segment the liver on the CT and on the synthetic MR and compare them
            (``result.anatomy``: Dice, both volumes, a warning when they disagree)
        """
        run = self.startSynthesis(inputVolume, model=model, device=device, liverSegmentation=liverSegmentation,
                                  segmentationModel=segmentationModel, allowModalityMismatch=allowModalityMismatch,
                                  anatomyCheck=anatomyCheck)
        self._waitFor(run, timeout, progressCallback)
        return self.applyResults(run, inputVolume, outputVolume, showResult=showResult)


#
# CT2MRISynthesisTest
#


class CT2MRISynthesisTest(EssNetTestMixin, ScriptedLoadableModuleTest):
    """Self-test: a small CT-like volume, a tiny untrained model on the CPU; checks geometry and scene hygiene."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.runSteps([self.test_RefusesTransformedInput], [self.test_SynthesisKeepsGeometry, self.test_CancelLeavesSceneUnchanged])

    def _tinyModels(self):
        import shutil
        import tempfile

        from SlicerEssNet.weights import create_untrained_model

        folder = tempfile.mkdtemp(prefix="CT2MRISynthesisTest-")
        self.addCleanup(shutil.rmtree, folder, True)
        synthesis = create_untrained_model("synthesis", os.path.join(folder, "tiny-ct2mr"), width=4)
        segmentation = create_untrained_model("segmentation", os.path.join(folder, "tiny-liver"), width=4)
        return str(synthesis), str(segmentation)

    def _ctLikeVolume(self, name="CT"):
        import numpy as np

        rng = np.random.default_rng(0)
        array = np.full((6, 40, 48), -1000, dtype=np.int16)  # air around the body
        array[:, 6:34, 6:42] = 40 + rng.integers(-20, 20, size=(6, 28, 36))  # soft tissue
        array[:, 10:20, 10:24] = 60  # an organ
        ijkToRas = np.array([[-0.8, 0.0, 0.0, 120.0], [0.0, -0.8, 0.0, 95.0], [0.0, 0.0, 2.5, -40.0],
                             [0.0, 0.0, 0.0, 1.0]])
        return slicer.util.addVolumeFromArray(array, ijkToRas, name=name)

    def test_RefusesTransformedInput(self):
        from SlicerEssNet.errors import InputImageError

        self.delayDisplay("A volume under a transform is refused and the scene is left alone")
        inputVolume = self._ctLikeVolume()
        transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        inputVolume.SetAndObserveTransformNodeID(transform.GetID())
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(InputImageError) as caught:
            CT2MRISynthesisLogic().startSynthesis(inputVolume)
        self.assertIn("Harden transform", str(caught.exception))
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)

    def test_SynthesisKeepsGeometry(self):
        self.skipUnlessModelsCanRun()
        import numpy as np

        from EssNetSlicerLib.nodes import ijkToRasArray
        from SlicerEssNet.jobs import InProcessJobRunner

        self.delayDisplay("Synthesis on a small CT-like volume")
        synthesis, segmentation = self._tinyModels()
        inputVolume = self._ctLikeVolume()
        statuses = []
        logic = CT2MRISynthesisLogic(jobRunner=InProcessJobRunner())
        result = logic.process(inputVolume, model=synthesis, device="cpu", liverSegmentation=True,
                               segmentationModel=segmentation, progressCallback=statuses.append, showResult=False)
        output = result.volumeNode
        self.assertTrue(output.IsA("vtkMRMLScalarVolumeNode"))
        np.testing.assert_array_equal(ijkToRasArray(output), ijkToRasArray(inputVolume))
        array = slicer.util.arrayFromVolume(output)
        self.assertEqual(array.shape, slicer.util.arrayFromVolume(inputVolume).shape)
        self.assertEqual(array.dtype, np.float32)
        self.assertTrue(np.isfinite(array).all())
        self.assertTrue(output.GetDisplayNode().GetAutoWindowLevel())
        self.assertEqual(output.GetAttribute("SlicerEssNet.device"), "cpu")
        self.assertIsNotNone(result.segmentationNode)
        self.assertEqual(result.segmentationNode.GetSegmentation().GetNumberOfSegments(), 1)
        self.assertEqual(statuses[-1].state, "succeeded")
        self.delayDisplay("Test passed")

    def test_CancelLeavesSceneUnchanged(self):
        self.skipUnlessModelsCanRun()
        from SlicerEssNet.errors import CancelledError

        self.delayDisplay("Cancelling leaves the scene as it was")
        synthesis, _unused = self._tinyModels()
        inputVolume = self._ctLikeVolume()
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        # The GUI's runner: a worker process, stopped long before it could have loaded torch and the model.
        logic = CT2MRISynthesisLogic()
        run = logic.startSynthesis(inputVolume, model=synthesis, device="cpu")
        logic.cancel()
        run.wait()
        with self.assertRaises(CancelledError):
            logic.applyResults(run, inputVolume, showResult=False)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        self.delayDisplay("Test passed")
