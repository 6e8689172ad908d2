"""The demo's procedural phantoms: anatomy in the right place whatever the orientation, plausible contrast,
unpaired CT/MR, real NIfTI files with geometry."""
from __future__ import annotations

import numpy as np
import pytest

from Training.data.phantoms import (CT_GEOMETRY, CT_VALUES, LIVER, MR_GEOMETRY, SPLEEN, make_phantom, voxel_points,
                               write_phantom_set)


def _centroid_lps(volume, mask):
    points = voxel_points(volume.array.shape, volume.spacing, volume.origin, volume.direction)
    return points[mask].mean(axis=0)


@pytest.mark.parametrize("modality, geometry", [("CT", CT_GEOMETRY), ("MR", MR_GEOMETRY)])
def test_organs_sit_where_anatomy_puts_them(modality, geometry):
    image, labels = make_phantom(3, modality, **geometry)
    liver = _centroid_lps(labels, labels.array == LIVER)
    spleen = _centroid_lps(labels, labels.array == SPLEEN)
    kidneys = _centroid_lps(labels, np.isin(labels.array, (2, 3)))
    assert liver[0] < 0 < spleen[0]  # LPS x grows to the patient's left: liver right, spleen left
    assert kidneys[1] > liver[1]  # kidneys are posterior (LPS y grows posteriorly)
    for value in (1, 2, 3, 4):
        assert (labels.array == value).sum() > 50


def test_mr_phantom_in_las_is_the_same_anatomy_as_in_lps():
    """Geometry is honoured: flipping the row axis in the header flips the array, not the patient."""
    lps = make_phantom(5, "MR", MR_GEOMETRY["shape_kji"], MR_GEOMETRY["spacing"], np.eye(3))[1]
    las = make_phantom(5, "MR", MR_GEOMETRY["shape_kji"], MR_GEOMETRY["spacing"], np.diag([1.0, -1.0, 1.0]))[1]
    np.testing.assert_array_equal(lps.array, las.array[:, ::-1, :])


def test_contrast_is_ct_like_and_t2_like():
    ct, ct_labels = make_phantom(1, "CT", **CT_GEOMETRY)
    mr, mr_labels = make_phantom(1, "MR", **MR_GEOMETRY)
    ct_liver = ct.array[ct_labels.array == LIVER].mean()
    assert abs(ct_liver - CT_VALUES["liver"]) < 15  # HU, noise averages out
    assert (ct.array[0, 0, :] < -900).all()  # air around the body
    assert ct.array.dtype == np.int16 and mr.array.dtype == np.int16
    # T2-SPIR: spleen brighter than liver; background near zero, never negative.
    assert mr.array[mr_labels.array == SPLEEN].mean() > 1.5 * mr.array[mr_labels.array == LIVER].mean()
    assert mr.array.min() >= 0


def test_ct_and_mr_patients_are_unpaired(tmp_path):
    written = write_phantom_set(tmp_path, n_ct=1, n_mr=1)
    from SlicerEssNet.io.volume_files import read_volume

    ct_label = read_volume(written["CT"][0][1])
    mr_label = read_volume(written["MR"][0][1])
    ct_image = read_volume(written["CT"][0][0])
    assert ct_label.same_geometry(ct_image)
    assert np.allclose(ct_label.spacing, CT_GEOMETRY["spacing"])
    assert np.allclose(mr_label.direction, MR_GEOMETRY["direction"])
    assert set(np.unique(ct_label.array)) == {0, 1}  # CT: liver only, like the real CT
    assert set(np.unique(mr_label.array)) == {0, 1, 2, 3, 4}  # MR: CHAOS label values
    ct_volume_ml = ct_label.array.sum() * np.prod(ct_label.spacing) / 1000
    mr_volume_ml = (mr_label.array == 1).sum() * np.prod(mr_label.spacing) / 1000
    assert abs(ct_volume_ml - mr_volume_ml) > 1.0  # different livers: different random shapes
