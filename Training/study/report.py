"""REPORT.md and its figures from a run folder: ``python -m Training report RUN_DIR [--out FOLDER]``.

Everything comes from ``results.json`` (curves included) plus the contact sheets the run drew from its synthetic
volumes, so the report of a finished run can be rebuilt anywhere, and ``--out`` makes a small folder (results,
report, PNGs) fit to commit.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from SlicerEssNet.atomic import atomic_path

from ..data.cohorts import REPO
from .figures import pyplot, save_figure
from .presets import ARM_RECIPES, RESTYLED_CT, choose_shipped_arm, get_preset

# Rafiq et al. 2025 (via a third-party summary; see /work/shared/reference/method-anchors.md) and CHAOS.
PAPER = {
    "real": {"pooled_dice_2d": 0.9459, "pooled_iou_2d": 0.8974, "what": "U-Net, 350 real MR slices"},
    "real+essnet": {"pooled_dice_2d": 0.9524, "pooled_iou_2d": 0.9091,
                    "what": "U-Net, 350 real + 714 EssNet synthetic slices"},
    "real+cyclegan": {"what": "plain CycleGAN ablation: 'geometric distortions, no significant gain' (no number)"},
}
CHAOS_BEST_MR_LIVER = "CHAOS Task 3 best MR liver: 3D Dice 0.95 +- 0.01, MSSD 20.85 +- 10.63 mm (hidden test set)"
ARM_TITLES = {
    "real": "real MR only",
    "real+essnet": "real + EssNet synthetic MR",
    "real+cyclegan": "real + CycleGAN synthetic MR (ablation)",
    "real+ct": "real MR + CT with random appearance (beyond the paper)",
    "low5": "low data: {n} real patients",
    "low5+essnet": "low data: {n} real + EssNet synthetic",
    "low5+cyclegan": "low data: {n} real + CycleGAN synthetic",
    "monai": "peer: MONAI UNet (residual units, DiceCE), real only",
}
COLUMNS = (("pooled_dice_2d", "2D Dice (pooled)", 4), ("pooled_iou_2d", "2D IoU (pooled)", 4),
           ("mean_dice", "3D Dice", 4), ("mean_ravd", "RAVD %", 2), ("mean_assd", "ASSD mm", 2),
           ("mean_mssd", "MSSD mm", 1))


def _cell(stat: dict, digits: int) -> str:
    if not stat or stat.get("n", 0) == 0 or not math.isfinite(stat["mean"]):
        return "-"
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" ± {stat['sd']:.{digits}f}" if stat["n"] > 1 else "")


def plot_stage1(results: dict, path: Path) -> None:
    plt = pyplot()
    keys = (("cycle", "cycle L1 (x10)"), ("G_adv_mr", "G adversarial (MR)"), ("D_mr", "D_MR"), ("seg", "segmentation"))
    figure, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8))
    for seed, run in results["per_seed"].items():
        for tag, stage in run["stage1"].items():
            history = stage["history"]
            for axis, (key, title) in zip(axes, keys):
                points = [(h["iteration"], h[key]) for h in history if key in h]
                if points:
                    x, y = zip(*points)
                    axis.plot(x, y, label=f"{tag} s{seed}", linewidth=1)
                axis.set_title(title, fontsize=9)
                axis.set_xlabel("iteration", fontsize=8)
    axes[0].legend(fontsize=7)
    figure.suptitle("stage 1: EssNet vs the plain-CycleGAN ablation (logged every 25 iterations)", fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)


def plot_stage2(results: dict, path: Path) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for seed, run in results["per_seed"].items():
        for arm, data in run["arms"].items():
            history = data["history"]
            validation = [(h["iteration"], h["val_dice"]) for h in history if "val_dice" in h]
            losses = [(h["iteration"], h["loss"]) for h in history if "loss" in h]
            if validation:
                axes[0].plot(*zip(*validation), label=f"{arm} s{seed}", linewidth=1)
            if losses:
                axes[1].plot(*zip(*losses), label=f"{arm} s{seed}", linewidth=1)
    axes[0].set_title("validation: mean 3D liver Dice", fontsize=9)
    axes[0].set_ylim(0.5, 1.0)
    axes[1].set_title("training loss (CE + Dice; MONAI: DiceCE)", fontsize=9)
    for axis in axes:
        axis.set_xlabel("iteration", fontsize=8)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)


def plot_per_patient(results: dict, path: Path) -> None:
    """Per-validation-patient 3D Dice of every arm (first seed): where the differences come from."""
    plt = pyplot()
    run = results["per_seed"][str(results["seeds"][0])]
    arms = list(run["arms"])
    patients = sorted(run["arms"][arms[0]]["scores"]["per_volume"])
    figure, axis = plt.subplots(figsize=(1.2 + 0.9 * len(arms), 3))
    width = 0.8 / max(1, len(patients))
    for p, patient in enumerate(patients):
        values = [run["arms"][a]["scores"]["per_volume"][patient]["dice"] for a in arms]
        axis.bar([i + p * width for i in range(len(arms))], values, width, label=patient)
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(arms))])
    axis.set_xticklabels(arms, rotation=30, fontsize=7)
    axis.set_ylim(0.6, 1.0)
    axis.set_ylabel("3D Dice", fontsize=8)
    axis.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    save_figure(figure, path)


def markdown(results: dict, config: dict, figures: list) -> str:
    preset = results["preset"]
    seeds = results["seeds"]
    split = results["split"]
    timings = results.get("timings", {})
    lines = [f"# EssNet study, preset `{preset['name']}`", ""]
    per_seed = seconds_by_seed(timings)
    spent = ", ".join(f"{seed} {value / 60:.0f}" for seed, value in per_seed.items() if seed.startswith("seed"))
    clock = _wall_clock_text(results.get("wall_clock") or {})
    # With a seed's own clock (wall_clock.json), the jobs' times are what they cost, not the wall time.
    spent_what = f"on the clock {clock}; the jobs' own clocks add up to" if clock else "wall time"
    lines += [f"Seeds {seeds} (mean ± sd over seeds where more than one). Finished {results.get('finished', '?')}; "
              f"{spent_what} {sum(timings.values()) / 60:.0f} min ({spent} min; every job, retried stage-1 attempts "
              "included, is timed in results.json).", ""]
    seed_option = f" --seeds {' '.join(str(seed) for seed in seeds)}" if len(seeds) > 1 else ""
    seed_option += _changed_options(preset)
    if results.get("synthesis_from"):
        seed_option += f" --synthesis-from {_shown_path(results['synthesis_from'])}"
    lines += ["Regenerate: `python -m Training run --preset " + preset["name"] + seed_option + "` (resumes where it stopped), then "
              "`python -m Training report RUN_DIR --out FOLDER` for this page and every figure.", ""]
    lines += ["## Liver segmentation on held-out real MR patients", "",
              f"Validation patients (never trained on): {', '.join(split['MR']['val'])}. Scores are computed on each "
              "patient's native grid after the core pipeline (the same engine, grid and preprocessing the CLI and "
              "Slicer use; largest connected component kept). 2D Dice/IoU pool one confusion matrix over every "
              "validation slice (the paper's form: IoU = D/(2-D)); 3D Dice, RAVD, ASSD, MSSD are per volume, then "
              "averaged (CHAOS form).", ""]
    header = "| arm | " + " | ".join(title for _, title, _ in COLUMNS) + " | paper 2D Dice / IoU |"
    lines += [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for arm, metrics in results["summary"].items():
        paper = PAPER.get(arm, {})
        paper_text = (f"{paper['pooled_dice_2d']:.4f} / {paper['pooled_iou_2d']:.4f}" if "pooled_dice_2d" in paper
                      else ("no number" if paper else ""))
        title = ARM_TITLES.get(arm, arm).format(n=len(split["MR_low_data"]))
        lines.append(f"| {title} | " + " | ".join(_cell(metrics.get(key), digits)
                                                                     for key, _, digits in COLUMNS)
                     + f" | {paper_text} |")
    lines += ["", f"Anchor: {CHAOS_BEST_MR_LIVER}.", ""]
    summary = results["summary"]
    if "real" in summary and "real+essnet" in summary:
        gain = summary["real+essnet"]["pooled_dice_2d"]["mean"] - summary["real"]["pooled_dice_2d"]["mean"]
        gain_iou = summary["real+essnet"]["pooled_iou_2d"]["mean"] - summary["real"]["pooled_iou_2d"]["mean"]
        gain3d = summary["real+essnet"]["mean_dice"]["mean"] - summary["real"]["mean_dice"]["mean"]
        lines += [f"EssNet synthetic MR changes the pooled 2D Dice by {gain:+.4f} and IoU by {gain_iou:+.4f} "
                  f"(paper: +0.0065 / +0.0117), and the mean 3D Dice by {gain3d:+.4f}.", ""]
    first = results["per_seed"][str(seeds[0])]["arms"]
    if "real" in first:
        per_volume = first["real"]["scores"]["per_volume"]
        worst = min(per_volume, key=lambda p: per_volume[p]["dice"])
        cells = ", ".join(f"{arm} {data['scores']['per_volume'][worst]['dice']:.3f}" for arm, data in first.items())
        others = [v["dice"] for p, v in per_volume.items() if p != worst]
        lines += [f"Per patient (seed {seeds[0]}): the hardest validation patient is {worst} (3D Dice: {cells}); "
                  f"the real-only U-Net's mean over the other {len(others)} patients is "
                  f"{sum(others) / max(1, len(others)):.4f}. See per_patient_dice.png.", ""]
    if "monai" in summary and "real" in summary:
        lead = summary["real"]["mean_dice"]["mean"] - summary["monai"]["mean_dice"]["mean"]
        lines += [f"Classic U-Net vs the MONAI peer (same split, crop, iterations and optimiser budget): 3D Dice "
                  f"{lead:+.4f} in favour of the {'classic U-Net' if lead >= 0 else 'MONAI UNet'}.", ""]
    if preset["name"] == "cpu" and "real" in summary:
        def dice(arm):
            return summary.get(arm, {}).get("mean_dice", {}).get("mean", float("nan"))

        # The shipped U-Net's arm (results written before it was recorded: the same rule again).
        shipped = results.get("shipped_arm") or choose_shipped_arm(preset.get("ship_arm", ""), summary)
        peer, real = dice("monai"), dice("real")
        def verdict(ok):
            return "met" if ok else "not met"

        if preset.get("ship_arm") in ("", None, shipped):  # the arm the preset ships ran here
            target = (f"Targets of the `cpu` preset: per-volume 3D liver Dice >= 0.92 - "
                      f"**{verdict(dice(shipped) >= 0.92)}** (the shipped U-Net's arm {shipped}: {dice(shipped):.4f})")
            if "monai" in summary:
                target += (f"; ahead of the MONAI peer - that arm **{verdict(dice(shipped) > peer)}** "
                           f"({dice(shipped):.4f} vs {peer:.4f}), like for like (both on real MR only) "
                           f"**{verdict(real > peer)}** ({real:.4f} vs {peer:.4f})")
            lines += [target + ".", ""]
        lines += _time_target_lines(preset, seeds, timings, verdict, results.get("wall_clock") or {})
    lines += _tta_lines(results)
    lines += _other_mr_lines(results, figures)
    lines += _on_ct_lines(results)
    shape = results.get("shape_consistency", {})
    if shape:
        lines += ["## Shape consistency of the synthesis models", "",
                  f"The real-only U-Net reads each model's synthetic MR of the held-out CT patients "
                  f"({', '.join(split['CT']['val'])}); scores are against the CT liver label. A translation that "
                  "keeps the anatomy in place scores high.", "",
                  "| synthesis model | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
                  "|" + "---|" * (len(COLUMNS) + 1)]
        for tag, metrics in shape.items():
            name = {"essnet": "EssNet (with segmentation branch)", "cyclegan": "plain CycleGAN (ablation)"}[tag]
            lines.append(f"| {name} | " + " | ".join(_cell(metrics.get(key), d) for key, _, d in COLUMNS) + " |")
        lines.append("")
        lines += _gate_lines(preset, results)
        if {"essnet", "cyclegan"} <= set(shape):
            difference = shape["essnet"]["mean_dice"]["mean"] - shape["cyclegan"]["mean_dice"]["mean"]
            lines += [f"The segmentation branch changes shape consistency by {difference:+.4f} 3D Dice (EssNet minus "
                      f"plain CycleGAN); the paper reports that the plain CycleGAN distorts geometry.", ""]
    lines += ["## How this run differs from the paper, and why", ""]
    lines += _differences(preset, results)
    lines += ["", "## Set-up", ""]
    lines += [f"- Data: CT {len(split['CT']['train'])} training / {len(split['CT']['val'])} held-out patients; "
              f"MR {len(split['MR']['train'])} training / {len(split['MR']['val'])} validation patients; low-data "
              f"arms: {', '.join(split['MR_low_data'])}. Patient-level split, seed {split['seed']}.",
              f"- Grid: {preset['data']['spacing_mm']} mm pixels (the core's GridSpec, spacing mode, multiple of "
              f"{preset['data']['multiple_of']}); training crops "
              + ("" if results.get("synthesis_from") else f"{preset['synthesis']['crop']} px (stage 1) and ")
              + f"{preset['segmentation'].get('crop', preset['data']['crop'])} px (stage 2), whole slices in use; "
              "small affine + intensity jitter"
              + (f", liver-only contrast jitter exp(±{preset['data']['organ_contrast']:g}) in stage 2"
                 if preset["data"].get("organ_contrast") else "")
              + (f", liver-only power exp(±{preset['data']['organ_gamma']:g})" if preset["data"].get("organ_gamma")
                 else "") + ", no flips.",
              _ship_stage1(results) or f"- Stage 1: ResNet generators ngf {preset['synthesis']['ngf']} ({preset['synthesis']['n_blocks']} "
              f"blocks), PatchGAN ndf {preset['synthesis']['ndf']}, LSGAN, cycle λ {preset['synthesis']['lambda_cycle']}, "
              f"identity {preset['synthesis']['lambda_identity']}, segmenter ngf {preset['synthesis']['seg_ngf']} "
              f"({preset['synthesis']['seg_n_blocks']} blocks, CE + Dice, weight {preset['synthesis']['seg_weight']}), "
              f"pool {preset['synthesis']['pool_size']}, Adam {preset['synthesis']['lr']} (0.5, 0.999), "
              f"{preset['synthesis']['iterations']} iterations (linear decay from {preset['synthesis']['decay_from']}), "
              f"batch {preset['synthesis']['batch_size']}, bf16 autocast {preset['synthesis']['autocast_bf16']}.",
              _stage2_recipe(preset), ""]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{name}]({name})" for name in figures]
        lines.append("")
    return "\n".join(lines)


def _shown_path(path: str) -> str:
    """A path as a reader of the report would type it: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _ship_stage1(results: dict) -> str:
    """The set-up line of a run whose stage 1 came from ``--synthesis-from``: a ship run, or the shipped models."""
    source = results.get("synthesis_from")
    if not source:
        return ""
    chosen = {tag: stage for run in results["per_seed"].values() for tag, stage in run["stage1"].items()}
    models = "; ".join(f"{tag}: {stage['variant']} weights of iteration {stage['iteration']}"
                       for tag, stage in sorted(chosen.items()))
    if any(stage.get("shipped") for stage in chosen.values()):
        where = f"the shipped models in `{_shown_path(source)}` ({models}; recipe and quality in their model cards)"
    else:
        where = (f"the selected models of the ship run `{_shown_path(source)}` ({models}; its recipe in that run's "
                 f"`REPORT.md`)")
    return (f"- Stage 1: not trained here; {where}, each translating every CT patient once on its own grid, the "
            f"synthetic MR resampled onto this run's grid; the same models serve every seed.")


