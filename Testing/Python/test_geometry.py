"""Canonical slicing and the model grid: exact inverses, checked against SimpleITK's own reorientation filters."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from SlicerEssNet.errors import WeightsError
from SlicerEssNet.geometry import CanonicalFrame, GridSpec, SliceGrid
from SlicerEssNet.volume import Volume
from SlicerEssNet.io.volume_files import read_volume

PERMUTATIONS = list(itertools.permutations(range(3)))
FLIPS = list(itertools.product((False, True), repeat=3))


def canonical_image(array: np.ndarray, spacing=(0.7, 0.9, 2.5), origin=(10.0, -20.0, 30.0), rotation=None):
    """A SimpleITK image whose (k, j, i) array is already canonical: i -> L, j -> P, k -> S (optionally rotated)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if rotation is not None:
        image.SetDirection(tuple(np.asarray(rotation, dtype=np.float64).ravel()))
    return image


def reoriented(image, permutation, flips):
    """The same voxels at the same positions stored with another axis order and flips: ITK's filters, not ours."""
    permuted = sitk.PermuteAxes(image, list(permutation))
    return sitk.Flip(permuted, list(flips), flipAboutOrigin=False)


def rotation_matrix(axis, degrees: float) -> np.ndarray:
    transform = sitk.VersorTransform(tuple(float(a) for a in axis), float(np.radians(degrees)))
    return np.asarray(transform.GetMatrix()).reshape(3, 3)


def voxel_positions(volume: Volume) -> np.ndarray:
    """LPS position of every voxel, laid out like the array: (k, j, i, 3)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in volume.array.shape), indexing="ij")
    ijk = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(np.float64)
    return (ijk @ volume.ijk_to_lps().T)[..., :3]


# --- CanonicalFrame ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("permutation", PERMUTATIONS)
@pytest.mark.parametrize("flips", FLIPS)
def test_every_axis_order_and_flip_maps_to_the_same_canonical_array(permutation, flips):
    canonical = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    stored = Volume.from_sitk(reoriented(canonical_image(canonical), permutation, flips))
    frame = CanonicalFrame.of(stored)

    view = frame.to_canonical(stored.array)
    assert np.array_equal(view, canonical)
    assert np.shares_memory(view, stored.array)  # a view: no copy of the volume
    back = frame.from_canonical(view)
    assert np.array_equal(back, stored.array) and np.shares_memory(back, stored.array)
    assert frame.canonical_spacing(stored.spacing) == (2.5, 0.9, 0.7)
    # the canonical volume keeps every voxel where it was in the patient
    canonical_volume = frame.to_canonical_volume(stored)
    assert np.allclose(voxel_positions(canonical_volume), frame.to_canonical(voxel_positions(stored)), atol=1e-9)
    expected = Volume.from_sitk(canonical_image(canonical))
    assert np.allclose(canonical_volume.ijk_to_lps(), expected.ijk_to_lps(), atol=1e-9)


@pytest.mark.parametrize("axis, degrees", [((1, 0, 0), 25), ((0, 1, 0), -35), ((1, 1, 1), 40), ((0.3, -0.8, 0.2), 15)])
@pytest.mark.parametrize("permutation", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
@pytest.mark.parametrize("flips", [(False, False, False), (True, False, True), (True, True, True)])
def test_oblique_volumes_are_sliced_along_their_own_axes(axis, degrees, permutation, flips):
    canonical = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    image = canonical_image(canonical, rotation=rotation_matrix(axis, degrees))
    stored = Volume.from_sitk(reoriented(image, permutation, flips))
    frame = CanonicalFrame.of(stored)
    assert np.array_equal(frame.to_canonical(stored.array), canonical)
    assert np.array_equal(frame.from_canonical(frame.to_canonical(stored.array)), stored.array)
    moved = frame.to_canonical_volume(stored)
    assert np.allclose(voxel_positions(moved), voxel_positions(Volume.from_sitk(image)), atol=1e-9)


def test_canonical_frame_carries_trailing_channel_axes():
    stored = Volume.from_sitk(reoriented(canonical_image(np.zeros((3, 4, 5))), (2, 0, 1), (True, False, True)))
    frame = CanonicalFrame.of(stored)
    probabilities = np.random.default_rng(0).random(stored.array.shape + (2,))
    assert frame.to_canonical(probabilities).shape == (3, 4, 5, 2)
    assert np.array_equal(frame.from_canonical(frame.to_canonical(probabilities)), probabilities)


def test_ties_keep_the_volumes_own_axes():
    """At exactly 45 degrees both axes qualify: the volume's own k stays the slice axis."""
    frame = CanonicalFrame.from_direction(rotation_matrix((1, 0, 0), 45))
    assert frame.axes[0] == 0


