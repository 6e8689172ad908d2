"""Model cards and weights files: round trips, fp16, and every way a weights file can be wrong or hostile."""
from __future__ import annotations

import json
import pickle
import random
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from SlicerEssNet.errors import (ArchitectureMismatchError, ChecksumMismatchError, DeviceError, ModelNotFoundError,
                                 UnsafeWeightsError, WeightsError)
from SlicerEssNet.model_card import ModelCard
from SlicerEssNet.model_store import ModelStore
from SlicerEssNet.networks import build_network, init_weights
from SlicerEssNet.weights import (LoadedModel, check_model, create_untrained_model, load_model, read_state_dict,
                                  save_model)

from weights_testing import Payload, one_line, sha256




def card_for(architecture, task="segmentation", **changes) -> ModelCard:
    data = {
        "format": "slicer-essnet-model-card/1", "name": "liver-test", "version": "1.2.3", "task": task,
        "description": "a test model", "architecture": architecture,
        "input": {"modality": "MR", "preprocessing": {"kind": "mr_percentile", "low_percentile": 0.5,
                                                      "high_percentile": 99.5}},
        "output": {"modality": "label"}, "labels": {"0": "background", "1": "liver"},
        "grid": {"mode": "spacing", "spacing_mm": 1.5, "multiple_of": 16},
        "training": {"preset": "demo", "data": ["chaos_mr_t2"], "seed": 0, "split": {}},
        "metrics": {"dice": 0.5}, "licence": "CC BY-NC-SA 4.0", "sha256": "",
    }
    if task == "synthesis":
        data.update(input={"modality": "CT", "preprocessing": {"kind": "ct_window", "low": -125, "high": 275}},
                    output={"modality": "MR", "postprocessing": {"kind": "linear", "low": 0, "high": 1000}},
                    labels=None)
    data.update(changes)
    return ModelCard.from_dict(data)


UNET = {"name": "unet", "in_channels": 1, "num_classes": 2, "base": 4}


@pytest.fixture
def trained_unet():
    """A small U-Net whose batch-norm statistics moved away from their defaults, as after training."""
    torch.manual_seed(0)
    network = init_weights(build_network(UNET))
    network.train()
    with torch.no_grad():
        for _ in range(3):
            network(torch.randn(2, 1, 32, 32) * 3 + 1)
    return network.eval()


@pytest.fixture
def saved(tmp_path, trained_unet):
    card = card_for(UNET)
    weights = save_model(trained_unet, card, tmp_path / "liver-test")
    return weights, card, trained_unet



def malicious_files(folder: Path):
    """The two pickle containers torch.load meets: a torch zip archive and a legacy bare pickle."""
    marker = folder / "pwned"
    archive, legacy = folder / "evil.pt", folder / "evil_legacy.pth"
    torch.save({"inc.0.weight": torch.zeros(1), "x": Payload(marker)}, archive)
    legacy.write_bytes(pickle.dumps({"inc.0.weight": Payload(marker)}, protocol=2))
    return marker, [archive, legacy]


def write_card_beside(weights: Path, card: ModelCard) -> Path:
    """A card that matches the file's checksum, as an attacker or a careless exporter would write it."""
    path = weights.with_suffix(".json")
    card.replace(name=weights.stem, sha256=sha256(weights)).save(path)
    return path


# --- model cards ------------------------------------------------------------------------------------
def test_card_round_trips_through_json(tmp_path):
    card = card_for(UNET, sha256="ab" * 32)
    path = card.save(tmp_path / "card.json")
    data = json.loads(path.read_text())
    assert list(data) == ["format", "name", "version", "task", "description", "architecture", "input", "output",
                          "labels", "grid", "training", "metrics", "licence", "sha256"]
    again = ModelCard.load(path)
    assert again == card and again.to_dict() == data
    assert ModelCard.from_dict(data).to_dict() == card.to_dict()