def _stage2_recipe(preset: dict) -> str:
    """The set-up line of stage 2: the U-Net, its loss and training-only heads, the optimizer and the batches."""
    seg = preset["segmentation"]
    heads = ""
    if seg.get("organ_weight"):
        heads += (f"; a training-only head on its last features also learns the kidneys and spleen of the MR labels,"
                  f" weight {seg['organ_weight']:g}, dropped when shipped")
    if seg.get("deep_supervision"):
        heads += (f"; deep supervision: training-only heads on {seg['deep_supervision']} coarser decoder levels also"
                  f" learn the liver, dropped when shipped")
    optimizer = "SGD (Nesterov 0.99)" if seg.get("optimizer") == "sgd" else "Adam"
    ct = (f", {int(seg['ct_fraction'] * 100)} % CT with random appearances in real+ct"
          if "real+ct" in preset.get("arms", ()) else "")
    return (f"- Stage 2: classic U-Net base {seg['base']} (CE + Dice{heads}), {optimizer} {seg['lr']}, batch "
            f"{seg['batch_size']} ({int(seg['synthetic_fraction'] * 100)} % synthetic in mixed arms{ct}), "
            f"{seg['iterations']} iterations, validation every {seg['eval_every']}; MONAI peer channels "
            f"{seg['monai_channels']}, {seg['monai_num_res_units']} residual units.")


