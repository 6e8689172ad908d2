"""Procedural abdominal phantoms: the embedded data set of the ``demo`` preset, so the main job runs anywhere.

Each phantom is an abdomen outline with a fat layer, muscle wall, liver, spleen, both kidneys, aorta and a
vertebra with its spinal canal, drawn in patient (LPS) millimetres and then sampled onto a voxel grid, so the
anatomy is right whatever the volume's orientation. CT gets Hounsfield units; MR gets a T2-SPIR-like contrast
(fat suppressed, liver darker than spleen, kidneys and CSF bright) with a smooth bias field. CT and MR
patients come from different seeds: the two domains are unpaired, like the real data.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from SlicerEssNet.volume import Volume

# Organ label values follow CHAOS MR (liver 1, right kidney 2, left kidney 3, spleen 4).
LIVER, RIGHT_KIDNEY, LEFT_KIDNEY, SPLEEN = 1, 2, 3, 4

# Tissue intensities. CT in HU; MR on an arbitrary 0-1000 scale shaped like CHAOS T2-SPIR.
CT_VALUES = {"air": -1000.0, "fat": -100.0, "muscle": 45.0, "liver": 95.0, "spleen": 120.0, "kidney": 170.0,
             "aorta": 190.0, "bone": 450.0, "canal": 15.0, "bowel": 20.0}
MR_VALUES = {"air": 0.0, "fat": 120.0, "muscle": 160.0, "liver": 260.0, "spleen": 520.0, "kidney": 600.0,
             "aorta": 60.0, "bone": 90.0, "canal": 850.0, "bowel": 380.0}
CT_NOISE_HU = 12.0
MR_NOISE = 18.0


def _ellipsoid(points, centre, radii, rotation_deg=0.0, wobble=None):
    """Inside-test of an ellipsoid (rotated in the axial plane), with an optional smooth surface wobble."""
    x = points[..., 0] - centre[0]
    y = points[..., 1] - centre[1]
    z = points[..., 2] - centre[2]
    angle = np.deg2rad(rotation_deg)
    xr = np.cos(angle) * x + np.sin(angle) * y
    yr = -np.sin(angle) * x + np.cos(angle) * y
    distance = (xr / radii[0]) ** 2 + (yr / radii[1]) ** 2 + (z / radii[2]) ** 2
    if wobble is not None:
        theta = np.arctan2(yr, xr)
        distance = distance * (1.0 + wobble[0] * np.sin(3 * theta + wobble[1]) + wobble[2] * np.cos(2 * theta))
    return distance <= 1.0


def _anatomy(rng: np.random.Generator) -> dict:
    """Random organ placements in LPS mm around the origin (x: +left, y: +posterior, z: +superior)."""
    def jitter(scale):
        return rng.uniform(-scale, scale)

    body = (150 + jitter(15), 105 + jitter(12), 400.0)
    return {
        "body": dict(centre=(0, 5, 0), radii=body, rotation_deg=0, wobble=(0.02, jitter(3), 0.03)),
        "muscle": dict(centre=(0, 5, 0), radii=(body[0] - 18, body[1] - 15, 400.0)),
        # Patient right is -x in LPS: the liver sits on the right, the spleen on the left and posterior.
        "liver": dict(centre=(-55 + jitter(8), -5 + jitter(8), 35 + jitter(8)),
                      radii=(78 + jitter(10), 62 + jitter(8), 70 + jitter(10)), rotation_deg=jitter(15),
                      wobble=(rng.uniform(0.05, 0.15), jitter(3), rng.uniform(0.0, 0.1))),
        "spleen": dict(centre=(75 + jitter(8), 40 + jitter(8), 45 + jitter(10)),
                       radii=(28 + jitter(5), 45 + jitter(6), 45 + jitter(8)), rotation_deg=30 + jitter(10)),
        "right_kidney": dict(centre=(-55 + jitter(6), 55 + jitter(5), -35 + jitter(8)),
                             radii=(22 + jitter(3), 30 + jitter(4), 50 + jitter(6)), rotation_deg=-20 + jitter(8)),
        "left_kidney": dict(centre=(55 + jitter(6), 55 + jitter(5), -25 + jitter(8)),
                            radii=(22 + jitter(3), 30 + jitter(4), 50 + jitter(6)), rotation_deg=20 + jitter(8)),
        "aorta": dict(centre=(12 + jitter(3), 40 + jitter(3), 0), radii=(11, 11, 400.0)),
        "vertebra": dict(centre=(0, 70 + jitter(4), 0), radii=(22 + jitter(2), 19 + jitter(2), 400.0)),
        "canal": dict(centre=(0, 98 + jitter(3), 0), radii=(8, 8, 400.0)),
        "bowel": dict(centre=(15 + jitter(10), -35 + jitter(8), -70 + jitter(10)),
                      radii=(45 + jitter(8), 30 + jitter(5), 40 + jitter(6))),
    }


def voxel_points(shape_kji, spacing, origin, direction) -> np.ndarray:
    """LPS coordinates of every voxel centre, shaped ``(k, j, i, 3)``."""
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape_kji), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1) * np.asarray(spacing, dtype=np.float64)
    return ijk @ np.asarray(direction, dtype=np.float64).T + np.asarray(origin, dtype=np.float64)


def _centred_origin(shape_kji, spacing, direction) -> tuple:
    """Origin that puts the volume's centre at LPS (0, 0, 0)."""
    half_extent = (np.asarray(shape_kji[::-1], dtype=np.float64) - 1) * np.asarray(spacing) / 2.0
    return tuple(-np.asarray(direction) @ half_extent)


