from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Annotated, Optional

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin
from EssNetSlicerLib.module_base import EssNetLogicMixin, EssNetTestMixin, EssNetWidgetMixin
from SlicerEssNet.runtime import DEVICE_CHOICES

#
# LiverSegmentation
#


class LiverSegmentation(ScriptedLoadableModule):
    """Liver segmentation on MR with a U-Net; a CT can be translated to synthetic MR first (CT2MRISynthesis)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Liver Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["SlicerEssNet developers (SlicerEssNet project)"]
        self.parent.helpText = _("""
Segments the liver on an abdominal MR volume with a U-Net, slice by slice, and adds a segmentation with one segment
"Liver" (SNOMED CT terminology, reference geometry set) beside the input, with its volume in mL. For a CT input,
tick "Input is CT": it is first translated to synthetic MR with EssNet (CT to MRI Synthesis module); with the shipped
models this route finds only part of a CT's liver: choose the model liver-unet-ct instead, unticked. The work runs in
a separate process: Slicer stays responsive, Cancel stops it, and nothing is added to the scene unless it succeeds.
Scripting: <code>LiverSegmentationLogic().process(inputVolume)</code>. See the
<a href="https://github.com/SlicerEssNet/SlicerEssNet/blob/main/docs/SLICER.md">module documentation</a>.
""")
        self.parent.acknowledgementText = _("""
U-Net: Ronneberger et al., MICCAI 2015. EssNet: Rafiq et al. (arXiv:2503.00945); SynSeg-Net: Huo et al., IEEE TMI
2019. Training data: CHAOS (Kavur et al., zenodo 10.5281/zenodo.3362844). Terminology and colour follow Slicer's
General Anatomy list. Built on 3D Slicer's scripted module template and PyTorch.
""")


#
# LiverSegmentationParameterNode
#


@parameterNodeWrapper
class LiverSegmentationParameterNode:
    """
    inputVolume - the MR (or, with inputIsCT, the CT) to segment.
    outputSegmentation - segmentation to write the "Liver" segment into; None creates a new one.
    inputIsCT - translate the CT to synthetic MR first; keepSyntheticMR keeps that image in the scene.
    model / synthesisModel - model names; "" means the registry's default model for the task.
    device - auto (CUDA, then Apple MPS, then CPU), cpu, cuda or mps.
    allowModalityMismatch - go on (with a warning) when the input does not look like the model's modality.
    testTimeAugmentation - average five slightly zoomed/rotated views of each slice (4-5x the time).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    inputIsCT: bool = False
    keepSyntheticMR: bool = False
    model: str = ""
    synthesisModel: str = ""
    device: Annotated[str, Choice(list(DEVICE_CHOICES))] = "auto"
    allowModalityMismatch: bool = False
    testTimeAugmentation: bool = False


#
# LiverSegmentationWidget
#


