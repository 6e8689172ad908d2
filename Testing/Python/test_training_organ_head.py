"""Auxiliary organ supervision (stage 2): the other organs reach the model grid with their physical size, move
with the liver under augmentation without touching its labels or the random stream, add loss only where they
are known, and never leave the U-Net that is validated and shipped."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from SlicerEssNet.networks import build_network
from Training.data.cohorts import load_case, phantom_cases
from Training.stages.organ_head import OrganLoss, WithOrganHead
from Training.study.presets import get_preset
from Training.data.slices import build_slice_set, intensity_spec, to_model_grid

from tiny_arm import no_hooks_left, train_tiny_arm

GRID = {"mode": "spacing", "spacing_mm": 5.0, "size": 64, "multiple_of": 16}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return phantom_cases(tmp_path_factory.mktemp("phantoms"), 1, 2)


def test_other_organs_keep_their_physical_area_on_the_model_grid(phantoms):
    case = phantoms["MR"][0]
    image, liver, organs = load_case(case, other_organs=True)
    _, labels, grid_organs = to_model_grid(image, liver, intensity_spec("MR"), GRID, organs)
    native_mm2 = float(np.prod(image.spacing[:2]))
    for number in (1, 2, 3):  # right kidney, left kidney, spleen: area summed over slices, in mm^2
        native = float((organs.array == number).sum()) * native_mm2
        on_grid = float((grid_organs == number).sum()) * GRID["spacing_mm"] ** 2
        assert native > 0 and on_grid == pytest.approx(native, rel=0.08), number
    assert not bool((grid_organs[labels == 1] > 0).any())  # a pixel is the liver or another organ, never both
    _, liver_only = to_model_grid(image, liver, intensity_spec("MR"), GRID)
    assert torch.equal(labels, liver_only)  # asking for the organs leaves the liver labels as they were


def test_batches_carry_the_organs_without_changing_the_liver_or_the_random_stream(phantoms):
    mr = build_slice_set(phantoms["MR"], GRID, organs=True)
    ct = build_slice_set(phantoms["CT"], GRID, organs=True)
    assert mr.organ_classes() == 4 and ct.organ_classes() == 1 and ct.organs == [None]
    augment = get_preset("demo").data
    indices = list(range(0, len(mr), 7))
    images, labels, organs = mr.batch(indices, 48, torch.Generator().manual_seed(3), augment, organs=True)
    plain_images, plain_labels = mr.batch(indices, 48, torch.Generator().manual_seed(3), augment)
    assert torch.equal(images, plain_images) and torch.equal(labels, plain_labels)
    assert set(organs.unique().tolist()) == {0, 1, 2, 3}
    assert not bool((organs[labels == 1] > 0).any())
    _, _, unknown = ct.batch([0, 1], 48, torch.Generator().manual_seed(3), augment, organs=True)
    assert bool((unknown == -1).all())


def test_the_organ_head_reads_the_last_features_and_leaves_no_hook():
    torch.manual_seed(0)
    unet = build_network({"name": "unet", "in_channels": 1, "num_classes": 2, "base": 4}).eval()
    trained = WithOrganHead(unet, 4).eval()
    x = torch.rand(2, 1, 32, 32)
    liver, organs = trained(x)
    torch.testing.assert_close(liver, unet(x), rtol=0, atol=0)
    assert organs.shape == (2, 4, 32, 32)
    assert no_hooks_left(unet)
    organs.sum().backward()
    assert trained.organ_head.weight.grad.abs().sum() > 0 and unet.inc[0].weight.grad.abs().sum() > 0


def test_organ_loss_counts_only_the_slices_whose_organs_are_known():
    torch.manual_seed(1)
    logits = torch.randn(3, 4, 8, 8, requires_grad=True)
    target = torch.randint(0, 4, (3, 8, 8))
    target[1] = -1
    loss = OrganLoss()
    torch.testing.assert_close(loss(logits, target), loss(logits[[0, 2]], target[[0, 2]]))
    nothing = loss(logits, torch.full_like(target, -1))
    nothing.backward()
    assert float(nothing.detach()) == 0.0 and float(logits.grad.abs().sum()) == 0.0


def test_an_arm_with_the_organ_head_returns_and_keeps_a_plain_unet(tmp_path, phantoms):
    real = build_slice_set(phantoms["MR"], GRID, organs=True)
    synthetic = build_slice_set(phantoms["CT"], GRID, organs=True)  # stands in for synthetic MR: no organs
    state = train_tiny_arm(tmp_path / "arm", real, synthetic, organ_weight=1.0)
    assert "organ_head.weight" in state  # the resumable state keeps the head
