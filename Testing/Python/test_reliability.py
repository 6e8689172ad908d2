"""Issue 6 end to end: every bad input and fault, through every layer a user meets.

One table of bad inputs (real scans from ``../shared/data`` cut, truncated or altered at test time, and generated
files) goes through (1) the core, ``pipeline.process_file``, which must raise exactly the specific exception class;
(2) the CLI, in-process with the file descriptors captured (so ITK/GDCM warnings written from C count too), which
must print exactly one line starting with ``error: `` and exit 1; and a cohort of them through a real
``python -m SlicerEssNet`` subprocess. Every layer must leave the output folder as it was (no partial file either).
Node-level problems and broken models go through ``CT2MRISynthesisLogic().process`` and
``LiverSegmentationLogic().process`` on real MRML, which must raise the specific class and leave the scene's nodes
and the temporary folder exactly as they were. The per-layer map lives in docs/RELIABILITY.md.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from SlicerEssNet import cli, errors
from SlicerEssNet.pipeline import process_file
from SlicerEssNet.weights import create_untrained_model

from conftest import REPO
from test_cli import run_cli
from test_model_store import ModelServer, entry_for, everything_in
from test_slicer_modules import (in_process, logic_of, modules, node_ids, one_line,  # noqa: F401 - fixtures
                                 slicer)
from test_volume_io import _recompress_as_htj2k
from weights_testing import Payload, liver_everywhere, sha256

torch = pytest.importorskip("torch")  # every case runs a model, or at least loads one

CT = "totalseg_examples/example_ct_sm.nii.gz"  # real CT, 122 x 101 x 30, 3 mm
MR = "totalseg_examples/example_mr_sm.nii.gz"  # real MR, 117 x 91 x 20, 3 mm
CT_DICOM = "totalseg_examples/example_ct_dicom"  # real CT series, 20 JPEG 2000 slices
CT_DICOM_RAW = "dcmqi_ct3slice/ct"  # real CT series, 3 uncompressed slices
CHAOS_CT = "chaos_ct_sample"
TASK_OF = {"synthesize": "synthesis", "segment": "segmentation"}


# --- what a case is ------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One run as a user starts it: task, input, output and model (a registry name, path, or None)."""

    task: str
    input: Path
    output: Path
    model: object
    models: dict = field(default_factory=dict)  # task -> the tiny model for it

    def model_for(self, task: str):
        return self.models[TASK_OF[task]]


@dataclass(frozen=True)
class Case:
    """A bad input: ``build(work, data, models)`` edits a good run into a bad one; the error users must get."""

    name: str
    build: Callable
    error: type
    words: str

    def __str__(self) -> str:
        return self.name


def crop(data: Path, relative: str = CT, slices=slice(12, 16)):
    """A few slices of a real scan (small and quick), as a SimpleITK image with its own geometry."""
    image = sitk.ReadImage(str(data / relative))
    return image[:, :, slices]


def write(image, path: Path, compress: bool = True) -> Path:
    sitk.WriteImage(image, str(path), compress)
    return path


def set_input(run: Run, path: Path) -> Run:
    run.input = path
    return run


