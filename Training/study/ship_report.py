"""After the ship run: each model's chosen generators scored on the held-out CT patients, exported with their cards,
and REPORT.md with the figures (``python -m Training ship-report [RUN_DIR] [--out FOLDER]``).

Measured without paired truth (``judge.py``, ``synthesis_quality.py``): shape consistency per held-out CT patient,
the Nyquist ratio (checkerboard), a classifier two-sample test (realism), and a contact sheet at the CT's own
resolution with a zoomed crop. The synthesis models shipped before this run are scored the same way beside them.
Everything measured is cached in ``quality.json``; a second call only redraws and rewrites.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from SlicerEssNet.atomic import atomic_path
from SlicerEssNet.weights import file_sha256

from ..data.cohorts import load_case
from ..stages.checkpoint import read_json, write_json
from .ship_synthesis import MODELS, best_generators, open_run, run_cases

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "SlicerEssNet" / "models"
TITLES = {"essnet": "EssNet", "cyclegan": "CycleGAN (ablation)", "before": "EssNet shipped before (cpu preset)"}
LOW_SHAPE_CONSISTENCY = 0.80  # the floor for any one held-out patient


def trained_tags(run_dir) -> list:
    return [tag for tag in MODELS if read_json(Path(run_dir) / tag / "selection.json")]


def export_generators(run_dir, config: dict, tag: str, quality: dict) -> list:
    """fp16 safetensors + cards of ``tag``'s chosen generator pair in ``RUN_DIR/models``; returns the paths."""
    import torch

    from SlicerEssNet.weights import save_model

    from .cards import synthesis_card

    run_dir = Path(run_dir)
    preset = config["preset_object"]
    variant, chosen, ct_to_mr, mr_to_ct = best_generators(run_dir / tag, preset, tag)
    done = read_json(run_dir / tag / "done.json") or {}
    checkpoint_log = read_json(run_dir / tag / "selection.json")
    trained_to = max(e["iteration"] for e in checkpoint_log["scores"])
    options = preset.synthesis
    training = {
        "preset": preset.name, "data": ["BTCV", "CHAOS CT", "CHAOS MR T2-SPIR"], "split": config["split"],
        "iterations_planned": options.iterations, "iterations_trained": trained_to,
        "selected_iteration": chosen["iteration"], "selected_weights": "moving average" if variant == "average"
        else "live", "ema_decay": options.ema_decay, "crop_px": options.crop, "spacing_mm": preset.data.spacing_mm,
        "upsampling": options.upsampling, "precision": "bf16" if options.autocast_bf16 else "fp32",
        "device": done.get("device", "not recorded"), "seconds": done.get("seconds"),
        "selection": f"shape consistency on CT {', '.join(config['split']['CT']['select'])} every "
                     f"{options.select_every} iterations (judge: Training/judge/liver-unet-mr)"}
    own = quality["models"][tag]
    metrics = {"shape_consistency_3d_dice": own["shape_consistency"]["mean"],
               "shape_consistency_min": own["shape_consistency"]["min"],
               "shape_consistency_per_patient": own["shape_consistency"]["per_patient"],
               "shape_consistency_selection": chosen["mean"],
               "two_sample_accuracy": own.get("two_sample", {}).get("accuracy"),
               "two_sample_ci95": own.get("two_sample", {}).get("ci95"),
               "nyquist_ratio": own.get("nyquist_ratio"),
               "judge": "liver-unet-mr shipped 2026-12-02 (Training/judge)"}
    paths = []
    (run_dir / "models").mkdir(exist_ok=True)
    name = "essnet" if tag == "essnet" else "cyclegan"
    for direction, network in (("CT->MR", ct_to_mr), ("MR->CT", mr_to_ct)):
        suffix = "ct2mr" if direction == "CT->MR" else "mr2ct"
        card = synthesis_card(
            preset, f"{name}-{suffix}", direction, training,
            description=f"{TITLES[tag]} generator {direction} (ship preset: {preset.data.spacing_mm:g} mm grid, "
                        f"{options.upsampling} upsampling, model chosen by shape consistency), trained on unpaired "
                        f"BTCV/CHAOS CT and CHAOS T2-SPIR MR slices",
            metrics=metrics if direction == "CT->MR" else {})
        paths.append(save_model(network, card, run_dir / "models" / card.name, dtype=torch.float16))
    return paths