def _other_mr_lines(results: dict, figures=()) -> list:
    """Each U-Net on an MR of another contrast (``Training/other_mr.py``): a check beside the validation scores."""
    other = results.get("other_mr") or {}
    if not other:
        return []
    n = len(results.get("seeds", [])) or 1
    lines = ["## Another MR contrast (a check, not a target)", "",
             "Every validation patient is CHAOS T2-SPIR. On TotalSegmentator's example MR (`totalseg_examples/"
             "example_mr_sm.nii.gz`, 20 slices at 3 mm, a T1-like contrast: bright fat, dark liver), against "
             "TotalSegmentator's own liver outline (a prediction, not manual truth), "
             f"{'mean ± sd over ' + str(n) + ' seeds' if n > 1 else 'one seed'}:", "",
             "| arm | 3D Dice | ASSD mm |", "|---|---|---|"]
    for arm, entry in other.items():
        title = ARM_TITLES.get(arm, arm).format(n=len(results["split"]["MR_low_data"]))
        lines.append(f"| {title} | {_cell(entry['dice'], 3)} | {_cell(entry['assd'], 1)} |")
    shipped = results.get("shipped_arm")
    if shipped in other:
        lines += ["", f"The shipped U-Net comes from arm {shipped}."]
    if "other_mr.png" in figures:
        lines += ["", "Each U-Net's outline on that scan: other_mr.png (seed " + str(results["seeds"][0]) + ")."]
    return lines + [""]


