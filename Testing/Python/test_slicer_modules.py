"""The two Slicer modules on REAL MRML (``slicer-core``) with small Qt-side stand-ins (``slicer_standins``).

Covers what Slicer's generic module test checks, the modules' own self-tests, geometry on real CHAOS MR (LAS) and
BTCV CT (LPS) volumes, the liver segment (terminology, colour, reference geometry, subject hierarchy, volume in
mL against the reference labels), refusals, scene hygiene on failure and cancel, the GUI (Apply/Cancel, progress,
models panel) and the headless batch script. Models are tiny untrained ones made at test time: their outputs
mean nothing, everything around them is real.
"""
from __future__ import annotations

import ast
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

MODULES = ("CT2MRISynthesis", "LiverSegmentation")
BTCV_CT = "btcv_ct/ct_00.nii.gz"
CHAOS_MR = "chaos_mr_t2/mr_t2_01.nii.gz"
CHAOS_LABELS = "chaos_mr_t2/mr_t2_01_label.nii.gz"


# --- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def modules(repo_root):
    import slicer_standins

    slicer_standins.install()
    for folder in ("", "EssNetBatch"):  # EssNetSlicerLib and the batch script, where Slicer puts them on the path
        if str(repo_root / folder) not in sys.path:
            sys.path.insert(0, str(repo_root / folder))
    return {name: slicer_standins.load_module(repo_root / name / f"{name}.py") for name in MODULES}


@pytest.fixture
def slicer(modules, tmp_path, monkeypatch):
    """A fresh real scene per test, a private model cache and an empty registry (the tests import what they use)."""
    import slicer as slicer_module
    import slicer_standins

    monkeypatch.setenv("SLICERESSNET_HOME", str(tmp_path / "essnet-home"))
    empty = tmp_path / "registry.json"
    empty.write_text('{"format": "slicer-essnet-registry/1", "models": []}')
    monkeypatch.setenv("SLICERESSNET_REGISTRY", str(empty))
    slicer_standins.new_scene()
    return slicer_module


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from SlicerEssNet.weights import create_untrained_model

    folder = tmp_path_factory.mktemp("models")
    return {"synthesis": str(create_untrained_model("synthesis", folder / "tiny-ct2mr", width=4)),
            "segmentation": str(create_untrained_model("segmentation", folder / "tiny-liver", width=4))}


def in_process():
    from SlicerEssNet.jobs import InProcessJobRunner

    return InProcessJobRunner()


def logic_of(modules, name, runner=None):
    return getattr(modules[name]._python_module, f"{name}Logic")(jobRunner=runner)


def node_from_nifti(slicer, path, name):
    """A volume node built with nibabel (independent of the core's SimpleITK reader): array [k, j, i], affine =
    NIfTI voxel-to-RAS = Slicer's IJK-to-RAS."""
    import nibabel

    image = nibabel.load(str(path))
    array = np.ascontiguousarray(np.asarray(image.get_fdata(dtype=np.float32)).transpose(2, 1, 0))
    array = np.round(array).astype(np.int16)
    return slicer.util.addVolumeFromArray(array, image.affine, name=name), image


def ijk_to_ras(node):
    from EssNetSlicerLib.nodes import ijkToRasArray

    return ijkToRasArray(node)


def ct_like(slicer, name="CT", shape=(4, 36, 40)):
    array = np.full(shape, -1000, dtype=np.int16)
    array[:, 4:-4, 4:-4] = 40
    return slicer.util.addVolumeFromArray(array, np.diag([-0.9, -0.9, 3.0, 1.0]), name=name)


def mr_like(slicer, name="MR", shape=(4, 36, 40)):
    rng = np.random.default_rng(1)
    array = (300 + 50 * rng.standard_normal(shape)).clip(0, None).astype(np.int16)
    return slicer.util.addVolumeFromArray(array, np.diag([-1.25, -1.25, 7.7, 1.0]), name=name)


def node_ids(slicer):
    scene = slicer.mrmlScene
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def one_line(error) -> str:
    text = str(error)
    assert text and "\n" not in text, f"not a one-line message: {text!r}"
    return text


# --- module basics (what Slicer's generic test checks) -----------------------------------------------------
@pytest.mark.parametrize("name", MODULES)
def test_module_passes_slicers_generic_checks(slicer, modules, name):
    module = modules[name]
    assert module.title and module.categories and module.contributors and module.helpText.strip()
    assert module.acknowledgementText.strip(), "qSlicerModuleGenericTest requires acknowledgement text"
    assert module.icon.endswith(f"Resources/Icons/{name}.png")
    assert name in slicer.selfTests
    python_module = module._python_module
    for suffix in ("Widget", "Logic", "Test", "ParameterNode"):
        assert hasattr(python_module, name + suffix)
    assert slicer.util.mainWindow() is None
    representation = module.widgetRepresentation()  # builds without a main window (--no-main-window)
    assert representation.self().logic is not None
    assert module.dependencies == [], "the modules share EssNetSlicerLib, a package of its own: neither needs the other"
    for line in Path(module.path).read_text().splitlines():  # and neither imports the other
        assert not line.lstrip().startswith(("import CT2MRISynthesis", "from CT2MRISynthesis", "import LiverSeg",
                                             "from LiverSeg")), line


