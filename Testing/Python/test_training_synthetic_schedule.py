"""The mixed arms' batches: real and synthetic MR side by side throughout, or (``synthetic_until``) synthetic MR
first and real MR alone afterwards, always at the preset's batch size."""
from __future__ import annotations

import dataclasses

import pytest

from Training.data.cohorts import phantom_cases
from Training.stages.distributed import DistributedContext
from Training.study.presets import get_preset
from Training.data.slices import build_slice_set
from Training.stages.train_segmentation import train_segmentation

GRID = {"mode": "spacing", "spacing_mm": 8.0, "size": 48, "multiple_of": 16}


@pytest.fixture(scope="module")
def slice_sets(tmp_path_factory):
    cases = phantom_cases(tmp_path_factory.mktemp("phantoms"), 1, 1)
    return build_slice_set(cases["MR"], GRID), build_slice_set(cases["CT"], GRID)  # CT stands in for synthetic MR


def drawn_batches(tmp_path, slice_sets, **options):
    """Per iteration, how many slices each set gave."""
    real, synthetic = slice_sets
    draws = []

    def recording(name, batch):
        def wrapped(indices, *args, **kwargs):
            draws.append((name, len(indices)))
            return batch(indices, *args, **kwargs)
        return wrapped

    real.batch, synthetic.batch = recording("real", real.batch), recording("synthetic", synthetic.batch)
    try:
        preset = get_preset("demo")
        preset.segmentation = dataclasses.replace(preset.segmentation, base=4, crop=32, batch_size=2, decay_from=3,
                                                  checkpoint_every=100, **options)
        train_segmentation(tmp_path, real, synthetic, preset, 0, DistributedContext(), total=6)
    finally:
        del real.batch, synthetic.batch
    return draws


def test_mixed_batches_by_default(tmp_path, slice_sets):
    draws = drawn_batches(tmp_path / "mixed", slice_sets, synthetic_fraction=0.5)
    assert draws == [("real", 1), ("synthetic", 1)] * 6


def test_synthetic_first_then_real_alone(tmp_path, slice_sets):
    draws = drawn_batches(tmp_path / "pretrain", slice_sets, synthetic_fraction=1.0, synthetic_until=3)
    assert draws == [("synthetic", 2)] * 3 + [("real", 2)] * 3
    draws = drawn_batches(tmp_path / "half", slice_sets, synthetic_fraction=0.5, synthetic_until=4)
    assert draws == [("real", 1), ("synthetic", 1)] * 4 + [("real", 2)] * 2


def test_random_appearance_reaches_the_slices_it_is_asked_for(tmp_path, slice_sets, monkeypatch):
    """``real+ct`` restyles every CT slice and no real one; ``data.random_appearance`` restyles real slices."""
    import Training.stages.train_segmentation as loop

    calls = []

    def recording(images, generator, share=1.0, **kwargs):
        calls.append((images.shape[0], share))
        return images

    monkeypatch.setattr(loop, "random_appearance", recording)
    real, synthetic = slice_sets
    preset = get_preset("demo")
    preset.segmentation = dataclasses.replace(preset.segmentation, base=4, crop=32, batch_size=4, decay_from=3,
                                              checkpoint_every=100, ct_fraction=0.25)
    train_segmentation(tmp_path / "ct", real, synthetic, preset, 0, DistributedContext(), total=2,
                       restyle_synthetic=True)
    assert calls == [(1, 1.0)] * 2  # the one synthetic slice of each batch of 4
    calls.clear()
    preset.data = dataclasses.replace(preset.data, random_appearance=0.3)
    train_segmentation(tmp_path / "mr", real, None, preset, 0, DistributedContext(), total=2)
    assert calls == [(4, 0.3)] * 2


def test_batches_reach_the_network_in_channels_last(tmp_path, slice_sets):
    """Stage 2 trains in NHWC (``runtime.convolution_memory_format``, 1.2x faster steps on the CPU); the layout
    changes the speed, not what the network computes."""
    import torch

    from Training.stages.deep_supervision import WithDeepSupervision

    layouts = []
    original = WithDeepSupervision.forward

    def recording(self, x):
        # a convolution that reads more than one channel (with one, NCHW and NHWC strides are the same)
        weight = next(m.weight for m in self.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
        layouts.append((weight.is_contiguous(memory_format=torch.channels_last), weight.is_contiguous()))
        return original(self, x)

    real, _ = slice_sets
    preset = get_preset("demo")
    preset.segmentation = dataclasses.replace(preset.segmentation, base=4, crop=32, batch_size=2, decay_from=3,
                                              checkpoint_every=100, deep_supervision=2)
    WithDeepSupervision.forward = recording
    try:
        network, _, _ = train_segmentation(tmp_path, real, None, preset, 0, DistributedContext(), total=2)
    finally:
        WithDeepSupervision.forward = original
    assert layouts == [(True, False)] * 2  # NHWC, not NCHW, at every step
    x = real.batch([0, 1], 32)[0]
    with torch.no_grad():
        plain = network.eval()(x)
        nhwc = network(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(nhwc, plain, rtol=1e-4, atol=1e-5)
