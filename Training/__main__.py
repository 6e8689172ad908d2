"""``python -m Training run --preset demo|cpu|paper [--run-dir DIR]`` and ``python -m Training report RUN_DIR``.

Multi-process: ``torchrun --nproc_per_node N -m Training run --preset paper`` (gloo on CPU, nccl on GPUs).
``python -m Training ship RUN_DIR`` copies a finished cpu run's fp16 models into ``SlicerEssNet/models`` and
registers them as the default models. ``python -m Training label-quality`` surveys the MR labels along z.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .study.presets import ARM_RECIPES, apply_options, get_preset, preset_names

REPO = Path(__file__).resolve().parents[1]


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a weight >= 0")
    return value


def _workers(text: str):
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a number of worker processes >= 1 (or auto)")
    return int(text)


def _override(text: str) -> tuple:
    from .study.presets import parse_option

    try:
        return parse_option(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m Training", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run (or resume) a whole study")
    run.add_argument("--preset", choices=preset_names(), default="demo")
    run.add_argument("--run-dir", type=Path, default=None, help="default: runs/<preset> in the repository")
    run.add_argument("--data-root", default=None, help="real data folder (default ../shared/data)")
    run.add_argument("--seeds", type=int, nargs="+", default=None,
                     help="override the preset's seeds; on an existing run folder, adds seeds to it")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--workers", type=_workers, default="auto",
                     help="training jobs side by side, each in its own process (auto: 2 or more on a CPU, "
                          "1 on a GPU or under torchrun; 1: one job after the other)")
    run.add_argument("--no-seg", action="store_true",
                     help="only the plain-CycleGAN ablation for stage 1 (seg_weight = 0); stage 2 skips EssNet arms")
    run.add_argument("--identity", type=_non_negative, default=None, metavar="LAMBDA",
                     help="stage-1 identity loss weight (x lambda_cycle; CycleGAN's 0.5) for a new run folder")
    run.add_argument("--arms", nargs="+", default=None, choices=tuple(ARM_RECIPES), metavar="ARM",
                     help="train only these stage-2 arms (stage 1 only for the synthesis models they learn from): "
                          + ", ".join(ARM_RECIPES))
    run.add_argument("--synthesis-from", type=Path, default=None, metavar="FOLDER",
                     help="take stage 1 from a ship-synthesis run folder (its selected EssNet / CycleGAN models) or "
                          "from the shipped models (SlicerEssNet/models, EssNet only) instead of training it: the "
                          "paper's comparison with the long-trained models")
    run.add_argument("--set", dest="overrides", action="append", default=[], type=_override, metavar="SECTION.FIELD=VALUE",
                     help="change one preset option of a new run folder, e.g. data.organ_gamma=0.8 or "
                          "segmentation.iterations=3000 (repeatable; sections: data, synthesis, segmentation)")
    report = commands.add_parser("report", help="regenerate REPORT.md and every figure of a run folder")
    report.add_argument("run_dir", type=Path)
    report.add_argument("--out", type=Path, default=None, help="write the report here (default: the run folder)")
    long_run = commands.add_parser(
        "ship-synthesis", help="train (or resume) the shipped synthesis models: EssNet and the plain-CycleGAN "
                               "ablation on the ship preset's long budget, each keeping its best model")
    long_run.add_argument("--run-dir", type=Path, default=None, help="default: runs/ship in the repository")
    long_run.add_argument("--data-root", default=None, help="real data folder (default ../shared/data)")
    long_run.add_argument("--only", choices=("essnet", "cyclegan"), default=None, help="train this model alone")
    long_run.add_argument("--workers", type=_workers, default="auto",
                          help="models side by side, each in its own process (auto: 2 on a CPU, 1 on a GPU)")
    long_run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    long_run.add_argument("--set", dest="overrides", action="append", default=[], type=_override,
                          metavar="SECTION.FIELD=VALUE", help="change one ship-preset option of a new run folder")
    ship_report = commands.add_parser(
        "ship-report", help="score the ship run's chosen synthesis models on the held-out CT patients, export them "
                            "(fp16 + cards) and write REPORT.md with its figures")
    ship_report.add_argument("run_dir", type=Path, nargs="?", default=None, help="default: runs/ship")
    ship_report.add_argument("--out", type=Path, default=None, help="also copy the report and figures here")
    ship = commands.add_parser("ship", help="copy a finished run's models into SlicerEssNet/models and register them")
    ship.add_argument("run_dir", type=Path)
    quality = commands.add_parser("label-quality",
                                  help="how faithful the MR labels are along z, and what that costs a perfect result")
    quality.add_argument("--data-root", default=None, help="real data folder (default ../shared/data)")
    return parser


def main(argv=None) -> int:
    arguments = build_parser().parse_args(argv)

    from SlicerEssNet.errors import EssNetError

    try:
        if arguments.command == "run":
            return _run(arguments)
        if arguments.command == "ship-synthesis":
            return _ship_synthesis(arguments)
        if arguments.command == "ship-report":
            from .study.ship_report import reportable_run, write_ship_report

            run_dir = arguments.run_dir or REPO / "runs" / "ship"
            try:
                reportable_run(run_dir)
            except (FileNotFoundError, ValueError) as error:
                print(f"error: {error}", file=sys.stderr)
                return 1
            print(write_ship_report(run_dir, arguments.out))
            return 0
        if arguments.command == "report":
            from .study.report import write_report

            print(write_report(arguments.run_dir, arguments.out))
            return 0
        if arguments.command == "label-quality":
            from .data.label_quality import survey

            try:
                print("\n".join(survey(arguments.data_root)))
            except FileNotFoundError as error:
                print(f"error: {error}", file=sys.stderr)
                return 1
            return 0
        from .study.ship import ship_models

        for line in ship_models(arguments.run_dir, REPO / "SlicerEssNet" / "models"):
            print(line)
        return 0
    except EssNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def preset_for(arguments):
    """The named preset with the command line's changes (a resumed run keeps the one it recorded)."""
    import dataclasses

    preset = get_preset(arguments.preset)
    if arguments.data_root:
        preset.data.data_root = str(arguments.data_root)
    if arguments.seeds:
        preset.seeds = tuple(arguments.seeds)
    if arguments.no_seg:
        preset.synthesis = dataclasses.replace(preset.synthesis, seg_weight=0.0)
    if arguments.identity is not None:
        preset.synthesis = dataclasses.replace(preset.synthesis, lambda_identity=arguments.identity)
    apply_options(preset, arguments.overrides)
    if arguments.arms:
        preset.arms = tuple(arguments.arms)
    return preset