@pytest.mark.parametrize("name", MODULES)
def test_contributors_and_the_pytorch_module_are_named_as_slicer_names_them(modules, name, repo_root):
    """Contributors as "Name (Organization)" (Slicer's module template); the PyTorch extension's module by its title,
    "PyTorch Utils", wherever a message or document sends users to it."""
    import re

    assert all(re.fullmatch(r"[^()]+ \([^()]+\)", person) for person in modules[name].contributors)
    texts = [path.read_text() for path in (repo_root / "EssNetSlicerLib").glob("*.py")]
    texts += [(repo_root / "docs" / doc).read_text() for doc in ("SLICER.md", "TROUBLESHOOTING.md")]
    assert not [t for t in texts if re.search(r"PyTorch Util(?!s)", t)]
    assert any("PyTorch Utils module" in t for t in texts)


@pytest.mark.parametrize("name", MODULES)
def test_module_self_test_passes_and_leaves_no_temporary_files(slicer, modules, name, tmp_path, monkeypatch):
    import tempfile

    temporary = tmp_path / "temporary"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    slicer.selfTests[name](msec=0)
    assert list(temporary.iterdir()) == []  # Slicer calls runTest directly: the test must run its own cleanups


@pytest.mark.parametrize("name", MODULES)
def test_ctest_runs_each_self_test_method_and_those_needing_torch_skip_without_it(slicer, modules, name, monkeypatch):
    """As ``slicer.testing.runUnitTest`` does under ctest: every test_* method loaded by unittest's loader and run on
    its own (runTest never called). Without PyTorch the model tests skip, saying so; the input checks still run."""
    import unittest

    import EssNetSlicerLib.dependencies as dependencies

    monkeypatch.setattr(dependencies, "torchAvailable", lambda: False)
    monkeypatch.setattr(slicer.util, "delayDisplay", lambda *args, **kwargs: None)
    suite = unittest.TestLoader().loadTestsFromName(f"{name}Test", modules[name]._python_module)
    result = unittest.TestResult()
    suite.run(result)
    assert result.testsRun == 3 and not result.errors and not result.failures, result.errors + result.failures
    assert len(result.skipped) == 2 and all("needs PyTorch" in reason for _, reason in result.skipped)


@pytest.mark.parametrize("name", MODULES)
def test_module_self_test_without_torch_runs_the_checks_that_need_none(slicer, modules, name, monkeypatch):
    """A Slicer without the PyTorch extension (an extension-build CI machine) still runs the input checks."""
    import EssNetSlicerLib.dependencies as dependencies

    monkeypatch.setattr(dependencies, "torchAvailable", lambda: False)
    messages = []
    monkeypatch.setattr(slicer.util, "delayDisplay", lambda message, *args, **kwargs: messages.append(message))
    slicer.selfTests[name](msec=0)
    assert messages[-1].startswith("PyTorch is not installed") and len(messages) == 2


def test_module_code_runs_on_slicers_oldest_python(repo_root):
    """Slicer 5.8 ships Python 3.9: no newer syntax, the future import everywhere, no third-party import at file
    scope in the module files (the Extensions Index review flags it; torch would load at Slicer start-up)."""
    allowed_top_level = {"__future__", "logging", "os", "dataclasses", "typing", "vtk", "qt", "ctk", "slicer",
                         "SlicerEssNet", "numpy", "argparse", "csv", "io", "sys", "time", "pathlib", "json",
                         "importlib", "re", "shutil", "tempfile", "EssNetSlicerLib"}
    for path in sorted((repo_root / "CT2MRISynthesis").rglob("*.py")) + \
            sorted((repo_root / "LiverSegmentation").rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source, feature_version=(3, 9))  # rejects match, parenthesised with-items, ...
        body = [node for node in tree.body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
        first = body[0]
        assert isinstance(first, ast.ImportFrom) and first.module == "__future__", f"{path}: future import first"
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                continue  # the package's own modules
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
                for imported in names:
                    assert imported.split(".")[0] in allowed_top_level, f"{path}: file-scope import of {imported}"
        assert "strict=" not in source and "kw_only=" not in source and "slots=" not in source, path


# --- geometry on real volumes --------------------------------------------------------------------------------
@pytest.mark.data
@pytest.mark.parametrize("relative", [CHAOS_MR, BTCV_CT])
def test_node_to_volume_agrees_with_an_independent_reader(slicer, shared_data, relative):
    """LAS (CHAOS MR) and LPS (BTCV CT): the node's Volume equals what the core's SimpleITK reader returns."""
    from EssNetSlicerLib.nodes import volumeFromNode
    from SlicerEssNet.io.volume_files import read_volume

    node, _ = node_from_nifti(slicer, shared_data / relative, "real")
    from_node = volumeFromNode(node)
    from_file = read_volume(shared_data / relative)
    np.testing.assert_array_equal(from_node.array, np.round(from_file.array).astype(np.int16))
    np.testing.assert_allclose(from_node.spacing, from_file.spacing, atol=1e-5)
    np.testing.assert_allclose(from_node.origin, from_file.origin, atol=1e-4)
    np.testing.assert_allclose(from_node.direction, from_file.direction, atol=1e-6)
    np.testing.assert_allclose(from_node.ijk_to_ras(), ijk_to_ras(node), atol=1e-9)


@pytest.mark.data
def test_synthesis_on_real_ct_keeps_the_exact_geometry(slicer, modules, shared_data, tiny_models):
    ct, _ = node_from_nifti(slicer, shared_data / BTCV_CT, "ct_00")
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "BTCV 00"), "CT")
    hierarchy.SetItemParent(hierarchy.GetItemByDataNode(ct), study)
    statuses = []
    result = logic_of(modules, "CT2MRISynthesis", in_process()).process(
        ct, model=tiny_models["synthesis"], device="cpu", liverSegmentation=True,
        segmentationModel=tiny_models["segmentation"], progressCallback=statuses.append)
    volume = result.volumeNode
    assert np.array_equal(ijk_to_ras(volume), ijk_to_ras(ct)), "synthetic MR must overlay the CT exactly"
    assert slicer.util.arrayFromVolume(volume).shape == slicer.util.arrayFromVolume(ct).shape
    assert volume.GetName() == "ct_00 synthetic MR"
    assert volume.GetDisplayNode().GetAutoWindowLevel()
    assert volume.GetAttribute("SlicerEssNet.model") == "tiny-ct2mr"
    assert volume.GetAttribute("SlicerEssNet.device") == "cpu"
    for node in (volume, result.segmentationNode):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study, "results sit beside the input"
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(
        result.segmentationNode, result.segmentationNode.GetSegmentation().GetNthSegmentID(0), ct)
    assert mask.shape == slicer.util.arrayFromVolume(ct).shape
    fractions = [status.fraction for status in statuses]
    assert fractions == sorted(fractions) and statuses[-1].state == "succeeded"
    assert all(status.text.startswith(("Step 1/2 (synthesis): ", "Step 2/2 (liver segmentation): "))
               for status in statuses[:-1])