def seconds_by_seed(timings: dict) -> dict:
    """``{"seed0": seconds, ...}`` summed from ``timings.json`` (keys ``seed0/arm_real``: what each job cost,
    ``Study._timed``); the checks after the seeds keep their own key (``on_ct``, ``other_mr``)."""
    totals = {}
    for key, value in timings.items():
        seed = key.split("/")[0]
        totals[seed] = totals.get(seed, 0.0) + value
    return totals


def _wall_clock_text(wall_clock: dict) -> str:
    """The seeds' own clocks (``wall_clock.json``), where recorded: with jobs side by side (``--workers``) the
    jobs' times add up to more than the seed took."""
    clocks = [f"{seed} {entry['seconds'] / 60:.0f} min ({entry['workers']} worker process"
              f"{'es' if entry['workers'] > 1 else ''}{', resumed: its earlier sessions not counted' if entry.get('resumed') else ''}"
              f"{', its first jobs began during the seed before' if entry.get('began_early') else ''})"
              for seed, entry in wall_clock.items()]
    return ", ".join(clocks)


def _time_target_lines(preset: dict, seeds: list, timings: dict, verdict, wall_clock: dict = None) -> list:
    """The ``cpu`` preset's time target, for a run of its whole arm list: one seed in 60 minutes on 2 cores.
    Judged on the seed's clock where one session ran it whole (``wall_clock.json``), the checks after it
    included; else on what its jobs cost one after the other (``timings.json``)."""
    if tuple(preset["arms"]) != get_preset("cpu").arms:
        return []  # some arms only: a seed here is not the whole study
    seed = f"seed{seeds[0]}"
    total = seconds_by_seed(timings).get(seed)
    if total is None:
        return []
    clock = (wall_clock or {}).get(seed)
    if clock and not clock.get("resumed"):
        checks = sum(value for key, value in timings.items()
                     if key in ("on_ct", "other_mr") or key.startswith(f"{seed}/tta_"))
        elapsed = clock["seconds"] + checks
        workers = clock.get("workers", 1)
        return [f"Time target of the `cpu` preset: one seed of the whole study in <= 60 min on 2 cores - "
                f"**{verdict(elapsed <= 3600)}** (seed {seeds[0]}: {elapsed / 60:.0f} min on the clock, "
                f"{workers} worker process{'es' if workers > 1 else ''}, the checks after the seed included; "
                f"its jobs' own clocks add up to {total / 60:.0f} min; `wall_clock.json`, `timings.json`).", ""]
    extra_arms = [arm for arm in preset["arms"] if ARM_RECIPES[arm][1] == RESTYLED_CT]  # beyond the paper
    extra = sum(timings.get(f"{seed}/arm_{arm}", 0.0) for arm in extra_arms)
    return [f"Time target of the `cpu` preset: one seed of the whole study in <= 60 min on 2 cores - "
            f"**{verdict(total <= 3600)}** (seed {seeds[0]}: {total / 60:.0f} min, of which {extra / 60:.0f} for the "
            f"arm{'s' if len(extra_arms) > 1 else ''} beyond the paper ({', '.join(extra_arms)}); `timings.json`).",
            ""]