def test_card_properties():
    segmenter = card_for(UNET)
    assert segmenter.input_modality == "MR" and segmenter.output_modality == "label"
    assert segmenter.preprocessing == {"kind": "mr_percentile", "low_percentile": 0.5, "high_percentile": 99.5}
    assert segmenter.postprocessing is None and segmenter.num_outputs == 2
    assert segmenter.label_names == {0: "background", 1: "liver"}
    assert segmenter.grid_spec == {"mode": "spacing", "size": 256, "spacing_mm": 1.5, "multiple_of": 16}
    synthesis = card_for({"name": "resnet_generator", "ngf": 8}, task="synthesis",
                         grid={"mode": "fit", "size": 128, "multiple_of": 4})
    assert synthesis.output_modality == "MR" and synthesis.num_outputs == 1
    assert synthesis.postprocessing == {"kind": "linear", "low": 0, "high": 1000}
    assert synthesis.grid_spec == {"mode": "fit", "size": 128, "spacing_mm": 1.5, "multiple_of": 4}
    assert card_for({"name": "unet", "num_classes": 1}).num_outputs == 1  # background + 1 label as a sigmoid
    assert card_for(UNET, labels={0: "background", 1: "liver"}).labels == {"0": "background", "1": "liver"}


@pytest.mark.parametrize("change, error_type, words", [
    ({"format": "slicer-essnet-model-card/2"}, WeightsError, "unknown model card format"),
    ({"task": "registration"}, WeightsError, "not one of synthesis, segmentation"),
    ({"license": "MIT"}, WeightsError, "did you mean 'licence'"),
    ({"name": "../../etc/passwd"}, WeightsError, "file name"),
    ({"version": 1}, WeightsError, "version"),
    ({"sha256": "xyz"}, WeightsError, "64 lower-case hex"),
    ({"architecture": {"name": "patchgan"}}, ArchitectureMismatchError, "cannot be a patchgan"),
    ({"architecture": {"name": "unet", "in_channels": 3}}, ArchitectureMismatchError, "in_channels"),
    ({"architecture": {"name": "unet", "num_classes": 3}}, ArchitectureMismatchError, "3 channels"),
    ({"architecture": {"name": "unet", "widht": 3}}, ArchitectureMismatchError, "no parameter 'widht'"),
    ({"labels": None}, WeightsError, "needs 'labels'"),
    ({"labels": {"1": "liver", "2": "spleen"}}, WeightsError, "0, 1, 2"),
    ({"input": {"modality": "MR", "preprocessing": {"kind": "ct_window", "low": -125, "high": 275}}},
     WeightsError, "ct_window is a CT"),
    ({"input": {"modality": "MR", "preprocessing": {"kind": "zscore"}}}, WeightsError,
     "unknown preprocessing kind 'zscore'"),
    ({"input": {"modality": "MR", "preprocessing": {"kind": "mr_percentile", "low_percentile": 99,
                                                    "high_percentile": 1}}},
     WeightsError, "low_percentile=99 >= high_percentile=1"),
    ({"input": {"modality": "MR", "preprocessing": {"kind": "mr_percentile", "low_percentile": 1,
                                                    "high_percentile": 101}}}, WeightsError, "outside 0-100"),
    ({"input": {"preprocessing": {"kind": "mr_percentile"}}}, WeightsError, "'modality'"),
    ({"output": {"modality": "label", "postprocessing": {"kind": "linear", "low": 0, "high": 1}}},
     WeightsError, "no postprocessing"),
    ({"grid": {"mode": "spacing"}}, WeightsError, "needs 'spacing_mm'"),
    ({"grid": {"mode": "spacing", "spacing_mm": -1}}, WeightsError, "spacing_mm positive"),
    ({"grid": {"mode": "tile", "spacing_mm": 1}}, WeightsError, "'spacing' or 'fit'"),
    ({"grid": {"mode": "spacing", "spacing_mm": 1, "pixels": 3}}, WeightsError, "unknown keys ['pixels']"),
    ({"training": []}, WeightsError, "'training'"),
])
def test_card_validation_names_the_problem(change, error_type, words):
    change = dict(change)
    with pytest.raises(error_type) as error:
        card_for(change.pop("architecture", UNET), **change)
    assert words in one_line(error)


@pytest.mark.parametrize("grid, words", [({"mode": "spacing", "spacing_mm": 1.5, "multiple_of": 4}, "multiple of 16"),
                                         ({"mode": "fit", "size": 200}, "size 200")])
def test_a_grid_the_network_cannot_take_is_refused_on_save_and_load(tmp_path, trained_unet, saved, grid, words):
    card = card_for(UNET, grid=grid)  # a card may pair any grid with a stand-in network...
    with pytest.raises(ArchitectureMismatchError) as error:  # ...but never with real weights
        save_model(trained_unet, card, tmp_path / "other")
    assert words in one_line(error) and not (tmp_path / "other.safetensors").exists()
    weights, good, _ = saved
    good.replace(grid=grid).save(weights.with_suffix(".json"))
    for attempt in (load_model, check_model):
        with pytest.raises(ArchitectureMismatchError, match=words):
            attempt(weights)


