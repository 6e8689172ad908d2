"""Where a study's stage 1 comes from when it is not trained (``--synthesis-from``): the selected generator pair of
a ship-synthesis run folder, or the shipped models of a models folder (``SlicerEssNet/models``: EssNet only).

Either way the study gets the CT->MR model as a ``LoadedModel`` with its card, the MR->CT generator, the CT patients
the pair trained on (which must not be among the study's held-out ones) and a record for the report.
"""
from __future__ import annotations

from pathlib import Path

from .ship_synthesis import best_generators, open_run, selection_record


def is_models_folder(source) -> bool:
    """A folder of model cards and weights, as the core loads them (not a ship run: that has ``config.json``)."""
    source = Path(source)
    return not (source / "config.json").exists() and any(source.glob("*-ct2mr.json"))


def check_source(source, tags) -> None:
    """One clear line before anything trains when ``source`` lacks a model some arm learns from."""
    source = Path(source)
    if not tags:
        return  # every arm learns from real MR alone: nothing is read from the source
    if not source.is_dir():
        raise FileNotFoundError(f"--synthesis-from {source}: no such folder; give a ship-synthesis run folder "
                                f"(python -m Training ship-synthesis) or the shipped models, SlicerEssNet/models")
    shipped = is_models_folder(source)
    for tag in tags:
        if shipped:
            missing = [name for name in (f"{tag}-ct2mr.json", f"{tag}-mr2ct.json") if not (source / name).exists()]
            if missing:
                raise FileNotFoundError(
                    f"{source} has no {' or '.join(missing)}: the shipped models are EssNet's; for the {tag} arms "
                    f"train a ship run (python -m Training ship-synthesis) and pass its folder")
        else:
            selection_record(source / tag)


def source_generators(source, tag: str):
    """``(trained CT patients, record, CT->MR LoadedModel, MR->CT network)`` of model ``tag`` in ``source``;
    ``record`` says which weights they are (``variant``, ``iteration``) and whether they are the shipped files."""
    source = Path(source)
    if is_models_folder(source):
        return _shipped(source, tag)
    return _from_ship_run(source, tag)


def _shipped(folder: Path, tag: str):
    from SlicerEssNet.weights import load_model

    ct_to_mr, mr_to_ct = (load_model(folder / f"{tag}-{direction}.json") for direction in ("ct2mr", "mr2ct"))
    training = ct_to_mr.card.training
    record = {"variant": training.get("selected_weights", "shipped"),
              "iteration": training.get("selected_iteration", training.get("iterations_trained")),
              "shipped": True}
    return set(training["split"]["CT"]["train"]), record, ct_to_mr, mr_to_ct.network


def _from_ship_run(run_dir: Path, tag: str):
    from .cards import synthesis_card
    from .evaluate import as_loaded_model
    config = open_run(run_dir, None)
    preset = config["preset_object"]
    variant, chosen, ct_to_mr, mr_to_ct = best_generators(run_dir / tag, preset, tag)
    loaded = as_loaded_model(ct_to_mr, synthesis_card(preset, f"{tag}-ct2mr", "CT->MR", {}))
    record = {"variant": variant, "iteration": chosen["iteration"], "shipped": False, "seed": preset.seeds[0]}
    return set(config["split"]["CT"]["train"]), record, loaded, mr_to_ct
