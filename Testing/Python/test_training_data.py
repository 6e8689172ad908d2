"""Patient-level splits, deterministic sampling, and slices made exactly like the inference engine makes them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from Training.data.augment import (bias_field_jitter, crop_or_pad, elastic_displacement, organ_contrast_jitter,
                              random_affine, random_appearance)
from Training.data.cohorts import Case, low_data_subset, make_split, real_cases, split_patients
from Training.data.sampling import batch_indices
from Training.data.slices import build_slice_set, mr_intensity_spec, to_model_grid


def _cases(n, modality="MR"):
    return [Case(f"p{i:02d}", modality, f"/x/{i}.nii.gz", f"/x/{i}_l.nii.gz") for i in range(n)]


def test_split_is_patient_level_seeded_and_complete():
    cases = _cases(15)
    split = split_patients(cases, 4, seed=0)
    assert len(split["val"]) == 4 and len(split["train"]) == 11
    assert not set(split["train"]) & set(split["val"])
    assert set(split["train"]) | set(split["val"]) == {c.patient for c in cases}
    assert split == split_patients(list(reversed(cases)), 4, seed=0)  # order of discovery does not matter
    assert split != split_patients(cases, 4, seed=1)
    low = low_data_subset(split["train"], 5, seed=0)
    assert len(low) == 5 and set(low) <= set(split["train"])
    with pytest.raises(ValueError):
        split_patients(cases, 15, seed=0)


def test_split_on_the_real_data_never_shares_a_patient(shared_data):
    cases = real_cases(shared_data)
    split = make_split(cases, 5, 4, 5, seed=0)
    assert len(cases["MR"]) == 15 and len(cases["CT"]) >= 25
    for modality in ("CT", "MR"):
        assert not set(split[modality]["train"]) & set(split[modality]["val"])
    # Slices of one patient all land on one side of the split.
    mr_val = [c for c in cases["MR"] if c.patient in split["MR"]["val"]]
    assert {c.image for c in mr_val}.isdisjoint({c.image for c in cases["MR"] if c.patient in split["MR"]["train"]})


def test_batches_are_a_pure_function_of_seed_and_iteration():
    first = [batch_indices(10, 3, i, seed=4) for i in range(7)]
    again = [batch_indices(10, 3, i, seed=4) for i in range(7)]
    assert first == again
    # One epoch (3 steps of 3 out of 10) never repeats an item.
    assert len(set(sum(first[:3], []))) == 9
    # Two ranks split each global batch without overlap.
    rank0 = batch_indices(10, 2, 5, seed=4, rank=0, world_size=2)
    rank1 = batch_indices(10, 2, 5, seed=4, rank=1, world_size=2)
    assert len(rank0) == len(rank1) == 2 and not set(rank0) & set(rank1)


def test_model_grid_slices_match_the_inference_engine(tmp_path):
    """Training inputs = what SliceEngine feeds the network (same normalisation, grid and padding)."""
    from SlicerEssNet.geometry import CanonicalFrame, GridSpec, SliceGrid
    from SlicerEssNet.inference import SliceEngine, SliceTask
    from SlicerEssNet.preprocessing import intensity_transform, volume_statistics

    from Training.data.phantoms import MR_GEOMETRY, make_phantom

    image, labels = make_phantom(2, "MR", **MR_GEOMETRY)
    grid = {"mode": "spacing", "spacing_mm": 4.0, "size": 64, "multiple_of": 16}
    images, label_slices = to_model_grid(image, labels.with_array((labels.array == 1).astype(np.uint8)),
                                         mr_intensity_spec(), grid)

    captured = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            captured.append(x.detach().float().clone())
            return x

    frame = CanonicalFrame.of(image)
    source = frame.to_canonical(image.array)
    slice_grid = SliceGrid.plan(source.shape[1:], frame.canonical_spacing(image.spacing)[1:], GridSpec(**grid))
    scale, offset = intensity_transform(mr_intensity_spec(), volume_statistics(image.array, mr_intensity_spec()))
    engine = SliceEngine(Recorder(), device="cpu", precision="fp32", threads=1)
    engine.run(source, np.zeros(source.shape, np.float32), SliceTask(slice_grid, scale, offset))
    engine_inputs = torch.cat(captured)[:, 0]
    assert engine_inputs.shape == images.shape
    torch.testing.assert_close(images, engine_inputs, atol=1e-5, rtol=0)
    # Labels are on the same grid, liver in the patient's right half (image left in the canonical frame).
    assert label_slices.shape == images.shape
    columns = torch.nonzero(label_slices)[:, 2].float()
    assert columns.mean() < images.shape[2] / 2


def test_augmentation_never_mirrors_and_identity_is_exact():
    generator = torch.Generator().manual_seed(0)
    image = torch.full((1, 1, 32, 32), -1.0)
    image[..., 8:24, 2:10] = 1.0  # an organ on the image left
    label = (image[:, 0] > 0).long()
    same, same_label = random_affine(image, label, generator, rotate_deg=0.0, scale=0.0, translate_px=0.0)
    torch.testing.assert_close(same, image)
    assert torch.equal(same_label, label)
    for _ in range(20):
        moved, moved_label = random_affine(image, label, generator, rotate_deg=8.0, scale=0.08, translate_px=3.0)
        columns = torch.nonzero(moved_label[0])[:, 1].float()
        assert columns.mean() < 16  # still on the left: small jitter, no flip
        assert moved.min() >= -1.0 - 1e-6  # outside the slice is background
    cropped, cropped_label = crop_or_pad(image, label, 48)
    assert cropped.shape[-2:] == (48, 48) and cropped[..., 0, 0].item() == -1.0
    assert cropped_label.sum() == label.sum()


def test_elastic_deformation_is_smooth_bounded_and_moves_image_and_label_together():
    generator = torch.Generator().manual_seed(3)
    field = elastic_displacement(4, 64, 48, 3.0, generator)
    assert field.shape == (4, 64, 48, 2)
    pixels = field * torch.tensor([48 / 2.0, 64 / 2.0])  # back to pixels (x, y)
    assert pixels.abs().max() <= 3.0 * 1.3  # bicubic overshoots its control points a little
    assert pixels.abs().max() > 0.5
    assert (pixels[:, 1:] - pixels[:, :-1]).abs().max() < 1.0  # smooth and fold-free: neighbours move alike

    image = torch.full((1, 1, 64, 48), -1.0)
    image[..., 16:48, 6:22] = 1.0
    label = (image[:, 0] > 0).long()
    plain = random_affine(image, label, torch.Generator().manual_seed(1), 0.0, 0.0, 0.0)
    bent = random_affine(image, label, torch.Generator().manual_seed(1), 0.0, 0.0, 0.0, elastic_px=3.0)
    torch.testing.assert_close(plain[0], image)
    assert not torch.equal(bent[1], label)  # it did deform
    inside = bent[1] == 1
    assert (bent[0][:, 0][inside] > 0).float().mean() > 0.97  # the label follows the image
    assert (bent[0][:, 0][~inside] < 0).float().mean() > 0.97
    assert abs(int(bent[1].sum()) - int(label.sum())) < 0.15 * int(label.sum())


def test_organ_contrast_changes_the_organ_alone_within_its_range():
    generator = torch.Generator().manual_seed(0)
    image = torch.full((6, 1, 32, 32), 0.0)  # unit intensity 0.5 everywhere
    label = torch.zeros((6, 32, 32), dtype=torch.long)
    label[:, 8:24, 8:24] = 1
    jittered = organ_contrast_jitter(image, label, generator, strength=0.5)
    outside = jittered[..., :6, :]  # farther than the blur from the organ
    torch.testing.assert_close(outside, image[..., :6, :])
    unit_inside = (jittered[:, 0, 12:20, 12:20] + 1) / 2
    factors = (unit_inside / 0.5).flatten(1)
    assert torch.allclose(factors, factors[:, :1])  # one factor per slice, uniform in the organ's core
    assert factors.min() >= np.exp(-0.5) - 1e-5 and factors.max() <= np.exp(0.5) + 1e-5
    assert factors[:, 0].std() > 0.05  # slices get different factors
    edge = (jittered[:, 0, 8, 16] + 1) / 2  # the organ's border row sees part of the factor: no hard edge
    core = unit_inside[:, 0, 0]
    assert torch.all((edge - 0.5).abs() < (core - 0.5).abs())


def test_bias_field_is_a_smooth_bounded_gain_that_keeps_the_background():
    image = torch.full((16, 1, 48, 48), 0.0)  # unit 0.5 ...
    image[:, :, :, :4] = -1.0  # ... beside a strip of background
    jittered = bias_field_jitter(image, torch.Generator().manual_seed(3), strength=0.5)
    torch.testing.assert_close(jittered[..., :4], image[..., :4])  # background (-1) stays background
    gain = ((jittered[..., 4:] + 1) / 2) / 0.5
    assert gain.min() >= np.exp(-0.5) * 0.9 and gain.max() <= np.exp(0.5) * 1.1  # bicubic may overshoot a little
    assert (gain.amax((1, 2, 3)) / gain.amin((1, 2, 3))).min() > 1.1  # a real change across each slice ...
    assert gain.diff(dim=-1).abs().max() < 0.1 and gain.diff(dim=-2).abs().max() < 0.1  # ... but a slow one
    assert gain.flatten(1).mean(1).std() > 0.02  # slices get different fields
    again = bias_field_jitter(image, torch.Generator().manual_seed(3), strength=0.5)
    torch.testing.assert_close(again, jittered)  # the generator decides everything


def test_random_appearance_remaps_tissue_brightness_and_keeps_the_background():
    image = torch.full((64, 1, 40, 40), -1.0)  # background, then two tissues side by side
    image[:, :, 4:36, 4:20] = -0.2  # "fat"
    image[:, :, 4:36, 20:36] = 0.4  # "liver"
    changed = random_appearance(image, torch.Generator().manual_seed(0))
    torch.testing.assert_close(changed[..., :4, :], image[..., :4, :])  # background stays -1
    assert changed.min() >= -1.0 and changed.max() <= 1.0
    fat, liver = changed[:, 0, 20, 10], changed[:, 0, 20, 28]  # the middle of each tissue
    # Not a mere gain: the order of the two tissues flips in some images, which no gamma or gain can do.
    assert (fat > liver + 0.05).sum() > 5 and (liver > fat + 0.05).sum() > 5
    assert (fat - image[:, 0, 20, 10]).abs().max() > 0.3
    inside = changed[:, 0, 8:32, 8:16]  # away from the edges a tissue stays one brightness: anatomy untouched
    assert (inside.amax((1, 2)) - inside.amin((1, 2))).max() < 1e-4
    torch.testing.assert_close(random_appearance(image, torch.Generator().manual_seed(0)), changed)
    kept = random_appearance(image, torch.Generator().manual_seed(0), share=0.0)
    torch.testing.assert_close(kept, image)
    some = random_appearance(image, torch.Generator().manual_seed(1), share=0.3)
    touched = (some != image).flatten(1).any(1).float().mean()
    assert 0.1 < touched < 0.5


def test_organ_gamma_darkens_parenchyma_more_than_vessels():
    # Iron-loaded T2 livers: dark parenchyma, vessels still bright. A power > 1 on [0, 1] values does that.
    image = torch.full((64, 1, 32, 32), 0.0)  # unit 0.5 everywhere ...
    image[:, :, 14:18, 14:18] = 0.8  # ... and a bright vessel (unit 0.9) inside the organ
    label = torch.zeros((64, 32, 32), dtype=torch.long)
    label[:, 8:24, 8:24] = 1
    jittered = organ_contrast_jitter(image, label, torch.Generator().manual_seed(1), strength=0.0, gamma=0.8)
    torch.testing.assert_close(jittered[..., :6, :], image[..., :6, :])  # outside the organ: untouched
    parenchyma, vessel = (jittered[:, 0, 10, 10] + 1) / 2, (jittered[:, 0, 15, 15] + 1) / 2
    powers = torch.log(parenchyma) / np.log(0.5)
    assert powers.min() >= np.exp(-0.8) - 1e-4 and powers.max() <= np.exp(0.8) + 1e-4
    darker = powers > 1.2
    assert darker.sum() > 10 and (powers < 1 / 1.2).sum() > 10  # both ways, over the slices
    torch.testing.assert_close(vessel[darker], 0.9 ** powers[darker], atol=1e-4, rtol=1e-4)
    assert torch.all(0.5 - parenchyma[darker] > 0.9 - vessel[darker])  # parenchyma loses more than vessels
    # Without gamma the function draws nothing more: old runs keep their random stream.
    a = organ_contrast_jitter(image, label, torch.Generator().manual_seed(2), strength=0.5)
    b = organ_contrast_jitter(image, label, torch.Generator().manual_seed(2), strength=0.5, gamma=0.0)
    assert torch.equal(a, b)


def test_slice_set_reads_real_mr_through_the_core(shared_data):
    cases = real_cases(shared_data)["MR"][:1]
    grid = {"mode": "spacing", "spacing_mm": 2.5, "size": 128, "multiple_of": 16}
    slices = build_slice_set(cases, grid)
    assert slices.images[0].shape[1:] == (128, 128)  # 256 x 1.25 mm = 320 mm = 128 px at 2.5 mm
    images, labels = slices.batch(list(range(len(slices))), 128)
    assert images.min() >= -1 and images.max() <= 1
    assert 0.01 < labels.float().mean() < 0.3  # the liver is a sizeable part of the abdomen
