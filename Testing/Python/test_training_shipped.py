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
        assert card.training["preset"] == "cpu" and card.grid["spacing_mm"] == 2.5
        assert "CC BY-NC-SA 4.0" in card.licence
        assert not set(card.training["split"]["MR"]["train"]) & set(card.training["split"]["MR"]["val"])
    assert total <= 25 * 1000 * 1000
    unet = load_model(folder / "liver-unet-mr.safetensors").card
    assert unet.metrics["mean_dice"] > 0.5 and unet.labels == {"0": "background", "1": "liver"}
    # The U-Net read on CT is the same network under the CT window, scored on the held-out CT patients.
    on_ct = load_model(folder / "liver-unet-ct.safetensors")
    assert on_ct.card.input == {"modality": "CT", "preprocessing": {"kind": "ct_window", "low": -125, "high": 275}}
    assert on_ct.card.metrics["arm"] == unet.metrics["arm"] and on_ct.card.metrics["mean_dice"] > 0.5
    assert not set(on_ct.card.metrics["ct_patients"]) & set(on_ct.card.training["split"]["CT"]["train"])
    mr_state = load_model(folder / "liver-unet-mr.safetensors").network.state_dict()
    assert all(bool((tensor == mr_state[key]).all()) for key, tensor in on_ct.network.state_dict().items())
    # The shipped generator passed the stage-1 gate: the real-only U-Net finds the liver in its synthetic MR.
    generator = load_model(folder / "essnet-ct2mr.safetensors").card
    assert generator.metrics["shape_consistency_3d_dice"] >= 0.3


def test_shipped_unet_segments_a_real_mr_liver(repo_root, shared_data):
    """The shipped U-Net run through the public pipeline on a real CHAOS T2 volume finds the liver."""
    from SlicerEssNet.metrics import evaluate
    from SlicerEssNet.pipeline import segment
    from SlicerEssNet.volume_io import read_volume

    if "liver-unet-mr" not in _entries(repo_root):
        pytest.skip("no trained liver U-Net shipped yet")
    card = json.loads((repo_root / "SlicerEssNet" / "models" / "liver-unet-mr.json").read_text())
    patient = card["training"]["split"]["MR"]["val"][0]  # a patient the U-Net never trained on
    number = patient.rsplit("_", 1)[-1]
    image = read_volume(shared_data / "chaos_mr_t2" / f"mr_t2_{number}.nii.gz")
    reference = read_volume(shared_data / "chaos_mr_t2" / f"mr_t2_{number}_label.nii.gz")
    result = segment(image, repo_root / "SlicerEssNet" / "models" / "liver-unet-mr.safetensors", device="cpu",
                     precision="fp32")
    assert result.same_geometry(image)
    assert evaluate(result, reference, label=1)["dice"] > 0.5


def test_shipped_ct_unet_segments_a_held_out_ct_liver(repo_root, shared_data):
    """The U-Net read on CT, through the public pipeline, on a BTCV CT patient it never trained on."""
    from SlicerEssNet.metrics import evaluate
    from SlicerEssNet.pipeline import segment
    from SlicerEssNet.volume_io import read_volume

    if "liver-unet-ct" not in _entries(repo_root):
        pytest.skip("no liver U-Net for CT shipped yet")
    card = json.loads((repo_root / "SlicerEssNet" / "models" / "liver-unet-ct.json").read_text())
    number = card["metrics"]["ct_patients"][-1].rsplit("_", 1)[-1]
    image = read_volume(shared_data / "btcv_ct" / f"ct_{number}.nii.gz")
    reference = read_volume(shared_data / "btcv_ct" / f"ct_{number}_liver.nii.gz")
    result = segment(image, "liver-unet-ct", device="cpu", precision="fp32")
    assert result.same_geometry(image)
    assert evaluate(result, reference, label=1)["dice"] > 0.85
