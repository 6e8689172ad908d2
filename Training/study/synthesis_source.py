"""Where a study's stage 1 comes from when it is not trained (``--synthesis-from``): the selected generator pair of
a ship-synthesis run folder, or the shipped models of a models folder (``SlicerEssNet/models``: EssNet only).

Either way the study checks first (``check_source``: the models exist, the CT patients they trained on, which must
not be among the study's held-out ones, and a fingerprint of the weights), then gets the CT->MR model as a
``LoadedModel`` with its card, the MR->CT generator and a record for the report.
"""
from __future__ import annotations

from pathlib import Path

from SlicerEssNet.weights import file_sha256, load_model

from ..stages.checkpoint import read_json
from .ship_synthesis import best_generators, chosen_variant, is_ship_run, open_run, selection_record


class SourceChangedError(ValueError):
    """The weights in ``--synthesis-from`` are not the ones a run recorded when it began to learn from them."""


def is_models_folder(source) -> bool:
    """A folder of model cards and weights, as the core loads them (not a ship run: that has ``config.json``)."""
    source = Path(source)
    return not (source / "config.json").exists() and any(source.glob("*-ct2mr.json"))


def check_source(source, tags) -> dict:
    """Before anything trains or is recorded: one clear line when ``source`` lacks a model some arm learns from.
    Returns ``tag -> {"trained_on": CT patients, "fingerprint": which weights}`` for each model in ``tags``."""
    source = Path(source)
    if not tags:
        return {}  # every arm learns from real MR alone: nothing is read from the source
    if not source.is_dir():
        raise FileNotFoundError(f"--synthesis-from {source}: no such folder; give a ship-synthesis run folder "
                                f"(python -m Training ship-synthesis) or the shipped models, SlicerEssNet/models")
    if is_models_folder(source):
        return {tag: _shipped_facts(source, tag) for tag in tags}
    if not is_ship_run(source):
        raise FileNotFoundError(f"--synthesis-from {source}: neither a ship-synthesis run folder (config.json with a "
                                f"selection split) nor a folder of models (*-ct2mr.json); give one of those")
    config = read_json(source / "config.json")
    facts = {}
    for tag in tags:
        record = selection_record(source / tag)
        variant = chosen_variant(record)
        facts[tag] = {"trained_on": sorted(config["split"]["CT"]["train"]),
                      "fingerprint": {"variant": variant, "iteration": record["best"][variant]["iteration"],
                                      "sha256": file_sha256(source / tag / f"best-{variant}.pt")},
                      "finished": (source / tag / "done.json").exists()}
    return facts


def _shipped_facts(folder: Path, tag: str) -> dict:
    missing = [name for name in (f"{tag}-ct2mr.json", f"{tag}-mr2ct.json") if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"{folder} has no {' or '.join(missing)}: the shipped models are EssNet's; for the {tag} arms "
            f"train a ship run (python -m Training ship-synthesis) and pass its folder")
    cards = [read_json(folder / f"{tag}-{direction}.json") for direction in ("ct2mr", "mr2ct")]
    if not all(card.get("sha256") for card in cards):
        raise ValueError(f"a {tag} card in {folder} has no sha256: re-save the model with weights.save_model")
    split = cards[0].get("training", {}).get("split", {}).get("CT", {})
    if "train" not in split:
        raise ValueError(f"{folder / f'{tag}-ct2mr.json'} does not say which CT patients it trained on "
                         "(training.split): its held-out scores cannot be trusted; use a ship run's folder")
    return {"trained_on": sorted(split["train"]), "fingerprint": {"sha256": [card.get("sha256") for card in cards]},
            "finished": True}


def source_generators(source, tag: str):
    """``(record, CT->MR LoadedModel, MR->CT network)`` of model ``tag`` in ``source`` (``check_source`` first);
    ``record`` says which weights they are (``variant``, ``iteration``) and whether they are the shipped files."""
    source = Path(source)
    if is_models_folder(source):
        return _shipped(source, tag)
    return _from_ship_run(source, tag)


def _shipped(folder: Path, tag: str):
    ct_to_mr, mr_to_ct = (load_model(folder / f"{tag}-{direction}.json") for direction in ("ct2mr", "mr2ct"))
    training = ct_to_mr.card.training
    record = {"variant": training.get("selected_weights", "shipped"),
              "iteration": training.get("selected_iteration", training.get("iterations_trained")),
              "shipped": True}
    return record, ct_to_mr, mr_to_ct.network


def _from_ship_run(run_dir: Path, tag: str):
    from .cards import synthesis_card
    from .evaluate import as_loaded_model

    config = open_run(run_dir, None)
    preset = config["preset_object"]
    variant, chosen, ct_to_mr, mr_to_ct = best_generators(run_dir / tag, preset, tag)
    loaded = as_loaded_model(ct_to_mr, synthesis_card(preset, f"{tag}-ct2mr", "CT->MR", {}))
    record = {"variant": variant, "iteration": chosen["iteration"], "shipped": False, "seed": preset.seeds[0]}
    return record, loaded, mr_to_ct