def test_a_chain_is_one_job_in_one_worker_with_no_intermediate_file(slicer, modules, tiny_models, monkeypatch):
    """CT -> synthetic MR -> liver from the panel is one JobRequest (the same one segment --from-ct makes), run in
    memory: the job's folder never holds a synthetic MR that the segmentation reads back, and the model names are
    resolved once, when the run starts."""
    from SlicerEssNet.io import volume_files

    requests, reads = [], []
    runner = in_process()
    original_start, original_read = runner.start, volume_files.read_volume
    monkeypatch.setattr(runner, "start", lambda request: requests.append(request) or original_start(request))
    monkeypatch.setattr(volume_files, "read_volume", lambda path, *a, **k: reads.append(Path(path).name) or
                        original_read(path, *a, **k))
    ct = modules["CT2MRISynthesis"]._python_module.CT2MRISynthesisTest()._ctLikeVolume()
    logic = logic_of(modules, "LiverSegmentation", runner)
    statuses = []
    result = logic.process(ct, model=tiny_models["segmentation"], device="cpu", synthesizeFirst=True,
                           synthesisModel=tiny_models["synthesis"], keepSyntheticMR=True,
                           allowModalityMismatch=True, progressCallback=statuses.append)
    assert len(requests) == 1
    request = requests[0]
    assert (request.task, request.synthesis_model, request.model) == ("segment", tiny_models["synthesis"],
                                                                       tiny_models["segmentation"])
    # Read in the job: the input only; read back after it: its two outputs. Nothing in between.
    assert reads == [Path(request.input_path).name, Path(request.synthetic_output_path).name,
                     Path(request.output_path).name]
    assert result.segmentationNode is not None and result.syntheticVolumeNode is not None
    # Progress names the step it comes from (each status a poll: a short step may pass between two polls).
    assert statuses[0].text.startswith("Step 1/2 (synthesis)") and statuses[-1].state == "succeeded"
    # Each step keeps its own report (the chain's job carries both): provenance per node.
    assert result.syntheticVolumeNode.GetAttribute("SlicerEssNet.model") == "tiny-ct2mr"
    assert result.segmentationNode.GetAttribute("SlicerEssNet.model") == "tiny-liver"


@pytest.mark.data
def test_segmentation_on_real_mr_sets_reference_geometry_and_terminology(slicer, modules, shared_data, tiny_models):
    from EssNetSlicerLib.segmentation import LIVER_COLOR, LIVER_TERMINOLOGY, segmentTerminology

    mr, _ = node_from_nifti(slicer, shared_data / CHAOS_MR, "mr_t2_01")
    result = logic_of(modules, "LiverSegmentation", in_process()).process(
        mr, model=tiny_models["segmentation"], device="cpu")
    node = result.segmentationNode
    reference = node.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
    assert reference is mr or reference.GetID() == mr.GetID()
    geometry = node.GetSegmentation().GetConversionParameter("Reference image geometry")
    assert geometry, "reference image geometry conversion parameter is set (DICOM SEG export needs it)"
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Liver"))
    assert segmentTerminology(segment) == LIVER_TERMINOLOGY
    np.testing.assert_allclose(segment.GetColor(), np.array([221, 130, 101]) / 255.0)
    assert LIVER_COLOR == pytest.approx((221 / 255, 130 / 255, 101 / 255))
    assert node.GetAttribute("SlicerEssNet.liverVolumeMl") == f"{result.liverVolumeMl:.3f}"
    import vtk

    labelmap = node.GetBinaryLabelmapInternalRepresentation(segmentation.GetSegmentIdBySegmentName("Liver"))
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    assert np.allclose(slicer.util.arrayFromVTKMatrix(matrix), ijk_to_ras(mr), atol=1e-9), \
        "the segment's voxels lie on the MR's voxel grid (LAS)"