def test_synthesis_card_checks():
    generator = {"name": "resnet_generator", "ngf": 8}
    with pytest.raises(ArchitectureMismatchError, match="out_channels"):
        card_for({"name": "resnet_generator", "out_channels": 2}, task="synthesis")
    with pytest.raises(ArchitectureMismatchError, match="tanh"):
        card_for({"name": "resnet_generator", "final": None}, task="synthesis")
    with pytest.raises(WeightsError, match="must be 'linear'"):
        card_for(generator, task="synthesis", output={"modality": "MR", "postprocessing": {
            "kind": "ct_window", "low": 0, "high": 1}})  # an input window as output
    with pytest.raises(WeightsError, match="no labels"):
        card_for(generator, task="synthesis", labels={"0": "background"})
    with pytest.raises(WeightsError, match="output scale"):
        card_for(generator, task="synthesis", input={"modality": "CT", "preprocessing": {
            "kind": "linear", "low": 0, "high": 1}})


def test_card_file_problems(tmp_path):
    with pytest.raises(ModelNotFoundError):
        ModelCard.load(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "slicer-essnet-model-card/1",\n "name": }')
    with pytest.raises(WeightsError) as error:
        ModelCard.load(broken)
    assert "not valid JSON (line 2" in one_line(error) and "broken.json" in str(error.value)
    missing = tmp_path / "missing.json"
    data = card_for(UNET).to_dict()
    del data["task"]
    missing.write_text(json.dumps(data))
    with pytest.raises(WeightsError) as error:
        ModelCard.load(missing)
    assert "missing 'task'" in one_line(error) and "missing.json" in str(error.value)
    with pytest.raises(WeightsError, match="JSON object"):
        ModelCard.from_dict(["not", "a", "card"])


def test_an_invalid_card_never_overwrites_a_good_one(tmp_path):
    path = card_for(UNET).save(tmp_path / "card.json")
    before = path.read_bytes()
    card = card_for(UNET)
    card.task = "registration"  # made invalid after construction
    with pytest.raises(WeightsError):
        card.save(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]


# --- saving and loading -----------------------------------------------------------------------------
def test_save_then_load_restores_the_network_exactly(saved):
    weights, card, network = saved
    assert weights.name == "liver-test.safetensors" and weights.with_suffix(".json").is_file()
    assert card.sha256 == sha256(weights)  # filled in, and independently recomputed
    assert ModelCard.load(weights.with_suffix(".json")).sha256 == card.sha256
    loaded = load_model(weights)
    assert isinstance(loaded, LoadedModel) and loaded.path == weights and loaded.card == card
    assert not loaded.network.training
    original, restored = network.state_dict(), loaded.network.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[key], restored[key]) for key in original)
    assert float(original["inc.1.running_var"].sub(1).abs().max()) > 0.1  # the statistics really moved
    x = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        assert torch.equal(network(x), loaded.network(x))
    for path in (weights.with_suffix(".json"), weights.with_suffix("")):
        assert torch.equal(load_model(path).network.state_dict()["outc.weight"], original["outc.weight"])


def test_the_same_network_always_gives_the_same_file(tmp_path, trained_unet):
    # safetensors orders a metadata map at random; the card's sha256 must not change with it
    contents = {save_model(trained_unet, card_for(UNET), tmp_path / f"copy{i}", dtype=torch.float16).read_bytes()
               for i in range(8)}
    assert len(contents) == 1


def test_fp16_keeps_statistics_and_loads_as_float32(tmp_path, trained_unet):
    full = save_model(trained_unet, card_for(UNET), tmp_path / "full")
    half = save_model(trained_unet, card_for(UNET), tmp_path / "half.safetensors", dtype=torch.float16)
    assert half == tmp_path / "half.safetensors"
    assert half.stat().st_size < 0.6 * full.stat().st_size
    with safe_open(str(half), framework="pt") as handle:
        assert handle.get_tensor("inc.0.weight").dtype == torch.float16
        assert handle.get_tensor("inc.1.running_var").dtype == torch.float32
        assert handle.get_tensor("inc.1.num_batches_tracked").dtype == torch.int64
        assert json.loads(handle.metadata()["model"]) == {"name": "liver-test", "version": card_for(UNET).version}
    loaded = load_model(half)
    assert all(v.dtype in (torch.float32, torch.int64) for v in loaded.network.state_dict().values())
    assert torch.equal(loaded.network.state_dict()["inc.1.running_var"], trained_unet.state_dict()["inc.1.running_var"])
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.network(x), trained_unet(x), atol=5e-2)