def measure(run_dir, config: dict, log=print, two_sample_iterations: int = 600, shipped_before: bool = True) -> dict:
    """Everything the report shows that takes computing, cached in ``quality.json``."""
    import torch

    from SlicerEssNet.weights import load_model

    from ..data.slices import build_slice_set, intensity_spec, to_model_grid
    from .cards import model_grid, synthesis_card
    from .evaluate import as_loaded_model
    from .judge import load_judge, shape_consistency, synthetic_mr
    from .synthesis_quality import liver_slices, nyquist_ratio, two_sample_test

    run_dir = Path(run_dir)
    cache_path = run_dir / "quality.json"
    quality = read_json(cache_path) or {"models": {}}
    preset = config["preset_object"]
    judge = load_judge()
    report_cases = run_cases(config, "CT", "val")
    report_volumes = {case.patient: load_case(case) for case in report_cases}
    grid = model_grid(preset)
    real_val = build_slice_set(run_cases(config, "MR", "val"), grid)
    real_train = build_slice_set(run_cases(config, "MR", "train"), grid)

    def mr_slices(slice_set) -> list:
        return [s for v in range(len(slice_set.images))
                for s in liver_slices(slice_set.images[v].float().numpy(), slice_set.labels[v].numpy())]

    def synthetic_slices(volumes: dict, livers: dict) -> list:
        # The synthetic MR as a U-Net would read it: through the MR intensity spec onto the model grid.
        out = []
        for patient, mr in volumes.items():
            images, labels = to_model_grid(mr, livers[patient], intensity_spec("MR"), grid)
            out += liver_slices(images.numpy(), labels.numpy())
        return out

    def generator_grid_output(loaded, volumes: dict) -> list:
        # The generator's raw output on its own model grid (where a checkerboard lives), liver slices only.
        own = {key: loaded.card.grid[key] for key in ("mode", "spacing_mm", "size", "multiple_of")}
        out = []
        for patient, (ct, liver) in volumes.items():
            images, labels = to_model_grid(ct, liver, intensity_spec("CT"), own)
            picked = [k for k in range(images.shape[0]) if bool(labels[k].any())][::4]
            with torch.no_grad():
                y = loaded.network(images[picked][:, None].float())[:, 0]
            out += list(y.numpy())
        return out

    candidates = []  # (tag, loaded CT -> MR model, what the run chose, or None for a model shipped as it was)
    for tag in trained_tags(run_dir):
        variant, chosen, ct_to_mr, mr_to_ct = best_generators(run_dir / tag, preset, tag)
        ct_to_mr = ct_to_mr.half().float()  # what the fp16 file gives users: the figures are the shipped model's
        candidates.append((tag, as_loaded_model(ct_to_mr, synthesis_card(preset, f"{tag}-ct2mr", "CT->MR", {})),
                           {"variant": variant, "iteration": chosen["iteration"], "selection": chosen,
                            "sha256": file_sha256(run_dir / tag / f"best-{variant}.pt")}))
    before_card = read_json(SHIPPED / "essnet-ct2mr.json")
    if shipped_before and before_card and before_card.get("training", {}).get("preset") != "ship":
        candidates.append(("before", load_model(SHIPPED / "essnet-ct2mr.safetensors"), None))

    train_ct = {c.patient: load_case(c) for c in run_cases(config, "CT", "train")[::3]}
    real_train_slices, real_val_slices = mr_slices(real_train), mr_slices(real_val)
    for tag, loaded, chosen in candidates:
        cached = quality["models"].get(tag)
        if cached and (chosen is None or cached.get("sha256") == chosen["sha256"]):
            continue  # measured before, and the run has not chosen other weights since
        if cached:
            log(f"[ship-report] {tag}: not the weights measured before (iteration {cached.get('iteration')}, "
                f"{cached.get('variant')}); measuring again")
        started = time.perf_counter()
        log(f"[ship-report] {tag}: shape consistency on {len(report_volumes)} held-out CT patients")
        kept = {}
        entry = {"shape_consistency": shape_consistency(loaded, judge, report_volumes, keep=kept)}
        entry.update(chosen or {})
        log(f"[ship-report] {tag}: two-sample test and spectrum")
        kept_train = {patient: synthetic_mr(loaded, ct) for patient, (ct, _) in train_ct.items()}
        livers_val = {p: liver for p, (_, liver) in report_volumes.items()}
        livers_train = {p: liver for p, (_, liver) in train_ct.items()}
        entry["two_sample"] = two_sample_test(real_train_slices, synthetic_slices(kept_train, livers_train),
                                              real_val_slices, synthetic_slices(kept, livers_val),
                                              iterations=two_sample_iterations)
        entry["nyquist_ratio"] = nyquist_ratio(generator_grid_output(loaded, report_volumes))
        entry["anatomy_kept"] = anatomy_kept(report_volumes, kept)
        entry["seconds"] = round(time.perf_counter() - started, 1)
        quality["models"][tag] = entry
        write_volumes(run_dir / "synthetic" / tag, kept)
        write_json(quality, cache_path)
    if "real_mr" not in quality:
        quality["real_mr"] = {"nyquist_ratio": nyquist_ratio([s for s in real_val_slices][::4])}
        write_json(quality, cache_path)
    return quality


