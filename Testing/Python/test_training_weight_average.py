"""The stage-2 weight average: its arithmetic, that it is what validation scores and the arm returns, and that a
run interrupted after a checkpoint resumes with the same average (it lives in the checkpoint)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from Training.stages.distributed import DistributedContext
from Training.study.presets import get_preset
from Training.data.slices import SliceSet
from Training.stages.train_segmentation import train_segmentation
from Training.stages.weight_average import WeightAverage


def _network():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))


def test_average_follows_the_warm_up_then_the_decay():
    live = _network()
    average = WeightAverage(live, decay=0.5)
    start = live[0].weight.detach().clone()
    with torch.no_grad():
        live[0].weight.add_(1.0)
    live[1].num_batches_tracked += 7
    average.update(live)  # warm-up decay min(0.5, 2/11) = 2/11
    expected = start * (2 / 11) + (start + 1.0) * (9 / 11)
    torch.testing.assert_close(average.network[0].weight, expected)
    assert int(average.network[1].num_batches_tracked) == 7  # counters are copied, not averaged
    with torch.no_grad():
        live[0].weight.add_(1.0)
    average.update(live)  # min(0.5, 3/12) = 0.25
    torch.testing.assert_close(average.network[0].weight, expected * 0.25 + (start + 2.0) * 0.75)
    assert not any(p.requires_grad for p in average.network.parameters())


def test_decay_outside_the_open_unit_interval_is_refused():
    with pytest.raises(ValueError, match=r"decay must lie in \(0, 1\)"):
        WeightAverage(_network(), decay=1.0)


def _preset(ema_decay: float):
    preset = get_preset("demo")
    preset.segmentation = dataclasses.replace(preset.segmentation, base=4, crop=32, batch_size=2, eval_every=4,
                                              checkpoint_every=4, decay_from=4, ema_decay=ema_decay)
    preset.data.crop = 32
    return preset


def _slices():
    data = torch.Generator().manual_seed(5)
    slices = SliceSet()
    slices.add("p0", torch.rand(6, 32, 32, generator=data) * 2 - 1,
               (torch.rand(6, 32, 32, generator=data) > 0.5).to(torch.uint8))
    return slices


class _Interrupted(Exception):
    pass


def test_the_arm_returns_the_average_and_resumes_it(tmp_path):
    scored = []

    def validate(network):
        scored.append({k: v.clone() for k, v in network.state_dict().items()})
        return 1.0 / len(scored)  # the first evaluation stays best

    reference, _, best = train_segmentation(tmp_path / "reference", _slices(), None, _preset(0.9), 0,
                                            DistributedContext(), validate=validate, total=10)
    assert best["iteration"] == 4
    live = torch.load(tmp_path / "reference" / "checkpoint.pt", weights_only=True)["training"]
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(value, scored[0][key], rtol=0, atol=0)  # the best one scored: the average
    assert any(not torch.equal(live["average"]["network"][k], live["network"][k]) for k in live["network"])

    # Interrupted after the checkpoint at iteration 8, then started again: same average, same end.
    calls = {"n": 0}

    def interrupting(network):
        calls["n"] += 1
        if calls["n"] == 2:
            raise _Interrupted
        return validate(network)

    with pytest.raises(_Interrupted):
        train_segmentation(tmp_path / "resumed", _slices(), None, _preset(0.9), 0, DistributedContext(),
                           validate=interrupting, total=10)
    train_segmentation(tmp_path / "resumed", _slices(), None, _preset(0.9), 0, DistributedContext(),
                       validate=validate, total=10)
    resumed = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["training"]
    for key, value in live["average"]["network"].items():
        torch.testing.assert_close(resumed["average"]["network"][key], value, rtol=0, atol=0, msg=key)


def test_without_a_decay_the_live_network_is_scored(tmp_path):
    network, _, _ = train_segmentation(tmp_path / "plain", _slices(), None, _preset(0.0), 0, DistributedContext(),
                                       validate=lambda n: 0.5, total=4)
    state = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)["training"]
    assert "average" not in state
    for key, value in network.state_dict().items():
        torch.testing.assert_close(value, state["network"][key], rtol=0, atol=0)
