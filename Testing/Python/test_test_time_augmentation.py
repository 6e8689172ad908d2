"""Test-time augmentation: each view is mapped back onto the slice it came from, no view is a flip, and the
engine, pipeline, jobs and CLI all reach it (segmentation only)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from SlicerEssNet import test_time_augmentation as tta
from SlicerEssNet.geometry import GridSpec, SliceGrid
from SlicerEssNet.inference import SliceEngine, SliceTask
from SlicerEssNet.jobs import JobRequest
from SlicerEssNet.pipeline import run_model
from SlicerEssNet.volume import Volume
from SlicerEssNet.weights import create_untrained_model, load_model


def disc(height, width, centre, radius):
    rows, columns = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                                   torch.arange(width, dtype=torch.float32), indexing="ij")
    return (((rows - centre[0]) ** 2 + (columns - centre[1]) ** 2) <= radius ** 2).float()[None, None]


def centroid(mask):
    rows, columns = torch.nonzero(mask[0, 0] > 0.5, as_tuple=True)
    return float(rows.float().mean()), float(columns.float().mean())


class Pixelwise(torch.nn.Module):
    """Two-class logits from each pixel alone: any rotation or zoom commutes with it."""

    def forward(self, x):
        return torch.cat([-4 * x, 4 * x], dim=1)


def test_each_view_moves_the_slice_by_a_rotation_and_zoom_in_pixels_even_on_a_non_square_slice():
    height, width = 64, 96
    x = disc(height, width, (20.0, 30.0), 6.0)
    for zoom, degrees in tta.VIEWS[1:]:
        theta = tta._rotation_zoom(x, zoom, degrees)
        moved = tta._warp(x, theta, padding="zeros")
        # affine_grid maps output to input: an input point p lands where R(zoom, angle)^-1 sends it.
        angle = math.radians(degrees)
        centre = np.array([(height - 1) / 2, (width - 1) / 2])
        offset = np.array([20.0, 30.0]) - centre  # (row, column)
        forward = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) * zoom
        expected = centre + forward @ offset
        assert np.allclose(centroid(moved), expected, atol=0.35), (zoom, degrees)
        assert float(moved.sum()) == pytest.approx(float(x.sum()) * zoom ** 2, rel=0.08)  # a disc stays a disc of that size
        back = tta._warp(moved, tta._rotation_zoom(x, 1.0 / zoom, -degrees), padding="zeros")  # the inverse view
        assert np.allclose(centroid(back), (20.0, 30.0), atol=0.35)


def test_no_view_is_a_flip_and_the_views_stay_inside_the_training_range():
    assert tta.VIEWS[0] == (1.0, 0.0)
    for zoom, degrees in tta.VIEWS:
        assert zoom > 0 and abs(zoom - 1) <= 0.08 + 1e-9 and abs(degrees) <= 8.0  # Training's cpu preset ranges


def test_averaging_a_pixelwise_network_over_views_gives_its_own_answer_away_from_the_border():
    x = torch.linspace(-1, 1, 80)[None, None, None, :] * torch.linspace(-1, 1, 64)[None, None, :, None]
    x = F.avg_pool2d(x.repeat(2, 1, 1, 1), 5, stride=1, padding=2)

    def probabilities_of(view):
        return torch.softmax(Pixelwise()(view), dim=1)

    averaged = tta.averaged_probabilities(probabilities_of, x, pad_value=-1.0)
    plain = probabilities_of(x)
    assert averaged.shape == plain.shape
    inner = (slice(None), slice(None), slice(12, -12), slice(12, -12))
    assert (averaged[inner] - plain[inner]).abs().max() < 0.02
    torch.testing.assert_close(averaged.sum(1), torch.ones_like(averaged[:, 0]))  # still probabilities


def test_a_network_that_is_not_pixelwise_gets_a_different_answer():
    # The averaging really runs the other views: a network that reads position changes with them.
    x = torch.zeros(1, 1, 32, 32)

    def probabilities_of(view):
        columns = torch.linspace(-1, 1, view.shape[-1]).expand_as(view[:, :1])
        logits = torch.cat([-8 * columns, 8 * columns], dim=1) + 0 * view
        return torch.softmax(logits, dim=1)

    averaged = tta.averaged_probabilities(probabilities_of, x, pad_value=-1.0)
    # The zoomed views undo their zoom when mapped back, the rotations tilt the edge: nearly the same, not exactly.
    difference = (averaged - probabilities_of(x)).abs()
    assert 1e-4 < difference.max() < 0.5


def test_the_engine_averages_views_only_when_asked_and_keeps_a_pixelwise_result():
    grid = SliceGrid.plan((40, 48), (1.5, 1.5), GridSpec(mode="spacing", spacing_mm=2.0, multiple_of=4))
    source = np.linspace(-1, 1, 5 * 40 * 48, dtype=np.float32).reshape(5, 40, 48)
    source = np.sin(6 * source)
    outputs = {}
    for augment in (False, True):
        destination = np.zeros(source.shape, dtype=np.uint8)
        task = SliceTask(grid, 1.0, 0.0, output="labels", test_time_augmentation=augment)
        SliceEngine(Pixelwise(), device="cpu", precision="fp32").run(source, destination, task)
        outputs[augment] = destination
    inner = (slice(None), slice(8, -8), slice(8, -8))
    agreement = (outputs[True][inner] == outputs[False][inner]).mean()
    assert agreement > 0.97 and outputs[True].any() and not outputs[True].all()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tta")
    create_untrained_model("synthesis", folder / "ct2mr", width=4)
    create_untrained_model("segmentation", folder / "liver", width=4)
    return {task: load_model(folder / f"{name}.safetensors")
            for task, name in (("synthesis", "ct2mr"), ("segmentation", "liver"))}


def mr_like_volume():
    rng = np.random.default_rng(0)
    array = rng.normal(300, 60, (4, 48, 48)).astype(np.float32).clip(0)
    return Volume(array, (1.5, 1.5, 5.0), (0.0, 0.0, 0.0), np.eye(3))


def test_the_pipeline_runs_it_for_segmentation_and_refuses_it_for_synthesis(tiny):
    from SlicerEssNet.pipeline import RunReport

    volume = mr_like_volume()
    report = RunReport("", "", "", 0, ())
    labels = run_model(volume, tiny["segmentation"], device="cpu", allow_modality_mismatch=True,
                       test_time_augmentation=True, report=report)
    assert labels.array.shape == volume.array.shape and labels.array.dtype == np.uint8
    assert any("test-time augmentation" in note for note in report.notes)
    with pytest.raises(ValueError, match="segmentation model"):
        run_model(volume, tiny["synthesis"], device="cpu", allow_modality_mismatch=True, test_time_augmentation=True)


def test_a_job_request_carries_it():
    request = JobRequest("segment", "in.nii.gz", "out.nii.gz", test_time_augmentation=True)
    again = JobRequest.from_json(request.to_json())
    assert again.test_time_augmentation and again.options()["test_time_augmentation"]
    assert not JobRequest.from_json('{"task": "segment", "input_path": "a", "output_path": "b"}').test_time_augmentation

