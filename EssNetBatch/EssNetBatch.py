"""Headless cohort processing with the modules' logic, inside Slicer without a window:

    Slicer --no-main-window --python-script EssNetBatch.py --input CT_DIR --output OUT_DIR [--task synthesize|segment]
           [--model NAME] [--device cpu] [--from-ct] [--tta] [--install-dependencies]

Every volume file (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd) and every sub-folder (a DICOM series or a CHAOS
folder) of --input is one case. Each case is loaded into the scene, run through CT2MRISynthesisLogic or
LiverSegmentationLogic exactly as the GUI runs it, written to --output (``<case>_synthetic_mr.nii.gz`` or
``<case>_liver.nii.gz``, on the input's exact grid), and removed from the scene again. Progress goes to stdout, one
line per 10 % per case; ``summary.csv`` in --output lists every case (status, output, liver volume in mL, anatomy
kept (liver Dice between the CT and its synthetic MR, CT inputs only), seconds, model, device, message). No dialog is ever opened. Exit code: 0 when every case succeeded, 1 when any failed,
2 for a wrong command line.

Options: ``--usage`` prints them (Slicer keeps ``--help`` for itself). Every path ends with ``sys.exit``: on any
failure one line on stderr and exit code 1, so a headless Slicer never stays behind.

``--self-test`` makes a small CT-like case and tiny untrained models in a temporary folder and runs both tasks on
them (ctest runs it; see Testing/Python/CMakeLists.txt).
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path
from typing import List, Optional

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SUFFIXES = {"synthesize": "_synthetic_mr", "segment": "_liver"}
SUMMARY_COLUMNS = ("case", "input", "task", "status", "output", "liver_volume_ml", "anatomy_kept", "seconds", "model",
                   "device", "message")


def buildParser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="Slicer --no-main-window --python-script EssNetBatch.py",
        description="Run CT-to-MR synthesis or liver segmentation on every volume of a folder, headless.")
    parser.add_argument("--input", help="folder of volume files and/or DICOM series folders")
    parser.add_argument("--output", help="folder for the results and summary.csv (created if missing)")
    parser.add_argument("--task", choices=("synthesize", "segment"), default="synthesize",
                        help="synthesize: CT -> synthetic MR (default); segment: liver on MR")
    parser.add_argument("--model", help="model name or .safetensors path (default: the task's registry default)")
    parser.add_argument("--from-ct", action="store_true",
                        help="segment: the inputs are CT; translate to synthetic MR first (--synthesis-model)")
    parser.add_argument("--synthesis-model", help="CT -> MR model for --from-ct (default: the registry default)")
    parser.add_argument("--liver-mask", action="store_true",
                        help="synthesize: also write the liver mask of the synthetic MR (--segmentation-model)")
    parser.add_argument("--segmentation-model", help="liver model for --liver-mask (default: the registry default)")
    parser.add_argument("--tta", action="store_true",
                        help="segment: test-time augmentation, 5 zoomed/rotated views per slice (4-5x the time)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda or mps")
    parser.add_argument("--allow-modality-mismatch", action="store_true",
                        help="go on (with a warning) when an input does not look like the model's modality")
    parser.add_argument("--worker-process", action="store_true",
                        help="run each job in a separate process (slower start; survives crashes and OOM kills)")
    parser.add_argument("--install-dependencies", action="store_true",
                        help="install missing Python packages without asking (PyTorch via the PyTorch extension)")
    parser.add_argument("--self-test", action="store_true", help="run both tasks on a generated case and exit")
    # Slicer's own parser takes --help and -h before the script sees them.
    parser.add_argument("--usage", action="help", help="print these options and exit (inside Slicer, where --help "
                                                        "is Slicer's own)")
    return parser


def findCases(folder: Path) -> List[Path]:
    """Volume files and sub-folders (DICOM series, CHAOS layouts) of ``folder``, sorted by name."""
    from SlicerEssNet.cli import VOLUME_SUFFIXES

    cases = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() or any(path.name.lower().endswith(suffix) for suffix in VOLUME_SUFFIXES):
            cases.append(path)
    return cases


def caseName(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


class ProgressPrinter:
    """One stdout line per 10 % of a case (logs stay readable), plus the final state."""

    def __init__(self, label: str):
        self.label = label
        self.lastBucket = -1

    def __call__(self, status) -> None:
        bucket = int(status.fraction * 10)
        if status.state != "running" or bucket != self.lastBucket:
            self.lastBucket = bucket
            print(f"{self.label} {status.text}", flush=True)


def runCase(path: Path, args, logic, outputFolder: Path) -> dict:
    import slicer
    from EssNetSlicerLib.nodes import SceneChanges, volumeFromNode
    from EssNetSlicerLib.segmentation import liverSegmentId
    from SlicerEssNet.io.volume_files import read_volume, write_volume

    name = caseName(path)
    row = {"case": name, "input": str(path), "task": args.task, "status": "failed", "output": "",
           "liver_volume_ml": "", "anatomy_kept": "", "seconds": "", "model": "", "device": "", "message": ""}
    started = time.monotonic()
    with SceneChanges() as caseNodes:  # everything this case adds is removed at the end
        try:
            volume = read_volume(path)
            inputNode = slicer.util.addVolumeFromArray(volume.array, volume.ijk_to_ras(), name=name)
            progress = ProgressPrinter(args.label)
            options = dict(device=args.device, allowModalityMismatch=args.allow_modality_mismatch,
                           progressCallback=progress, showResult=False)
            destination = outputFolder / f"{name}{SUFFIXES[args.task]}.nii.gz"
            if args.task == "synthesize":
                result = logic.process(inputNode, model=args.model, liverSegmentation=args.liver_mask,
                                       segmentationModel=args.segmentation_model, **options)
                write_volume(volumeFromNode(result.volumeNode), destination)
                provenanceNode = result.volumeNode
                liverNode, liverMl = result.segmentationNode, result.liverVolumeMl
            else:
                result = logic.process(inputNode, model=args.model, synthesizeFirst=args.from_ct,
                                       synthesisModel=args.synthesis_model, testTimeAugmentation=args.tta,
                                       **options)
                provenanceNode = liverNode = result.segmentationNode
                liverMl = result.liverVolumeMl
                destination = None
            outputs = [] if destination is None else [destination]
            if liverNode is not None:
                labels = slicer.util.arrayFromSegmentBinaryLabelmap(liverNode, liverSegmentId(liverNode), inputNode)
                liverFile = outputFolder / f"{name}{SUFFIXES['segment']}.nii.gz"
                write_volume(volume.with_array(labels.astype("uint8")), liverFile)
                outputs.append(liverFile)
                row["liver_volume_ml"] = f"{liverMl:.2f}"
            if result.anatomy is not None:
                row["anatomy_kept"] = f"{result.anatomy.dice:.3f}"
                if result.anatomy.low:
                    row["message"] = "warning: " + result.anatomy.warning()
                    print(f"{args.label} WARNING: {result.anatomy.warning()}", flush=True)
            row.update(status="succeeded", output=";".join(str(p) for p in outputs),
                       model=provenanceNode.GetAttribute("SlicerEssNet.model") or "",
                       device=provenanceNode.GetAttribute("SlicerEssNet.device") or "")
        except Exception as error:  # noqa: BLE001 - one failed case must not stop the cohort
            from SlicerEssNet.errors import CancelledError, EssNetError

            row["status"] = "cancelled" if isinstance(error, CancelledError) else "failed"
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            row["message"] = message if isinstance(error, EssNetError) else f"{type(error).__name__}: {message}"
            print(f"{args.label} FAILED: {row['message']}", flush=True)
        finally:
            caseNodes.undo()
            row["seconds"] = f"{time.monotonic() - started:.1f}"
    return row


def writeSummary(rows: List[dict], path: Path) -> None:
    from SlicerEssNet.atomic import atomic_path

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as temporary:
        Path(temporary).write_text(text.getvalue(), encoding="utf-8")


def makeLogic(args):
    from SlicerEssNet.jobs import InProcessJobRunner

    runner = None if args.worker_process else InProcessJobRunner()  # None: a worker process per job
    if args.task == "synthesize":
        from CT2MRISynthesis import CT2MRISynthesisLogic

        return CT2MRISynthesisLogic(jobRunner=runner)
    from LiverSegmentation import LiverSegmentationLogic

    return LiverSegmentationLogic(jobRunner=runner)


def main(argv: Optional[List[str]] = None) -> int:
    parser = buildParser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # argparse exits on --help and on errors; keep Slicer's exit code meaningful
        return EXIT_OK if exit.code == 0 else EXIT_USAGE
    if args.self_test:
        return selfTest()
    if not args.input or not args.output:
        print("error: --input and --output are required (or --self-test)", file=sys.stderr)
        return EXIT_USAGE
    if args.tta and args.task != "segment":
        print("error: --tta averages liver probabilities: use it with --task segment", file=sys.stderr)
        return EXIT_USAGE
    inputFolder, outputFolder = Path(args.input).expanduser(), Path(args.output).expanduser()
    if not inputFolder.is_dir():
        print(f"error: input folder {inputFolder} does not exist: check the path", file=sys.stderr)
        return EXIT_USAGE
    outputFolder.mkdir(parents=True, exist_ok=True)
    cases = findCases(inputFolder)
    if not cases:
        print(f"error: no volume files or DICOM folders in {inputFolder}", file=sys.stderr)
        return EXIT_USAGE

    logic = makeLogic(args)
    try:
        logic.ensureDependencies(interactive=False, install=args.install_dependencies)
    except Exception as error:  # noqa: BLE001
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED

    rows = []
    for index, path in enumerate(cases, start=1):
        args.label = f"[{index}/{len(cases)}] {caseName(path)}:"
        rows.append(runCase(path, args, logic, outputFolder))
        writeSummary(rows, outputFolder / "summary.csv")  # after every case: a killed batch keeps its summary
    failed = sum(row["status"] != "succeeded" for row in rows)
    print(f"{len(rows) - failed} of {len(rows)} cases succeeded; summary: {outputFolder / 'summary.csv'}", flush=True)
    return EXIT_FAILED if failed else EXIT_OK


def selfTest() -> int:
    """Both tasks on a generated CT-like case with tiny untrained models; 0 when the outputs are right."""
    import shutil
    import tempfile

    import numpy as np

    from SlicerEssNet.volume import Volume
    from SlicerEssNet.io.volume_files import read_volume, write_volume
    from SlicerEssNet.weights import create_untrained_model

    folder = Path(tempfile.mkdtemp(prefix="EssNetBatch-selftest-"))
    try:
        array = np.full((5, 40, 44), -1000, dtype=np.int16)
        array[:, 6:34, 6:38] = 45
        case = Volume(array, (0.9, 0.9, 3.0), (-20.0, 15.0, 100.0))
        (folder / "in").mkdir()
        write_volume(case, folder / "in" / "case01.nii.gz")
        synthesis = create_untrained_model("synthesis", folder / "tiny-ct2mr", width=4)
        segmentation = create_untrained_model("segmentation", folder / "tiny-liver", width=4)
        codes = [main(["--input", str(folder / "in"), "--output", str(folder / "synth"), "--device", "cpu",
                       "--model", str(synthesis)]),
                 main(["--input", str(folder / "in"), "--output", str(folder / "seg"), "--task", "segment",
                       "--from-ct", "--tta", "--device", "cpu", "--model", str(segmentation),
                       "--synthesis-model", str(synthesis)])]
        synthetic = read_volume(folder / "synth" / "case01_synthetic_mr.nii.gz")
        liver = read_volume(folder / "seg" / "case01_liver.nii.gz")
        ok = (codes == [EXIT_OK, EXIT_OK] and synthetic.shape == case.shape and liver.shape == case.shape
              and np.allclose(synthetic.spacing, case.spacing) and np.allclose(liver.origin, case.origin, atol=1e-4)
              and (folder / "seg" / "summary.csv").is_file())
        print("EssNetBatch self-test " + ("passed" if ok else f"FAILED (exit codes {codes})"), flush=True)
        return EXIT_OK if ok else EXIT_FAILED
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def runScript(argv: Optional[List[str]] = None) -> int:
    """``main`` with every path ending in an exit code and, on failure, one line on stderr.

    Slicer started with ``--no-main-window --python-script`` exits only when the script calls ``sys.exit``: an
    exception escaping the script would leave an invisible, idle Slicer behind.
    """
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else (EXIT_OK if exit.code is None else EXIT_FAILED)
    except KeyboardInterrupt:
        print("error: interrupted; summary.csv lists the cases finished so far", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except BaseException as error:  # noqa: BLE001 - the batch must always end with an exit code
        text = str(error).splitlines()[0] if str(error) else ""
        print(f"error: {type(error).__name__}: {text}" if text else f"error: {type(error).__name__}",
              file=sys.stderr, flush=True)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(runScript(sys.argv[1:]))