def test_save_refuses_a_network_its_card_does_not_describe(tmp_path, trained_unet):
    card = card_for(dict(UNET, base=8))
    with pytest.raises(ArchitectureMismatchError) as error:
        save_model(trained_unet, card, tmp_path / "model")
    assert "'inc.0.weight'" in one_line(error)
    assert list(tmp_path.iterdir()) == [] and card.sha256 == ""


def test_a_failed_save_leaves_the_previous_model_intact(tmp_path, trained_unet, monkeypatch):
    weights = save_model(trained_unet, card_for(UNET), tmp_path / "model")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", disk_full)
    with pytest.raises(OSError):
        save_model(trained_unet, card_for(UNET), tmp_path / "model")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert load_model(weights).card.name == "liver-test"


def test_torch_state_dicts_load_through_weights_only(tmp_path, trained_unet):
    state = trained_unet.state_dict()
    plain, checkpoint, parallel = tmp_path / "plain.pt", tmp_path / "checkpoint.ckpt", tmp_path / "parallel.pth"
    torch.save(state, plain)
    torch.save({"epoch": 3, "state_dict": state}, checkpoint)
    torch.save({f"module.{k}": v for k, v in state.items()}, parallel)
    for path in (plain, checkpoint, parallel):
        read = read_state_dict(path)
        assert read.keys() == state.keys() and all(torch.equal(read[k], state[k]) for k in state)
    write_card_beside(plain, card_for(UNET))
    assert torch.equal(load_model(plain).network.state_dict()["outc.bias"], state["outc.bias"])
    whole = tmp_path / "whole.pt"
    torch.save([1, 2, 3], whole)
    with pytest.raises(WeightsError, match="state dict"):
        read_state_dict(whole)


# --- hostile and broken files -----------------------------------------------------------------------
def test_the_payload_is_live_when_unpickled_unsafely(tmp_path):
    # the control: plain pickle runs it, so the refusals below are real refusals
    marker, files = malicious_files(tmp_path)
    pickle.loads(files[1].read_bytes())
    assert marker.exists()


def test_a_malicious_pickle_is_refused_on_every_weights_path(tmp_path, monkeypatch):
    marker, files = malicious_files(tmp_path)
    store = ModelStore(cache_dir=tmp_path / "cache", registry_path=tmp_path / "registry.json")
    (tmp_path / "registry.json").write_text('{"format": "slicer-essnet-registry/1", "models": []}')
    monkeypatch.setenv("SLICERESSNET_HOME", str(tmp_path / "home"))
    for path in files:
        attempts = [lambda: read_state_dict(path)]
        write_card_beside(path, card_for(UNET))  # even a card vouching for the file does not help
        attempts += [lambda: load_model(path), lambda: load_model(path.with_suffix(".json")),
                     lambda: check_model(path), lambda: store.import_file(path), lambda: store.verify(path),
                     lambda: load_model(store.resolve(path))]
        for attempt in attempts:
            with pytest.raises(UnsafeWeightsError) as error:
                attempt()
            assert "asks to run code" in one_line(error) and path.name in str(error.value)
        assert not marker.exists()
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []
    # renamed to .safetensors it is not even parsed as a pickle
    disguised = tmp_path / "disguised.safetensors"
    disguised.write_bytes(files[1].read_bytes())
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        read_state_dict(disguised)
    assert not marker.exists()


def test_a_bare_weights_file_without_its_card(saved):
    weights, _, _ = saved
    weights.with_suffix(".json").unlink()
    with pytest.raises(WeightsError) as error:
        load_model(weights)
    assert "has no model card liver-test.json beside it" in one_line(error)
    assert not isinstance(error.value, ModelNotFoundError)


def test_missing_weights(tmp_path, saved):
    weights, _, _ = saved
    for path in (tmp_path / "absent.safetensors", tmp_path / "absent.pt", tmp_path / "sub" / "absent"):
        with pytest.raises(ModelNotFoundError):
            load_model(path)
        with pytest.raises(ModelNotFoundError):
            read_state_dict(path)
    weights.unlink()
    with pytest.raises(ModelNotFoundError) as error:
        load_model(weights.with_suffix(".json"))
    assert "no weights beside it" in one_line(error)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(WeightsError, match="not a weights file"):
        read_state_dict(other)


