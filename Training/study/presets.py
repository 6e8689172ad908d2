"""Experiment options, kept apart from the loops: a preset is a plain dataclass tree, recorded in results.

``demo`` trains on procedural phantoms in a few minutes, ``cpu`` runs one seed of the real study in 57 minutes on
2 cores (128 px, reduced widths; two jobs side by side, ``job_pool.py``; 2026-12-02), ``paper`` is the full-width
256 px recipe meant for a GPU.
"""
from __future__ import annotations

import copy
from dataclasses import MISSING, asdict, dataclass, field, fields, replace

from ..stages.schedule import OPTIMIZERS


RESTYLED_CT = "ct"  # the synthetic source that is the CT slices themselves, each given a random appearance
ARM_RECIPES = {
    # arm: (real training patients, synthetic source, network kind)
    "real": ("train", None, "classic"),
    "real+essnet": ("train", "essnet", "classic"),
    "real+cyclegan": ("train", "cyclegan", "classic"),
    "low5": ("low", None, "classic"),
    "low5+essnet": ("low", "essnet", "classic"),
    "low5+cyclegan": ("low", "cyclegan", "classic"),
    # beyond the paper: the CT slices themselves, each given a random appearance (augment.random_appearance)
    "real+ct": ("train", RESTYLED_CT, "classic"),
    "monai": ("train", None, "monai"),
}
# The arms a shipped U-Net may come from: the classic network on every real training patient.
FULL_DATA_ARMS = tuple(arm for arm, (part, _, kind) in ARM_RECIPES.items() if part == "train" and kind == "classic")


def choose_shipped_arm(ship_arm: str, summary: dict):
    """The arm whose U-Net is shipped: ``ship_arm`` if it ran, else the full-data classic arm with the best mean
    validation 3D Dice over seeds (model selection, as for checkpoints); None when only low-data or peer arms ran."""
    if ship_arm in summary:
        return ship_arm
    candidates = [arm for arm in FULL_DATA_ARMS if arm in summary]
    return max(candidates, key=lambda arm: summary[arm]["mean_dice"]["mean"]) if candidates else None


@dataclass
class DataOptions:
    source: str = "real"  # "real" (../shared/data) or "phantoms"
    data_root: str = ""  # empty: ../shared/data beside the repository
    ct_val_patients: int = 5  # held-out CT patients: shape consistency of the synthesis models
    # > 0 (the ship preset): this many more CT patients, taken out of training, on which a long synthesis run
    # chooses its model, so the patients it reports on (ct_val_patients) played no part in the choice.
    ct_select_patients: int = 0
    mr_val_patients: int = 4  # held-out MR patients: every stage-2 score
    low_data_patients: int = 5  # the low-data arms train on this many real MR patients
    phantom_ct_patients: int = 8
    phantom_mr_patients: int = 8
    # Model grid (the core's GridSpec, written into every card): fixed physical pixel size.
    spacing_mm: float = 2.5
    multiple_of: int = 16
    crop: int = 128  # the card's grid size: 128 px at 2.5 mm cover 320 mm
    # Augmentation: small affine + intensity jitter only; never flips (they mirror anatomy).
    rotate_deg: float = 8.0
    scale: float = 0.08
    translate_px: float = 6.0
    intensity_scale: float = 0.12
    intensity_gamma: float = 0.4  # log-gamma range: organ contrast varies between patients (CHAOS 15)
    organ_contrast: float = 0.0  # stage 2 only: log-range of the liver's own brightness jitter (0 = off)
    organ_gamma: float = 0.0  # stage 2 only: log-range of a power on the liver's values (dark parenchyma, bright vessels)
    bias_field: float = 0.0  # stage 2 only: log-range of a smooth multiplicative field (MR coil falloff; 0 = off)
    random_appearance: float = 0.0  # stage 2 only: share of real MR slices given a random appearance (0 = off)
    elastic_px: float = 0.0  # stage 2 only: largest smooth elastic displacement in grid pixels (4: 0.902, not kept)