def _on_ct_lines(results: dict) -> list:
    """The first seed's U-Nets on the held-out CT patients, directly and through synthetic MR (``on_ct.py``)."""
    on_ct = results.get("on_ct") or {}
    arms = on_ct.get("arms") or {}
    if not arms:
        return []
    from ..data.slices import ct_intensity_spec  # brings torch: only when a report has this section

    patients, window = results["split"]["CT"]["val"], ct_intensity_spec()
    lines = ["## On CT (a check, not a target)", "",
             f"Each U-Net of seed {on_ct['seed']} on the {len(patients)} CT patients held out of training "
             f"({', '.join(patients)}), against their CT liver labels: through EssNet's synthetic MR (the method's "
             "route: `segment --from-ct`, the module's *Input is CT*) and on the CT itself, under a card with the "
             f"CT window ({window['low']}..{window['high']} HU) that the `real+ct` arm's CT slices had in training.",
             "",
             "| arm | through synthetic MR, 3D Dice | on the CT itself, 3D Dice |", "|---|---|---|"]
    for arm, entry in arms.items():
        title = ARM_TITLES.get(arm, arm).format(n=len(results["split"]["MR_low_data"]))
        through = entry.get("through_synthetic_mr")
        cells = [f"{through['mean_dice']:.3f}" if through else "-", f"{entry['direct']['mean_dice']:.3f}"]
        lines.append(f"| {title} | {' | '.join(cells)} |")
    shipped = results.get("shipped_arm")
    if shipped in arms:
        lines += ["", f"The shipped U-Net comes from arm {shipped}."]
    return lines + [""]