@pytest.mark.parametrize("degrees", [45, -45])
def test_an_in_plane_rotation_of_45_degrees_keeps_the_volumes_own_rows(degrees):
    """Rotated exactly 45 degrees about the slice axis, j and i are equally close to the patient's P axis: the tie
    keeps the volume's own axes (rows = j, columns = i), unflipped since both still point towards +P and +L."""
    rotation = rotation_matrix((0, 0, 1), degrees)
    assert abs(abs(rotation[0, 0]) - abs(rotation[1, 0])) < 1e-12  # a tie indeed
    frame = CanonicalFrame.from_direction(rotation)
    assert frame == CanonicalFrame((0, 1, 2), (False, False, False))
    canonical = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    stored = Volume.from_sitk(canonical_image(canonical, rotation=rotation))
    assert np.array_equal(CanonicalFrame.of(stored).to_canonical(stored.array), canonical)


@pytest.mark.parametrize("ulps", [-2, -1, 1, 2])
def test_an_in_plane_tie_is_a_tie_within_rounding(ulps):
    """cos 45 and sin 45 come out of a header one or two ulps apart either way: still a tie, never a swap (that
    would transpose every slice of a volume for a rounding difference)."""
    c = np.float64(np.sqrt(0.5))
    s = c
    for _ in range(abs(ulps)):
        s = np.nextafter(s, np.inf if ulps > 0 else -np.inf)
    assert s != c
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    assert CanonicalFrame.from_direction(direction) == CanonicalFrame((0, 1, 2), (False, False, False))


def test_in_plane_ties_follow_the_stored_axes_and_flips():
    """The tie keeps whatever the volume calls j as rows: stored with i and j swapped (and so one of them now
    pointing towards -L), its own j is still the row axis, and the column runs against its i."""
    c = np.sqrt(0.5)
    rotation = np.array([[c, -c, 0.0], [c, c, 0.0], [0.0, 0.0, 1.0]])  # i -> (+L, +P), j -> (-L, +P)
    swapped = rotation[:, [1, 0, 2]]  # i -> (-L, +P), j -> (+L, +P)
    assert CanonicalFrame.from_direction(swapped) == CanonicalFrame((0, 1, 2), (False, False, True))
    flipped_rows = rotation * np.array([1.0, -1.0, 1.0])  # j -> (+L, -P)
    assert CanonicalFrame.from_direction(flipped_rows) == CanonicalFrame((0, 1, 2), (False, True, False))


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(*(st.integers(1, 6),) * 3),
    spacing=st.tuples(*(st.floats(0.1, 8.0),) * 3),
    permutation=st.permutations(range(3)),
    flips=st.tuples(*(st.booleans(),) * 3),
    axis=st.tuples(*(st.floats(-1.0, 1.0),) * 3).filter(lambda a: np.linalg.norm(a) > 0.1),
    degrees=st.floats(-40.0, 40.0),
)
def test_round_trip_is_exact_for_random_geometries(shape, spacing, permutation, flips, axis, degrees):
    """Up to 40 degrees off-axis, every voxel axis stays closest to its own patient axis (cos 40 > cos 50)."""
    canonical = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    image = canonical_image(canonical, spacing=spacing, rotation=rotation_matrix(axis, degrees))
    stored = Volume.from_sitk(reoriented(image, tuple(permutation), flips))
    frame = CanonicalFrame.of(stored)
    assert np.array_equal(frame.to_canonical(stored.array), canonical)
    assert np.array_equal(frame.from_canonical(frame.to_canonical(stored.array)), stored.array)
    assert np.allclose(frame.canonical_spacing(stored.spacing), spacing[::-1])


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.array(np.nonzero(mask)).mean(axis=1)