def test_sample_data_offers_the_bundled_example_ct_and_mr(slicer, modules, repo_root, monkeypatch):
    """Registered when Slicer has started, with local file URIs whose SHA256 matches, thumbnails and node names."""
    import hashlib
    import types
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    import slicer_standins

    connected = []
    monkeypatch.setattr(slicer.app, "connect", lambda signal, slot: connected.append((signal, slot)))
    slicer_standins.load_module(repo_root / "CT2MRISynthesis" / "CT2MRISynthesis.py")
    assert [signal for signal, _ in connected] == ["startupCompleted()"]
    icons = repo_root / "CT2MRISynthesis" / "Resources" / "Icons"
    registered = []
    fake = types.SimpleNamespace(SampleDataLogic=types.SimpleNamespace(
        registerCustomSampleDataSource=lambda **options: registered.append(options)))
    monkeypatch.setitem(sys.modules, "SampleData", fake)
    connected[0][1]()  # what Slicer does once started
    assert [entry["sampleName"] for entry in registered] == ["EssNet example CT", "EssNet example MR"]
    for entry in registered:
        path = Path(url2pathname(urlparse(entry["uris"]).path))
        assert path.is_file() and path.parent == repo_root / "SlicerEssNet" / "examples"
        assert entry["checksums"] == "SHA256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["fileNames"] == path.name and entry["category"] == "EssNet"
        assert Path(entry["thumbnailFileName"]).parent == icons and Path(entry["thumbnailFileName"]).is_file()
        assert entry["loadFileType"] == "VolumeFile"
    # and the volume loads as a node the modules take
    node, _ = node_from_nifti(slicer, repo_root / "SlicerEssNet" / "examples" / "example_ct_sm.nii.gz", "ExampleCT")
    assert slicer.util.arrayFromVolume(node).shape == (30, 101, 122)


def test_liver_terminology_parses_as_slicers_snomed_liver(slicer):
    from EssNetSlicerLib.segmentation import LIVER_TERMINOLOGY

    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(LIVER_TERMINOLOGY, entry)
    category, kind = entry.GetCategoryObject(), entry.GetTypeObject()
    assert (category.GetCodingSchemeDesignator(), category.GetCodeValue(), category.GetCodeMeaning()) == \
        ("SCT", "123037004", "Anatomical Structure")
    assert (kind.GetCodingSchemeDesignator(), kind.GetCodeValue(), kind.GetCodeMeaning()) == \
        ("SCT", "10200004", "Liver")


@pytest.mark.data
@pytest.mark.parametrize("labels", [CHAOS_LABELS, "btcv_ct/ct_00_liver.nii.gz"])
def test_liver_volume_in_ml_matches_the_reference_labels(slicer, modules, shared_data, labels):
    """The segment built from real reference labels measures what nibabel counts (voxels x |det(affine)|)."""
    import nibabel

    from EssNetSlicerLib.segmentation import setLiverSegment

    image = nibabel.load(str(shared_data / labels))
    label_array = np.asarray(image.dataobj)
    expected_ml = np.count_nonzero(label_array == 1) * abs(np.linalg.det(image.affine[:3, :3])) / 1000.0
    reference, _ = node_from_nifti(slicer, shared_data / labels.replace("_label", "").replace("_liver", ""), "ref")
    segmentation = setLiverSegment(np.ascontiguousarray(label_array.transpose(2, 1, 0)), reference)
    measured = logic_of(modules, "LiverSegmentation").liverVolumeMl(segmentation)
    assert 500 < expected_ml < 4000, "a liver"
    assert measured == pytest.approx(expected_ml, rel=1e-9)


# --- refusals, failures and cancel leave the scene as it was ---------------------------------------------------
def test_bad_inputs_are_refused_with_one_line_errors(slicer, modules, tiny_models):
    from SlicerEssNet.errors import InputImageError

    logic = logic_of(modules, "CT2MRISynthesis", in_process())
    labelmap = slicer.util.addVolumeFromArray(np.zeros((2, 8, 8), np.uint8), np.eye(4),
                                              nodeClassName="vtkMRMLLabelMapVolumeNode", name="labels")
    vector = slicer.util.addVolumeFromArray(np.zeros((2, 8, 8, 3), np.uint8), np.eye(4),
                                            nodeClassName="vtkMRMLVectorVolumeNode", name="rgb")
    empty = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    transformed = ct_like(slicer, "moved")
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    transformed.SetAndObserveTransformNodeID(transform.GetID())
    before = node_ids(slicer)
    expectations = {None: "no input volume", labelmap: "not a scalar image", vector: "components per voxel",
                    empty: "no voxels", transformed: "Harden transform"}
    for node, words in expectations.items():
        with pytest.raises(InputImageError) as caught:
            logic.process(node, model=tiny_models["synthesis"], device="cpu")
        assert words in one_line(caught.value)
    assert node_ids(slicer) == before


def test_failed_run_leaves_the_scene_unchanged_and_mismatch_can_be_allowed(slicer, modules, tiny_models):
    from SlicerEssNet.errors import ModalityMismatchError

    logic = logic_of(modules, "CT2MRISynthesis", in_process())
    mr = mr_like(slicer)
    before = node_ids(slicer)
    with pytest.raises(ModalityMismatchError) as caught:
        logic.process(mr, model=tiny_models["synthesis"], device="cpu")
    assert "allow" in one_line(caught.value)
    assert node_ids(slicer) == before
    result = logic.process(mr, model=tiny_models["synthesis"], device="cpu", allowModalityMismatch=True)
    notes = [result.volumeNode.GetAttribute(f"SlicerEssNet.note{i}") for i in range(3)]
    assert any(note and "CT" in note for note in notes), "the accepted mismatch is recorded on the result"


