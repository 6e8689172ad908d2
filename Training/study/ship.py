"""Ship a finished run's models: copy the fp16 safetensors + cards into ``SlicerEssNet/models`` and register them
(``"url": "package:<file>"``, SHA256, the card inline, ``"default": true``) so the modules work out of the box."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from SlicerEssNet.atomic import atomic_path

SIZE_BUDGET_BYTES = 25 * 1000 * 1000  # all shipped weights together


def ship_models(run_dir, models_dir) -> list:
    from SlicerEssNet.errors import WeightsError
    from SlicerEssNet.model_card import ModelCard
    from SlicerEssNet.weights import check_model

    run_models = Path(run_dir) / "models"
    weights = sorted(run_models.glob("*.safetensors"))
    if not weights:
        raise WeightsError(f"no models in {run_models}: finish the run first (python -m Training run ...)")
    total = sum(path.stat().st_size for path in weights)
    if total > SIZE_BUDGET_BYTES:
        raise WeightsError(f"the models weigh {total / 1e6:.1f} MB, over the {SIZE_BUDGET_BYTES / 1e6:.0f} MB "
                           f"budget: train narrower networks")
    models_dir = Path(models_dir)
    registry_path = models_dir / "registry.json"
    registry = json.loads(registry_path.read_text()) if registry_path.exists() else {
        "format": "slicer-essnet-registry/1", "models": []}
    lines = []
    for path in weights:
        check_model(path)  # checksum and shapes agree with the card before anything is copied
        card = ModelCard.load(path.with_suffix(".json"))
        for source in (path, path.with_suffix(".json")):
            with atomic_path(models_dir / source.name) as temporary:
                shutil.copyfile(source, temporary)
        entry = {"name": card.name, "task": card.task, "version": card.version, "url": f"package:{path.name}",
                 "sha256": card.sha256, "card": card.to_dict(), "default": _is_default(card),
                 "description": card.description}
        registry["models"] = [m for m in registry["models"] if m.get("name") != card.name]
        if entry["default"]:  # one default per task and input modality
            for other in registry["models"]:
                if other.get("task") == card.task and other.get("card", {}).get("input", {}).get(
                        "modality") == card.input_modality:
                    other["default"] = False
        registry["models"].append(entry)
        lines.append(f"shipped {card.name} ({path.stat().st_size / 1e6:.1f} MB, sha256 {card.sha256[:12]}...)")
    with atomic_path(registry_path) as temporary:
        temporary.write_text(json.dumps(registry, indent=2) + "\n")
    lines.append(f"registry {registry_path}: {len(registry['models'])} models; shipped weights {total / 1e6:.1f} MB")
    return lines


def _is_default(card) -> bool:
    """CT -> MR synthesis and liver segmentation on MR are what the modules run by default (a U-Net read on CT is
    chosen by name: a caller asking for the default segmentation model without a modality means MR)."""
    return card.input_modality == ("CT" if card.task == "synthesis" else "MR")