@dataclass
class SynthesisOptions:
    ngf: int = 24  # generator width (shipped: fp16 size budget; CPU time on a shared 2-core machine)
    n_blocks: int = 9
    ndf: int = 24
    seg_ngf: int = 16  # the segmentation branch is only a training signal; it is not shipped
    seg_n_blocks: int = 6
    crop: int = 64  # generators are fully convolutional: train on crops, apply to whole slices
    batch_size: int = 1
    iterations: int = 1200
    decay_from: int = 600  # constant LR until here, then linear decay to 0
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_cycle: float = 10.0
    # x lambda_cycle, like CycleGAN's 0.5; EssNet used 0, and so did the committed cpu run. Measured on the real
    # data (seed 1 and 2, whose first attempts lost the anatomy): 0.5 gave shape consistency 0.78 / 0.78 instead
    # of 0.000 / 0.180; 3x more iterations at 0 did not help seed 1 (0.0007). But on seed 0 it dropped the plain
    # CycleGAN from 0.62 to 0.29 (EssNet 0.54 -> 0.60): no cure on its own, the gate stays.
    lambda_identity: float = 0.0
    seg_weight: float = 1.0  # 0 = the plain CycleGAN ablation (no segmentation branch at all)
    pool_size: int = 50
    # fp32, as in the committed cpu run. Testing/benchmarks/training.py (short_spin wait policy, 2 cores): bf16
    # autocast makes the 64 px step only 1.15x faster (small tensors: per-op casts eat the gain), 128 px 1.35x.
    autocast_bf16: bool = False
    checkpoint_every: int = 100
    upsampling: str = "transposed"  # the paper's; "resize" (nearest x2 + 3x3 conv) leaves no checkerboard
    # > 0 (the ship preset): every this many iterations the fixed judge reads the synthetic MR of the selection
    # CT patients and the best generator pair so far is kept (GAN training drifts; Training/synthesis_selection.py).
    select_every: int = 0
    ema_decay: float = 0.0  # > 0: a moving average of the generators is scored (and may be kept) as well
    # The stage-1 gate: a GAN can lose the anatomy (the cpu preset's seeds 1 and 2 made dark, ringing images
    # in which the real-only U-Net found no liver). An attempt whose synthetic MR of the held-out CT patients
    # scores under this shape consistency (3D Dice) is trained again from another seed, up to max_attempts;
    # the best attempt is kept either way and every attempt is reported. 0 turns the gate off.
    min_shape_consistency: float = 0.3
    max_attempts: int = 3


@dataclass
class SegmentationOptions:
    base: int = 24  # classic U-Net width (shipped: fp16 size budget)
    crop: int = 96  # training crop; U-Nets are fully convolutional and read whole model-grid slices in use
    batch_size: int = 4
    # 4000 stopped short: the real-only arm gained 0.06 3D Dice (0.81 -> 0.87, seeds 0 and 1) going to 7000;
    # 8000 did no better on seed 0, nor 10000 with organ_gamma (0.908 against 0.907 / 0.910; docs/EXPERIMENTS.md).
    iterations: int = 7000
    decay_from: int = 3500
    lr: float = 1e-3
    optimizer: str = "adam"  # or "sgd": nnU-Net's SGD, Nesterov momentum 0.99 (with lr 0.01)
    weight_decay: float = 1e-5
    dice_weight: float = 1.0
    eval_every: int = 250  # validation patients scored; the best checkpoint is kept
    ema_decay: float = 0.0  # > 0: validate and keep a moving average of the weights (0.999: 0.901, not kept)
    # > 0: a training-only head on the U-Net's last features also learns the other organs the MR labels mark
    # (CHAOS: kidneys, spleen; Training/organ_head.py), its CE + Dice weighted so. The shipped U-Net is unchanged.
    organ_weight: float = 0.0
    # > 0: training-only heads on this many coarser decoder levels also learn the liver (Training/deep_supervision.py).
    # The cpu preset uses 3 (measured there); demo keeps it off for time, paper for the paper's recipe.
    deep_supervision: int = 0
    synthetic_fraction: float = 0.5  # share of each batch drawn from synthetic MR in the mixed arms
    ct_fraction: float = 0.25  # share of each batch drawn from the restyled CT slices in the real+ct arm
    # > 0: the mixed arms draw synthetic MR only before this iteration, then real MR alone (pre-train, fine-tune)
    synthetic_until: int = 0
    autocast_bf16: bool = True  # 1.6x faster U-Net steps on CPUs with native bf16, same losses (training.py bench)
    checkpoint_every: int = 100  # <= one epoch of the real MR training slices
    # The peer: MONAI's 2D UNet with residual units and DiceCE, same split, size and budget.
    monai_channels: tuple = (24, 48, 96, 192, 384)
    monai_num_res_units: int = 2


@dataclass
class Preset:
    name: str = "cpu"
    seeds: tuple = (0,)
    data: DataOptions = field(default_factory=DataOptions)
    synthesis: SynthesisOptions = field(default_factory=SynthesisOptions)
    segmentation: SegmentationOptions = field(default_factory=SegmentationOptions)
    # Stage-2 arms. Names are stable: results, report and tests refer to them.
    arms: tuple = ("real", "real+essnet", "real+cyclegan", "real+ct", "low5", "low5+essnet", "monai")
    # The arm whose U-Net is shipped when it ran; "" (or an arm not run): the full-data arm with the best mean
    # validation 3D Dice over seeds.
    ship_arm: str = ""
    run_cli_demo: bool = False  # the demo ends by applying its models through ``python -m SlicerEssNet``
    license: str = "CHAOS MR: CC BY-NC-SA 4.0 (non-commercial); BTCV CT: research use only"

    def to_dict(self) -> dict:
        return asdict(self)