def test_cancel_in_a_worker_process_leaves_the_scene_unchanged(slicer, modules, tiny_models):
    from SlicerEssNet.errors import CancelledError

    logic = logic_of(modules, "LiverSegmentation")  # default runner: a worker process, as in the GUI
    mr = mr_like(slicer)
    before = node_ids(slicer)
    calls = []

    def cancel_at_first_report(status):
        calls.append(status)
        logic.cancel()

    with pytest.raises(CancelledError):
        logic.process(mr, model=tiny_models["segmentation"], device="cpu", progressCallback=cancel_at_first_report)
    assert calls and calls[-1].state == "cancelled"
    assert node_ids(slicer) == before


def test_a_failure_while_adding_results_rolls_the_scene_back(slicer, modules, tiny_models, monkeypatch):
    import EssNetSlicerLib.segmentation as segmentation

    logic = logic_of(modules, "CT2MRISynthesis", in_process())
    ct = ct_like(slicer)
    run = logic.startSynthesis(ct, model=tiny_models["synthesis"], device="cpu", liverSegmentation=True,
                               segmentationModel=tiny_models["segmentation"])
    assert run.wait() == "succeeded"
    before = node_ids(slicer)

    def broken(*args, **kwargs):
        slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "half-built")
        raise RuntimeError("disk full")

    monkeypatch.setattr(segmentation, "setLiverSegment", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        logic.applyResults(run, ct)
    assert node_ids(slicer) == before, "the synthetic volume added before the failure is removed again"


def test_results_go_into_chosen_nodes(slicer, modules, tiny_models):
    ct = ct_like(slicer)
    target = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my synthetic")
    logic = logic_of(modules, "CT2MRISynthesis", in_process())
    volumes_before = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    result = logic.process(ct, target, model=tiny_models["synthesis"], device="cpu")
    assert result.volumeNode is target
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes_before
    assert np.array_equal(ijk_to_ras(target), ijk_to_ras(ct))

    mr = mr_like(slicer)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my segmentation")
    segmentation.GetSegmentation().AddEmptySegment("Tumor", "Tumor", (1.0, 1.0, 0.0))
    liver = logic_of(modules, "LiverSegmentation", in_process())
    for _ in range(2):  # a second run replaces "Liver", keeps "Tumor"
        assert liver.process(mr, segmentation, model=tiny_models["segmentation"], device="cpu").segmentationNode \
            is segmentation
    names = sorted(segmentation.GetSegmentation().GetNthSegment(i).GetName()
                   for i in range(segmentation.GetSegmentation().GetNumberOfSegments()))
    assert names == ["Liver", "Tumor"]


# --- the GUI ---------------------------------------------------------------------------------------------------
def new_widget(modules, name):
    return getattr(modules[name]._python_module, f"{name}Widget")()  # no parent: builds itself, like Slicer


def poll_until_done(slicer, widget, timeout=60.0):
    deadline = time.monotonic() + timeout
    while widget.runController.running and time.monotonic() < deadline:
        widget.runController.poll()
        slicer.app.processEvents()
        time.sleep(0.02)
    assert not widget.runController.running


def test_synthesis_widget_runs_with_progress_and_shows_the_result(slicer, modules, tiny_models):
    widget = new_widget(modules, "CT2MRISynthesis")
    ui = widget.ui
    assert not ui.applyButton.isEnabled() and "input" in ui.applyButton.toolTip()
    widget.modelsPanel.importModelFile(tiny_models["synthesis"])
    ct = ct_like(slicer)
    widget.initializeParameterNode()
    assert widget._parameterNode.inputVolume.GetID() == ct.GetID()
    assert ui.modelComboBox.currentText().startswith("tiny-ct2mr") and "CT \u2192 MR" in ui.modelComboBox.currentText()
    assert widget._parameterNode.model == "tiny-ct2mr"
    ui.deviceComboBox.setCurrentIndex(ui.deviceComboBox.findText("cpu"))
    assert widget._parameterNode.device == "cpu", "the device combo box is bound to the parameter node"
    assert ui.applyButton.isEnabled()
    widget.logic.jobRunner = in_process()
    ui.applyButton.click()
    assert ui.applyButton.text() == "Cancel" and ui.progressBar.isVisibleTo(widget.parent)
    poll_until_done(slicer, widget)
    assert ui.applyButton.text() == "Apply" and ui.progressBar.value() == ui.progressBar.maximum()
    assert ui.statusLabel.text().startswith("Done in")
    output = widget._parameterNode.outputVolume
    assert output is not None and np.array_equal(ijk_to_ras(output), ijk_to_ras(ct))
    assert ui.outputSelector.currentNode().GetID() == output.GetID()


@pytest.mark.parametrize("name", MODULES)
def test_the_panels_run_their_jobs_in_worker_processes_never_in_slicers_threads(slicer, modules, name):
    """PythonQt keeps the GIL while Qt idles, so the GUI path must not rest on a Python thread: the panels' logic
    starts worker processes (followed by poll() from the QTimer); the in-process runner is for console scripts."""
    from EssNetSlicerLib.runs import defaultJobRunner
    from SlicerEssNet.jobs import SubprocessJobRunner

    widget = new_widget(modules, name)
    assert widget.logic.jobRunner is None, "None: each job in a worker process"
    assert isinstance(defaultJobRunner(), SubprocessJobRunner)


def test_cancel_button_stops_the_worker_and_leaves_the_scene_unchanged(slicer, modules, tiny_models):
    widget = new_widget(modules, "LiverSegmentation")
    widget.modelsPanel.importModelFile(tiny_models["segmentation"])
    mr_like(slicer)
    widget.initializeParameterNode()
    before = node_ids(slicer)
    widget.ui.applyButton.click()  # the GUI's default: a worker process
    assert widget.runController.running
    widget.ui.applyButton.click()  # now "Cancel"
    poll_until_done(slicer, widget)
    assert widget.ui.statusLabel.text().startswith("Cancelled")
    assert widget.ui.applyButton.text() == "Apply" and widget.ui.applyButton.isEnabled()
    assert node_ids(slicer) == before


def test_liver_widget_shows_volume_3d_button_and_chain_options(slicer, modules, tiny_models):
    widget = new_widget(modules, "LiverSegmentation")
    ui = widget.ui
    widget.modelsPanel.importModelFile(tiny_models["segmentation"])
    widget.modelsPanel.importModelFile(tiny_models["synthesis"])
    assert not ui.synthesisModelComboBox.isEnabled() and not ui.keepSyntheticCheckBox.isEnabled()
    ui.inputIsCTCheckBox.setChecked(True)
    assert widget._parameterNode.inputIsCT and ui.synthesisModelComboBox.isEnabled()
    ui.keepSyntheticCheckBox.setChecked(True)
    ct_like(slicer)
    widget.initializeParameterNode()
    widget.logic.jobRunner = in_process()
    ui.applyButton.click()
    poll_until_done(slicer, widget)
    segmentation = widget._parameterNode.outputSegmentation
    assert segmentation is not None
    assert ui.show3DButton.segmentationNode() is segmentation and ui.show3DButton.isEnabled()
    expected = widget.logic.liverVolumeMl(segmentation)
    assert ui.liverVolumeLabel.text() == f"Liver volume: {expected:.1f} mL"
    assert slicer.mrmlScene.GetFirstNodeByName("CT synthetic MR") is not None


def test_liver_widget_test_time_augmentation_reaches_the_job_and_is_recorded(slicer, modules, tiny_models):
    def notes(node):
        return [node.GetAttribute(f"SlicerEssNet.note{n}") or "" for n in range(4)]

    widget = new_widget(modules, "LiverSegmentation")
    widget.modelsPanel.importModelFile(tiny_models["segmentation"])
    widget.logic.jobRunner = in_process()
    mr_like(slicer)
    widget.initializeParameterNode()
    widget._parameterNode.allowModalityMismatch = True  # noise is not an MR the check recognises
    recorded = {}
    for ticked in (False, True):
        widget.ui.testTimeAugmentationCheckBox.setChecked(ticked)
        assert widget._parameterNode.testTimeAugmentation is ticked
        widget._parameterNode.outputSegmentation = None
        widget.ui.applyButton.click()
        poll_until_done(slicer, widget)
        recorded[ticked] = notes(widget._parameterNode.outputSegmentation)
    assert any("test-time augmentation" in note for note in recorded[True])
    assert not any("test-time augmentation" in note for note in recorded[False])


def test_models_panel_imports_opens_and_deletes(slicer, modules, tiny_models, monkeypatch, tmp_path):
    import qt

    widget = new_widget(modules, "CT2MRISynthesis")
    assert widget.ui.modelComboBox.currentText().startswith("No model available")
    cached = widget.modelsPanel.importModelFile(tiny_models["synthesis"])
    assert Path(cached).parent == tmp_path / "essnet-home" / "models"
    assert widget.ui.modelComboBox.count() == 1 and widget.synthesisModelChoice.model == "tiny-ct2mr"
    opened = []
    monkeypatch.setattr(qt.QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()))
    widget.ui.openModelsFolderButton.click()
    assert opened == [str(tmp_path / "essnet-home" / "models")]
    picked, checked = [], []
    monkeypatch.setattr(qt.QFileDialog, "getOpenFileName",
                        lambda *args: picked.append(args) or (tiny_models["segmentation"], "filter"))
    # Checking that the weights fit their card needs PyTorch: the button makes sure it is there first.
    monkeypatch.setattr(widget.logic, "ensureDependencies", lambda **options: checked.append(options))
    widget.ui.importModelButton.click()  # the button's dialog path, PySide's (path, filter) return
    assert picked and checked == [{"interactive": True}] and widget.segmentationModelChoice.model == "tiny-liver"
    removed = widget.modelsPanel.deleteCachedModels()
    assert len(removed) == 4 and not list((tmp_path / "essnet-home" / "models").glob("*.safetensors"))
    assert widget.synthesisModelChoice.model is None
    ct_like(slicer)
    widget.initializeParameterNode()
    assert not widget.ui.applyButton.isEnabled() and "import" in widget.ui.applyButton.toolTip()