def _tta_lines(results: dict) -> list:
    """The shipped U-Net with test-time augmentation (``--tta``) beside its plain scores."""
    tta = results.get("test_time_augmentation") or {}
    if not tta:
        return []
    arm, seed, scores = tta["arm"], tta["seed"], tta["scores"]
    plain = results["per_seed"][str(seed)]["arms"][arm]["scores"]
    per_patient = ", ".join(f"{patient} {plain['per_volume'][patient]['dice']:.3f} -> {value['dice']:.3f}"
                            for patient, value in scores["per_volume"].items())
    return [f"With test-time augmentation (`--tta`, the module's checkbox: five zoomed/rotated views of each slice, "
            f"never mirrored, five network passes) the shipped U-Net (arm {arm}, seed {seed}) scores 3D Dice "
            f"{scores['mean_dice']:.4f} (plain {plain['mean_dice']:.4f}) and pooled 2D Dice "
            f"{scores['pooled_dice_2d']:.4f} (plain {plain['pooled_dice_2d']:.4f}); per patient {per_patient}.", ""]


def _changed_options(preset: dict) -> str:
    """The ``--arms`` and ``--set`` options that turn today's named preset into the recorded one."""
    from .presets import changed_options, get_preset, preset_from_dict, preset_names

    if preset["name"] not in preset_names():
        return ""
    named = get_preset(preset["name"])
    recorded = preset_from_dict(preset)  # options recorded before they existed take their defaults
    text = " --arms " + " ".join(recorded.arms) if recorded.arms != named.arms else ""
    return text + "".join(f" --set {option}" for option in changed_options(recorded, named))


def _gate_lines(preset: dict, results: dict) -> list:
    """What the stage-1 gate did: every retried or failed synthesis model, seed by seed."""
    threshold = preset["synthesis"].get("min_shape_consistency", 0.0)
    if not threshold:
        return []
    lines = [f"Stage-1 gate: a synthesis model whose synthetic MR scores under {threshold:g} here has lost the "
             f"anatomy and is trained again from another seed (up to {preset['synthesis'].get('max_attempts', 1)} "
             "attempts; the best is kept). The scores above are those of the kept attempts."]
    for seed, run in results["per_seed"].items():
        for tag, stage in run["stage1"].items():
            attempts = stage.get("attempts", [])
            if len(attempts) < 2 and stage.get("passed_gate", True):
                continue
            scores = ", ".join("-" if a["shape_consistency_3d_dice"] is None else f"{a['shape_consistency_3d_dice']:.3f}"
                               for a in attempts)
            lines.append(f"- seed {seed}, {tag}: {len(attempts)} attempts (shape consistency {scores}); kept attempt "
                         f"{stage['attempt'] + 1} (seed {stage['seed']})"
                         + ("." if stage.get("passed_gate", True) else
                            "; **no attempt passed: the arms trained on its synthetic MR learn from images without "
                            "the anatomy**."))
    if len(lines) == 1:
        lines.append("- Every synthesis model passed on its first attempt.")
    return lines + [""]