def anatomy_kept(volumes: dict, synthetic: dict) -> dict:
    """What users see as *anatomy kept* (SlicerEssNet.anatomy): liver-unet-ct on each CT against liver-unet-mr on its
    synthetic MR, per patient; the data the warning threshold was chosen from."""
    from SlicerEssNet.pipeline import check_anatomy

    return {patient: check_anatomy(ct, synthetic[patient], device="cpu").dice for patient, (ct, _) in volumes.items()}


def write_volumes(folder: Path, volumes: dict) -> None:
    from SlicerEssNet.io.volume_files import write_volume

    folder.mkdir(parents=True, exist_ok=True)
    for patient, mr in volumes.items():
        write_volume(mr.with_array(np.clip(np.rint(mr.array), -32768, 32767).astype(np.int16)),
                     folder / f"{patient}_mr.nii.gz")


def contact_sheet(run_dir, config: dict, quality: dict, path: Path, rows: int = 3) -> None:
    """CT / each model's synthetic MR at the CT's own resolution, and below each a 2.5x zoom on the liver."""
    from SlicerEssNet.geometry import CanonicalFrame
    from SlicerEssNet.io.volume_files import read_volume

    from .figures import pyplot, save_figure
    from .translate import mid_liver_slice

    plt = pyplot()
    models = [tag for tag in ("essnet", "cyclegan", "before") if tag in quality["models"]]
    cases = run_cases(config, "CT", "val")[:rows]
    columns = 1 + len(models)
    figure, axes = plt.subplots(2 * len(cases), columns, figsize=(3.4 * columns, 6.8 * len(cases)), squeeze=False)
    for row, case in enumerate(cases):
        ct, liver = load_case(case)
        frame = CanonicalFrame.of(ct)
        label = frame.to_canonical(liver.array)
        k = mid_liver_slice(label)
        panels = [("CT", frame.to_canonical(ct.array)[k], (-125, 275))]
        for tag in models:
            image = frame.to_canonical(read_volume(Path(run_dir) / "synthetic" / tag / f"{case.patient}_mr.nii.gz")
                                       .array)[k]
            score = quality["models"][tag]["shape_consistency"]["per_patient"][case.patient]
            panels.append((f"{TITLES[tag]}\nshape consistency {score:.3f}", image,
                           tuple(np.percentile(image, [0.5, 99.5]))))
        rows_, cols_ = np.nonzero(label[k])
        centre = (int(rows_.mean()), int(cols_.mean())) if rows_.size else (label.shape[1] // 2, label.shape[2] // 2)
        half = 48
        top, left = max(0, centre[0] - half), max(0, centre[1] - half)
        for column, (title, image, (low, high)) in enumerate(panels):
            for zoom in (False, True):
                axis = axes[2 * row + zoom, column]
                shown = image[top:top + 2 * half, left:left + 2 * half] if zoom else image
                outline = label[k][top:top + 2 * half, left:left + 2 * half] if zoom else label[k]
                axis.imshow(shown, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
                axis.contour(outline, levels=[0.5], colors="tab:orange", linewidths=0.6)
                if not zoom:
                    axis.add_patch(plt.Rectangle((left, top), 2 * half, 2 * half, fill=False, color="tab:cyan",
                                                 linewidth=0.6))
                axis.set_xticks([])
                axis.set_yticks([])
                if row == 0 and not zoom:
                    axis.set_title(title.split("\n")[0], fontsize=9)
                if not zoom and column:
                    axis.set_xlabel(title.split("\n")[1], fontsize=8)
                if column == 0:
                    axis.set_ylabel(case.patient + (" (zoom)" if zoom else ""), fontsize=8)
    # Two lines and a reserved band: with one model the sheet is two panels wide, too narrow for one line.
    figure.suptitle("held-out CT patients at the CT's own resolution\n(orange: CT liver label; cyan: the zoomed "
                    "area, 1 image pixel = 1 screen block)", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.45 / figure.get_figheight()))
    save_figure(figure, path)


def selection_curves(run_dir, path: Path) -> None:
    from .figures import pyplot, save_figure

    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for tag in trained_tags(run_dir):
        record = read_json(Path(run_dir) / tag / "selection.json")
        for variant, style in (("live", "-"), ("average", "--")):
            points = [(e["iteration"], e[variant]["mean"]) for e in record["scores"] if variant in e]
            if points:
                x, y = zip(*sorted(points))
                axes[0].plot(x, y, style, marker=".", label=f"{tag} {variant}")
        checkpoint = Path(run_dir) / tag / "checkpoint.pt"
        if checkpoint.exists():
            from ..stages.checkpoint import load_checkpoint

            history = load_checkpoint(checkpoint)["history"]
            points = [(h["iteration"], h["cycle"]) for h in history if "cycle" in h]
            if points:
                x, y = zip(*points)
                axes[1].plot(x, y, linewidth=0.8, label=tag)
    axes[0].set_title("shape consistency on the selection CT patients", fontsize=9)
    axes[0].set_xlabel("iteration")
    axes[0].legend(fontsize=7)
    axes[1].set_title("cycle L1 (x10)", fontsize=9)
    axes[1].set_xlabel("iteration")
    axes[1].legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)


