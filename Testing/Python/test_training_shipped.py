"""The weights Training ships in SlicerEssNet/models: registered with package URLs and SHA256, fp16 on disk,
together within the 25 MB budget, loadable by the core, and honest about their training data and licence."""
from __future__ import annotations

import json

import pytest

SHIPPED = ("essnet-ct2mr", "essnet-mr2ct", "liver-unet-mr", "liver-unet-ct")
DEFAULTS = ("essnet-ct2mr", "liver-unet-mr")  # CT -> MR, and the liver on MR


def _entries(repo_root):
    registry = json.loads((repo_root / "SlicerEssNet" / "models" / "registry.json").read_text())
    return {entry["name"]: entry for entry in registry["models"] if entry["name"] in SHIPPED}


def test_shipped_models_are_registered_loadable_and_small(repo_root):
    from SlicerEssNet.weights import file_sha256, load_model

    entries = _entries(repo_root)
    if not entries:
        pytest.skip("no trained models shipped yet (python -m Training run --preset cpu; python -m Training ship)")
    assert set(entries) == set(SHIPPED)
    folder = repo_root / "SlicerEssNet" / "models"
    total = 0
    for name, entry in entries.items():
        assert entry["url"] == f"package:{name}.safetensors" and entry["default"] is (name in DEFAULTS)
        weights = folder / f"{name}.safetensors"
        total += weights.stat().st_size
        assert file_sha256(weights) == entry["sha256"]
        loaded = load_model(weights)
        card = loaded.card
        assert card.sha256 == entry["sha256"] and card.to_dict() == entry["card"]
        # The synthesis pair has its own long run (the ship preset, 1.5 mm); the U-Nets come from the cpu study.
        if card.task == "synthesis":
            assert card.training["preset"] == "ship" and card.grid["spacing_mm"] == 1.5
            assert card.architecture["upsampling"] == "resize"
        else:
            assert card.training["preset"] == "cpu" and card.grid["spacing_mm"] == 2.5
        assert "CC BY-NC-SA 4.0" in card.licence
        assert not set(card.training["split"]["MR"]["train"]) & set(card.training["split"]["MR"]["val"])
    assert total <= 25 * 1000 * 1000
    unet = load_model(folder / "liver-unet-mr.safetensors").card
    assert unet.labels == {"0": "background", "1": "liver"}
    # The U-Net read on CT is the same network under the CT window, scored on the held-out CT patients.
    on_ct = load_model(folder / "liver-unet-ct.safetensors")
    assert on_ct.card.input == {"modality": "CT", "preprocessing": {"kind": "ct_window", "low": -125, "high": 275}}
    assert on_ct.card.metrics["arm"] == unet.metrics["arm"]
    assert not set(on_ct.card.metrics["ct_patients"]) & set(on_ct.card.training["split"]["CT"]["train"])
    mr_state = load_model(folder / "liver-unet-mr.safetensors").network.state_dict()
    assert all(bool((tensor == mr_state[key]).all()) for key, tensor in on_ct.network.state_dict().items())
    # The generator's card reports on CT patients that played no part in training it or in choosing it.
    generator = load_model(folder / "essnet-ct2mr.safetensors").card
    split = generator.training["split"]["CT"]
    reported = set(generator.metrics["shape_consistency_per_patient"])
    assert reported == set(split["val"]) and not reported & (set(split["train"]) | set(split["select"]))


def _recomputed(repo_root, shared_data, model: str, patients, modality: str) -> dict:
    """Per-volume 3D Dice and pooled 2D Dice of a shipped U-Net, recomputed through the public pipeline from the
    fp16 weights on the card's own validation patients; the overlaps counted here with numpy."""
    import numpy as np

    from SlicerEssNet.pipeline import segment
    from SlicerEssNet.io.volume_files import read_volume

    per_volume, shared, total = {}, 0, 0
    for patient in patients:
        number = patient.rsplit("_", 1)[-1]
        if modality == "MR":
            image = read_volume(shared_data / "chaos_mr_t2" / f"mr_t2_{number}.nii.gz")
            reference = read_volume(shared_data / "chaos_mr_t2" / f"mr_t2_{number}_label.nii.gz").array == 1
        else:
            image = read_volume(shared_data / "btcv_ct" / f"ct_{number}.nii.gz")
            reference = read_volume(shared_data / "btcv_ct" / f"ct_{number}_liver.nii.gz").array == 1
        result = segment(image, repo_root / "SlicerEssNet" / "models" / f"{model}.safetensors", device="cpu",
                         precision="fp32")
        assert result.same_geometry(image)
        predicted = result.array == 1
        overlap = int(np.logical_and(predicted, reference).sum())
        per_volume[patient] = 2.0 * overlap / (predicted.sum() + reference.sum())
        shared, total = shared + overlap, total + int(predicted.sum() + reference.sum())
    return {"mean_dice": float(np.mean(list(per_volume.values()))), "pooled_dice_2d": 2.0 * shared / total}


@pytest.mark.data
@pytest.mark.parametrize("model, patients, modality", [("liver-unet-mr", "validation_patients", "MR"),
                                                      ("liver-unet-ct", "ct_patients", "CT")])
def test_shipped_unet_scores_what_its_card_claims(repo_root, shared_data, model, patients, modality):
    """Its card's validation scores, recomputed from the shipped fp16 weights on the patients the card names
    (4 held-out CHAOS T2 patients; for the U-Net read on CT, the 5 BTCV CT patients it never trained on)."""
    if model not in _entries(repo_root):
        pytest.skip(f"no {model} shipped yet")
    metrics = json.loads((repo_root / "SlicerEssNet" / "models" / f"{model}.json").read_text())["metrics"]
    scores = _recomputed(repo_root, shared_data, model, metrics[patients], modality)
    assert scores["mean_dice"] == pytest.approx(metrics["mean_dice"], abs=0.003)
    assert scores["pooled_dice_2d"] == pytest.approx(metrics["pooled_dice_2d"], abs=0.003)


@pytest.mark.data
def test_shipped_generator_keeps_the_anatomy_its_card_claims(repo_root, shared_data):
    """Shape consistency of the shipped CT -> MR model on one held-out CT patient, recomputed with the fixed judge
    (Training/judge), equals the card's figure for that patient."""
    pytest.importorskip("torch")
    from SlicerEssNet.io.volume_files import read_volume
    from SlicerEssNet.weights import load_model
    from Training.study.judge import load_judge, shape_consistency

    if "essnet-ct2mr" not in _entries(repo_root):
        pytest.skip("no synthesis model shipped yet")
    loaded = load_model(repo_root / "SlicerEssNet" / "models" / "essnet-ct2mr.safetensors")
    per_patient = loaded.card.metrics["shape_consistency_per_patient"]
    patient = min(per_patient)  # one patient keeps the test short; the card names all of them
    number = patient.rsplit("_", 1)[-1]
    ct = read_volume(shared_data / "btcv_ct" / f"ct_{number}.nii.gz")
    liver = read_volume(shared_data / "btcv_ct" / f"ct_{number}_liver.nii.gz")
    again = shape_consistency(loaded, load_judge(), {patient: (ct, liver)})
    assert again["mean"] == pytest.approx(per_patient[patient], abs=0.01)