def _smooth_field(rng, points, amplitude):
    """A low-frequency multiplicative field (MR coil bias)."""
    a, b, c = rng.uniform(-1, 1, 3)
    return 1.0 + amplitude * np.tanh((a * points[..., 0] + b * points[..., 1] + c * 0.3 * points[..., 2]) / 200.0)


def make_phantom(seed: int, modality: str, shape_kji=(24, 80, 80), spacing=(4.0, 4.0, 6.0), direction=None):
    """One phantom patient: ``(image, labels)`` as Volumes on the same grid.

    ``labels`` holds liver 1, right kidney 2, left kidney 3, spleen 4 (CHAOS MR values); CT users take ``== 1``.
    """
    if modality not in ("CT", "MR"):
        raise ValueError(f"modality must be 'CT' or 'MR', not {modality!r}")
    rng = np.random.default_rng(seed)
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    origin = _centred_origin(shape_kji, spacing, direction)
    points = voxel_points(shape_kji, spacing, origin, direction)
    # Slab of anatomy: the slices cover the liver's cranio-caudal range plus margins, like the BTCV crops.
    points[..., 2] += rng.uniform(-10, 10)
    organs = _anatomy(rng)
    masks = {name: _ellipsoid(points, **spec) for name, spec in organs.items()}
    values = CT_VALUES if modality == "CT" else MR_VALUES

    image = np.full(shape_kji, values["air"], dtype=np.float64)
    labels = np.zeros(shape_kji, dtype=np.uint8)
    image[masks["body"]] = values["fat"]
    image[masks["muscle"]] = values["muscle"]
    for tissue in ("bowel", "aorta", "vertebra"):
        image[masks[tissue]] = values["bone" if tissue == "vertebra" else tissue]
    image[masks["canal"]] = values["canal"]
    for tissue, label in (("liver", LIVER), ("spleen", SPLEEN), ("right_kidney", RIGHT_KIDNEY),
                          ("left_kidney", LEFT_KIDNEY)):
        inside = masks[tissue] & masks["muscle"] & ~masks["vertebra"]
        image[inside] = values[tissue.split("_")[-1]]
        labels[inside] = label
    # Vessels inside the liver: a few dark (MR) / bright (CT portal phase) tubes give it texture.
    for _ in range(3):
        vessel = _ellipsoid(points, centre=(organs["liver"]["centre"][0] + rng.uniform(-30, 30),
                                            organs["liver"]["centre"][1] + rng.uniform(-25, 25), 0),
                            radii=(4, 4, 400.0)) & (labels == LIVER)
        image[vessel] = values["aorta"] if modality == "CT" else values["liver"] * 0.6
    body = masks["body"]
    if modality == "CT":
        image = image + rng.normal(0.0, CT_NOISE_HU, shape_kji) * body
        image = np.clip(np.round(image), -1024, 3071).astype(np.int16)
    else:
        image = image * _smooth_field(rng, points, 0.25)
        noisy = np.hypot(image + rng.normal(0, MR_NOISE, shape_kji), rng.normal(0, MR_NOISE, shape_kji))
        image = np.clip(np.round(noisy), 0, 4095).astype(np.int16)
    return (Volume(image, spacing, origin, direction), Volume(labels, spacing, origin, direction.copy()))


# Geometries that look like the real sets: CT LPS, MR LAS (anterior flipped, like CHAOS NIfTI).
CT_GEOMETRY = dict(shape_kji=(28, 84, 84), spacing=(4.0, 4.0, 5.0), direction=np.eye(3))
MR_GEOMETRY = dict(shape_kji=(20, 64, 64), spacing=(5.0, 5.0, 7.0), direction=np.diag([1.0, -1.0, 1.0]))


def write_phantom_set(folder, n_ct: int, n_mr: int, seed: int = 0) -> dict:
    """Write ``n_ct`` CT and ``n_mr`` MR phantoms as NIfTI (image + label) under ``folder``; return the paths.

    Layout mirrors the real data: ``ct/ct_NN.nii.gz`` + ``ct/ct_NN_liver.nii.gz`` (0/1) and
    ``mr/mr_NN.nii.gz`` + ``mr/mr_NN_label.nii.gz`` (CHAOS label values).
    """
    from SlicerEssNet.io.volume_files import write_volume

    folder = Path(folder)
    (folder / "ct").mkdir(parents=True, exist_ok=True)
    (folder / "mr").mkdir(parents=True, exist_ok=True)
    written = {"CT": [], "MR": []}
    for index in range(n_ct):
        image_path = folder / "ct" / f"ct_{index:02d}.nii.gz"
        label_path = folder / "ct" / f"ct_{index:02d}_liver.nii.gz"
        if not (image_path.exists() and label_path.exists()):
            image, labels = make_phantom(seed * 1000 + index, "CT", **CT_GEOMETRY)
            write_volume(labels.with_array((labels.array == LIVER).astype(np.uint8)), label_path)
            write_volume(image, image_path)
        written["CT"].append((image_path, label_path))
    for index in range(n_mr):
        image_path = folder / "mr" / f"mr_{index:02d}.nii.gz"
        label_path = folder / "mr" / f"mr_{index:02d}_label.nii.gz"
        if not (image_path.exists() and label_path.exists()):
            # A different seed stream than CT: unpaired shapes.
            image, labels = make_phantom(seed * 1000 + 500 + index, "MR", **MR_GEOMETRY)
            write_volume(labels, label_path)
            write_volume(image, image_path)
        written["MR"].append((image_path, label_path))
    return written