def test_a_truncated_file(saved):
    weights, card, _ = saved
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ChecksumMismatchError) as error:
        load_model(weights)
    assert "truncated, corrupt or replaced" in one_line(error)
    with pytest.raises(WeightsError) as error:
        read_state_dict(weights)
    assert "truncated or corrupt" in one_line(error)
    write_card_beside(weights, card)  # the checksum agrees now; the parser must still refuse
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_model(weights)
    for size in (0, 7):
        weights.write_bytes(data[:size])
        with pytest.raises(WeightsError, match="truncated or corrupt"):
            read_state_dict(weights)


def test_truncated_and_empty_torch_files(tmp_path, trained_unet):
    path = tmp_path / "model.pt"
    torch.save(trained_unet.state_dict(), path)
    assert zipfile.is_zipfile(path)
    data = path.read_bytes()
    for cut in (0, len(data) // 2, len(data) - 30):
        path.write_bytes(data[:cut])
        with pytest.raises(WeightsError) as error:
            read_state_dict(path)
        one_line(error)


def test_a_wrong_checksum(saved):
    weights, _, _ = saved
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # one bit of one weight: parses fine, but is not the published file
    weights.write_bytes(bytes(data))
    read_state_dict(weights)
    with pytest.raises(ChecksumMismatchError) as error:
        load_model(weights)
    assert "liver-test.safetensors" in one_line(error)


def test_a_bit_flipped_past_the_first_mebibyte_is_refused(tmp_path):
    """Every other file here is under 1 MiB, where hashing only the first MiB would still pass; this one is 2 MB."""
    from SlicerEssNet.weights import file_sha256

    weights = create_untrained_model("segmentation", tmp_path / "wide-liver", width=8)
    data = bytearray(weights.read_bytes())
    header_end = 8 + int.from_bytes(data[:8], "little")
    assert len(data) > 3 << 19 and header_end < 1 << 20
    assert file_sha256(weights) == sha256(weights)  # the whole file, as hashlib reads it in one go
    load_model(weights)  # the control: as saved, it loads
    offset = (1 << 20) + (len(data) - (1 << 20)) // 2  # tensor data, well past the first MiB
    data[offset] ^= 0x01
    weights.write_bytes(bytes(data))
    assert file_sha256(weights) == sha256(weights)
    read_state_dict(weights)  # still a well-formed file: only the checksum can tell
    for check in (load_model, check_model):
        with pytest.raises(ChecksumMismatchError) as error:
            check(weights)
        assert "truncated, corrupt or replaced" in one_line(error)


def test_a_card_without_checksum_is_refused(saved):
    weights, card, _ = saved
    card.replace(sha256="").save(weights.with_suffix(".json"))
    with pytest.raises(WeightsError, match="no sha256"):
        load_model(weights)


@pytest.mark.parametrize("edit, words", [
    (lambda s: s.pop("up.3.conv.4.bias"), "lacks 'up.3.conv.4.bias'"),
    (lambda s: s.__setitem__("extra.weight", torch.zeros(3)), "has 'extra.weight'"),
    (lambda s: s.__setitem__("outc.weight", torch.zeros(3, 4, 1, 1)), "'outc.weight' has shape [3, 4, 1, 1]"),
])
def test_weights_that_do_not_fit_the_card_name_the_first_bad_key(tmp_path, trained_unet, edit, words):
    state = {k: v.clone() for k, v in trained_unet.state_dict().items()}
    edit(state)
    path = tmp_path / "edited.safetensors"
    save_file(state, str(path))
    write_card_beside(path, card_for(UNET))
    with pytest.raises(ArchitectureMismatchError) as error:
        load_model(path)
    assert words in one_line(error)
    with pytest.raises(ArchitectureMismatchError, match="the card's unet"):
        check_model(path)


def test_a_card_describing_another_width(saved):
    weights, card, _ = saved
    card.replace(architecture=dict(UNET, base=8)).save(weights.with_suffix(".json"))
    with pytest.raises(ArchitectureMismatchError) as error:
        load_model(weights)
    assert "'inc.0.weight' has shape [4, 1, 3, 3]" in one_line(error) and "[8, 1, 3, 3]" in str(error.value)


def test_devices(saved):
    weights, _, _ = saved
    with pytest.raises(DeviceError) as error:
        load_model(weights, device="warp-drive")
    one_line(error)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="'cuda'"):
            load_model(weights, device="cuda")
    assert next(load_model(weights, device=torch.device("cpu")).network.parameters()).device.type == "cpu"