def test_dependency_checks_never_prompt_in_batch_mode(modules, tmp_path, repo_root):
    from EssNetSlicerLib import dependencies
    from SlicerEssNet.errors import MissingDependencyError

    for module in MODULES:
        requirements = dependencies.readRequirements(repo_root / module / "Resources" / "requirements.txt")
        assert requirements and all(">=" in line for line in requirements), "ranges, never pins"
        assert not {line.split(">=")[0].lower() for line in requirements} & {"numpy", "simpleitk", "torch"}
        assert dependencies.missingRequirements(requirements) == []
    assert dependencies.torchAvailable()
    extra = tmp_path / "requirements.txt"
    extra.write_text("# test\nnumpy>=1.0\nno-such-package-essnet>=1.0\nscipy>=999\n")
    with pytest.raises(MissingDependencyError) as caught:
        dependencies.ensurePackages(extra, "Test", interactive=False)
    message = one_line(caught.value)
    assert "no-such-package-essnet>=1.0" in message and "scipy>=999" in message and "numpy" not in message


def test_headless_install_shows_no_dialog_on_slicer_5_12(modules, tmp_path, monkeypatch):
    """Slicer 5.12's pip_ensure shows a modal progress dialog (and an error dialog) unless told not to."""
    import types

    import slicer
    from EssNetSlicerLib import dependencies

    calls = []

    def pip_ensure(requirements, constraints=None, skip_packages=None, prompt_install=True, prompt_restart=True,
                   requester=None, skip_in_testing=True, show_progress=True):  # Slicer 5.12's signature
        calls.append(dict(prompt_install=prompt_install, prompt_restart=prompt_restart, show_progress=show_progress))

    monkeypatch.setitem(sys.modules, "slicer.packaging", types.SimpleNamespace(pip_ensure=pip_ensure))
    monkeypatch.setattr(slicer, "packaging", sys.modules["slicer.packaging"], raising=False)
    extra = tmp_path / "requirements.txt"
    extra.write_text("no-such-package-essnet>=1.0\n")
    dependencies.ensurePackages(extra, "Test", interactive=False, install=True)
    dependencies.ensurePackages(extra, "Test", interactive=True)
    assert calls == [dict(prompt_install=False, prompt_restart=False, show_progress=False),
                     dict(prompt_install=True, prompt_restart=True, show_progress=True)]


