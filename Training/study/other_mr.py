"""A check beyond the validation patients: the U-Nets on an MR of another contrast.

Every validation patient is CHAOS T2-SPIR, so model selection cannot see what a U-Net does on the other MR users
bring. The one other MR with a liver outline in the shared data is TotalSegmentator's example
(``totalseg_examples/example_mr_sm.nii.gz``, 20 slices at 3 mm, a T1-like contrast: bright fat, dark liver). Its
outline (label 5 of ``example_seg_mr.nii.gz``) is TotalSegmentator's prediction, not manual truth: a check of
robustness, scored and reported apart, never used to pick a checkpoint.
"""
from __future__ import annotations

from pathlib import Path

from ..data.cohorts import DEFAULT_DATA_ROOT
from .evaluate import PER_VOLUME, as_loaded_model, mean_sd, predict

IMAGE = "totalseg_examples/example_mr_sm.nii.gz"
OUTLINE = "totalseg_examples/example_seg_mr.nii.gz"
LIVER = 5  # TotalSegmentator's class number for the liver


def other_mr_case(data_root=None):
    """``(image, liver)`` Volumes (liver 0/1), or None where the files are absent."""
    import numpy as np

    from SlicerEssNet.io.volume_files import read_volume

    root = Path(data_root) if data_root else DEFAULT_DATA_ROOT
    if not (root / IMAGE).exists() or not (root / OUTLINE).exists():
        return None
    outline = read_volume(root / OUTLINE)
    return read_volume(root / IMAGE), outline.with_array((outline.array == LIVER).astype(np.uint8))


def score_other_mr(case, networks_per_seed: dict, card_of, sheet=None) -> dict:
    """``{arm: {"per_seed": {seed: scores}, "dice": mean_sd, "assd": mean_sd}}`` for every U-Net given
    (``networks_per_seed``: ``{seed: {arm: network}}``; ``card_of(seed)``: the card it is run under).
    ``sheet``: a path for ``outline_sheet`` of the first seed's outlines."""
    from SlicerEssNet.metrics import evaluate

    image, liver = case
    scores, first_outlines = {}, {}
    first_seed = next(iter(networks_per_seed), None)
    for seed, networks in networks_per_seed.items():
        for arm, network in networks.items():
            prediction = predict(as_loaded_model(network, card_of(int(seed))), image)
            result = evaluate(prediction, liver, label=1)
            scores.setdefault(arm, {"per_seed": {}})["per_seed"][str(seed)] = {k: result[k] for k in PER_VOLUME}
            if seed == first_seed:
                first_outlines[arm] = prediction
    if sheet is not None and first_outlines:
        outline_sheet(case, first_outlines, sheet)
    for arm, entry in scores.items():
        for key in ("dice", "assd"):
            entry[key] = mean_sd([s[key] for s in entry["per_seed"].values()])
    return scores


def outline_sheet(case, outlines: dict, path) -> None:
    """One row at the slice with the most liver: the image with TotalSegmentator's outline, then each U-Net's
    outline (``{arm: label Volume}``) on the same image, anterior up."""
    import numpy as np

    from SlicerEssNet.geometry import CanonicalFrame

    from .figures import pyplot, save_figure
    from .translate import mid_liver_slice

    plt = pyplot()

    image, liver = case
    frame = CanonicalFrame.of(image)
    reference = frame.to_canonical(liver.array)
    k = mid_liver_slice(reference)
    picture = frame.to_canonical(image.array)[k]
    low, high = np.percentile(picture, [0.5, 99.5])
    spacing = frame.canonical_spacing(image.spacing)
    panels = [("TotalSegmentator outline", reference[k])]
    panels += [(arm, frame.to_canonical(volume.array)[k] == 1) for arm, volume in outlines.items()]
    figure, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.4), squeeze=False)
    for axis, (name, mask) in zip(axes[0], panels):
        axis.imshow(picture, cmap="gray", vmin=low, vmax=high, aspect=spacing[1] / spacing[2])
        if mask.any():
            axis.contour(mask.astype(float), levels=[0.5], colors="tab:orange", linewidths=1.0)
        axis.set_title(name, fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle("a T1-like MR (TotalSegmentator's example): the liver as each U-Net outlines it", fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)