def _demo() -> Preset:
    return Preset(
        name="demo",
        data=DataOptions(
            source="phantoms", ct_val_patients=2, mr_val_patients=2, low_data_patients=2,
            phantom_ct_patients=6, phantom_mr_patients=6, spacing_mm=5.0, crop=64,
            rotate_deg=5.0,
        ),
        synthesis=SynthesisOptions(
            ngf=8, ndf=8, seg_ngf=8, n_blocks=4, seg_n_blocks=3, crop=64, iterations=600, decay_from=300,
            checkpoint_every=100,
        ),
        segmentation=SegmentationOptions(
            base=8, crop=64, iterations=300, decay_from=200, eval_every=50, checkpoint_every=50,
            monai_channels=(8, 16, 32, 64, 128), monai_num_res_units=1,
        ),
        arms=("real", "real+essnet", "real+cyclegan", "low5", "low5+essnet", "monai"),
        run_cli_demo=True,
        license="procedural phantoms generated by Training/phantoms.py: no licence restriction",
    )


def _cpu() -> Preset:
    # organ_contrast: +0.04 mean 3D Dice for the real-only arm (0.81 -> 0.85), most of it on the dark-liver patient.
    # organ_gamma 0.8 on top: seed 0's real-only arm 0.875 -> 0.910 (chaos_mr_15 0.78 -> 0.90); a wider
    # organ_contrast (1.0) instead gave 0.862 (runs of that arm alone, 2026-12-01).
    # ship_arm: real+ct, not the single seed's best. Over 3 seeds (results/cpu-real, git history) it scored 0.903 +- 0.001 on
    # the T2 validation patients against real MR alone's 0.898 +- 0.009, and on a T1-like MR (TotalSegmentator's
    # example, Training/other_mr.py) its U-Nets found the liver (Dice 0.58-0.74) where those of real MR alone did
    # not (0.17-0.35).
    # deep_supervision 3: over 3 seeds the real+ct arm scored 0.907 +- 0.004 against 0.903 +- 0.001 without, and
    # 0.79 +- 0.04 against 0.68 +- 0.09 on the T1-like MR, for 11 % more time a step (2026-12-02); the heads are
    # training-only, so the shipped U-Net is the same network.
    # batch 8 for half the iterations (the same samples): 0.912 / 0.909 on the real+ct arm's seeds 0 / 1 against
    # 0.911 / 0.903 at batch 4 x 7000, in 0.8x the time (half the validations; runs/exp14 in docs/EXPERIMENTS.md).
    # checkpoint_every 50 keeps checkpoints within one epoch of the 397 real MR training slices at batch 8.
    return Preset(name="cpu", data=DataOptions(organ_contrast=0.6, organ_gamma=0.8),
                  segmentation=SegmentationOptions(deep_supervision=3, batch_size=8, iterations=3500, decay_from=1750,
                                                   checkpoint_every=50),
                  ship_arm="real+ct")


def _paper() -> Preset:
    return Preset(
        name="paper",
        seeds=(0, 1, 2),
        data=DataOptions(spacing_mm=1.25, crop=256, organ_contrast=0.6, organ_gamma=0.8),
        synthesis=SynthesisOptions(
            ngf=64, ndf=64, seg_ngf=64, seg_n_blocks=9, crop=256, iterations=60000, decay_from=30000,
            autocast_bf16=False, checkpoint_every=1000,
        ),
        segmentation=SegmentationOptions(
            base=64, crop=256, iterations=20000, decay_from=15000, lr=2e-4, eval_every=1000, checkpoint_every=1000,
            autocast_bf16=False,
            monai_channels=(32, 64, 128, 256, 512),
        ),
    )