class LiverSegmentationWidget(EssNetWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        VTKObservationMixin.__init__(self)
        self._initState()
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        from EssNetSlicerLib.models_panel import ModelChoice
        from EssNetSlicerLib.run_controller import RunController

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LiverSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = LiverSegmentationLogic()
        self.runController = RunController(self.ui.applyButton, self.ui.progressBar, self.ui.statusLabel)
        # Every segmentation model, each labelled "on MR" or "on CT": a U-Net read on CT (liver-unet-ct) takes a CT
        # with 'Input is CT' unticked; the modality check refuses a model that does not fit the input.
        self.segmentationModelChoice = ModelChoice(self.ui.modelComboBox, "segment", self.modelSetter("model"))
        self.synthesisModelChoice = ModelChoice(self.ui.synthesisModelComboBox, "synthesize",
                                                self.modelSetter("synthesisModel"), inputModality="CT")
        self.ui.show3DButton.setSegmentationNode(None)
        self._liverVolumeKey = None  # (node, segment, voxels' modification time) last measured
        self._setupModels({self.segmentationModelChoice: "model", self.synthesisModelChoice: "synthesisModel"})

    def _checkCanApply(self, caller=None, event=None) -> None:
        parameters = self._parameterNode
        chained = bool(parameters and parameters.inputIsCT)
        reason = None
        if parameters is None or not parameters.inputVolume:
            reason = _("Select an input volume.")
        elif not self.segmentationModelChoice.available:
            reason = _("No liver segmentation model: import a model file (Models section).")
        elif chained and not self.synthesisModelChoice.available:
            reason = _("No CT-to-MR synthesis model: import one or untick 'Input is CT'.")
        self._showApplyState(reason, _("Segment the liver."))
        self.ui.synthesisModelComboBox.setEnabled(chained)
        self.ui.keepSyntheticCheckBox.setEnabled(chained)
        segmentation = parameters.outputSegmentation if parameters else None
        self.ui.show3DButton.setSegmentationNode(segmentation)
        self._showLiverVolume(segmentation)

    def _showLiverVolume(self, segmentationNode) -> None:
        # Measured again only when the segment's voxels changed: every parameter change calls this.
        segmentation = segmentationNode.GetSegmentation() if segmentationNode is not None else None
        segmentId = segmentation.GetSegmentIdBySegmentName("Liver") if segmentation is not None else ""
        labelmap = segmentationNode.GetBinaryLabelmapInternalRepresentation(segmentId) if segmentId else None
        key = (segmentationNode.GetID(), segmentId, labelmap.GetMTime()) if labelmap is not None else None
        if key is not None and key == self._liverVolumeKey:
            return
        self._liverVolumeKey = key
        text = ""
        if key is not None:
            try:
                text = _("Liver volume: ") + f"{self.logic.liverVolumeMl(segmentationNode):.1f} mL"
            except RuntimeError:  # no reference geometry to measure on
                text = ""
        self.ui.liverVolumeLabel.setText(text)

    def onApplyButton(self, *args) -> None:
        if self.runController.running:
            self.runController.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            self.logic.ensureDependencies(interactive=True)
            parameters = self._parameterNode
            inputVolume, outputSegmentation = parameters.inputVolume, parameters.outputSegmentation
            keepSynthetic = parameters.inputIsCT and parameters.keepSyntheticMR
            run = self.logic.startSegmentation(
                inputVolume, model=parameters.model or None, device=parameters.device,
                synthesizeFirst=parameters.inputIsCT, synthesisModel=parameters.synthesisModel or None,
                allowModalityMismatch=parameters.allowModalityMismatch,
                testTimeAugmentation=parameters.testTimeAugmentation)
            self.runController.start(
                run, lambda run: self.onRunFinished(run, inputVolume, outputSegmentation, keepSynthetic))

    def onRunFinished(self, run, inputVolume, outputSegmentation, keepSynthetic) -> None:
        self._checkCanApply()
        if run.state == "failed":
            slicer.util.errorDisplay(_("Liver segmentation failed: ") + str(run.error))
            return
        if run.state != "succeeded":
            return
        with slicer.util.tryWithErrorDisplay(_("Could not add the segmentation to the scene.")):
            result = self.logic.applyResults(run, inputVolume, outputSegmentation, keepSyntheticMR=keepSynthetic)
            self._parameterNode.outputSegmentation = result.segmentationNode
            text = run.status().text
            if result.anatomy is not None:
                from EssNetSlicerLib.processing import anatomyStatusText

                text += "\n" + anatomyStatusText(result.anatomy)
            self.ui.statusLabel.setText(text)


#
# LiverSegmentationLogic
#


@dataclass
class SegmentationResult:
    segmentationNode: object
    liverVolumeMl: float
    syntheticVolumeNode: Optional[object] = None
    anatomy: Optional[object] = None  # from a CT: SlicerEssNet.anatomy.AnatomyCheck of its synthetic MR


class LiverSegmentationLogic(EssNetLogicMixin, ScriptedLoadableModuleLogic):
    """Liver segmentation from MRML nodes; usable without the GUI (Python console, batch scripts, tests).

    ``process()`` runs to completion and returns the segmentation and the liver volume in mL.
    ``startSegmentation()`` returns a run that a GUI polls before ``applyResults()``. The logic never opens a
    dialog; failures raise ``SlicerEssNet.errors`` exceptions with one-line messages.

    ``jobRunner``: None runs each job in a worker process (``PythonSlicer -m SlicerEssNet worker``);
    ``SlicerEssNet.jobs.InProcessJobRunner()`` runs it in a thread of Slicer's process.
    """

    def __init__(self, jobRunner=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._initRuns(jobRunner)

    def getParameterNode(self):
        return LiverSegmentationParameterNode(super().getParameterNode())

    def startSegmentation(self, inputVolume, model: Optional[str] = None, device: str = "auto",
                          synthesizeFirst: bool = False, synthesisModel: Optional[str] = None,
                          allowModalityMismatch: bool = False, testTimeAugmentation: bool = False):
        """Start segmenting ``inputVolume`` (translating a CT to synthetic MR first when ``synthesizeFirst``)."""
        from EssNetSlicerLib.runs import RunStep

        steps = [RunStep("synthesize", "synthetic", synthesisModel, anatomyCheck=True)] if synthesizeFirst else []
        steps.append(RunStep("segment", "liver", model, testTimeAugmentation=testTimeAugmentation))
        return self._startRun(inputVolume, steps, device, allowModalityMismatch)

    def applyResults(self, run, inputVolume, outputSegmentation=None, keepSyntheticMR: bool = False,
                     showResult: bool = True) -> SegmentationResult:
        """Put a finished run's results into the scene: all of them, or (on any error) none."""
        from EssNetSlicerLib import nodes, processing
        from EssNetSlicerLib.segmentation import setLiverSegment

        processing.raiseIfNotSucceeded(run)
        processing.checkStillInScene(inputVolume, "input volume")
        with nodes.SceneChanges():
            syntheticNode = None
            if keepSyntheticMR and "synthetic" in run.outputs:
                syntheticNode = nodes.addScalarVolumeNode(run.outputs["synthetic"].array, inputVolume,
                                                          processing.resultName(inputVolume, "synthetic MR"))
                nodes.showWithAutoWindowLevel(syntheticNode)
                nodes.placeBeside(syntheticNode, inputVolume)
                processing.recordProvenance(syntheticNode, run, "synthetic")
            segmentationNode = setLiverSegment(
                run.outputs["liver"].array, inputVolume, outputSegmentation,
                name=processing.resultName(inputVolume, "liver"))
            nodes.placeBeside(segmentationNode, inputVolume)
            processing.recordProvenance(segmentationNode, run, "liver")
            liverMl = self.liverVolumeMl(segmentationNode)
            segmentationNode.SetAttribute(processing.PROVENANCE_PREFIX + "liverVolumeMl", f"{liverMl:.3f}")
            anatomy = processing.anatomyCheckOf(run)
            if anatomy is not None:
                segmentationNode.SetAttribute(processing.PROVENANCE_PREFIX + "anatomyKept", f"{anatomy.dice:.4f}")
        if showResult:
            processing.showInSliceViews(background=inputVolume)
        logging.info("LiverSegmentation: %s; liver volume %.1f mL", run.status().text, liverMl)
        if anatomy is not None:
            (logging.warning if anatomy.low else logging.info)("LiverSegmentation: %s",
                                                               anatomy.warning() or anatomy.line())
        return SegmentationResult(segmentationNode, liverMl, syntheticNode, anatomy)

    def liverVolumeMl(self, segmentationNode) -> float:
        """Volume of the "Liver" segment in millilitres (on the segmentation's reference grid)."""
        from EssNetSlicerLib.segmentation import segmentVolumeMl

        return segmentVolumeMl(segmentationNode)

    def process(self, inputVolume, outputSegmentation=None, model: Optional[str] = None, device: str = "auto",
                synthesizeFirst: bool = False, synthesisModel: Optional[str] = None, keepSyntheticMR: bool = False,
                allowModalityMismatch: bool = False, testTimeAugmentation: bool = False, progressCallback=None,
                showResult: bool = True, timeout: Optional[float] = None) -> SegmentationResult:
        """Segment the liver in ``inputVolume`` and wait for it. Can be used without the GUI.

        :param inputVolume: MR scalar volume node (a CT with ``synthesizeFirst=True``)
        :param outputSegmentation: segmentation node to write "Liver" into; None creates one beside the input
        :param model: segmentation model name or .safetensors path; None is the registry's default
        :param synthesizeFirst: translate a CT to synthetic MR first (``synthesisModel``); ``keepSyntheticMR``
            also adds that image to the scene
        :param testTimeAugmentation: average five slightly zoomed/rotated views of each slice (4-5x the time;
            what it changes for each model: docs/EXPERIMENTS.md)
        :param progressCallback: called with an ``EssNetSlicerLib.runs.RunStatus`` (``.fraction``, ``.text``)
        :param timeout: seconds; the run is cancelled when it takes longer
        :return: ``SegmentationResult(segmentationNode, liverVolumeMl, syntheticVolumeNode)``
        """
        run = self.startSegmentation(inputVolume, model=model, device=device, synthesizeFirst=synthesizeFirst,
                                     synthesisModel=synthesisModel, allowModalityMismatch=allowModalityMismatch,
                                     testTimeAugmentation=testTimeAugmentation)
        self._waitFor(run, timeout, progressCallback)
        return self.applyResults(run, inputVolume, outputSegmentation, keepSyntheticMR=keepSyntheticMR,
                                 showResult=showResult)


#
# LiverSegmentationTest
#


class LiverSegmentationTest(EssNetTestMixin, ScriptedLoadableModuleTest):
    """Self-test: a small MR-like volume and a tiny untrained U-Net on the CPU; checks the segmentation's
    terminology, colour, reference geometry, subject hierarchy placement and liver volume."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.runSteps([self.test_RefusesLabelmapInput], [self.test_SegmentationNode, self.test_ChainedFromCT])

    def _tinyModel(self, task, name):
        import shutil
        import tempfile

        from SlicerEssNet.weights import create_untrained_model

        folder = tempfile.mkdtemp(prefix="LiverSegmentationTest-")
        self.addCleanup(shutil.rmtree, folder, True)
        return str(create_untrained_model(task, os.path.join(folder, name), width=4))

    def _volume(self, array, name):
        import numpy as np

        ijkToRas = np.array([[-1.25, 0.0, 0.0, 160.0], [0.0, -1.25, 0.0, 140.0], [0.0, 0.0, 7.7, -50.0],
                             [0.0, 0.0, 0.0, 1.0]])
        return slicer.util.addVolumeFromArray(array, ijkToRas, name=name)

    def test_RefusesLabelmapInput(self):
        import numpy as np

        from SlicerEssNet.errors import InputImageError

        self.delayDisplay("A labelmap is not an image to segment")
        labelmap = slicer.util.addVolumeFromArray(np.zeros((3, 8, 8), np.uint8), np.eye(4), name="labels",
                                                  nodeClassName="vtkMRMLLabelMapVolumeNode")
        with self.assertRaises(InputImageError) as caught:
            LiverSegmentationLogic().startSegmentation(labelmap)
        self.assertIn("not a scalar image", str(caught.exception))
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), 0)

    def test_SegmentationNode(self):
        self.skipUnlessModelsCanRun()
        import numpy as np

        from EssNetSlicerLib.segmentation import LIVER_COLOR, LIVER_TERMINOLOGY, segmentTerminology
        from SlicerEssNet.jobs import InProcessJobRunner

        self.delayDisplay("Liver segmentation on a small MR-like volume")
        model = self._tinyModel("segmentation", "tiny-liver")
        rng = np.random.default_rng(0)
        array = (200 + 40 * rng.standard_normal((5, 48, 48))).clip(0, None).astype(np.int16)
        array[:, 8:30, 6:28] += 300
        inputVolume = self._volume(array, "MR")
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient"), "Study")
        hierarchy.SetItemParent(hierarchy.GetItemByDataNode(inputVolume), study)

        result = LiverSegmentationLogic(jobRunner=InProcessJobRunner()).process(
            inputVolume, model=model, device="cpu", showResult=False)
        segmentationNode = result.segmentationNode
        segmentation = segmentationNode.GetSegmentation()
        self.assertEqual(segmentation.GetNumberOfSegments(), 1)
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Liver"))
        self.assertEqual(segmentTerminology(segment), LIVER_TERMINOLOGY)
        np.testing.assert_allclose(segment.GetColor(), LIVER_COLOR)
        reference = segmentationNode.GetNodeReference(
            slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
        self.assertEqual(reference.GetID(), inputVolume.GetID())
        self.assertEqual(hierarchy.GetItemParent(hierarchy.GetItemByDataNode(segmentationNode)), study)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(
            segmentationNode, segmentation.GetSegmentIdBySegmentName("Liver"), inputVolume)
        self.assertAlmostEqual(result.liverVolumeMl, np.count_nonzero(mask) * 1.25 * 1.25 * 7.7 / 1000.0, places=6)
        self.delayDisplay("Test passed")

    def test_ChainedFromCT(self):
        self.skipUnlessModelsCanRun()
        import numpy as np

        from EssNetSlicerLib.nodes import ijkToRasArray
        from SlicerEssNet.jobs import InProcessJobRunner

        self.delayDisplay("CT -> synthetic MR -> liver segmentation")
        synthesis = self._tinyModel("synthesis", "tiny-ct2mr")
        segmentationModel = self._tinyModel("segmentation", "tiny-liver")
        array = np.full((4, 40, 40), -1000, dtype=np.int16)
        array[:, 5:35, 5:35] = 50
        inputVolume = self._volume(array, "CT")
        result = LiverSegmentationLogic(jobRunner=InProcessJobRunner()).process(
            inputVolume, model=segmentationModel, synthesizeFirst=True, synthesisModel=synthesis,
            keepSyntheticMR=True, device="cpu", showResult=False)
        self.assertIsNotNone(result.syntheticVolumeNode)
        np.testing.assert_array_equal(ijkToRasArray(result.syntheticVolumeNode), ijkToRasArray(inputVolume))
        self.assertGreaterEqual(result.liverVolumeMl, 0.0)
        self.delayDisplay("Test passed")