def cut(source: Path, destination: Path, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    destination.write_bytes(data[: int(len(data) * keep)])
    return destination


def copy_series(data: Path, relative: str, folder: Path) -> list:
    """A writable copy of a real DICOM series (the shared data is read-only); the files in name order."""
    folder.mkdir()
    for source in sorted((data / relative).iterdir()):
        shutil.copyfile(source, folder / source.name)
    return sorted(folder.iterdir())


def edit_dicom(path: Path, edit) -> None:
    dataset = pydicom.dcmread(str(path))
    edit(dataset)
    dataset.save_as(str(path))


def with_nrrd_header(image, path: Path, key: str, value: str) -> Path:
    """A raw NRRD whose header line ``key`` says ``value`` (what a broken exporter writes)."""
    write(image, path, compress=False)
    head, separator, body = path.read_bytes().partition(b"\n\n")
    lines = [f"{key}: {value}".encode() if line.startswith(key.encode() + b":") else line
             for line in head.split(b"\n")]
    path.write_bytes(b"\n".join(lines) + separator + body)
    return path


def with_nifti_pixdim(image, path: Path, pixdim) -> Path:
    """An uncompressed NIfTI whose pixdim (voxel size) fields say ``pixdim``; no qform/sform to override them."""
    import nibabel

    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    nifti = nibabel.Nifti1Image(array, None)
    nifti.header.set_qform(None, code=0)
    nifti.header.set_sform(None, code=0)
    nifti.header["pixdim"][1:4] = pixdim
    nibabel.save(nifti, str(path))
    return path


def float_crop(data: Path, value: float, count: int = 7):
    image = sitk.Cast(crop(data), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array.ravel()[:: max(1, array.size // count)][:count] = value
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    return result


# --- the inputs ----------------------------------------------------------------------------------------------
def _missing(run, work, data):
    return set_input(run, work / "absent.nii.gz")


def _empty(run, work, data):
    (work / "empty.nii.gz").touch()
    return set_input(run, work / "empty.nii.gz")


def _text_file(run, work, data):
    (work / "notes.txt").write_text("patient list, not an image\n")
    return set_input(run, work / "notes.txt")


def _png_named_nifti(run, work, data):
    shutil.copyfile(data / CHAOS_CT / "Ground" / "liver_GT_040.png", work / "mask.nii.gz")
    return set_input(run, work / "mask.nii.gz")


def _truncated_nii_gz(run, work, data):
    return set_input(run, cut(data / CT, work / "cut.nii.gz"))


def _truncated_nii(run, work, data):
    return set_input(run, cut(write(crop(data), work / "whole.nii"), work / "cut.nii", keep=0.9))


def _truncated_nrrd(run, work, data):
    return set_input(run, cut(write(crop(data), work / "whole.nrrd"), work / "cut.nrrd", keep=0.8))


def _corrupt_nrrd_header(run, work, data):
    return set_input(run, with_nrrd_header(crop(data), work / "bad.nrrd", "sizes", "122 x 4"))


def _truncated_dicom(run, work, data):
    files = copy_series(data, CT_DICOM_RAW, work / "series")
    cut(files[1], files[1], keep=0.6)
    return set_input(run, work / "series")


def _corrupt_dicom_file(run, work, data):
    files = copy_series(data, CT_DICOM_RAW, work / "series")
    raw = bytearray(files[0].read_bytes())
    raw[132:400] = bytes(range(256)) + bytes(12)  # the header right after the preamble: garbage
    files[0].write_bytes(bytes(raw))
    return set_input(run, files[0])


def _mixed_series(run, work, data):
    files = copy_series(data, CT_DICOM, work / "series")
    for path in files[:5]:
        edit_dicom(path, lambda ds: setattr(ds, "SeriesInstanceUID", "1.2.826.0.1.3680043.8.498.77"))
    return set_input(run, work / "series")


def _missing_slices(run, work, data):
    files = copy_series(data, CT_DICOM, work / "series")
    files[9].unlink()
    files[10].unlink()
    return set_input(run, work / "series")


def _uneven_spacing(run, work, data):
    files = copy_series(data, CT_DICOM, work / "series")

    def nudge(ds):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 1.1]

    edit_dicom(files[7], nudge)
    return set_input(run, work / "series")


def _no_pixel_data(run, work, data):
    files = copy_series(data, CT_DICOM, work / "series")
    edit_dicom(files[4], lambda ds: delattr(ds, "PixelData"))
    return set_input(run, work / "series")


def _no_decoder(run, work, data):
    copy_series(data, CT_DICOM_RAW, work / "series")
    _recompress_as_htj2k(work / "series")
    return set_input(run, work / "series")


def _four_d(run, work, data):
    image = crop(data)
    return set_input(run, write(sitk.JoinSeries([image, image]), work / "dynamic.nii.gz"))


def _vector(run, work, data):
    image = crop(data)
    return set_input(run, write(sitk.Compose([image, image, image]), work / "rgb.nrrd"))


def _no_voxels_along_an_axis(run, work, data):
    write(crop(data), work / "whole.mha", compress=False)
    header = (work / "whole.mha").read_bytes().split(b"ElementDataFile = LOCAL\n")[0]
    (work / "flat.mha").write_bytes(header.replace(b"DimSize = 122 101 4", b"DimSize = 122 101 0")
                                    + b"ElementDataFile = LOCAL\n")
    return set_input(run, work / "flat.mha")


def _bigger_than_memory(run, work, data):
    write(crop(data), work / "small.nrrd", compress=False)
    head, _, _ = (work / "small.nrrd").read_bytes().partition(b"\n\n")
    (work / "small.raw").write_bytes((work / "small.nrrd").read_bytes()[len(head) + 2:])
    lines = [b"sizes: 4000 4000 4000" if line.startswith(b"sizes:") else line for line in head.split(b"\n")]
    (work / "huge.nhdr").write_bytes(b"\n".join(lines) + b"\ndata file: small.raw\n")
    return set_input(run, work / "huge.nhdr")


def _zero_spacing_nrrd(run, work, data):
    return set_input(run, with_nrrd_header(crop(data), work / "flat.nrrd", "space directions",
                                           "(0,0,0) (0,-3,0) (0,0,3)"))


def _zero_spacing_nifti(run, work, data):
    return set_input(run, with_nifti_pixdim(crop(data), work / "flat.nii", (0.0, 3.0, 3.0)))


def _negative_spacing_nifti(run, work, data):
    return set_input(run, with_nifti_pixdim(crop(data), work / "negative.nii", (-3.0, 3.0, 3.0)))


def _nan_voxels(run, work, data):
    return set_input(run, write(float_crop(data, float("nan")), work / "nan.nii.gz"))


def _infinite_voxels(run, work, data):
    return set_input(run, write(float_crop(data, float("inf")), work / "inf.nrrd"))


def _constant(run, work, data):
    image = crop(data) * 0 - 1000
    return set_input(run, write(image, work / "air.nii.gz"))


def _mr_to_the_ct_model(run, work, data):
    return set_input(run, write(crop(data, MR, slice(8, 12)), work / "mr.nii.gz"))


def _ct_to_the_mr_segmenter(run, work, data):
    run.task, run.model = "segment", run.model_for("segment")
    return run


# --- outputs -------------------------------------------------------------------------------------------------
def _output_folder_missing(run, work, data):
    run.output = work / "out" / "no" / "such" / "folder" / "result.nii.gz"
    return run


def _output_format_unknown(run, work, data):
    run.output = run.output.with_name("result.png")
    return run


def _output_is_a_folder(run, work, data):
    run.output.mkdir()
    return run


def _output_folder_unwritable(run, work, data):
    run.output = Path("/proc/essnet-result.nii.gz")  # nobody, root included, can create files in /proc
    return run


# --- models --------------------------------------------------------------------------------------------------
def model_copy(run: Run, work: Path, name: str = "copy"):
    """A private copy of the run's model (weights + card) to damage."""
    source = Path(run.model)
    weights = work / f"{name}.safetensors"
    shutil.copyfile(source, weights)
    shutil.copyfile(source.with_suffix(".json"), weights.with_suffix(".json"))
    return weights


def edit_card(weights: Path, **changes) -> None:
    card_path = weights.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card.update(changes)
    card_path.write_text(json.dumps(card))


def _model_missing(run, work, data):
    run.model = work / "nowhere" / "ct2mr.safetensors"
    return run


def _model_not_registered(run, work, data):
    run.model = "essnet-ct2mr"
    return run


def _no_default_model(run, work, data):
    run.model = None
    return run


def _model_truncated(run, work, data):
    weights = model_copy(run, work)
    cut(weights, weights, keep=0.5)
    run.model = weights
    return run


def _model_truncated_card_agrees(run, work, data):
    weights = model_copy(run, work)
    cut(weights, weights, keep=0.5)
    edit_card(weights, sha256=sha256(weights))
    run.model = weights
    return run


def _model_wrong_checksum(run, work, data):
    weights = model_copy(run, work)
    edit_card(weights, sha256="0" * 64)
    run.model = weights
    return run


def _model_architecture_differs(run, work, data):
    weights = model_copy(run, work)
    architecture = json.loads(weights.with_suffix(".json").read_text())["architecture"]
    width = "ngf" if "ngf" in architecture else "base"
    edit_card(weights, architecture=dict(architecture, **{width: 2 * architecture[width]}))
    run.model = weights
    return run


def _model_preprocessing_differs(run, work, data):
    weights = model_copy(run, work)
    edit_card(weights, input={"modality": "MR", "preprocessing": {"kind": "ct_window", "low": -125, "high": 275}})
    run.model = weights
    return run


def _model_without_card(run, work, data):
    weights = model_copy(run, work)
    weights.with_suffix(".json").unlink()
    run.model = weights
    return run


def _model_malicious_pickle(run, work, data):
    """A .pt whose unpickling would create the marker file; its card even vouches for it."""
    evil = work / "evil.pt"
    torch.save({"model.1.weight": torch.zeros(1), "x": Payload(work / "pwned")}, evil)
    shutil.copyfile(Path(run.model).with_suffix(".json"), evil.with_suffix(".json"))
    edit_card(evil, name="evil", sha256=sha256(evil))
    run.model = evil
    return run


def _model_of_the_other_task(run, work, data):
    run.model = run.model_for("segment" if run.task == "synthesize" else "synthesize")
    return run


CASES = [
    Case("missing path", _missing, errors.InputImageError, "does not exist"),
    Case("empty file", _empty, errors.InputImageError, "is empty"),
    Case("text file", _text_file, errors.InputImageError, "not a supported image"),
    Case("PNG named .nii.gz", _png_named_nifti, errors.InputImageError, "as an image (no NIfTI header)"),
    Case("truncated .nii.gz", _truncated_nii_gz, errors.InputImageError, "damaged gzip stream"),
    Case("truncated .nii", _truncated_nii, errors.InputImageError, "is truncated"),
    Case("truncated NRRD", _truncated_nrrd, errors.InputImageError, "cannot read the voxels"),
    Case("corrupt NRRD header", _corrupt_nrrd_header, errors.InputImageError, "as an image ("),
    Case("truncated DICOM slice", _truncated_dicom, errors.DicomSeriesError, "02.dcm"),
    Case("corrupt DICOM file", _corrupt_dicom_file, errors.DicomSeriesError,
         "01.dcm has no pixel data (it names no SOP"),
    Case("DICOM mixed series", _mixed_series, errors.DicomSeriesError, "holds 2 DICOM series"),
    Case("DICOM missing slices", _missing_slices, errors.DicomSeriesError, "about 2 slice(s) missing"),
    Case("DICOM uneven spacing", _uneven_spacing, errors.DicomSeriesError, "slice spacing is not uniform"),
    Case("DICOM without pixel data", _no_pixel_data, errors.DicomSeriesError, "has no pixel data"),
    Case("DICOM without a decoder", _no_decoder, errors.DicomSeriesError, "installed decoders cannot read"),
    Case("4D volume", _four_d, errors.InputImageError, "is 4D"),
    Case("vector volume", _vector, errors.InputImageError, "3 components per voxel"),
    Case("no voxels along an axis", _no_voxels_along_an_axis, errors.InputImageError, "no voxels along some axis"),
    Case("bigger than memory", _bigger_than_memory, errors.VolumeTooLargeError, "4000 x 4000 x 4000"),
    Case("zero spacing NRRD", _zero_spacing_nrrd, errors.InputImageError, "spacing must be positive"),
    Case("zero spacing NIfTI", _zero_spacing_nifti, errors.InputImageError, "spacing must be positive"),
    Case("negative spacing NIfTI", _negative_spacing_nifti, errors.InputImageError, "spacing must be positive"),
    Case("NaN voxels", _nan_voxels, errors.InputImageError, "7 NaN and 0 infinite"),
    Case("infinite voxels", _infinite_voxels, errors.InputImageError, "0 NaN and 7 infinite"),
    Case("constant volume", _constant, errors.InputImageError, "is constant"),
    Case("MR given to the CT model", _mr_to_the_ct_model, errors.ModalityMismatchError, "does not look like CT"),
    Case("CT given to the MR segmenter", _ct_to_the_mr_segmenter, errors.ModalityMismatchError,
         "does not look like MR"),
    Case("output folder missing", _output_folder_missing, errors.OutputPathError, "does not exist"),
    Case("output format unknown", _output_format_unknown, errors.OutputPathError, "name the output .nii.gz"),
    Case("output is a folder", _output_is_a_folder, errors.OutputPathError, "is a folder"),
    Case("output folder unwritable", _output_folder_unwritable, errors.OutputPathError, "cannot write to /proc"),
    Case("model missing", _model_missing, errors.ModelNotFoundError, "not found"),
    Case("model not registered", _model_not_registered, errors.ModelNotFoundError, "no model named 'essnet-ct2mr'"),
    Case("no default model", _no_default_model, errors.ModelNotFoundError, "is registered"),
    Case("model truncated", _model_truncated, errors.ChecksumMismatchError, "truncated, corrupt or replaced"),
    Case("model truncated, card agrees", _model_truncated_card_agrees, errors.WeightsError,
         "is truncated or corrupt"),
    Case("model wrong SHA256", _model_wrong_checksum, errors.ChecksumMismatchError, "not the file its model card"),
    Case("model architecture differs", _model_architecture_differs, errors.ArchitectureMismatchError,
         "but the card's"),
    Case("model preprocessing differs", _model_preprocessing_differs, errors.WeightsError,
         "ct_window is a CT (HU) window"),
    Case("model without its card", _model_without_card, errors.WeightsError, "has no model card copy.json"),
    Case("malicious pickle", _model_malicious_pickle, errors.UnsafeWeightsError, "asks to run code"),
    Case("model of the other task", _model_of_the_other_task, errors.WeightsError, "model, not a "),
]


# --- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny untrained models: CT -> MR synthesis and liver segmentation on MR."""
    folder = tmp_path_factory.mktemp("tiny")
    return {"synthesis": create_untrained_model("synthesis", folder / "tiny-ct2mr", width=4),
            "segmentation": create_untrained_model("segmentation", folder / "tiny-liver", width=4)}


@pytest.fixture
def empty_registry(tmp_path, monkeypatch):
    """No registered model and an empty private cache, whatever the shipped registry lists by then."""
    folder = tmp_path / "package-models"
    folder.mkdir()
    (folder / "registry.json").write_text('{"format": "slicer-essnet-registry/1", "models": []}')
    monkeypatch.setenv("SLICERESSNET_REGISTRY", str(folder / "registry.json"))
    monkeypatch.setenv("SLICERESSNET_HOME", str(tmp_path / "home"))
    return folder


def bad_run(case: Case, work: Path, data: Path, tiny: dict) -> Run:
    """A good run (a few slices of a real CT, the tiny CT -> MR model, an empty output folder), made bad."""
    (work / "out").mkdir()
    good = Run("synthesize", write(crop(data), work / "ct.nii.gz"), work / "out" / "result.nii.gz",
               tiny["synthesis"], models=tiny)
    return case.build(good, work, data)


def written(work: Path) -> list:
    """Everything in the output folder, hidden temporaries (``.result.nii.gz.*.partial``) included; a case may
    have put something there on purpose (a folder named like the output), so tests compare before and after."""
    return everything_in(work / "out")


# --- the core, the CLI in-process, and a real CLI process ----------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_core_raises_the_specific_error_and_writes_nothing(case, tmp_path, shared_data, tiny, empty_registry):
    run = bad_run(case, tmp_path, shared_data, tiny)
    before = written(tmp_path)
    with pytest.raises(errors.EssNetError) as caught:
        process_file(run.task, run.input, run.output, run.model, device="cpu")
    assert type(caught.value) is case.error, f"{type(caught.value).__name__}: {caught.value}"
    assert case.words in one_line(caught.value)
    assert written(tmp_path) == before and not (tmp_path / "pwned").exists()


def cli_arguments(run: Run) -> list:
    arguments = [run.task, str(run.input), str(run.output), "--device", "cpu", "--threads", "1", "--quiet"]
    return arguments + (["--model", str(run.model)] if run.model is not None else [])


def error_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_cli_prints_one_error_line_exits_1_and_writes_nothing(case, tmp_path, shared_data, tiny, empty_registry,
                                                                   capfd):
    run = bad_run(case, tmp_path, shared_data, tiny)
    before = written(tmp_path)
    code = cli.main(cli_arguments(run))
    _, stderr = capfd.readouterr()  # file descriptors: what ITK, GDCM or the NIfTI library print from C counts too
    lines = error_lines(stderr)
    assert code == cli.EXIT_FAILED
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert case.words in lines[0]
    assert written(tmp_path) == before and not (tmp_path / "pwned").exists()


# Input files a folder of volumes can hold: the same refusals through a real ``python -m SlicerEssNet`` process.
COHORT = ["empty file", "PNG named .nii.gz", "truncated .nii.gz", "truncated .nii", "truncated NRRD",
          "corrupt NRRD header", "4D volume", "vector volume", "no voxels along an axis", "bigger than memory",
          "zero spacing NRRD", "zero spacing NIfTI", "negative spacing NIfTI", "NaN voxels", "infinite voxels",
          "constant volume", "MR given to the CT model"]
BY_NAME = {case.name: case for case in CASES}


def test_a_cohort_of_bad_files_through_a_real_cli_process(tmp_path, shared_data, tiny):
    """Each bad file gets one ``error:`` line naming it, the good one is written, nothing else is, exit 1."""
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    expected = {}
    for number, name in enumerate(COHORT):
        work = tmp_path / f"case{number}"
        work.mkdir()
        run = bad_run(BY_NAME[name], work, shared_data, tiny)
        target = cohort / f"{number:02d}-{run.input.name}"
        shutil.copyfile(run.input, target)
        for sidecar in work.glob("*.raw"):  # a detached header's data file keeps its name
            shutil.copyfile(sidecar, cohort / sidecar.name)
        expected[target.name] = BY_NAME[name].words
    write(crop(shared_data), cohort / "99-good.nii.gz")
    done = run_cli("synthesize", cohort, tmp_path / "out", "--model", tiny["synthesis"], "--device", "cpu",
                   "--quiet", "--threads", "1", "--no-anatomy-check")  # an untrained model: only the errors here
    lines = error_lines(done.stderr)
    assert done.returncode == 1
    assert all(line.startswith("error: ") for line in lines), done.stderr
    assert lines[-1] == f"error: {len(COHORT)} of {len(COHORT) + 1} cases failed"
    for file_name, words in expected.items():
        mine = [line for line in lines if line.startswith(f"error: {file_name}: ")]
        assert len(mine) == 1 and words in mine[0], (file_name, done.stderr)
    assert len(lines) == len(COHORT) + 1
    assert everything_in(tmp_path / "out") == ["99-good_synthetic_mr.nii.gz"]


@pytest.mark.parametrize("name", ["DICOM missing slices", "malicious pickle", "zero spacing NIfTI"])
def test_one_bad_run_through_a_real_cli_process(name, tmp_path, shared_data, tiny):
    case = BY_NAME[name]
    run = bad_run(case, tmp_path, shared_data, tiny)
    done = run_cli(*cli_arguments(run))
    lines = error_lines(done.stderr)
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert case.words in lines[0]
    assert written(tmp_path) == [] and not (tmp_path / "pwned").exists()


# --- valid edge cases are processed, not refused ----------------------------------------------------------------
@pytest.mark.parametrize("slices, name", [(1, "one_slice.nii.gz"), (None, "flat.nrrd")], ids=["1 slice", "2D image"])
def test_a_single_slice_or_a_2d_image_is_one_slice(slices, name, tmp_path, shared_data, tiny, capfd):
    image = crop(shared_data, CT, slice(14, 15)) if slices else crop(shared_data)[:, :, 2]
    source = write(image, tmp_path / name)
    output = tmp_path / "result.nii.gz"
    code = cli.main(["synthesize", str(source), str(output), "--model", str(tiny["synthesis"]), "--device", "cpu",
                     "--threads", "1", "--quiet"])
    assert code == cli.EXIT_OK, capfd.readouterr().err
    result = sitk.ReadImage(str(output))
    assert result.GetSize() == (122, 101, 1) and result.GetSpacing()[:2] == image.GetSpacing()[:2]


def test_a_modality_mismatch_can_be_allowed_and_is_reported(tmp_path, shared_data, tiny, capfd):
    mr = write(crop(shared_data, MR, slice(8, 10)), tmp_path / "mr.nii.gz")
    output = tmp_path / "result.nii.gz"
    # The CLI says it once, as a note (the core's ModalityMismatchWarning is tested in test_inference.py).
    code = cli.main(["synthesize", str(mr), str(output), "--model", str(tiny["synthesis"]), "--device", "cpu",
                     "--threads", "1", "--quiet", "--allow-modality-mismatch"])
    stderr = capfd.readouterr().err
    assert code == cli.EXIT_OK and output.is_file()
    assert "note: modality check: no voxel below -100" in stderr and "looks like MR" in stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: nothing to fall back from")
def test_no_gpu_falls_back_to_the_cpu_with_a_note(tmp_path, shared_data, tiny, capfd):
    output = tmp_path / "result.nii.gz"
    code = cli.main(["synthesize", str(write(crop(shared_data), tmp_path / "ct.nii.gz")), str(output), "--model",
                     str(tiny["synthesis"]), "--device", "cuda", "--threads", "1", "--quiet"])
    stderr = capfd.readouterr().err
    assert code == cli.EXIT_OK and output.is_file()
    assert "note: CUDA was requested but no CUDA GPU is available to PyTorch: running on the CPU" in stderr


# --- interrupted runs leave nothing ----------------------------------------------------------------------------
def test_ctrl_c_during_the_run_or_the_write_leaves_nothing(tmp_path, shared_data, tiny, capfd, monkeypatch):
    from SlicerEssNet import progress

    source = write(crop(shared_data), tmp_path / "ct.nii.gz")
    (tmp_path / "out").mkdir()
    arguments = ["synthesize", str(source), str(tmp_path / "out" / "result.nii.gz"), "--model",
                 str(tiny["synthesis"]), "--device", "cpu", "--threads", "1", "--batch-size", "1"]

    class InterruptedBar(progress.TextProgressBar):
        def __call__(self, report):
            if report.done >= 2:
                raise KeyboardInterrupt
            super().__call__(report)

    monkeypatch.setattr(progress, "TextProgressBar", InterruptedBar)
    assert cli.main(arguments) == cli.EXIT_FAILED
    assert capfd.readouterr().err.rstrip().splitlines()[-1] == "error: interrupted: no output was written"
    assert written(tmp_path) == []

    def half_written_then_interrupted(image, path, *args):
        Path(path).write_bytes(b"half a volume")
        raise KeyboardInterrupt

    monkeypatch.setattr(sitk, "WriteImage", half_written_then_interrupted)
    assert cli.main(arguments + ["--quiet"]) == cli.EXIT_FAILED
    assert error_lines(capfd.readouterr().err) == ["error: interrupted: no output was written"]
    assert written(tmp_path) == []


# --- registry downloads through the CLI ----------------------------------------------------------------------
@pytest.fixture
def registry_with(tmp_path, empty_registry):
    """Writes a registry listing ``entries`` where the CLI's ModelStore reads it."""

    def write_registry(*entries):
        (empty_registry / "registry.json").write_text(
            json.dumps({"format": "slicer-essnet-registry/1", "models": list(entries)}))

    return write_registry


@pytest.fixture
def failing_urls(tiny):
    """Registry URLs for the tiny liver model that fail: nobody listening, a scheme the registry refuses, a server
    that promises the whole file and hangs up halfway, a 404; with the words each failure's message carries."""
    import http.server
    import socket
    import threading

    weights = tiny["segmentation"]
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *args: ModelServer(*args, directory=str(weights.parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    yield [(f"http://127.0.0.1:{dead_port}/{weights.name}", errors.DownloadError, "cannot download tiny-liver from"),
           ("ftp://example.org/tiny-liver.safetensors", errors.WeightsError, "must start with https://"),
           (f"{url}/half/{weights.name}", errors.DownloadError, "was cut off after"),
           (f"{url}/missing.safetensors", errors.DownloadError, "HTTP 404")]
    server.shutdown()
    server.server_close()


def test_downloads_that_fail_leave_the_cache_as_it_was(tmp_path, tiny, registry_with, failing_urls, capfd):
    for url, _, words in failing_urls:
        registry_with(entry_for(tiny["segmentation"], url))
        code = cli.main(["models", "download", "tiny-liver"])
        lines = error_lines(capfd.readouterr().err)
        assert code == cli.EXIT_FAILED and lines[-1].startswith("error: ") and words in lines[-1], lines
        assert everything_in(tmp_path / "home") in ([], ["models"]), "no partial download is left"


# --- CHAOS folders whose masks do not match their slices -----------------------------------------------------
@pytest.mark.parametrize("skip, words", [({"liver_GT_010.png", "liver_GT_011.png"}, "76 masks of 512x512"),
                                         ({"i0077,0000b.dcm"}, "is 77 slices")],
                         ids=["masks missing", "a slice missing"])
def test_chaos_masks_that_do_not_match_the_slices(skip, words, tmp_path, shared_data, capfd):
    from test_chaos import linked_copy

    patient = tmp_path / "patient"
    linked_copy(shared_data / CHAOS_CT, patient, skip=skip)
    code = cli.main(["evaluate", str(patient / "SampleSubmission"), str(patient / "Ground")])
    lines = error_lines(capfd.readouterr().err)
    assert code == cli.EXIT_FAILED and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]
    from SlicerEssNet.io.chaos import read_chaos_ct

    with pytest.raises(errors.ChaosLayoutError) as caught:
        read_chaos_ct(patient)
    one_line(caught.value)


# --- the module logics on real MRML ----------------------------------------------------------------------------
LOGICS = {"CT2MRISynthesis": "synthesize", "LiverSegmentation": "segment"}


def real_node(slicer, data: Path, task: str, array_edit=None, affine_edit=None, name="input"):
    """The modality each task expects (a real CT for synthesis, a real MR for segmentation) as a scalar volume
    node, its voxels or IJK-to-RAS optionally edited."""
    import nibabel

    image = nibabel.load(str(data / (CT if task == "synthesize" else MR)))
    array = np.ascontiguousarray(np.asarray(image.dataobj, dtype=np.float32).transpose(2, 1, 0))
    affine = image.affine.copy()
    if array_edit is not None:
        array = array_edit(array)
    if affine_edit is not None:
        affine_edit(affine)
    return slicer.util.addVolumeFromArray(array, affine, name=name)


def _every_nth(value):
    def edit(array):
        array.ravel()[:: array.size // 5][:5] = value
        return array
    return edit


def _zero_column(affine):
    affine[:3, 0] = 0.0


NODE_CASES = [
    ("NaN voxels", lambda s, d, t: real_node(s, d, t, _every_nth(np.nan)), errors.InputImageError, "5 NaN and 0"),
    ("infinite voxels", lambda s, d, t: real_node(s, d, t, _every_nth(np.inf)), errors.InputImageError,
     "0 NaN and 5 infinite"),
    ("constant volume", lambda s, d, t: real_node(s, d, t, lambda a: np.full_like(a, 7.0)), errors.InputImageError,
     "is constant"),
    ("zero spacing", lambda s, d, t: real_node(s, d, t, affine_edit=_zero_column), errors.InputImageError,
     "voxel spacing (nan, 3.0, 3.0) is zero, negative or not finite"),
    ("vector volume", lambda s, d, t: s.util.addVolumeFromArray(
        np.zeros((2, 8, 8, 3), np.uint8), np.eye(4), nodeClassName="vtkMRMLVectorVolumeNode", name="rgb"),
     errors.InputImageError, "components per voxel"),
    ("no voxels", lambda s, d, t: s.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty"),
     errors.InputImageError, "has no voxels loaded"),
    ("label map", lambda s, d, t: s.util.addVolumeFromArray(
        np.ones((2, 8, 8), np.uint8), np.eye(4), nodeClassName="vtkMRMLLabelMapVolumeNode", name="labels"),
     errors.InputImageError, "not a scalar image"),
    ("other modality", lambda s, d, t: real_node(s, d, "segment" if t == "synthesize" else "synthesize"),
     errors.ModalityMismatchError, "does not look like"),
]
MODEL_CASES = [case for case in CASES if case.name.startswith(("model", "no default", "malicious"))]


@pytest.fixture
def scene_guard(slicer, tmp_path, monkeypatch):
    """Records the scene's nodes and points the runs' temporary folders at an empty folder; ``check()`` asserts
    both are exactly as they were."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))

    class Guard:
        def start(self):
            self.before = node_ids(slicer)

        def check(self):
            assert node_ids(slicer) == self.before, "the scene changed"
            assert everything_in(temporary) == [], "a run left files behind"

    return Guard()


@pytest.mark.parametrize("logic_name", LOGICS)
@pytest.mark.parametrize("name, build, error, words", NODE_CASES, ids=[case[0] for case in NODE_CASES])
def test_a_bad_node_is_refused_and_the_scene_is_unchanged(logic_name, name, build, error, words, slicer, modules,
                                                         shared_data, tiny, scene_guard):
    task = LOGICS[logic_name]
    node = build(slicer, shared_data, task)
    scene_guard.start()
    with pytest.raises(errors.EssNetError) as caught:
        logic_of(modules, logic_name, in_process()).process(node, model=str(tiny[TASK_OF[task]]), device="cpu")
    assert type(caught.value) is error, f"{type(caught.value).__name__}: {caught.value}"
    assert words in one_line(caught.value)
    scene_guard.check()


def test_a_volume_bigger_than_memory_is_refused_before_a_run_starts(slicer, modules, shared_data, tiny, scene_guard,
                                                                   monkeypatch):
    from SlicerEssNet import validation

    node = real_node(slicer, shared_data, "synthesize")
    monkeypatch.setattr(validation, "available_memory_bytes", lambda: 1 << 20)
    scene_guard.start()
    for logic_name, task in LOGICS.items():
        with pytest.raises(errors.VolumeTooLargeError) as caught:
            logic_of(modules, logic_name, in_process()).process(node, model=str(tiny[TASK_OF[task]]), device="cpu",
                                                                allowModalityMismatch=True)
        assert "more than the memory available" in one_line(caught.value)
    scene_guard.check()


@pytest.mark.parametrize("logic_name", LOGICS)
@pytest.mark.parametrize("case", MODEL_CASES, ids=str)
def test_a_bad_model_fails_the_run_and_the_scene_is_unchanged(logic_name, case, slicer, modules, shared_data, tiny,
                                                             tmp_path, empty_registry, scene_guard):
    task = LOGICS[logic_name]
    run = case.build(Run(task, Path(), Path(), tiny[TASK_OF[task]], models=tiny), tmp_path, shared_data)
    node = real_node(slicer, shared_data, task)
    scene_guard.start()
    with pytest.raises(errors.EssNetError) as caught:
        # the card-only pre-flight would call a card for another modality a modality mismatch; the worker's
        # own check of the model is what is tested here
        logic_of(modules, logic_name, in_process()).process(
            node, model=None if run.model is None else str(run.model), device="cpu", allowModalityMismatch=True)
    assert type(caught.value) is case.error, f"{type(caught.value).__name__}: {caught.value}"
    assert case.words in one_line(caught.value)
    assert not (tmp_path / "pwned").exists()
    scene_guard.check()


def test_a_worker_process_that_dies_leaves_the_scene_unchanged(slicer, modules, shared_data, tiny, scene_guard):
    """What the kernel's out-of-memory killer does to a worker, in the default (worker process) runner."""
    logic = logic_of(modules, "LiverSegmentation")
    node = real_node(slicer, shared_data, "segment")
    scene_guard.start()
    killed = []

    def kill_the_worker(status):
        job = logic.currentRun._job
        if not killed and job is not None and job._process.poll() is None:
            os.kill(job._process.pid, signal.SIGKILL)
            killed.append(job._process.pid)

    with pytest.raises(errors.EssNetError) as caught:
        logic.process(node, model=str(tiny["segmentation"]), device="cpu", progressCallback=kill_the_worker)
    assert killed and "stopped unexpectedly" in one_line(caught.value)
    scene_guard.check()


# --- edge cases of the command line itself ---------------------------------------------------------------------
@pytest.fixture
def model_loads(monkeypatch):
    """Every path ``SlicerEssNet.weights.load_model`` is called with (the real loader still runs): a refusal
    "before any work" leaves it empty."""
    from SlicerEssNet import weights

    calls = []
    real_load_model = weights.load_model

    def recording_load_model(path, *args, **kwargs):
        calls.append(path)
        return real_load_model(path, *args, **kwargs)

    monkeypatch.setattr(weights, "load_model", recording_load_model)
    return calls


def test_a_cohort_written_to_a_file_path_is_one_error_line(tmp_path, shared_data, tiny, capfd, model_loads):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    write(crop(shared_data), cohort / "a.nii.gz")
    results = tmp_path / "results.txt"
    results.write_text("not a folder")
    code = cli.main(["synthesize", str(cohort), str(results), "--model", str(tiny["synthesis"]),
                     "--device", "cpu", "--threads", "1", "--quiet"])
    lines = error_lines(capfd.readouterr().err)
    assert code == cli.EXIT_FAILED and len(lines) == 1, lines
    assert lines[0].startswith(f"error: output {results} must be a folder when the input is a folder of volumes (")
    assert lines[0].endswith("): give a folder"), lines[0]
    assert model_loads == [], "the output is refused before any model is loaded"
    assert results.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == [
        "cohort", "results.txt"]


@pytest.mark.parametrize("output, message", [
    ("missing/out.nii.gz", "error: output folder {tmp}/missing does not exist: create it or choose another output path"),
    ("out.txt", "error: cannot write '.txt' files: name the output .nii.gz, .nii, .nrrd or .mha"),
], ids=["missing folder", "unknown format"])
def test_a_bad_output_path_is_refused_before_anything_is_read_or_loaded(tmp_path, tiny, capfd, model_loads, monkeypatch,
                                                                        output, message):
    from SlicerEssNet.io import volume_files as volume_io

    reads = []
    monkeypatch.setattr(volume_io, "read_volume", lambda *a, **k: reads.append(a) or pytest.fail("input was read"))
    source = tmp_path / "ct.nii.gz"
    source.write_bytes(b"never read")
    code = cli.main(["synthesize", str(source), str(tmp_path / output), "--model", str(tiny["synthesis"]),
                     "--device", "cpu", "--threads", "1", "--quiet"])
    lines = error_lines(capfd.readouterr().err)
    assert code == cli.EXIT_FAILED and lines == [message.format(tmp=tmp_path)], lines
    assert model_loads == [] and reads == [], "refused before any model is loaded or any input read"


def test_a_thread_count_of_zero_is_a_usage_error(tmp_path, shared_data, tiny, capfd, model_loads):
    source = write(crop(shared_data), tmp_path / "ct.nii.gz")
    try:
        with pytest.raises(SystemExit) as usage:
            cli.main(["synthesize", str(source), str(tmp_path / "o.nii.gz"), "--model", str(tiny["synthesis"]),
                      "--device", "cpu", "--threads", "0", "--quiet"])
    finally:
        torch.set_num_threads(1)
    assert usage.value.code == cli.EXIT_USAGE
    lines = error_lines(capfd.readouterr().err)
    assert lines and lines[-1].endswith(" synthesize: error: argument --threads: 0 must be 1 or more"), lines
    assert model_loads == [], "a usage error is found before any model is loaded"
    assert not (tmp_path / "o.nii.gz").exists()


@pytest.mark.parametrize("source, option", [(MR, "--allow-modality-mismatch"), (CT, "--device=cuda")],
                         ids=["allowed mismatch", "no GPU"])
def test_each_notice_is_printed_once(source, option, tmp_path, shared_data, tiny):
    """In a real process: under pytest, warnings and log records are captured before they reach stderr."""
    if option == "--device=cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: nothing to fall back from")
    volume = write(crop(shared_data, source, slice(8, 10)), tmp_path / "input.nii.gz")
    done = run_cli("synthesize", volume, tmp_path / "o.nii.gz", "--model", tiny["synthesis"], "--threads", "1",
                   "--quiet", option, *([] if "device" in option else ["--device", "cpu"]))
    lines = error_lines(done.stderr)
    assert done.returncode == cli.EXIT_OK
    # The anatomy check runs two more models: their notes are not said again; its own line follows.
    assert len(lines) == 2 and lines[0].startswith("note: "), lines
    assert lines[1].startswith(("anatomy kept: ", "warning: input.nii.gz: ", "note: anatomy check skipped: the input "
                                                                            "does not look like a CT")), lines


def test_a_model_download_that_fails_in_a_module_leaves_the_scene_and_cache_unchanged(
        slicer, modules, shared_data, tiny, tmp_path, registry_with, failing_urls, scene_guard):
    node = real_node(slicer, shared_data, "segment")
    scene_guard.start()
    for url, error, words in failing_urls:
        registry_with(entry_for(tiny["segmentation"], url))
        with pytest.raises(errors.EssNetError) as caught:
            logic_of(modules, "LiverSegmentation", in_process()).process(node, model="tiny-liver", device="cpu")
        assert type(caught.value) is error and words in one_line(caught.value)
        assert everything_in(tmp_path / "home") in ([], ["models"]), "no partial download is left"
    scene_guard.check()


@pytest.mark.parametrize("logic_name", LOGICS)
def test_a_single_slice_node_is_processed_as_one_slice(logic_name, slicer, modules, shared_data, tiny, tmp_path):
    task = LOGICS[logic_name]
    node = real_node(slicer, shared_data, task, array_edit=lambda array: np.ascontiguousarray(array[10:11]))
    # The segmentation model marks every voxel: the liver volume is known before the run.
    model = tiny[TASK_OF[task]] if task == "synthesize" else liver_everywhere(tmp_path / "all-liver")
    result = logic_of(modules, logic_name, in_process()).process(node, model=str(model), device="cpu")
    if task == "synthesize":
        assert slicer.util.arrayFromVolume(result.volumeNode).shape == (1,) + node.GetImageData().GetDimensions()[1::-1]
    else:
        from EssNetSlicerLib.nodes import ijkToRasArray
        from EssNetSlicerLib.segmentation import liverSegmentId

        segmentation = result.segmentationNode
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, liverSegmentId(segmentation), node)
        assert mask.shape == (1,) + node.GetImageData().GetDimensions()[1::-1] and mask.all()
        voxel_ml = abs(np.linalg.det(ijkToRasArray(node)[:3, :3])) / 1000.0  # the node's own voxel, in mL
        assert result.liverVolumeMl == pytest.approx(np.count_nonzero(mask) * voxel_ml, rel=1e-6, abs=1e-12)


def test_output_equal_to_input_is_refused_before_anything_is_overwritten(tmp_path, shared_data, tiny, capfd):
    source = write(crop(shared_data), tmp_path / "ct.nii.gz")
    before = source.read_bytes()
    code = cli.main(["synthesize", str(source), str(source), "--model", str(tiny["synthesis"]), "--quiet"])
    lines = error_lines(capfd.readouterr().err)
    assert code == cli.EXIT_FAILED and len(lines) == 1 and "is the input itself" in lines[0]
    assert source.read_bytes() == before


def test_without_pytorch_the_cli_says_what_to_install(tmp_path, shared_data, tiny, capfd, monkeypatch):
    import sys

    source = write(crop(shared_data), tmp_path / "ct.nii.gz")
    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` meets where it is not installed
    code = cli.main(["synthesize", str(source), str(tmp_path / "o.nii.gz"), "--model", str(tiny["synthesis"]),
                     "--quiet"])
    lines = error_lines(capfd.readouterr().err)
    assert code == cli.EXIT_FAILED and len(lines) == 1 and "PyTorch" in lines[0]


def test_without_pytorch_importing_a_model_says_what_to_install_and_imports_nothing(tmp_path, capfd, monkeypatch):
    import sys

    # Checking that the weights fit their card needs torch; without it this is not a "corrupt file".
    monkeypatch.setenv("SLICERESSNET_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(sys.modules, "torch", None)
    code = cli.main(["models", "import", str(REPO / "SlicerEssNet" / "models" / "liver-unet-mr.safetensors")])
    lines = error_lines(capfd.readouterr().err)
    assert code == cli.EXIT_FAILED and len(lines) == 1 and lines[0].startswith("error: PyTorch is not installed")
    assert not list((tmp_path / "home").rglob("*.safetensors"))
