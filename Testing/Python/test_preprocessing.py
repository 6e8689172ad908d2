"""Intensity specs: forward maps, their inverses, robust statistics, and what a bad model card gets."""
from __future__ import annotations

import numpy as np
import pytest

from SlicerEssNet.errors import InputImageError, WeightsError
from SlicerEssNet.preprocessing import (
    check_spec,
    denormalize,
    intensity_transform,
    normalize,
    strided_sample,
    volume_statistics,
)
from SlicerEssNet.io.volume_files import read_volume

CT_WINDOW = {"kind": "ct_window", "low": -125, "high": 275}
MR_PERCENTILE = {"kind": "mr_percentile", "low_percentile": 0.5, "high_percentile": 99.5}
LINEAR = {"kind": "linear", "low": 0, "high": 1000}


def test_ct_window_maps_the_window_onto_minus_one_to_one():
    hu = np.array([-1000.0, -125.0, 75.0, 275.0, 1500.0])
    assert np.allclose(normalize(hu, CT_WINDOW), [-1.0, -1.0, 0.0, 1.0, 1.0], atol=1e-6)
    assert volume_statistics(hu, CT_WINDOW) == {}  # a fixed window needs nothing from the volume


def test_engine_transform_equals_normalize():
    """The engine applies clip(x * scale + offset, -1, 1) per slice; it must give what normalize gives."""
    values = np.random.default_rng(0).normal(100, 400, size=(4, 16, 16)).astype(np.float32)
    for spec in (CT_WINDOW, MR_PERCENTILE, LINEAR):
        stats = volume_statistics(values, spec)
        scale, offset = intensity_transform(spec, stats)
        assert np.allclose(np.clip(values * scale + offset, -1, 1), normalize(values, spec, stats), atol=1e-6)


@pytest.mark.parametrize("spec", [CT_WINDOW, LINEAR])
def test_denormalize_inverts_normalize_inside_the_range(spec):
    values = np.linspace(spec["low"], spec["high"], 101)
    back = denormalize(normalize(values, spec), spec)
    assert np.allclose(back, values, atol=1e-3 * (spec["high"] - spec["low"]))
    assert np.allclose(denormalize(np.array([-1.0, 1.0]), spec), [spec["low"], spec["high"]])
    # network outputs beyond [-1, 1] stay on the documented scale
    assert np.allclose(denormalize(np.array([-3.0, 2.0]), spec), [spec["low"], spec["high"]])


def test_denormalize_keeps_float64_and_makes_float32_otherwise():
    assert denormalize(np.array([0.0]), LINEAR).dtype == np.float64
    assert denormalize(np.array([0], dtype=np.int8), LINEAR).dtype == np.float32
    assert denormalize(np.zeros(3, dtype=np.float16), LINEAR).dtype == np.float32


def test_mr_percentiles_map_to_the_ends_of_the_range():
    values = np.random.default_rng(1).gamma(2.0, 100.0, size=(8, 32, 32))
    stats = volume_statistics(values, MR_PERCENTILE)
    assert stats["low"] == pytest.approx(np.percentile(values, 0.5))  # small volume: every voxel is used
    assert stats["high"] == pytest.approx(np.percentile(values, 99.5))
    normalized = normalize(values, MR_PERCENTILE)
    assert normalized.dtype == np.float32
    assert np.mean(normalized <= -1.0 + 1e-6) == pytest.approx(0.005, abs=0.002)
    assert np.mean(normalized >= 1.0 - 1e-6) == pytest.approx(0.005, abs=0.002)
    back = denormalize(normalized, MR_PERCENTILE, stats)
    inside = (values > stats["low"]) & (values < stats["high"])
    assert np.allclose(back[inside], values[inside], rtol=1e-4, atol=1e-2)
    with pytest.raises(ValueError, match="statistics"):
        denormalize(normalized, MR_PERCENTILE)


def test_strided_statistics_of_a_long_volume_match_the_exact_percentiles(shared_data):
    """A real MR stacked to 500 slices: the subsample's percentiles stay within 1% of the range of the exact ones."""
    mr = read_volume(shared_data / "chaos_mr_t2" / "mr_t2_05.nii.gz").array
    long_volume = np.concatenate([mr] * (500 // mr.shape[0] + 1))[:500]
    sample = strided_sample(long_volume)
    assert sample.size <= 2 * (1 << 20) and np.shares_memory(sample, long_volume)
    stats = volume_statistics(long_volume, MR_PERCENTILE)
    exact = np.percentile(long_volume, [0.5, 99.5])
    span = exact[1] - exact[0]
    assert abs(stats["low"] - exact[0]) < 0.01 * span and abs(stats["high"] - exact[1]) < 0.01 * span


def test_mostly_constant_mr_falls_back_to_the_full_range():
    values = np.zeros((4, 20, 20))
    values[0, 0, :3] = [10.0, 20.0, 30.0]
    stats = volume_statistics(values, MR_PERCENTILE)
    assert (stats["low"], stats["high"]) == (0.0, 30.0)


def test_constant_volume_has_no_intensity_range():
    with pytest.raises(InputImageError, match="constant"):
        normalize(np.full((2, 3, 3), 7.0), MR_PERCENTILE)


@pytest.mark.parametrize("spec, message", [
    ({"kind": "zscore"}, "unknown preprocessing kind 'zscore'"),
    ({"low": 0, "high": 1}, "needs a 'kind'"),
    ("ct_window", "needs a 'kind'"),
    ({"kind": "ct_window", "low": -125}, "numeric low and high"),
    ({"kind": "ct_window", "low": 300, "high": -100}, ">="),
    ({"kind": "linear", "low": 0, "high": float("nan")}, ">="),
    ({"kind": "mr_percentile", "low_percentile": -1, "high_percentile": 99}, "outside 0-100"),
])
def test_bad_specs_from_a_model_card_raise_weights_error(spec, message):
    with pytest.raises(WeightsError, match=message) as caught:
        intensity_transform(spec, {"low": 0, "high": 1})
    assert "\n" not in str(caught.value)


def test_check_spec_normalises_numbers_and_keeps_extra_keys():
    checked = check_spec({"kind": "ct_window", "low": "-125", "high": 275, "note": "abdomen"})
    assert checked == {"kind": "ct_window", "low": -125.0, "high": 275.0, "note": "abdomen"}
