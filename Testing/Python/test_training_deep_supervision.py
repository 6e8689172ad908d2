"""Deep supervision (stage 2, an option, on in the cpu preset): the heads read the coarser decoder levels, the loss
weighs them 1, 1/2, 1/4 against labels taken to their size, and the U-Net that is validated and shipped is the
plain one. The optimizer option builds nnU-Net's SGD or the preset's Adam, and names a typo. The report's set-up
line says which of them a run trained with."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from SlicerEssNet.networks import build_network
from Training.data.cohorts import phantom_cases
from Training.stages.deep_supervision import DeepSupervisionLoss, WithDeepSupervision
from Training.stages.losses import CEDiceLoss
from Training.study.presets import get_preset
from Training.data.slices import build_slice_set
from Training.stages.train_segmentation import build_optimizer

from tiny_arm import no_hooks_left, train_tiny_arm

GRID = {"mode": "spacing", "spacing_mm": 5.0, "size": 64, "multiple_of": 16}


def _unet():
    torch.manual_seed(0)
    return build_network({"name": "unet", "in_channels": 1, "num_classes": 2, "base": 4}).eval()


def test_heads_read_the_coarser_decoder_levels_and_leave_no_hook():
    unet = _unet()
    trained = WithDeepSupervision(unet, 3).eval()
    x = torch.rand(2, 1, 32, 32)
    logits, coarser = trained(x)
    torch.testing.assert_close(logits, unet(x), rtol=0, atol=0)
    assert [tuple(level.shape) for level in coarser] == [(2, 2, 16, 16), (2, 2, 8, 8), (2, 2, 4, 4)]
    assert no_hooks_left(unet)
    coarser[-1].sum().backward()  # the coarsest head trains the encoder, not the finer decoder levels
    assert trained.heads[2].weight.grad.abs().sum() > 0 and unet.inc[0].weight.grad.abs().sum() > 0
    assert trained.heads[0].weight.grad is None and unet.up[-1].conv[0].weight.grad is None
    with pytest.raises(ValueError, match="below full size"):
        WithDeepSupervision(unet, 4)


def test_the_loss_weighs_each_level_by_half_the_one_above_against_the_label_at_its_size():
    torch.manual_seed(1)
    plain = CEDiceLoss()
    logits, half, quarter = (torch.randn(2, 2, size, size) for size in (16, 8, 4))
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, 4:12, 2:10] = 1  # a box on even pixels: nearest downsampling keeps it exactly
    target_half, target_quarter = target[:, ::2, ::2], target[:, ::4, ::4]
    expected = (plain(logits, target) + 0.5 * plain(half, target_half) + 0.25 * plain(quarter, target_quarter)) / 1.75
    torch.testing.assert_close(DeepSupervisionLoss(plain)(logits, [half, quarter], target), expected)
    torch.testing.assert_close(DeepSupervisionLoss(plain)(logits, [], target), plain(logits, target))


def test_an_arm_with_deep_supervision_returns_and_keeps_a_plain_unet(tmp_path):
    real = build_slice_set(phantom_cases(tmp_path / "phantoms", 1, 2)["MR"], GRID)
    state = train_tiny_arm(tmp_path / "arm", real, None, deep_supervision=2)
    assert {"heads.0.weight", "heads.1.weight"} <= state
    with pytest.raises(ValueError, match="cannot be combined"):
        train_tiny_arm(tmp_path / "both", real, None, deep_supervision=2, organ_weight=1.0)


def test_the_optimizer_option_builds_sgd_or_adam_and_names_a_typo():
    options = get_preset("cpu").segmentation
    parameters = list(_unet().parameters())
    assert isinstance(build_optimizer(parameters, options), torch.optim.Adam)
    sgd = build_optimizer(parameters, dataclasses.replace(options, optimizer="sgd", lr=0.01))
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"]) == (0.01, 0.99, True)
    with pytest.raises(ValueError, match="not one of adam, sgd"):
        build_optimizer(parameters, dataclasses.replace(options, optimizer="adamw"))


def test_the_report_says_which_heads_and_optimizer_stage_2_trained_with():
    from Training.study.report import _stage2_recipe

    cpu = get_preset("cpu").to_dict()
    assert cpu["segmentation"]["deep_supervision"] == 3
    line = _stage2_recipe(cpu)
    assert "deep supervision: training-only heads on 3 coarser decoder levels" in line and ", Adam 0.001," in line
    cpu["segmentation"].update(deep_supervision=0, optimizer="sgd", lr=0.01)
    line = _stage2_recipe(cpu)
    assert "deep supervision" not in line and ", SGD (Nesterov 0.99) 0.01," in line
    assert "deep supervision" not in _stage2_recipe(get_preset("demo").to_dict())
