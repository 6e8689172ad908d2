"""``python -m SlicerEssNet``: synthesis, segmentation, evaluation and model management outside Slicer.

Exit codes: 0 success, 1 the work failed (a one-line reason on stderr), 2 the command line was wrong.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

from . import __version__
from .errors import EssNetError, ModalityMismatchError, ModalityMismatchWarning

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def positive_int(text: str) -> int:
    """argparse type: a wrong count is a usage error (exit 2), not a traceback from deep inside torch."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m SlicerEssNet",
        description="CT -> synthetic MR with EssNet, and liver segmentation on MR, outside 3D Slicer.")
    parser.add_argument("--version", action="version", version=f"SlicerEssNet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    for name, help_text, default_suffix in (
        ("synthesize", "translate a CT volume (file, DICOM folder or folder of volumes) into synthetic MR", "_synthetic_mr"),
        ("segment", "segment the liver in an MR volume (file, DICOM folder or folder of volumes)", "_liver"),
    ):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("input", help="volume file (.nii.gz, .nrrd, .mha), DICOM folder, or a folder of volumes")
        command.add_argument("output", help="output file (.nii.gz, .nrrd, .mha), or a folder when the input is one")
        command.add_argument("--model", help="registry name or path to a .safetensors file (default: the task's default model)")
        command.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
        command.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                             help="autocast precision (auto: bf16 where the hardware runs it natively)")
        command.add_argument("--batch-size", type=positive_int, help="slices per batch (default: chosen from the model grid)")
        command.add_argument("--threads", type=positive_int, help="CPU threads (default: the cores available)")
        command.add_argument("--allow-modality-mismatch", action="store_true",
                             help="go on (with a warning) when the input does not look like the model's modality")
        if name == "segment":
            command.add_argument("--all-components", action="store_true",
                                 help="keep every connected liver component (default: the largest only)")
            command.add_argument("--from-ct", action="store_true",
                                 help="the input is a CT: translate it to synthetic MR first (in memory), then "
                                      "segment; the labels lie on the CT's grid")
            command.add_argument("--synthesis-model",
                                 help="with --from-ct: the CT -> MR model (default: the default synthesis model)")
            command.add_argument("--tta", action="store_true",
                                 help="test-time augmentation: average 5 zoomed/rotated views of each slice "
                                      "(4-5x the time; its effect per model: docs/EXPERIMENTS.md)")
        command.add_argument("--no-anatomy-check", dest="anatomy_check", action="store_false",
                             help="CT -> MR: skip the check that segments the liver on the CT (liver-unet-ct) and on "
                                  "the synthetic MR (liver-unet-mr) and prints their Dice")
        command.add_argument("--preview", action="store_true",
                             help="also write <output>_preview.png: input and result side by side on a few slices")
        command.add_argument("--quiet", action="store_true", help="no progress bar")
        command.set_defaults(handler=_run_task, default_suffix=default_suffix)

    example = commands.add_parser("example", help="run the shipped models on the bundled example CT and MR "
                                                  "(TotalSegmentator's, Apache-2.0): volumes and a picture")
    example.add_argument("output", nargs="?", default="example-out", help="folder to write to (default: example-out)")
    example.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    example.add_argument("--threads", type=positive_int, help="CPU threads (default: the cores available)")
    example.set_defaults(handler=_example)

    evaluate = commands.add_parser("evaluate", help="score a segmentation against a reference (Dice, IoU, RAVD, ASSD, MSSD, HD95)")
    evaluate.add_argument("prediction", help="predicted label volume (or CHAOS-style PNG folder)")
    evaluate.add_argument("reference", help="reference label volume (or CHAOS-style PNG folder)")
    evaluate.add_argument("--label", type=int, default=1, help="label value in the prediction (default 1)")
    evaluate.add_argument("--reference-label", type=int, help="label value in the reference (default: same as --label)")
    evaluate.add_argument("--json", dest="json_path", help="also write the results as JSON to this file")
    evaluate.set_defaults(handler=_evaluate)

    models = commands.add_parser("models", help="list, import, verify or remove models")
    model_commands = models.add_subparsers(dest="models_command", metavar="ACTION")
    model_commands.required = True
    model_commands.add_parser("list", help="registry models and what is installed").set_defaults(handler=_models_list)
    imported = model_commands.add_parser("import", help="copy a .safetensors file and its model card into the cache (offline sites)")
    imported.add_argument("path")
    imported.set_defaults(handler=_models_import)
    verify = model_commands.add_parser("verify", help="check a model's SHA256 and that it loads")
    verify.add_argument("name", help="registry name or path")
    verify.set_defaults(handler=_models_verify)
    download = model_commands.add_parser("download", help="download a registry model into the cache")
    download.add_argument("name")
    download.set_defaults(handler=_models_download)
    remove = model_commands.add_parser("remove", help="delete a cached model (or --all)")
    remove.add_argument("name", nargs="?")
    remove.add_argument("--all", action="store_true", help="delete every cached model")
    remove.set_defaults(handler=_models_remove)
    model_commands.add_parser("path", help="print the model cache folder").set_defaults(handler=_models_path)

    worker = commands.add_parser("worker", help=argparse.SUPPRESS)
    worker.add_argument("request")
    worker.set_defaults(handler=_worker)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "synthesis_model", None) and not args.from_ct:
        parser.error("--synthesis-model names the CT -> MR model of --from-ct: add --from-ct, or drop it")
    try:
        return int(args.handler(args) or EXIT_OK)
    except EssNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("error: interrupted: no output was written", file=sys.stderr)
        return EXIT_FAILED


