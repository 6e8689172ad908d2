"""The shipped synthesis models' own long run (``python -m Training ship-synthesis``): EssNet and the plain-CycleGAN
ablation on one budget, each choosing its model inside the run.

GAN training drifts: a 12,000-iteration run read 0.823 shape consistency at iteration 3,500 and 0.623 at 10,000
(``docs/EXPERIMENTS.md``). So every ``select_every`` iterations the fixed judge (``judge.py``) reads the synthetic
MR of the selection CT patients, and the generator pair that scored best so far is written beside the checkpoint,
for the live weights and for their moving average alike. The patients a run reports on (``ct_val``) are not the
ones it selects on (``ct_select``, taken out of training).

Run folder: ``config.json`` (preset, split), ``<tag>/`` per model (``checkpoint.pt``, ``selection.json``,
``best-<variant>.pt``, ``done.json``). Everything is written atomically; the same command resumes.
"""
from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

from ..data.cohorts import load_case, make_split, real_cases, select
from ..stages.checkpoint import load_checkpoint, read_json, save_checkpoint, write_json

MODELS = {"essnet": True, "cyclegan": False}  # tag -> with the segmentation branch
VARIANTS = ("live", "average")  # the generators as trained, and their moving average


def ship_split(cases: dict, preset) -> dict:
    """The study's split (seed 0: the same 5 held-out CT patients every earlier report used) plus
    ``ct_select_patients`` more CT patients taken out of training, on which the run chooses its model."""
    data = preset.data
    split = make_split(cases, data.ct_val_patients, data.mr_val_patients, data.low_data_patients, seed=0)
    train = sorted(split["CT"]["train"])
    if not 1 <= data.ct_select_patients < len(train):
        raise ValueError(f"data.ct_select_patients={data.ct_select_patients}: the run chooses its model on 1 to "
                         f"{len(train) - 1} of the {len(train)} CT training patients left after "
                         f"{data.ct_val_patients} held out")
    chosen = sorted(random.Random(202).sample(train, data.ct_select_patients))
    split["CT"]["select"] = chosen
    split["CT"]["train"] = [patient for patient in train if patient not in chosen]
    return split


def is_ship_run(folder) -> bool:
    """A ship-synthesis run folder: its ``config.json`` has the split with the selection CT patients."""
    config = read_json(Path(folder) / "config.json")
    return bool(config) and "select" in config.get("split", {}).get("CT", {})