def test_real_chaos_mr_las_comes_out_anterior_up_and_patient_right_on_the_left(shared_data):
    """CHAOS MR is stored LAS. Anatomy decides: kidneys lie behind the liver, the liver above them, the right
    kidney and the liver on the patient's right (image left), the left kidney and the spleen on the image right."""
    for patient in ("01", "05", "22"):
        image = read_volume(shared_data / "chaos_mr_t2" / f"mr_t2_{patient}.nii.gz")
        labels = read_volume(shared_data / "chaos_mr_t2" / f"mr_t2_{patient}_label.nii.gz")
        assert np.allclose(image.direction, np.diag([1.0, -1.0, 1.0]), atol=0.05)  # LAS, slightly oblique
        frame = CanonicalFrame.of(image)
        assert frame.flips == (False, True, False)
        canonical = frame.to_canonical(labels.array)
        width = canonical.shape[2]
        liver, right_kidney, left_kidney, spleen = (_centroid(canonical == label) for label in (1, 2, 3, 4))
        assert liver[2] < width / 2 and right_kidney[2] < width / 2
        assert left_kidney[2] > width / 2 and spleen[2] > width / 2
        assert right_kidney[1] > liver[1] and left_kidney[1] > liver[1]  # posterior = larger row
        assert liver[0] > right_kidney[0]  # superior = larger slice index