# --- headless batch ------------------------------------------------------------------------------------------
@pytest.mark.data
def test_batch_script_processes_a_cohort_and_reports_failures(slicer, modules, shared_data, tiny_models, tmp_path,
                                                             capsys):
    import nibabel

    import EssNetBatch

    cases = tmp_path / "cases"
    cases.mkdir()
    os.symlink(shared_data / BTCV_CT, cases / "ct_00.nii.gz")  # the real scan, read in place
    (cases / "broken.nii.gz").write_bytes(b"not a NIfTI file at all")
    nodes_before = slicer.mrmlScene.GetNumberOfNodes()
    from weights_testing import liver_everywhere

    all_liver = liver_everywhere(tmp_path / "all-liver")  # a known mask: every voxel
    code = EssNetBatch.main(["--input", str(cases), "--output", str(tmp_path / "out"), "--device", "cpu",
                             "--model", tiny_models["synthesis"], "--liver-mask",
                             "--segmentation-model", str(all_liver)])
    assert code == EssNetBatch.EXIT_FAILED, "one case failed"
    printed = capsys.readouterr().out
    assert "[2/2] ct_00: Done in" in printed and "1 of 2 cases succeeded" in printed
    with open(tmp_path / "out" / "summary.csv", newline="") as stream:
        rows = {row["case"]: row for row in csv.DictReader(stream)}
    assert rows["broken"]["status"] == "failed" and rows["broken"]["message"]
    assert "\n" not in rows["broken"]["message"]
    good = rows["ct_00"]
    assert good["status"] == "succeeded" and good["device"] == "cpu" and good["model"] == "tiny-ct2mr"
    # The volume it reports is the liver file it wrote, counted with nibabel: voxels x |det(affine)|, in mL.
    liver_file = next(Path(p) for p in good["output"].split(";") if p.endswith("ct_00_liver.nii.gz"))
    liver = nibabel.load(str(liver_file))
    expected_ml = np.count_nonzero(np.asarray(liver.dataobj)) * abs(np.linalg.det(liver.affine[:3, :3])) / 1000.0
    assert np.asarray(liver.dataobj).all(), "the model marks every voxel"
    assert float(good["liver_volume_ml"]) == pytest.approx(expected_ml, abs=0.006)  # written with 2 decimals
    source = nibabel.load(str(shared_data / BTCV_CT))
    for output in good["output"].split(";"):
        written = nibabel.load(output)
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-4)
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes_before, "each case is removed from the scene"
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_batch_script_usage_errors_and_self_test(modules, tmp_path):
    import EssNetBatch

    assert EssNetBatch.main([]) == EssNetBatch.EXIT_USAGE
    assert EssNetBatch.main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path)]) == \
        EssNetBatch.EXIT_USAGE
    assert EssNetBatch.main(["--task", "nonsense"]) == EssNetBatch.EXIT_USAGE
    assert EssNetBatch.main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--tta"]) == \
        EssNetBatch.EXIT_USAGE  # test-time augmentation is for --task segment
    assert not (tmp_path / "out").exists()
    assert EssNetBatch.main(["--self-test"]) == EssNetBatch.EXIT_OK


