"""The slice engine and the pipeline around it: exact geometry, identical results for any batch size,
progress, cancellation, out-of-memory retry, and real volumes in and out."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from SlicerEssNet.errors import CancelledError, DeviceError, ModalityMismatchError
from SlicerEssNet.geometry import CanonicalFrame, GridSpec, SliceGrid
from SlicerEssNet.inference import SliceEngine, SliceTask
from SlicerEssNet.pipeline import keep_largest_component, run_model
from SlicerEssNet.progress import CancelToken
from SlicerEssNet.volume import Volume
from SlicerEssNet.weights import LoadedModel, create_untrained_model, load_model


class Identity(torch.nn.Module):
    """Returns its input: the pipeline must then give back the input's intensities on the input's grid."""

    def forward(self, x):
        return x


class MarkLeftHalf(torch.nn.Module):
    """Two-class logits: class 1 on the image's left half (the patient's right in the canonical frame)."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 2, x.shape[2], x.shape[3], dtype=x.dtype, device=x.device)
        logits[:, 1, :, : x.shape[3] // 2] = 5.0
        logits[:, 0, :, x.shape[3] // 2:] = 5.0
        return logits


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    create_untrained_model("synthesis", folder / "tiny_synthesis", width=4)
    create_untrained_model("segmentation", folder / "tiny_segmentation", width=4)
    return {
        "synthesis": load_model(folder / "tiny_synthesis.safetensors"),
        "segmentation": load_model(folder / "tiny_segmentation.safetensors"),
    }


def identity_model(loaded, spacing_mm):
    """The input scale [-1, 1] maps straight through: output intensities equal input intensities."""
    card = loaded.card.replace(
        grid={"mode": "spacing", "spacing_mm": spacing_mm, "multiple_of": 4},
        input=dict(loaded.card.input, preprocessing={"kind": "ct_window", "low": -1.0, "high": 1.0}),
        output=dict(loaded.card.output, postprocessing={"kind": "linear", "low": -1.0, "high": 1.0}))
    return LoadedModel(card=card, network=Identity(), path=loaded.path)


def smooth_volume(shape=(7, 20, 24), spacing=(2.0, 2.0, 5.0), direction=np.eye(3)):
    k, j, i = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    array = (0.6 * np.sin(2 * i) * np.cos(j) + 0.3 * k).astype(np.float32)
    return Volume(array, spacing, (10.0, -20.0, 30.0), direction)


def test_identity_network_returns_the_input_on_the_input_grid(tiny_models):
    model = identity_model(tiny_models["synthesis"], spacing_mm=2.0)
    volume = smooth_volume()
    result = run_model(volume, model, device="cpu", precision="fp32", allow_modality_mismatch=True)
    assert result.same_geometry(volume)
    assert result.array.dtype == np.float32
    np.testing.assert_allclose(result.array, volume.array, atol=1e-5)


@pytest.mark.parametrize("permutation", [(0, 1, 2), (2, 1, 0), (1, 0, 2), (1, 2, 0)])
@pytest.mark.parametrize("flip", [(1, 1, 1), (-1, 1, -1), (1, -1, 1)])
def test_result_follows_the_anatomy_whatever_the_voxel_order(tiny_models, permutation, flip):
    """The same anatomy stored in another voxel order gives the same labels at the same physical points."""
    card = tiny_models["segmentation"].card.replace(grid={"mode": "spacing", "spacing_mm": 2.0, "multiple_of": 16})
    model = LoadedModel(card=card, network=MarkLeftHalf(), path=None)
    base = smooth_volume(shape=(5, 16, 20), spacing=(2.0, 2.0, 2.0))
    reference = run_model(base, model, device="cpu", allow_modality_mismatch=True).array
    # Re-store the volume: permute the voxel axes (array axes are k, j, i) and flip some.
    direction = np.eye(3)[:, list(permutation)] * np.array(flip)[np.newaxis, :]
    array = base.array.transpose([2 - p for p in reversed(permutation)])
    for axis, sign in enumerate(flip):  # a flipped axis stores the same anatomy backwards
        if sign < 0:
            array = np.flip(array, axis=2 - axis)
    stored = Volume(array, (2.0, 2.0, 2.0), (0, 0, 0), direction)
    stored_frame = CanonicalFrame.of(stored)
    result = run_model(stored, model, device="cpu", allow_modality_mismatch=True)
    assert result.same_geometry(stored)
    np.testing.assert_array_equal(stored_frame.to_canonical(result.array),
                                  CanonicalFrame.of(base).to_canonical(reference))
    # The label sits on the patient's right (LPS x < centre) whatever the storage order.
    assert reference.any() and not reference.all()


def test_batch_size_does_not_change_the_result(tiny_models):
    volume = smooth_volume(shape=(9, 24, 24))
    loaded = tiny_models["synthesis"]
    a = run_model(volume, loaded, device="cpu", precision="fp32", batch_size=1, allow_modality_mismatch=True)
    b = run_model(volume, loaded, device="cpu", precision="fp32", batch_size=4, allow_modality_mismatch=True)
    np.testing.assert_allclose(a.array, b.array, rtol=1e-5, atol=1e-3)


def _plain_task(rows=16, cols=16):
    grid = SliceGrid.plan((rows, cols), (1.0, 1.0), GridSpec(mode="spacing", spacing_mm=1.0, multiple_of=4))
    return SliceTask(grid, 1.0, 0.0, output="image")


def test_progress_reaches_total_and_cancel_stops_between_batches():
    engine = SliceEngine(Identity(), device="cpu", precision="fp32", batch_size=2)
    source = np.random.default_rng(0).random((7, 16, 16), dtype=np.float32)
    seen = []
    destination = np.zeros_like(source)
    engine.run(source, destination, _plain_task(), progress=seen.append)
    assert [p.done for p in seen] == [0, 2, 4, 6, 7]
    assert seen[-1].total == 7 and seen[-1].fraction == 1.0
    np.testing.assert_allclose(destination, source, atol=1e-6)

    token = CancelToken()

    def cancel_after_first_batch(progress):
        if progress.done >= 2:
            token.cancel()

    with pytest.raises(CancelledError):
        engine.run(source, np.zeros_like(source), _plain_task(), progress=cancel_after_first_batch, cancel=token)


def test_out_of_memory_halves_the_batch_and_finishes(monkeypatch):
    engine = SliceEngine(Identity(), device="cpu", precision="fp32", batch_size=8)
    sizes = []

    def flaky(staged, task):  # a GPU that fits two slices at a time; the identity network otherwise
        slices = staged[0][:, 0]
        sizes.append(len(slices))
        if len(slices) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return slices.clone()

    monkeypatch.setattr(engine, "_compute", flaky)
    monkeypatch.setattr(engine, "_upload", lambda slices: (torch.from_numpy(np.array(slices))[:, None], None, None))
    monkeypatch.setattr(engine, "device", torch.device("cuda"))
    monkeypatch.setattr(engine.torch.cuda, "empty_cache", lambda: None)
    source = np.random.default_rng(1).random((5, 16, 16), dtype=np.float32)
    destination = np.zeros_like(source)
    engine.run(source, destination, _plain_task())
    assert sizes[:3] == [5, 4, 2]
    np.testing.assert_allclose(destination, source, atol=1e-6)

    monkeypatch.setattr(engine, "_compute", lambda s, t: (_ for _ in ()).throw(RuntimeError("CUDA out of memory")))
    with pytest.raises(DeviceError, match="ran out of memory"):
        engine.run(source, destination, _plain_task())


def test_modality_mismatch_is_refused_unless_allowed(tiny_models, shared_data):
    from SlicerEssNet.io.volume_files import read_volume

    mr = read_volume(shared_data / "totalseg_examples" / "example_mr_sm.nii.gz")
    with pytest.raises(ModalityMismatchError, match="allow"):
        run_model(mr, tiny_models["synthesis"], device="cpu")
    with pytest.warns(UserWarning):
        result = run_model(mr, tiny_models["synthesis"], device="cpu", allow_modality_mismatch=True)
    assert result.same_geometry(mr)


@pytest.mark.data
@pytest.mark.parametrize("name,task", [("btcv_ct/ct_01.nii.gz", "synthesis"), ("chaos_mr_t2/mr_t2_01.nii.gz", "segmentation")])
def test_real_volumes_keep_their_exact_geometry(tiny_models, shared_data, name, task):
    from SlicerEssNet.io.volume_files import read_volume

    volume = read_volume(shared_data / name)
    volume = Volume(volume.array[:3, :256, :256], volume.spacing, volume.origin, volume.direction)  # no padding  # 3 slices are enough
    result = run_model(volume, tiny_models[task], device="cpu")
    assert result.same_geometry(volume)
    assert result.array.dtype == (np.uint8 if task == "segmentation" else np.float32)


@pytest.mark.data
def test_synthesis_of_a_real_ct_is_the_network_applied_by_hand(tiny_models, shared_data):
    """On a grid equal to the CT's own pixels (no resampling), the pipeline's result must be exactly: window the
    HU to [-1, 1] as the card says, run the network on each canonical slice, map [-1, 1] to the card's MR scale.
    A range check could not tell: the tanh keeps any mistake in range."""
    from SlicerEssNet.io.volume_files import read_volume

    volume = read_volume(shared_data / "btcv_ct" / "ct_01.nii.gz")
    volume = Volume(volume.array[:3, :256, :256], volume.spacing, volume.origin, volume.direction)  # no padding
    frame = CanonicalFrame.of(volume)
    _, row_mm, col_mm = frame.canonical_spacing(volume.spacing)
    assert row_mm == col_mm, "square pixels: one model spacing then leaves every pixel where it is"
    loaded = tiny_models["synthesis"]
    card = loaded.card.replace(grid={"mode": "spacing", "spacing_mm": col_mm, "multiple_of": 4})
    canonical = frame.to_canonical(volume.array)
    assert SliceGrid.plan(canonical.shape[1:], (row_mm, col_mm), GridSpec.from_dict(card.grid)).pad == (0, 0, 0, 0)
    result = run_model(volume, LoadedModel(card=card, network=loaded.network, path=loaded.path), device="cpu",
                       precision="fp32")

    window = card.preprocessing  # {"kind": "ct_window", "low": -125, "high": 275}
    assert window["kind"] == "ct_window"
    x = np.clip((canonical.astype(np.float64) - window["low"]) / (window["high"] - window["low"]) * 2 - 1, -1, 1)
    with torch.no_grad():
        y = loaded.network(torch.from_numpy(x.astype(np.float32))[:, None])[:, 0].double().numpy()
    out = card.postprocessing  # {"kind": "linear", "low": 0, "high": 1000}
    expected = (np.clip(y, -1, 1) + 1) / 2 * (out["high"] - out["low"]) + out["low"]
    assert expected.std() > 1.0, "the untrained network's output varies over the slice"
    np.testing.assert_allclose(frame.to_canonical(result.array), expected, rtol=0, atol=0.5)  # 0.05 % of the scale


def test_keep_largest_component_drops_islands_only():
    labels = np.zeros((4, 10, 10), np.uint8)
    labels[1:3, 1:6, 1:6] = 1
    labels[0, 8, 8] = 1
    labels[3, 8, 1] = 2  # another label is untouched
    cleaned = keep_largest_component(labels)
    assert cleaned[0, 8, 8] == 0 and cleaned[3, 8, 1] == 2
    assert (cleaned == 1).sum() == 2 * 5 * 5


def test_batch_norm_folding_keeps_the_result_and_the_callers_network():
    from SlicerEssNet.fusion import fold_batch_norm
    from SlicerEssNet.networks import build_network

    torch.manual_seed(0)
    network = build_network({"name": "unet", "in_channels": 1, "num_classes": 2, "base": 4})
    with torch.no_grad():  # running statistics that are not the identity, as after training
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    network.eval()
    folded = fold_batch_norm(network)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())  # the original is untouched
    x = torch.randn(2, 1, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), network(x), rtol=1e-4, atol=1e-4)