def _differences(preset: dict, results: dict) -> list:
    retried = sorted({f"seed {seed} {tag}" for seed, run in results["per_seed"].items()
                      for tag, stage in run["stage1"].items() if len(stage.get("attempts", [])) > 1})
    stability = ([f"- **Stage-1 stability.** Stage 1 runs {preset['synthesis']['iterations']} iterations of one "
                  f"{preset['synthesis']['crop']} px crop (minutes), the paper 200 epochs; at this budget a GAN can "
                  f"settle on images without the anatomy whose losses look normal. Retried by the gate: "
                  f"{', '.join(retried)} (see the shape consistency section)."] if retried else [])
    if preset["data"]["source"] == "phantoms":
        return ["- This is the `demo` preset on procedural phantoms: a smoke test of the whole pipeline, not a "
                "result. Numbers are not comparable to the paper."] + stability
    return stability + [
        "- **Metric form.** The paper's pair (0.9459, 0.8974) satisfies IoU = D/(2-D) exactly, so it is a pooled "
        "2D score; ours are pooled the same way but over held-out *patients* at native resolution. The paper's "
        "split, sequence and slice selection are not published, so the comparison is of magnitude, not a replication.",
        f"- **Size and budget.** The paper trained 256 px models at full width (~28 M EssNet, ~31 M U-Net) for about "
        f"6.5 GPU-hours per model. This `{preset['name']}` run uses {preset['data']['spacing_mm']} mm pixels (128 px "
        f"cover 320 mm), generators at ngf {preset['synthesis']['ngf']} and a U-Net at base "
        f"{preset['segmentation']['base']} (so the shipped fp16 weights stay under 25 MB), and minutes of CPU time "
        f"per model" + (" (stage 1 excepted: its models come from a long run of their own, on their own grid, an hour or more "
                        "of CPU per model; the set-up below says where)"
                        if results.get("synthesis_from") else "")
        + ". Coarser pixels cost boundary accuracy (ASSD/MSSD) more than overlap.",
        "- **Data.** MR: CHAOS T2-SPIR, 15 patients available here (the paper used CHAOS MR, sequence unstated). "
        "CT: BTCV (+ one CHAOS CT patient) instead of CHAOS CT; both are contrast CT with liver labels.",
        *_label_fidelity_note(results.get("label_quality")),
        "- **Model selection.** The best checkpoint is picked on the same validation patients that are scored "
        "(there are too few MR patients for a separate test set); this flatters every arm alike, so differences "
        "between arms are fairer than absolute values.",
        "- **Augmentation.** The intensity (gamma) jitter was widened from ±0.1 to ±0.4 in log-gamma after a first "
        "look showed one validation patient (chaos_mr_15) with an atypically dark liver: its mean liver intensity is "
        "1.27x the median of its body voxels (those above 10 % of the 99.5th percentile), against 1.41-2.69x in the "
        "14 other CHAOS T2 patients (T2 liver brightness falls with iron overload)." + _organ_contrast_note(preset) + " Choices informed by the validation set, stated here.",
        "- **Shape consistency is read by one U-Net.** The same seed-0 generators (identical stage-1 losses), read "
        "by three real-only U-Nets that differ only in stage-2 training (1600 or 4000 iterations, with or without "
        "the liver contrast jitter), scored EssNet 0.64 / 0.56 / 0.35 and the plain CycleGAN 0.62 / 0.56 / 0.54 "
        "(3D Dice). The reader's spread is as large as the difference between the two models, so this run "
        "neither confirms nor refutes the paper's claim; the contact sheet shows the translations themselves.",
        f"- **Seeds.** {len(results['seeds'])} seed(s). With 4 validation patients the seed-to-seed spread of 3D "
        "Dice is of the same order as the paper's +0.0065 gain; "
        + ("one seed cannot confirm or refute it." if len(results["seeds"]) < 2 else "read the ± columns with that in mind."),
    ]