def test_batch_script_ends_every_failure_with_one_line_and_an_exit_code(repo_root, tmp_path):
    """Headless Slicer exits only when the script calls sys.exit: a failing step (here an output folder that cannot
    be made) must end the script with exit code 1 and one line, never a traceback that leaves Slicer running."""
    import subprocess

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "ct.nii.gz").write_bytes(b"x")
    (tmp_path / "a_file").write_text("not a folder")
    script = repo_root / "EssNetBatch" / "EssNetBatch.py"
    done = subprocess.run([sys.executable, str(script), "--input", str(tmp_path / "in"),
                           "--output", str(tmp_path / "a_file" / "out")], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(repo_root)), timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: NotADirectoryError: "), done.stderr
    usage = subprocess.run([sys.executable, str(script), "--usage"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "--install-dependencies" in usage.stdout and "--usage" in usage.stdout


def test_an_mr_to_ct_model_makes_synthetic_ct_and_is_offered_with_its_direction(slicer, modules, tiny_models,
                                                                                tmp_path):
    from SlicerEssNet.weights import create_untrained_model

    mr_to_ct = create_untrained_model("synthesis", tmp_path / "tiny-mr2ct", width=4, input_modality="MR")
    widget = new_widget(modules, "CT2MRISynthesis")
    ui = widget.ui
    for model in (tiny_models["synthesis"], mr_to_ct, tiny_models["segmentation"]):
        widget.modelsPanel.importModelFile(model)
    labels = [ui.modelComboBox.itemText(i) for i in range(ui.modelComboBox.count())]
    assert labels == ["tiny-ct2mr 0.0.0 (CT \u2192 MR)", "tiny-mr2ct 0.0.0 (MR \u2192 CT)"]
    mr = mr_like(slicer)
    widget.initializeParameterNode()
    ui.modelComboBox.setCurrentIndex(1)
    assert widget._parameterNode.model == "tiny-mr2ct" and ui.applyButton.isEnabled()
    ui.liverSegmentationCheckBox.setChecked(True)
    assert not ui.applyButton.isEnabled() and "CT-to-MR" in ui.applyButton.toolTip()

    result = logic_of(modules, "CT2MRISynthesis", in_process()).process(mr, model="tiny-mr2ct", device="cpu")
    assert result.volumeNode.GetName() == "MR synthetic CT"
    assert np.array_equal(ijk_to_ras(result.volumeNode), ijk_to_ras(mr))


def test_liver_segmentation_offers_a_ct_model_and_segments_a_ct_with_it(slicer, modules, tiny_models, tmp_path):
    """A segmentation model read on CT (like the shipped liver-unet-ct) is listed "on CT" beside the MR ones, and
    segments a CT with *Input is CT* unticked; an MR model given that CT is refused by the modality check."""
    from SlicerEssNet.errors import ModalityMismatchError
    from SlicerEssNet.weights import create_untrained_model

    on_ct = create_untrained_model("segmentation", tmp_path / "tiny-liver-ct", width=4, input_modality="CT")
    widget = new_widget(modules, "LiverSegmentation")
    for model in (tiny_models["segmentation"], on_ct):
        widget.modelsPanel.importModelFile(model)
    labels = [widget.ui.modelComboBox.itemText(i) for i in range(widget.ui.modelComboBox.count())]
    assert any(label.startswith("tiny-liver-ct") and "on CT" in label for label in labels), labels
    assert any("on MR" in label for label in labels), labels

    ct = ct_like(slicer)
    logic = logic_of(modules, "LiverSegmentation", in_process())
    result = logic.process(ct, model="tiny-liver-ct", device="cpu")
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(
        result.segmentationNode, result.segmentationNode.GetSegmentation().GetNthSegmentID(0), ct)
    assert mask.shape == slicer.util.arrayFromVolume(ct).shape
    nodes = slicer.mrmlScene.GetNumberOfNodes()
    with pytest.raises(ModalityMismatchError):
        logic.process(ct, model=tiny_models["segmentation"], device="cpu")
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes  # nothing half-built left in the scene


@pytest.mark.data
def test_anatomy_check_reaches_the_result_the_panel_and_the_batch_summary(slicer, modules, shared_data, tiny_models,
                                                                         tmp_path, monkeypatch, capsys):
    """CT -> MR in the modules: the liver on the CT (liver-unet-ct) against the liver on the synthetic MR
    (liver-unet-mr), as the core computes it; a translation that loses the liver gets the warning."""
    import EssNetBatch
    from SlicerEssNet.anatomy import WARN_BELOW
    from SlicerEssNet.pipeline import check_anatomy, synthesize
    from SlicerEssNet.io.volume_files import read_volume

    monkeypatch.delenv("SLICERESSNET_REGISTRY")  # the packaged registry: the two liver models of the check
    example = shared_data / "totalseg_examples" / "example_ct_sm.nii.gz"
    cases = tmp_path / "cases"
    cases.mkdir()
    os.symlink(example, cases / "example_ct.nii.gz")
    code = EssNetBatch.main(["--input", str(cases), "--output", str(tmp_path / "out"), "--device", "cpu",
                             "--model", tiny_models["synthesis"]])
    assert code == EssNetBatch.EXIT_OK
    with open(tmp_path / "out" / "summary.csv", newline="") as stream:
        row = next(csv.DictReader(stream))
    ct = read_volume(example)
    expected = check_anatomy(ct, synthesize(ct, tiny_models["synthesis"], device="cpu"), device="cpu")
    assert float(row["anatomy_kept"]) == pytest.approx(expected.dice, abs=1e-3)
    assert expected.dice < WARN_BELOW, "an untrained generator keeps no liver"
    assert row["message"].startswith("warning: the synthetic MR may not keep the anatomy")
    assert "WARNING: the synthetic MR may not keep the anatomy" in capsys.readouterr().out

    # The shipped CT -> MR model keeps it: the panel shows the number, the output node records it.
    widget = new_widget(modules, "CT2MRISynthesis")
    ct_node, _ = node_from_nifti(slicer, example, "example_ct")
    widget.initializeParameterNode()
    widget._parameterNode.inputVolume = ct_node
    widget.ui.deviceComboBox.setCurrentIndex(widget.ui.deviceComboBox.findText("cpu"))
    widget.logic.jobRunner = in_process()
    widget.ui.applyButton.click()
    poll_until_done(slicer, widget)
    text = widget.ui.statusLabel.text()
    assert "Anatomy kept: liver Dice" in text, text
    kept = float(widget._parameterNode.outputVolume.GetAttribute("SlicerEssNet.anatomyKept"))
    assert kept >= WARN_BELOW and f"Dice {kept:.2f}" in text