def test_convolution_relu_fusion_keeps_the_unets_result(monkeypatch):
    """Every conv + ReLU of the U-Net becomes one call; fp32 gives the unfused result, bf16 autocast the unfused
    bf16 result, and without the oneDNN op (other builds, other devices) the same module falls back exactly."""
    from SlicerEssNet.fusion import fold_batch_norm, prepare_for_inference
    from SlicerEssNet.networks import build_network
    from SlicerEssNet.networks import low_precision_layers
    from SlicerEssNet.networks.low_precision_layers import ConvReLU

    torch.manual_seed(0)
    network = build_network({"name": "unet", "in_channels": 1, "num_classes": 2, "base": 4})
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    network.eval()
    unfused = fold_batch_norm(network).to(memory_format=torch.channels_last)
    fused = prepare_for_inference(network).to(memory_format=torch.channels_last)
    assert sum(isinstance(m, ConvReLU) for m in fused.modules()) == 18  # 9 double convs
    assert not any(isinstance(m, torch.nn.ReLU) for m in fused.modules())
    if torch.backends.mkldnn.is_available():  # CPU builds with oneDNN: the fused path is the one tested
        assert low_precision_layers.pointwise_convolution() is not None
    x = (torch.randn(3, 1, 32, 32)).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        reference = unfused(x)
        torch.testing.assert_close(fused(x), reference, rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, low_fused = unfused(x).float(), fused(x).float()
        torch.testing.assert_close(low_fused, low, rtol=2e-2, atol=2e-2)
        assert (low_fused - reference).abs().max() < 0.1
        monkeypatch.setitem(low_precision_layers._POINTWISE, torch.float32, None)
        monkeypatch.setitem(low_precision_layers._POINTWISE, torch.bfloat16, None)
        torch.testing.assert_close(fused(x), reference, rtol=0, atol=0)


def test_low_precision_rewrite_keeps_the_generators_result():
    """Group norm with one group per channel is instance norm, and padding only copies: same output in fp32, no
    worse under bf16, and the padded activations stay bf16 (autocast would have made them fp32)."""
    from SlicerEssNet.fusion import prepare_for_inference
    from SlicerEssNet.networks import build_network
    from SlicerEssNet.networks.low_precision_layers import GroupedInstanceNorm, InputDtypeReflectionPad2d

    torch.manual_seed(0)
    network = build_network({"name": "resnet_generator", "in_channels": 1, "out_channels": 1, "ngf": 8,
                             "n_blocks": 2}).eval()
    affine = torch.nn.InstanceNorm2d(8, affine=True)
    with torch.no_grad():
        affine.weight.uniform_(0.5, 1.5)
        affine.bias.uniform_(-0.5, 0.5)
    network.model[2] = affine  # the rewrite carries affine parameters too
    prepared = prepare_for_inference(network)
    swapped = [m for m in prepared.modules() if isinstance(m, GroupedInstanceNorm)]
    assert len(swapped) == 2 * 2 + 5 and not any(isinstance(m, torch.nn.InstanceNorm2d) for m in prepared.modules())
    assert sum(isinstance(m, InputDtypeReflectionPad2d) for m in prepared.modules()) == 2 + 2 * 2
    assert sum(isinstance(m, torch.nn.InstanceNorm2d) for m in network.modules()) == 9  # the original untouched
    x = torch.randn(2, 1, 32, 48) * 3.0 + 1.0
    with torch.inference_mode():
        reference = network(x)
        torch.testing.assert_close(prepared(x), reference, rtol=1e-5, atol=1e-5)
        channels_last = prepared.to(memory_format=torch.channels_last)
        x_last = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(channels_last(x_last), reference, rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            before, after = network(x_last).float(), channels_last(x_last).float()
            assert channels_last.model[-3](torch.ones(1, 8, 8, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16
    error_before, error_after = (before - reference).abs().max(), (after - reference).abs().max()
    assert error_after < 0.05 and error_after <= 1.5 * error_before, (error_before, error_after)


def test_a_loaded_model_prepares_its_network_once_per_device(tmp_path, monkeypatch):
    """A cohort folds and copies the network once; every volume gets the same result as a fresh model would."""
    import SlicerEssNet.inference as inference

    path = create_untrained_model("segmentation", tmp_path / "tiny", width=4)
    loaded, fresh = load_model(path), load_model(path)
    folds = []
    real_prepare = inference.prepare_for_inference
    monkeypatch.setattr(inference, "prepare_for_inference", lambda network: folds.append(1) or real_prepare(network))
    volume = smooth_volume()
    first = run_model(volume, loaded, device="cpu", precision="fp32")
    second = run_model(volume, loaded, device="cpu", precision="fp32")
    assert len(folds) == 1 and list(loaded.prepared) == ["cpu"]
    assert loaded.prepared["cpu"] is not loaded.network  # the caller's network is never rewritten
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.network.modules())
    np.testing.assert_array_equal(second.array, first.array)
    np.testing.assert_array_equal(run_model(volume, fresh, device="cpu", precision="fp32").array, first.array)
