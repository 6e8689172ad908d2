"""Loss pieces, the image pool and the LR schedule, each against a hand computation."""
from __future__ import annotations

import pytest
import torch

from Training.stages.image_pool import ImagePool
from Training.stages.losses import CEDiceLoss, CycleL1Loss, LSGANLoss, SoftDiceLoss
from Training.stages.schedule import linear_decay_factor


def test_lsgan_targets_are_one_for_real_and_zero_for_fake():
    scores = torch.tensor([[0.2, 0.9], [1.5, -0.5]])
    loss = LSGANLoss()
    assert loss(scores, True).item() == pytest.approx(((scores - 1) ** 2).mean().item())
    assert loss(scores, False).item() == pytest.approx((scores ** 2).mean().item())
    assert loss(torch.ones(3), True).item() == 0.0 and loss(torch.zeros(3), False).item() == 0.0


def test_cycle_l1_is_lambda_times_mean_absolute_error():
    a, b = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    assert CycleL1Loss(10.0)(a, b).item() == pytest.approx(10.0 * (a - b).abs().mean().item(), rel=1e-6)
    assert CycleL1Loss(10.0)(a, a).item() == 0.0


def test_soft_dice_is_zero_when_perfect_and_near_one_when_disjoint():
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, 4:12, 4:12] = 1
    perfect = torch.stack([(target == 0).float(), (target == 1).float()], 1) * 50.0
    wrong = torch.stack([(target == 1).float(), (target == 0).float()], 1) * 50.0
    dice = SoftDiceLoss(smooth=1e-6)
    assert dice(perfect, target).item() == pytest.approx(0.0, abs=1e-5)
    assert dice(wrong, target).item() == pytest.approx(1.0, abs=1e-5)
    # Hand-computed soft Dice on uniform logits: p = 0.5 everywhere.
    uniform = torch.zeros(2, 2, 16, 16)
    expected = 1 - 2 * 0.5 * target.sum() / (0.5 * target.numel() + target.sum())
    assert dice(uniform, target).item() == pytest.approx(expected.item(), rel=1e-5)
    smooth_expected = 1 - (2 * 0.5 * target.sum() + 1) / (0.5 * target.numel() + target.sum() + 1)
    ce_dice = CEDiceLoss(dice_weight=1.0)(uniform, target).item()  # CE of p = 0.5 is log 2; Dice smooth = 1
    assert ce_dice == pytest.approx(torch.log(torch.tensor(2.0)).item() + smooth_expected.item(), rel=1e-5)


def test_image_pool_fills_then_swaps_half_the_time():
    pool = ImagePool(3, torch.Generator().manual_seed(0))
    first = torch.arange(3.0).view(3, 1, 1, 1)
    torch.testing.assert_close(pool.query(first), first)  # filling: returned as given
    assert len(pool.images) == 3
    returned_old = 0
    for step in range(200):
        new = torch.full((1, 1, 1, 1), 100.0 + step)
        out = pool.query(new)
        if out.item() != new.item():
            returned_old += 1
        assert len(pool.images) == 3
    assert 60 < returned_old < 140  # about half
    stored = {image.item() for image in pool.images}
    assert stored & set(range(100, 300))  # new images went in
    state = pool.state_dict()
    clone = ImagePool(0)
    clone.load_state_dict(state)
    assert clone.size == 3 and [i.item() for i in clone.images] == [i.item() for i in pool.images]
    assert ImagePool(0).query(first) is first  # size 0: no pool


def test_learning_rate_is_constant_then_linear_to_zero():
    assert linear_decay_factor(0, 100, 200) == 1.0
    assert linear_decay_factor(99, 100, 200) == 1.0
    assert linear_decay_factor(150, 100, 200) == pytest.approx(0.5)
    assert linear_decay_factor(200, 100, 200) == 0.0