def trained_iterations(run_dir) -> dict:
    """tag -> the last iteration its selection scored (a run stopped early was trained that far)."""
    records = {tag: read_json(Path(run_dir) / tag / "selection.json") or {} for tag in MODELS}
    return {tag: max(entry["iteration"] for entry in record["scores"])
            for tag, record in records.items() if record.get("scores")}


def regenerate_line(preset, trained: dict, run_dir=None, out=None) -> str:
    """The commands that make this run again: ``--only`` when one model was trained, ``--set`` for changed options,
    the run folder unless it is the default ``runs/ship``."""
    from .presets import changed_options, get_preset
    from .report import _shown_path as shown

    train, report = "python -m Training ship-synthesis", "python -m Training ship-report"
    if run_dir is not None and shown(run_dir) != "runs/ship":
        train += f" --run-dir {shown(run_dir)}"
        report += f" {shown(run_dir)}"
    if len(trained) == 1:
        train += f" --only {next(iter(trained))}"
    train += "".join(f" --set {option}" for option in changed_options(preset, get_preset("ship")))
    folder = "FOLDER" if out is None else shown(out)
    return f"Regenerate: `{train}` (train or resume), then `{report} --out {folder}`."


def markdown(config: dict, quality: dict, figures: list, trained: dict = None, run_dir=None, out=None) -> str:
    trained = trained or {}
    preset = config["preset_object"]
    options = preset.synthesis
    split = config["split"]["CT"]
    lines = ["# Ship run: the synthesis models", "",
             f"Preset `ship`: {preset.data.spacing_mm:g} mm grid, {options.crop} px crops, ngf {options.ngf}, "
             f"{options.upsampling} upsampling, {'bf16' if options.autocast_bf16 else 'fp32'}, "
             f"{options.iterations} iterations planned (linear decay from {options.decay_from}); every "
             f"{options.select_every} iterations the fixed judge scores the live generators and their moving "
             f"average (decay {options.ema_decay:g}) on CT {', '.join(split['select'])}; the best is kept. "
             f"Scores below are on CT {', '.join(split['val'])}, which played no part in training or choosing.", "",
             regenerate_line(preset, trained, run_dir, out), "",
             "| model | chosen | shape consistency (mean) | lowest patient | two-sample accuracy (95 % CI) | "
             "Nyquist ratio |", "|---|---|---|---|---|---|"]
    for tag in ("essnet", "cyclegan", "before"):
        entry = quality["models"].get(tag)
        if not entry:
            continue
        chosen = (f"iteration {entry['iteration']} of {trained.get(tag, '?')}, {entry['variant']}"
                  if "iteration" in entry else "as shipped")
        two = entry["two_sample"]
        lines.append(f"| {TITLES[tag]} | {chosen} | {entry['shape_consistency']['mean']:.3f} | "
                     f"{entry['shape_consistency']['min']:.3f} | {two['accuracy']:.3f} "
                     f"({two['ci95'][0]:.3f}-{two['ci95'][1]:.3f}, {two['test_slices']} slices) | "
                     f"{entry['nyquist_ratio']:.2f} |")
    if {"essnet", "cyclegan"} <= set(quality["models"]):
        gain = (quality["models"]["essnet"]["shape_consistency"]["mean"]
                - quality["models"]["cyclegan"]["shape_consistency"]["mean"])
        lines += ["", f"The segmentation branch (EssNet minus the plain CycleGAN, same recipe, seed and judge): "
                      f"{gain:+.3f} shape consistency (target: +0.05 or more)."]
    lines += ["", f"Real T2 MR (held-out patients): Nyquist ratio {quality['real_mr']['nyquist_ratio']:.2f}.", "",
              "Per held-out CT patient (shape consistency, 3D Dice of the judge's liver on the synthetic MR against "
              "the CT liver label):", ""]
    tags = [t for t in ("essnet", "cyclegan", "before") if t in quality["models"]]
    lines += ["| patient | " + " | ".join(TITLES[t] for t in tags) + " |", "|---" * (1 + len(tags)) + "|"]
    for patient in split["val"]:
        lines.append(f"| {patient} | " + " | ".join(
            f"{quality['models'][t]['shape_consistency']['per_patient'][patient]:.3f}" for t in tags) + " |")
    lines += ["", "*Anatomy kept* (what users see after CT -> MR: liver-unet-ct on the CT against liver-unet-mr on the "
              "synthetic MR; the warning shows under 0.80):", "",
              "| patient | " + " | ".join(TITLES[t] for t in tags) + " |", "|---" * (1 + len(tags)) + "|"]
    for patient in split["val"]:
        lines.append(f"| {patient} | " + " | ".join(
            f"{quality['models'][t].get('anatomy_kept', {}).get(patient, float('nan')):.3f}" for t in tags) + " |")
    lines += ["", "How to read it:",
              "- Shape consistency: the judge is the MR liver U-Net shipped on 2026-12-02 (`Training/judge/`), kept "
              "fixed so numbers compare across runs; on real T2 MR it scores about 0.91.",
              "- Two-sample test: a small CNN trained to tell real MR slices (CHAOS training patients) from synthetic "
              "ones (every third CT training patient), tested on held-out patients of both, balanced; 0.5 means it "
              "cannot tell them apart. Slices of one patient are correlated, so the interval is optimistic.",
              "- Nyquist ratio: power on the Nyquist lines of the generator's output on its own grid over the power "
              "just inside them; a period-2 checkerboard lifts it far above real MR's.", ""]
    lines += [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def reportable_run(run_dir) -> dict:
    """The run's config when it is a ship run with a selected model; otherwise one line saying what to do
    (``FileNotFoundError`` / ``ValueError``), before anything is measured or written."""
    config = open_run(run_dir, None)
    if not trained_tags(run_dir):
        raise FileNotFoundError(f"{run_dir} has no selected model yet: train first (python -m Training "
                                f"ship-synthesis --run-dir {run_dir}; the first selection comes after "
                                f"{config['preset_object'].synthesis.select_every} iterations)")
    return config


def write_ship_report(run_dir, out=None, log=print, two_sample_iterations: int = 600,
                      shipped_before: bool = True) -> Path:
    """``shipped_before``: also score the synthesis model shipped before this run (when it came from elsewhere)."""
    run_dir = Path(run_dir)
    config = reportable_run(run_dir)
    quality = measure(run_dir, config, log, two_sample_iterations, shipped_before)
    for tag in trained_tags(run_dir):
        export_generators(run_dir, config, tag, quality)
    figures = ["contact_sheet.png", "selection.png"]
    contact_sheet(run_dir, config, quality, run_dir / figures[0])
    selection_curves(run_dir, run_dir / figures[1])
    report = run_dir / "REPORT.md"
    with atomic_path(report) as temporary:
        temporary.write_text(markdown(config, quality, figures, trained_iterations(run_dir), run_dir, out))
    if out is not None and Path(out).resolve() != run_dir.resolve():
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        from .report import _small_png

        for name in figures:  # palette PNGs: a committed report stays small
            _small_png(run_dir / name, out / name)
        for name in ("REPORT.md", "quality.json"):
            with atomic_path(out / name) as temporary:
                shutil.copyfile(run_dir / name, temporary)
        write_json({k: v for k, v in config.items() if k != "preset_object"}, out / "config.json")
        return out / "REPORT.md"
    return report