# --- synthesize / segment ---------------------------------------------------------------------------------------
def _is_volume_file(path: Path) -> bool:
    return path.is_file() and any(path.name.lower().endswith(suffix) for suffix in VOLUME_SUFFIXES)


def _cases(input_path: Path, output_path: Path, default_suffix: str):
    """(input, output) pairs: one file or DICOM folder, or every volume file in a folder (cohort mode)."""
    from .errors import InputImageError, OutputPathError

    if not input_path.exists():
        raise InputImageError(f"input {input_path} does not exist: check the path")
    volumes = sorted(p for p in input_path.iterdir() if _is_volume_file(p)) if input_path.is_dir() else []
    if not volumes:
        return [(input_path, output_path)]  # process_file refuses an output that is the input itself
    try:
        output_path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputPathError(
            f"output {output_path} must be a folder when the input is a folder of volumes ({error.strerror}): "
            "give a folder") from None
    pairs = []
    for path in volumes:
        stem = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
        pairs.append((path, output_path / f"{stem}{default_suffix}.nii.gz"))
    return pairs


def _preview_path(output: Path) -> Path:
    name = output.name
    for suffix in VOLUME_SUFFIXES[::-1]:  # longest first: .nii.gz before .gz-less names
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return output.with_name(f"{name}_preview.png")