def test_real_btcv_ct_lps_comes_out_anterior_up_and_patient_right_on_the_left(shared_data):
    for patient in ("00", "05", "29"):
        image = read_volume(shared_data / "btcv_ct" / f"ct_{patient}.nii.gz")
        liver = read_volume(shared_data / "btcv_ct" / f"ct_{patient}_liver.nii.gz")
        frame = CanonicalFrame.of(image)
        assert frame.axes == (0, 1, 2) and frame.flips == (False, False, False)
        canonical_ct = frame.to_canonical(image.array)
        width = canonical_ct.shape[2]
        assert _centroid(frame.to_canonical(liver.array) == 1)[2] < width / 2
        # bone (clipped at 275 HU) in the middle third of the columns is the spine: posterior, the lower rows
        spine = canonical_ct[:, :, width // 3: 2 * width // 3] >= 250
        assert _centroid(spine)[1] > canonical_ct.shape[1] / 2


def test_real_volumes_round_trip_through_the_canonical_view(shared_data):
    for path in (shared_data / "chaos_mr_t2" / "mr_t2_03.nii.gz", shared_data / "lits_117" / "ct.nii.gz",
                 shared_data / "totalseg_examples" / "example_ct_sm.nii.gz"):
        volume = read_volume(path)
        frame = CanonicalFrame.of(volume)
        back = frame.from_canonical(frame.to_canonical(volume.array))
        assert np.array_equal(back, volume.array) and np.shares_memory(back, volume.array)


# --- GridSpec and SliceGrid --------------------------------------------------------------------------------
def smooth_image(rows: int, cols: int, row_mm: float, col_mm: float) -> torch.Tensor:
    """Features tens of millimetres wide: what any resampling should carry through almost unchanged."""
    y = (np.arange(rows) + 0.5)[:, None] * row_mm
    x = (np.arange(cols) + 0.5)[None, :] * col_mm
    image = np.sin(y / 25.0) * np.cos(x / 31.0) + 0.3 * np.sin((x + y) / 40.0)
    return torch.from_numpy(image.astype(np.float32))[None, None]


@pytest.mark.parametrize("spec", [GridSpec("spacing", spacing_mm=1.5, multiple_of=16),
                                  GridSpec("spacing", spacing_mm=0.5, multiple_of=8),
                                  GridSpec("fit", size=96, multiple_of=16)])
@pytest.mark.parametrize("shape, spacing", [((100, 130), (0.8, 0.8)), ((64, 40), (1.25, 2.0)), ((37, 91), (3.0, 1.1))])
def test_slice_grid_round_trip_recovers_a_smooth_image(spec, shape, spacing):
    grid = SliceGrid.plan(shape, spacing, spec)
    image = smooth_image(*shape, *spacing)
    model = grid.to_model(image, pad_value=-7.0)
    assert tuple(model.shape[-2:]) == grid.model_shape
    back = grid.from_model(model)
    assert back.shape == image.shape
    interior = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # edges see the padding when upsampling
    assert float((back - image)[interior].abs().max()) < 0.05
    # physical extent kept exactly, aspect kept to within one pixel
    for n in range(2):
        assert grid.resized_shape[n] * grid.model_spacing[n] == pytest.approx(shape[n] * spacing[n], rel=1e-12)
    if spec.mode == "spacing":
        assert all(abs(s - spec.spacing_mm) <= spec.spacing_mm / grid.resized_shape[n] * 0.51 + 1e-12
                   for n, s in enumerate(grid.model_spacing))
        assert all(n % spec.multiple_of == 0 for n in grid.model_shape)
    else:
        assert grid.model_shape == (spec.size, spec.size) and max(grid.resized_shape) == spec.size
    # the padding is recorded and holds exactly the pad value
    top, bottom, left, right = grid.pad
    assert top + bottom + grid.resized_shape[0] == grid.model_shape[0]
    assert left + right + grid.resized_shape[1] == grid.model_shape[1]
    assert abs(top - bottom) <= 1 and abs(left - right) <= 1
    inside = torch.zeros(grid.model_shape, dtype=torch.bool)
    inside[top:top + grid.resized_shape[0], left:left + grid.resized_shape[1]] = True
    assert torch.all(model[0, 0][~inside] == -7.0)


def test_model_pixels_sit_where_the_physical_positions_say():
    """A blob at a known position in mm lands at the model pixel the recorded spacing and padding predict."""
    shape, spacing = (90, 120), (0.9, 0.6)
    grid = SliceGrid.plan(shape, spacing, GridSpec("spacing", spacing_mm=1.2, multiple_of=32))
    centre_mm = np.array([30.0, 50.0])
    y = (np.arange(shape[0]) + 0.5)[:, None] * spacing[0]
    x = (np.arange(shape[1]) + 0.5)[None, :] * spacing[1]
    blob = np.exp(-((y - centre_mm[0]) ** 2 + (x - centre_mm[1]) ** 2) / (2 * 4.0 ** 2)).astype(np.float32)
    model = grid.to_model(torch.from_numpy(blob)[None, None])[0, 0].numpy()
    weights = model / model.sum()
    rows, cols = np.indices(model.shape)
    found = np.array([(weights * rows).sum(), (weights * cols).sum()])
    expected = np.array(grid.pad[::2]) + centre_mm / np.array(grid.model_spacing) - 0.5
    assert np.allclose(found, expected, atol=0.05)


def test_shrinking_is_antialiased():
    """A one-pixel checkerboard shrunk 4x must come out flat grey, not as an aliasing pattern."""
    board = (np.indices((128, 128)).sum(axis=0) % 2).astype(np.float32)
    grid = SliceGrid.plan((128, 128), (0.5, 0.5), GridSpec("spacing", spacing_mm=2.0, multiple_of=1))
    model = grid.to_model(torch.from_numpy(board)[None, None])
    assert grid.model_shape == (32, 32)
    assert float(model.std()) < 0.01 and float(model.mean()) == pytest.approx(0.5, abs=0.01)


def test_identity_grid_is_exact_and_nearest_keeps_label_values():
    labels = torch.from_numpy(np.random.default_rng(1).integers(0, 5, size=(2, 1, 48, 64)).astype(np.float32))
    same = SliceGrid.plan((48, 64), (1.5, 1.5), GridSpec("spacing", spacing_mm=1.5, multiple_of=16))
    assert same.resized_shape == (48, 64) and same.pad == (0, 0, 0, 0)
    assert torch.equal(same.from_model(same.to_model(labels)), labels)
    shrink = SliceGrid.plan((48, 64), (1.0, 1.0), GridSpec("spacing", spacing_mm=1.7, multiple_of=16))
    model_labels = torch.from_numpy(np.random.default_rng(2).integers(0, 5, size=(2, 1) + shrink.model_shape))
    back = shrink.from_model(model_labels, mode="nearest")
    assert back.shape == labels.shape and back.dtype == model_labels.dtype
    assert set(back.unique().tolist()) == {0, 1, 2, 3, 4}
    linear = shrink.from_model(model_labels.float())
    assert not set(linear.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}  # bilinear would blend labels


def test_integer_and_half_batches_are_resampled():
    grid = SliceGrid.plan((30, 20), (1.0, 1.0), GridSpec("spacing", spacing_mm=2.0, multiple_of=8))
    as_int = grid.to_model(torch.ones((1, 1, 30, 20), dtype=torch.int16))
    assert as_int.dtype == torch.float32 and tuple(as_int.shape[-2:]) == grid.model_shape
    half = grid.from_model(torch.zeros((1, 2) + grid.model_shape, dtype=torch.bfloat16))
    assert half.dtype == torch.bfloat16 and tuple(half.shape) == (1, 2, 30, 20)


def test_wrong_batch_shapes_are_refused():
    grid = SliceGrid.plan((30, 20), (1.0, 1.0), GridSpec())
    with pytest.raises(ValueError):
        grid.to_model(torch.zeros((1, 1, 20, 30)))
    with pytest.raises(ValueError):
        grid.from_model(torch.zeros((1, 30, 20)))


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 300), cols=st.integers(1, 300),
    row_mm=st.floats(0.2, 6.0), col_mm=st.floats(0.2, 6.0),
    mode=st.sampled_from(["spacing", "fit"]), target_mm=st.floats(0.5, 4.0),
    size=st.sampled_from([32, 64, 100]), multiple=st.sampled_from([1, 4, 16]),
)
def test_from_model_returns_exactly_the_input_shape(rows, cols, row_mm, col_mm, mode, target_mm, size, multiple):
    spec = GridSpec(mode, size=size, spacing_mm=target_mm, multiple_of=multiple)
    grid = SliceGrid.plan((rows, cols), (row_mm, col_mm), spec)
    batch = torch.rand((2, 1, rows, cols))
    model = grid.to_model(batch)
    assert tuple(model.shape) == (2, 1) + tuple(grid.model_shape)
    assert tuple(grid.from_model(model).shape) == (2, 1, rows, cols)
    assert grid.resized_shape[0] * grid.model_spacing[0] == pytest.approx(rows * row_mm, rel=1e-12)


def test_grid_spec_from_a_bad_model_card_is_a_weights_error():
    with pytest.raises(WeightsError, match="grid mode"):
        GridSpec(mode="crop")
    with pytest.raises(WeightsError):
        GridSpec(spacing_mm=0)
    with pytest.raises(WeightsError, match="unknown keys"):
        GridSpec.from_dict({"mode": "fit", "size": 256, "zoom": 2})
    assert GridSpec.from_dict({"mode": "fit", "size": "128"}).size == 128