def test_fuzzed_weights_files_raise_only_our_errors(saved):
    """A bounded fuzz: flipped bytes in the header and body, truncations and junk appended."""
    weights, card, _ = saved
    original = weights.read_bytes()
    header_end = 8 + int.from_bytes(original[:8], "little")
    generator = random.Random(1234)
    outcomes = {"loaded": 0, "refused": 0}
    for trial in range(150):
        data = bytearray(original)
        kind = trial % 3
        if kind == 0:
            for _ in range(generator.randint(1, 4)):
                data[generator.randrange(0, header_end)] = generator.randrange(256)
        elif kind == 1:
            del data[generator.randrange(0, len(data)):]
        else:
            data[generator.randrange(0, 8)] = generator.randrange(256)
            data += bytes(generator.randrange(256) for _ in range(generator.randint(0, 64)))
        weights.write_bytes(bytes(data))
        try:
            read_state_dict(weights)
            outcomes["loaded"] += 1
        except WeightsError as error:
            assert "\n" not in str(error)
            outcomes["refused"] += 1
        if bytes(data) != original:
            with pytest.raises(ChecksumMismatchError):
                load_model(weights)
        write_card_beside(weights, card)  # past the checksum, the loader itself must still only raise ours
        try:
            load_model(weights)
        except WeightsError as error:
            assert "\n" not in str(error)
        card.save(weights.with_suffix(".json"))
    assert outcomes["refused"] > 50


# --- the untrained stand-in -------------------------------------------------------------------------
@pytest.mark.parametrize("task, modality, expected_in, expected_out", [
    ("synthesis", None, "CT", "MR"), ("synthesis", "mr", "MR", "CT"),
    ("segmentation", None, "MR", "label"), ("segmentation", "CT", "CT", "label"),
])
def test_untrained_models_are_complete_and_say_so(tmp_path, task, modality, expected_in, expected_out):
    weights = create_untrained_model(task, tmp_path / f"tiny-{task}", input_modality=modality)
    loaded = load_model(weights)
    card = loaded.card
    assert card.name == f"tiny-{task}" and card.task == task and "UNTRAINED" in card.description
    assert card.input_modality == expected_in and card.output_modality == expected_out
    assert card.grid == {"mode": "spacing", "spacing_mm": 3.0, "multiple_of": 16}
    assert card.sha256 == sha256(weights)
    if task == "segmentation":
        assert card.label_names == {0: "background", 1: "liver"} and card.architecture["name"] == "unet"
        assert card.preprocessing["kind"] == ("ct_window" if expected_in == "CT" else "mr_percentile")
    else:
        assert card.architecture["name"] == "resnet_generator" and card.postprocessing["kind"] == "linear"
    with torch.no_grad():
        y = loaded.network(torch.randn(2, 1, 48, 64))
    assert y.shape == (2, card.num_outputs, 48, 64) and torch.isfinite(y).all()
    assert sum(p.numel() for p in loaded.network.parameters()) < 200_000


def test_untrained_models_are_reproducible_and_validated(tmp_path):
    state = torch.get_rng_state()
    first = create_untrained_model("segmentation", tmp_path / "a", width=8)
    second = create_untrained_model("segmentation", tmp_path / "b", width=8)
    assert torch.equal(state, torch.get_rng_state())  # the caller's random stream is untouched
    a, b = read_state_dict(first), read_state_dict(second)
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert load_model(first).card.architecture["base"] == 8
    with pytest.raises(WeightsError, match="synthesis or segmentation"):
        create_untrained_model("denoising", tmp_path / "c")
    with pytest.raises(WeightsError, match="CT or MR"):
        create_untrained_model("synthesis", tmp_path / "d", input_modality="PET")


def test_load_model_by_name_from_the_user_cache(tmp_path, monkeypatch):
    source = create_untrained_model("segmentation", tmp_path / "my-liver")
    monkeypatch.setenv("SLICERESSNET_HOME", str(tmp_path / "home"))
    ModelStore().import_file(source)
    loaded = ModelStore().load("my-liver")
    assert loaded.path == tmp_path / "home" / "models" / "my-liver.safetensors"
    with pytest.raises(ModelNotFoundError) as error:
        ModelStore().load("my-livr")
    assert "models list" in one_line(error)