def open_run(run_dir, preset, data_root=None, overrides=()) -> dict:
    """``config.json`` of the run folder, written on first use; a resumed run keeps what it recorded.
    ``preset`` None: read an existing run only. ``overrides``: the ``--set`` options, ``(section, field, value)``,
    which shape a new run only, so one that disagrees with a resumed run's record is refused."""
    from .presets import option_text, preset_from_dict

    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    if config is not None and not is_ship_run(run_dir):
        raise ValueError(f"{run_dir} is not a ship-synthesis run folder (its config.json has no selection split): "
                         "give the folder python -m Training ship-synthesis wrote, or a new --run-dir")
    if config is None:
        if preset is None:
            raise FileNotFoundError(f"{run_dir} is not a ship-synthesis run folder (no config.json): train first "
                                    f"with python -m Training ship-synthesis --run-dir {run_dir}")
        if preset.synthesis.select_every < 1:
            raise ValueError("synthesis.select_every must be at least 1: the run keeps the model it selects")
        cases = real_cases(data_root)
        if not cases["CT"] or not cases["MR"]:
            from SlicerEssNet.errors import InputImageError

            raise InputImageError(f"no real CT/MR found under {data_root or '../shared/data'}: the ship run "
                                  f"trains on the real data only")
        config = {"preset": preset.to_dict(), "split": ship_split(cases, preset),
                  "cases": {m: [c.to_dict() for c in cs] for m, cs in cases.items()}, "command": sys.argv,
                  "python": platform.python_version(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(config, run_dir / "config.json")
    config["preset_object"] = recorded = preset_from_dict(config["preset"])
    for section, name, value in overrides:
        if getattr(getattr(recorded, section), name) != value:
            was = option_text(section, name, getattr(getattr(recorded, section), name))
            raise ValueError(f"{run_dir} was started with {was}: --set {option_text(section, name, value)} shapes "
                             "a new run only; give another --run-dir, or leave the --set out to resume")
    return config


def run_cases(config: dict, modality: str, part: str) -> list:
    from ..data.cohorts import Case

    cases = [Case(**{**c, "other_organs": tuple(c.get("other_organs", ()))}) for c in config["cases"][modality]]
    return select(cases, config["split"][modality][part])


class Selection:
    """Shape consistency of the candidates through the run, and the best generator pair of each variant on disk."""

    def __init__(self, job_dir, cases, judge, card_of):
        self.job_dir = Path(job_dir)
        self.path = self.job_dir / "selection.json"
        self.record = with_kept_weights(self.job_dir, read_json(self.path) or {"scores": [], "best": {}})
        self.volumes = {case.patient: load_case(case) for case in cases}
        self.judge = judge
        self.card_of = card_of  # network -> an in-memory LoadedModel for the engine

    def score(self, network) -> dict:
        from .judge import shape_consistency

        return shape_consistency(self.card_of(network), self.judge, self.volumes)

    def consider(self, iteration: int, candidates: dict) -> dict:
        """``candidates``: variant -> (CT->MR network, MR->CT network). Scores each, keeps each variant's best."""
        scalars = {}
        entry = {"iteration": iteration}
        for variant, (ct_to_mr, mr_to_ct) in candidates.items():
            scores = self.score(ct_to_mr)
            entry[variant] = scores
            scalars[f"select_{variant}"] = scores["mean"]
            best = self.record["best"].get(variant)
            if best is None or scores["mean"] > best["mean"]:
                kept = {"iteration": iteration, **scores}
                # The weights carry their own record: written first, they stay right if selection.json is not.
                save_checkpoint({"ct_to_mr": ct_to_mr.state_dict(), "mr_to_ct": mr_to_ct.state_dict(),
                                 "selected": kept}, self.job_dir / f"best-{variant}.pt")
                self.record["best"][variant] = kept
        # A resumed run scores an iteration again: the newer entry replaces the older one.
        self.record["scores"] = [e for e in self.record["scores"] if e["iteration"] != iteration] + [entry]
        write_json(self.record, self.path)
        return scalars


def _device_text(device: str) -> str:
    """What the model card says it trained on: the GPU's name, or the CPU threads."""
    import torch

    if str(device).startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({torch.get_num_threads()} threads)"


def train_selected(job_dir, config: dict, tag: str, device: str = "cpu", stream=None):
    """Train (or resume) one synthesis model of the ship run, choosing its best generator pair as it goes."""
    import torch

    from SlicerEssNet.geometry import GridSpec  # noqa: F401  (imported before the loop: no lazy import mid-run)

    from ..data.slices import build_slice_set
    from ..stages.distributed import DistributedContext, unwrap
    from ..stages.essnet import EssNetModel
    from ..stages.loop import job_done, mark_done, run_loop
    from ..stages.train_synthesis import synthesis_options, unpaired_step
    from ..stages.weight_average import WeightAverage
    from .cards import model_grid, synthesis_card
    from .evaluate import as_loaded_model
    from .judge import load_judge

    preset = config["preset_object"]
    essnet = MODELS[tag]
    options = synthesis_options(preset, essnet)
    seed = preset.seeds[0]
    job_dir = Path(job_dir)
    if job_done(job_dir) is not None:
        return
    context = DistributedContext()
    grid = model_grid(preset)
    ct_set = build_slice_set(run_cases(config, "CT", "train"), grid)
    mr_set = build_slice_set(run_cases(config, "MR", "train"), grid)
    model = EssNetModel(options, context, device=device, seed=seed)
    sides = unwrap(model.generators)
    averages = {}
    if options.ema_decay > 0:
        averages = {name: WeightAverage(getattr(sides, name), options.ema_decay) for name in ("ct_to_mr", "mr_to_ct")}
    card = synthesis_card(preset, f"{tag}-ct2mr", "CT->MR", {})
    selection = Selection(job_dir, run_cases(config, "CT", "select"), load_judge(),
                          lambda network: as_loaded_model(network, card))
    total = options.iterations

    def step(iteration: int) -> dict:
        record = unpaired_step(model, ct_set, mr_set, options, preset.data, seed, iteration, total, context)
        for name, average in averages.items():
            average.update(getattr(sides, name))
        return record

    def after_step(done: int, record: dict):
        if not options.select_every or (done % options.select_every and done != total):
            return None
        candidates = {"live": (sides.ct_to_mr, sides.mr_to_ct)}
        if averages:
            candidates["average"] = (averages["ct_to_mr"].network, averages["mr_to_ct"].network)
        with torch.no_grad():
            return selection.consider(done, candidates)

    def get_state() -> dict:
        return {**model.state_dict(), "averages": {name: a.state_dict() for name, a in averages.items()}}

    def set_state(state: dict) -> None:
        model.load_state_dict(state)
        for name, average in averages.items():
            average.load_state_dict(state["averages"][name])

    final = run_loop(job_dir, label=tag, total=total, step=step, get_state=get_state, set_state=set_state,
                     checkpoint_every=options.checkpoint_every, context=context, after_step=after_step, stream=stream)
    mark_done(job_dir, {"iterations": total, "essnet": essnet, "seed": seed, "seconds": final["seconds"],
                        "device": _device_text(device), "best": selection.record["best"]})


def train_all(run_dir, preset, tags=tuple(MODELS), workers: int = 1, device: str = "cpu", data_root=None,
              stream=None, overrides=()) -> int:
    """Train every model in ``tags``: one after the other, or side by side in ``workers`` processes (one thread
    each). Returns 0 when all are done."""
    stream = stream or sys.stderr
    run_dir = Path(run_dir)
    config = open_run(run_dir, preset, data_root, overrides)
    if workers <= 1 or len(tags) == 1:
        for tag in tags:
            train_selected(run_dir / tag, config, tag, device, stream)
        return 0
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    children = []
    for tag in tags:
        log = open(run_dir / f"{tag}.log", "a")
        print(f"[ship] training {tag} in its own process (log: {run_dir / f'{tag}.log'})", file=stream, flush=True)
        children.append((tag, log, subprocess.Popen(
            [sys.executable, "-m", "Training", "ship-synthesis", "--run-dir", str(run_dir), "--only", tag,
             "--device", device], env=environment, stdout=log, stderr=subprocess.STDOUT)))
    stopped = []
    try:  # the first failure stops the rest (they resume from their checkpoints): no waiting hours to hear of it
        while True:
            failed = [tag for tag, _, child in children if child.poll() not in (None, 0)]
            if failed or all(child.poll() is not None for _, _, child in children):
                break
            time.sleep(2)
    finally:
        for tag, log, child in children:
            if child.poll() is None:
                stopped.append(tag)
                child.terminate()
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
            log.close()
    if failed:
        logs = ", ".join(str(run_dir / f"{tag}.log") for tag in failed)
        also = f"; stopped {', '.join(stopped)} too" if stopped else ""
        print(f"error: training {', '.join(failed)} failed: see {logs}{also}; the same command resumes",
              file=stream)
        return 1
    return 0


def with_kept_weights(job_dir, record: dict) -> dict:
    """``record`` with each variant's best as its weights file records it: the file is written before
    ``selection.json``, so a weights file newer than the JSON is one whose record did not reach it (a run stopped
    between the two). Only such a file is read; older files carry no record."""
    written = Path(job_dir) / "selection.json"
    written = written.stat().st_mtime_ns if written.exists() else 0
    for variant in VARIANTS:
        path = Path(job_dir) / f"best-{variant}.pt"
        if path.exists() and path.stat().st_mtime_ns > written:
            kept = load_checkpoint(path).get("selected")
            if kept:
                record["best"][variant] = kept
    return record


def chosen_variant(record: dict) -> str:
    """The variant (``live`` or ``average``) whose best scored highest: the run's model."""
    return max(record["best"], key=lambda v: record["best"][v]["mean"])


def selection_record(job_dir) -> dict:
    """The model's ``selection.json``, or ``FileNotFoundError`` saying how to get one."""
    record = read_json(Path(job_dir) / "selection.json")
    if record:
        record = with_kept_weights(job_dir, record)
    if not record or not record["best"]:
        raise FileNotFoundError(f"{job_dir} has no selected model yet: train it first (python -m Training "
                                f"ship-synthesis --run-dir {Path(job_dir).parent})")
    return record


def best_generators(job_dir, preset, tag: str):
    """``(variant, record, ct_to_mr, mr_to_ct)`` of the best candidate the run kept, as float32 networks."""
    import torch

    from SlicerEssNet.networks import build_network

    from ..stages.essnet import generator_architecture

    record = selection_record(job_dir)
    variant = chosen_variant(record)
    state = load_checkpoint(Path(job_dir) / f"best-{variant}.pt")
    networks = []
    for direction in ("ct_to_mr", "mr_to_ct"):
        network = build_network(generator_architecture(preset.synthesis))
        network.load_state_dict(state[direction])
        networks.append(network.float().eval())
    with torch.no_grad():
        return variant, record["best"][variant], networks[0], networks[1]
