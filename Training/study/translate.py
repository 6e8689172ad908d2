"""After stage 1: every CT patient translated to synthetic MR through the core pipeline, written per patient as
NIfTI beside its CT liver label (the label is kept: translation must not move the anatomy), plus a contact sheet
CT / EssNet MR / CycleGAN MR."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.cohorts import Case, load_case
from .evaluate import predict


def translate_cases(loaded, cases, folder, tag: str, log=None) -> list:
    """Synthetic MR cases (``Case`` records pointing at the written NIfTI files) for ``cases``; resumable."""
    from SlicerEssNet.io.volume_files import write_volume

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    synthetic = []
    for case in cases:
        image_path = folder / f"{case.patient}_{tag}_mr.nii.gz"
        label_path = folder / f"{case.patient}_liver.nii.gz"
        if not (image_path.exists() and label_path.exists()):
            ct, liver = load_case(case)
            mr = predict(loaded, ct)
            write_volume(liver, label_path)
            # int16 on the 0-1000 scale: 1-unit steps lose nothing a U-Net sees and the files are 5x smaller.
            write_volume(mr.with_array(np.clip(np.rint(mr.array), -32768, 32767).astype(np.int16)), image_path)
            if log:
                log(f"  {case.patient}: {ct.shape[0]} slices -> {image_path.name}")
        synthetic.append(Case(case.patient, "MR", str(image_path), str(label_path), source=f"synthetic-{tag}"))
    return synthetic


def mid_liver_slice(liver: np.ndarray) -> int:
    """The axial slice (canonical frame) with the most liver."""
    counts = liver.reshape(liver.shape[0], -1).sum(1)
    return int(np.argmax(counts))


def contact_sheet(rows, path, title: str = "") -> None:
    """``rows``: list of (patient, ct Volume, liver Volume, {model name: synthetic MR Volume}).

    Each row shows the CT (window -125..275 HU) with the liver outline and each synthetic MR with the same
    outline: a translation that keeps the anatomy keeps the outline on the organ.
    """
    from SlicerEssNet.geometry import CanonicalFrame

    from .figures import pyplot, save_figure

    plt = pyplot()

    columns = 1 + max(len(r[3]) for r in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.6 * columns, 2.6 * len(rows)), squeeze=False)
    for row, (patient, ct, liver, synthetic) in enumerate(rows):
        frame = CanonicalFrame.of(ct)
        label = frame.to_canonical(liver.array)
        k = mid_liver_slice(label)
        panels = [("CT", frame.to_canonical(ct.array)[k], (-125, 275))]
        for name, volume in synthetic.items():
            image = frame.to_canonical(volume.array)[k]
            panels.append((name, image, tuple(np.percentile(image, [0.5, 99.5]))))
        aspect = frame.canonical_spacing(ct.spacing)[1] / frame.canonical_spacing(ct.spacing)[2]
        for column, (name, image, (low, high)) in enumerate(panels):
            axis = axes[row, column]
            axis.imshow(image, cmap="gray", vmin=low, vmax=high, aspect=aspect)
            axis.contour(label[k], levels=[0.5], colors="tab:orange", linewidths=0.6)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=9)
            if column == 0:
                axis.set_ylabel(patient, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)


def sheet_rows(ct_cases, synthetic_by_model: dict, limit: int = 4) -> list:
    """Rows for ``contact_sheet`` from CT cases and ``{model: [synthetic Case]}`` (matched by patient)."""
    from SlicerEssNet.io.volume_files import read_volume

    rows = []
    for case in ct_cases[:limit]:
        ct, liver = load_case(case)
        synthetic = {}
        for model, cases in synthetic_by_model.items():
            match = next(c for c in cases if c.patient == case.patient)
            synthetic[model] = read_volume(match.image)
        rows.append((case.patient, ct, liver, synthetic))
    return rows
