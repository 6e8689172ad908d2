"""One stage-1 step: EssNet updates both generators, the segmenter and both Ds; the ablation has no segmenter
at all, and differs from EssNet only through the segmentation gradient into G_CT->MR."""
from __future__ import annotations

import dataclasses

import torch

from Training.stages.essnet import EssNetModel
from Training.study.presets import SynthesisOptions

TINY = SynthesisOptions(ngf=4, ndf=4, seg_ngf=4, n_blocks=1, seg_n_blocks=1, crop=32, iterations=10, decay_from=5,
                        pool_size=2, autocast_bf16=False)


def _batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    ct = torch.rand(1, 1, 32, 32, generator=generator) * 2 - 1
    mr = torch.rand(1, 1, 32, 32, generator=generator) * 2 - 1
    liver = (ct[:, 0] > 0).long()
    return ct, liver, mr


def _snapshot(module):
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def _changed(before, module, prefix):
    after = module.state_dict()
    keys = [k for k in before if k.startswith(prefix) and before[k].is_floating_point()]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


def test_essnet_step_updates_every_network_and_reports_every_loss():
    model = EssNetModel(dataclasses.replace(TINY, seg_weight=1.0), seed=0)
    generators, discriminators = _snapshot(model.generators), _snapshot(model.discriminators)
    record = model.step(*_batch(), iteration=0, total=10)
    for prefix in ("ct_to_mr.", "mr_to_ct.", "segmenter."):
        assert _changed(generators, model.generators, prefix), prefix
    for prefix in ("mr.", "ct."):
        assert _changed(discriminators, model.discriminators, prefix), prefix
    assert {"G_adv_mr", "G_adv_ct", "cycle", "seg", "D_mr", "D_ct"} <= set(record)
    assert all(torch.isfinite(torch.tensor(v)) for v in record.values())


def test_ablation_has_no_segmenter_and_differs_only_through_the_segmentation_gradient():
    essnet = EssNetModel(dataclasses.replace(TINY, seg_weight=1.0), seed=3)
    ablation = EssNetModel(dataclasses.replace(TINY, seg_weight=0.0), seed=3)
    assert ablation.generators.segmenter is None and not ablation.essnet
    assert not any(k.startswith("segmenter.") for k in ablation.generators.state_dict())
    # Same seed: identical generators and discriminators before training.
    for a, b in ((essnet.generators.ct_to_mr, ablation.generators.ct_to_mr),
                 (essnet.discriminators, ablation.discriminators)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name
    batch = _batch(1)
    record = ablation.step(*batch, iteration=0, total=10)
    essnet.step(*batch, iteration=0, total=10)
    assert "seg" not in record
    # The segmentation loss reaches G_CT->MR (through the synthetic MR) and nothing else in the G step.
    differs = lambda a, b: any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(),  # noqa: E731
                                                                         b.state_dict().values()))
    assert differs(essnet.generators.ct_to_mr, ablation.generators.ct_to_mr)
    assert not differs(essnet.generators.mr_to_ct, ablation.generators.mr_to_ct)
    assert not differs(essnet.discriminators, ablation.discriminators)


def test_discriminators_are_frozen_during_the_generator_update():
    """Seen from inside the step: when the generators' optimiser steps (their backward pass done), no
    discriminator parameter takes gradients and none has received any from the generators' loss. The D step
    clears the Ds' gradients first, so the weights alone after a step could not tell."""
    model = EssNetModel(dataclasses.replace(TINY, seg_weight=1.0), seed=0)
    model.step(*_batch(0), iteration=0, total=10)  # the Ds now hold their own step's gradients
    parameters = list(model.discriminators.parameters())
    left_by_the_d_step = [p.grad.detach().clone() for p in parameters]
    seen = []
    generator_step = model.optimizer_g.step

    def record_then_step(*args, **kwargs):
        seen.append({"requires_grad": [p.requires_grad for p in parameters],
                     "unchanged": [p.grad is not None and torch.equal(p.grad, before)
                                   for p, before in zip(parameters, left_by_the_d_step)]})
        return generator_step(*args, **kwargs)

    model.optimizer_g.step = record_then_step
    model.step(*_batch(1), iteration=1, total=10)
    assert len(seen) == 1, "the generators step once per training step"
    assert not any(seen[0]["requires_grad"]), "the discriminators take gradients during the generator update"
    assert all(seen[0]["unchanged"]), "the generators' loss put gradients into the discriminators"
    assert all(p.requires_grad for p in parameters)  # re-enabled for the D step
    assert all(p.grad is not None for p in parameters)  # which then gave them their own gradients


def test_state_dict_round_trip_restores_pools_and_optimisers():
    model = EssNetModel(dataclasses.replace(TINY, seg_weight=1.0), seed=0)
    for i in range(3):
        model.step(*_batch(i), iteration=i, total=10)
    state = model.state_dict()
    clone = EssNetModel(dataclasses.replace(TINY, seg_weight=1.0), seed=9)
    clone.load_state_dict(state)
    a = model.step(*_batch(7), iteration=3, total=10)
    b = clone.step(*_batch(7), iteration=3, total=10)
    assert a == b