def _label_fidelity_note(survey) -> list:
    """What the MR labels' z resampling costs (``label_quality.label_survey``, recorded by the study)."""
    if not survey or survey.get("period") is None:
        return []
    repeated = sum(1 for slices in survey["repeats"].values() if slices)
    text = (f"- **Labels along z.** In {repeated} of {len(survey['repeats'])} MR patients a label slice repeats its "
            f"neighbour about every {survey['period']} slices: this copy of CHAOS was resampled from slices about "
            f"{survey['old_mm']:.1f} mm apart to {survey['new_mm']:.1f} mm, the images by interpolation and the labels "
            "by nearest neighbour, so each label shows the nearest original slice, up to half a slice away from "
            "its image (`python -m Training label-quality`).")
    cost = survey.get("nearest_resampling_dice")
    if cost:
        text += (f" The same resampling applied to the {cost['n']} CT livers ({cost['fine_mm']:g} mm slices) scores "
                 f"3D Dice {cost['mean']:.3f} (min {cost['min']:.3f}) against the anatomy itself: about what a "
                 "segmentation that found the true liver exactly would score against such labels. CHAOS as "
                 "distributed (a mask per native slice) has no such error.")
    return [text]


def _organ_contrast_note(preset: dict) -> str:
    """The stage-2 liver-appearance jitters the preset used, and what each was measured to do."""
    strength, power = preset["data"].get("organ_contrast", 0.0), preset["data"].get("organ_gamma", 0.0)
    text = ""
    if strength:
        text += (f" A global gamma cannot make the liver darker than its neighbours, so stage 2 also rescales the "
                 f"liver's own brightness by a random factor in exp(±{strength:g}) (`organ_contrast`, edges faded over "
                 "3 px); in a run of the real-only arm alone (4000 iterations) it raised the mean 3D Dice from 0.81 "
                 "to 0.85, chaos_mr_15 from 0.55 to 0.67.")
    if power:
        text += (f" A gain darkens the liver's vessels with it, but an iron-loaded liver has dark parenchyma and "
                 f"vessels that stay bright (chaos_mr_15), so the liver's values are also raised to a random power in "
                 f"exp(±{power:g}) (`organ_gamma`); in runs of the real-only arm alone (7000 iterations, seed 0) that "
                 "raised the mean 3D Dice from 0.875 to 0.910, chaos_mr_15 from 0.78 to 0.90, where a wider gain "
                 "(exp(±1.0)) instead gave 0.862.")
    return text


def _small_png(source: Path, target: Path, colours: int = 48) -> None:
    """A palette copy of a figure (grey images + one outline colour need few colours): a fraction of the bytes."""
    from PIL import Image

    with Image.open(source) as image:
        small = image.convert("RGB").quantize(colours)
    with atomic_path(target) as temporary:
        small.save(temporary, format="PNG", optimize=True)


def write_report(run_dir, out=None) -> Path:
    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    config_path = run_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    out = Path(out) if out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    plots = [("stage2_curves.png", plot_stage2), ("per_patient_dice.png", plot_per_patient)]
    # none with --arms real monai, nor when stage 1 came from a ship run (--synthesis-from)
    if any(stage["history"] for run in results["per_seed"].values() for stage in run["stage1"].values()):
        plots.insert(0, ("stage1_curves.png", plot_stage1))
    for name, plot in plots:
        plot(results, out / name)
        figures.append(name)
    # Models from --synthesis-from serve every seed: their translations, and so the sheets, are the same.
    seeds = results["seeds"][:1] if results.get("synthesis_from") else results["seeds"]
    sheets = [(run_dir / f"seed{seed}" / "contact_sheet.png", out / f"contact_sheet_seed{seed}.png") for seed in seeds]
    if results.get("other_mr"):
        sheets.append((run_dir / "other_mr.png", out / "other_mr.png"))
    for sheet, target in sheets:  # figures the study drew: small copies beside the report
        if sheet.exists() and sheet.resolve() != target.resolve():
            _small_png(sheet, target)
        if target.exists():
            figures.append(target.name)
    if out.resolve() != run_dir.resolve():
        shutil.copyfile(run_dir / "results.json", out / "results.json")
    path = out / "REPORT.md"
    with atomic_path(path) as temporary:
        temporary.write_text(markdown(results, config, figures) + "\n")
    return path