def _run_task(args) -> int:
    from .anatomy import AnatomyCheck
    from .pipeline import process_file, resolve_model
    from .progress import TextProgressBar
    from .io.volume_files import check_writable
    from .runtime import import_torch

    import_torch(args.threads)
    pairs = _cases(Path(args.input), Path(args.output), args.default_suffix)
    if len(pairs) == 1:  # a cohort goes on past one bad case; one case fails before any model is loaded
        check_writable(pairs[0][1])
    loaded = resolve_model(args.model, args.command)  # once, not per case
    from_ct = getattr(args, "from_ct", False)
    synthesis = resolve_model(args.synthesis_model, "synthesize") if from_ct else None
    failures = 0
    for index, (source, destination) in enumerate(pairs, start=1):
        label = f"[{index}/{len(pairs)}] {source.name}" if len(pairs) > 1 else source.name
        options = dict(device=args.device, precision=args.precision, batch_size=args.batch_size,
                       allow_modality_mismatch=args.allow_modality_mismatch,
                       largest_component=not getattr(args, "all_components", False),
                       test_time_augmentation=getattr(args, "tta", False),
                       anatomy_check=args.anatomy_check and (args.command == "synthesize" or from_ct))
        if synthesis is not None:
            options["synthesis_model"] = synthesis
        if not args.quiet:
            options["progress"] = TextProgressBar(f"{label} liver" if from_ct else label)
            if synthesis is not None:
                options["synthesis_progress"] = TextProgressBar(f"{label} CT -> MR")
        if args.preview:
            options["preview_path"] = _preview_path(destination)
        try:
            with warnings.catch_warnings():
                # The report's notes say it once, as 'note: ...'; a Python warning would repeat it with source lines.
                warnings.simplefilter("ignore", ModalityMismatchWarning)
                report = process_file(args.command, source, destination, loaded, **options)
        except EssNetError as error:
            error = _with_ct_hint(error, args, loaded)
            if len(pairs) == 1:
                raise error from None
            failures += 1
            print(f"error: {source.name}: {error}", file=sys.stderr)
            continue
        for note in report.notes:
            print(f"note: {note}", file=sys.stderr)
        if report.anatomy is not None:
            check = AnatomyCheck(**report.anatomy)
            print(f"warning: {label}: {check.warning()}" if check.low else
                  (f"{label}: " if len(pairs) > 1 else "") + check.line(), file=sys.stderr)
        if not args.quiet:
            print(f"wrote {destination} ({report.slices} slices, {report.model}, {report.device} "
                  f"{report.precision}, {report.seconds:.1f} s)", file=sys.stderr)
    if failures:
        print(f"error: {failures} of {len(pairs)} cases failed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _with_ct_hint(error: Exception, args, loaded) -> Exception:
    """A CT given to an MR segmentation model: name the option that segments it through synthetic MR."""
    if (isinstance(error, ModalityMismatchError) and args.command == "segment" and not args.from_ct
            and str(loaded.card.input_modality).upper().startswith("MR")):
        from .model_store import ModelStore

        on_ct = [entry.name for entry in ModelStore().entries()
                 if entry.task == "segmentation" and entry.input_modality == "CT"]
        choose = f"choose a CT model (--model {on_ct[0]}) or " if on_ct else ""
        return ModalityMismatchError(f"{error}; for a CT, {choose}add --from-ct to segment it through synthetic MR")
    return error


# --- evaluate -----------------------------------------------------------------------------------------------------
def _example(args) -> int:
    from .example import run_example
    from .runtime import import_torch

    import_torch(args.threads)
    for line in run_example(Path(args.output), device=args.device):
        print(line)
    return EXIT_OK


def _evaluate(args) -> int:
    from .evaluation import evaluate_files, format_table, to_json

    results = evaluate_files(args.prediction, args.reference, label=args.label, ref_label=args.reference_label)
    print(format_table(results))
    if args.json_path:
        to_json(results, args.json_path)  # strict JSON (no NaN/Infinity), written atomically
    return EXIT_OK


# --- models -------------------------------------------------------------------------------------------------------
def _store():
    from .model_store import ModelStore

    return ModelStore()


def _models_list(args) -> int:
    rows = _store().list()
    if not rows:
        print("no models in the registry or cache")
        return EXIT_OK
    for row in rows:
        row = row if isinstance(row, dict) else vars(row)
        status = "installed" if row.get("installed") else "not downloaded"
        default = " (default)" if row.get("default") else ""
        print(f"{row.get('name')}\t{row.get('task')}{default}\t{status}\t{row.get('path') or ''}")
    return EXIT_OK


def _download_bar(name: str):
    from .progress import Progress, TextProgressBar

    bar = TextProgressBar(f"download {name}")
    started = time.perf_counter()

    def callback(done: int, total: int) -> None:
        elapsed = time.perf_counter() - started
        eta = elapsed / done * (total - done) if done and total else None
        bar(Progress(done // 1024, max(1, total // 1024), elapsed, eta, "KiB"))

    return callback


def _models_import(args) -> int:
    print(f"imported {_store().import_file(args.path)}")
    return EXIT_OK


def _models_verify(args) -> int:
    from .weights import load_model

    store = _store()
    path = store.resolve(args.name, progress=_download_bar(args.name))
    loaded = load_model(path)
    print(f"ok: {loaded.card.name} {loaded.card.version} ({loaded.card.task}), sha256 {loaded.card.sha256[:16]}..., {path}")
    return EXIT_OK


def _models_download(args) -> int:
    print(f"downloaded {_store().download(args.name, progress=_download_bar(args.name))}")
    return EXIT_OK


def _models_remove(args) -> int:
    from .errors import ModelNotFoundError

    store = _store()
    if args.all:
        store.remove_all()
        print(f"removed every cached model from {store.cache_dir}")
    elif args.name:
        store.remove(args.name)
        print(f"removed {args.name}")
    else:
        raise ModelNotFoundError("give a model name to remove, or --all to empty the cache")
    return EXIT_OK


def _models_path(args) -> int:
    print(_store().cache_dir)
    return EXIT_OK


def _worker(args) -> int:
    from .jobs import run_worker

    return run_worker(args.request)