def _ship() -> Preset:
    # The shipped synthesis models' own budget (Training/ship_synthesis.py; one resumable sitting of about 100 minutes
    # on 2 cores): the data's own in-plane resolution (CHAOS MR 1.25 mm, BTCV CT 1.5 mm) instead of 2.5 mm,
    # 128 px crops (192 mm) in training and whole slices in use, resize-convolution, and the model chosen by shape
    # consistency on 3 CT patients apart from the 5 it reports on. ngf stays 24: at 1.5 mm a generator reads 2.8x
    # the pixels of the 2.5 mm grid, and ``--from-ct`` must stay under twice its old time on 2 cores.
    # fp32: on CPUs without native bf16 (AVX2 only, like this project's AMD EPYC machines) bf16 autocast made the
    # generator's training step 25x slower (Testing/benchmarks/training.py); 0.91 iterations/s at 128 px in fp32.
    return Preset(
        name="ship",
        data=DataOptions(spacing_mm=1.5, crop=256, ct_select_patients=3),
        synthesis=SynthesisOptions(
            crop=128, iterations=4000, decay_from=2000, autocast_bf16=False, checkpoint_every=250,
            upsampling="resize", select_every=500, ema_decay=0.999, min_shape_consistency=0.0, max_attempts=1,
        ),
        arms=(),
    )


_PRESETS = {"demo": _demo, "cpu": _cpu, "paper": _paper, "ship": _ship}


def preset_names() -> tuple:
    return tuple(_PRESETS)


def get_preset(name: str) -> Preset:
    if name not in _PRESETS:
        raise KeyError(f"unknown preset {name!r}: choose one of {', '.join(_PRESETS)}")
    return _PRESETS[name]()


def preset_from_dict(values: dict) -> Preset:
    """Rebuild a preset recorded in a run folder (resume uses exactly what was recorded, not today's defaults)."""
    values = copy.deepcopy(values)
    values["data"] = DataOptions(**values["data"])
    values["synthesis"] = SynthesisOptions(**values["synthesis"])
    seg = values["segmentation"]
    seg["monai_channels"] = tuple(seg["monai_channels"])
    values["segmentation"] = SegmentationOptions(**seg)
    values["seeds"] = tuple(values["seeds"])
    values["arms"] = tuple(values["arms"])
    return Preset(**values)


# --- options as text: ``python -m Training run --set SECTION.FIELD=VALUE`` and the reports' regenerate line -------
OPTION_SECTIONS = {"data": DataOptions, "synthesis": SynthesisOptions, "segmentation": SegmentationOptions}
NOT_RECIPE = {("data", "data_root")}  # where the data lives, not how the study trains
OPTION_CHOICES = {("data", "source"): ("real", "phantoms"), ("segmentation", "optimizer"): OPTIMIZERS,
                  ("synthesis", "upsampling"): ("transposed", "resize")}


def parse_option(text: str) -> tuple:
    """``SECTION.FIELD=VALUE`` -> ``(section, field, value)``, the value in the option's own type (ValueError)."""
    key, equals, value = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not equals or not dot or section not in OPTION_SECTIONS:
        raise ValueError(f"{text!r} is not SECTION.FIELD=VALUE with SECTION one of {', '.join(OPTION_SECTIONS)}")
    known = {f.name: f for f in fields(OPTION_SECTIONS[section])}
    if name not in known:
        raise ValueError(f"{section} has no option {name!r}: choose one of {', '.join(known)}")
    default = known[name].default if known[name].default is not MISSING else known[name].default_factory()
    choices = OPTION_CHOICES.get((section, name))
    if choices and value not in choices:
        raise ValueError(f"{section}.{name} is one of {', '.join(choices)}, not {value!r}")
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return section, name, value.lower() in ("true", "1")
        if isinstance(default, tuple):
            return section, name, tuple(int(v) for v in value.split(","))
        return section, name, type(default)(value)
    except ValueError:
        raise ValueError(f"{section}.{name} takes a {type(default).__name__} (like {default!r}), "
                         f"not {value!r}") from None


def apply_options(preset: Preset, options) -> Preset:
    """In place: each ``(section, field, value)`` of ``parse_option`` set on ``preset``; returns it."""
    for section, name, value in options:
        setattr(preset, section, replace(getattr(preset, section), **{name: value}))
    return preset


def option_text(section: str, name: str, value) -> str:
    """The ``SECTION.FIELD=VALUE`` that ``parse_option`` reads back as ``value``."""
    if isinstance(value, bool):
        shown = str(value).lower()
    elif isinstance(value, tuple):
        shown = ",".join(str(v) for v in value)
    else:
        shown = str(value)
    return f"{section}.{name}={shown}"


def changed_options(recorded: Preset, named: Preset) -> list:
    """``option_text`` of every recipe option in which ``recorded`` differs from ``named``."""
    changed = []
    for section in OPTION_SECTIONS:
        for option in fields(OPTION_SECTIONS[section]):
            value = getattr(getattr(recorded, section), option.name)
            if (section, option.name) not in NOT_RECIPE and value != getattr(getattr(named, section), option.name):
                changed.append(option_text(section, option.name, value))
    return changed