def _run(arguments) -> int:
    from SlicerEssNet.runtime import import_torch, select_device

    from .stages.distributed import init_distributed
    from .study.study import Study
    from .study.synthesis_source import SourceChangedError

    # Training steps are many small ops: brief spinning before sleeping (see SlicerEssNet.runtime).
    import_torch(int(os.environ["OMP_NUM_THREADS"]) if os.environ.get("OMP_NUM_THREADS") else None, wait="short_spin")
    context = init_distributed()
    device, note = select_device(arguments.device)
    if context.backend == "nccl":
        device = f"cuda:{context.local_rank}"
    if note:
        print(f"note: {note}", file=sys.stderr)
    preset = preset_for(arguments)
    run_dir = arguments.run_dir or REPO / "runs" / preset.name
    workers = arguments.workers
    if workers == "auto":
        from .study.job_pool import auto_workers

        workers = auto_workers(str(device), context.enabled)
    try:
        study = Study(run_dir, preset, context, device=str(device), seeds=arguments.seeds, workers=workers,
                      arms=arguments.arms, synthesis_from=arguments.synthesis_from)
    except (ValueError, FileNotFoundError) as error:  # what the run folder and options were checked for
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        study.run()
    except SourceChangedError as error:  # --synthesis-from moved on mid-run: nothing wrong is recorded
        print(f"error: {error}", file=sys.stderr)
        return 1
    if study.preset.run_cli_demo and context.is_main:
        from .study.demo import apply_models_with_cli

        apply_models_with_cli(study)
    return 0


def _ship_synthesis(arguments) -> int:
    from SlicerEssNet.errors import InputImageError
    from SlicerEssNet.runtime import import_torch, select_device

    from .study.ship_synthesis import MODELS, open_run, train_all

    import_torch(int(os.environ["OMP_NUM_THREADS"]) if os.environ.get("OMP_NUM_THREADS") else None, wait="short_spin")
    device, note = select_device(arguments.device)
    if note:
        print(f"note: {note}", file=sys.stderr)
    preset = apply_options(get_preset("ship"), arguments.overrides)
    tags = (arguments.only,) if arguments.only else tuple(MODELS)
    workers = arguments.workers
    if workers == "auto":
        workers = 1 if str(device) != "cpu" else 2
    run_dir = arguments.run_dir or REPO / "runs" / "ship"
    try:  # the folder, the data and the options, before anything trains
        open_run(run_dir, preset, arguments.data_root, arguments.overrides)
    except (ValueError, FileNotFoundError, InputImageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return train_all(run_dir, preset, tags, workers, str(device), arguments.data_root, overrides=arguments.overrides)


if __name__ == "__main__":
    sys.exit(main())
