"""The shipped models on the bundled real scans (``python -m SlicerEssNet example [OUT]``): what the extension is for,
in well under a minute on 2 cores.

CT -> synthetic MR (the default synthesis model); the liver on the synthetic MR (``liver-unet-mr``) and on the CT
itself (``liver-unet-ct``), their agreement (``anatomy.py``); the liver on the real example MR. Writes the volumes
and one picture to ``OUT`` and returns what it prints.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parent / "examples"
EXAMPLE_CT = EXAMPLES / "example_ct_sm.nii.gz"
EXAMPLE_MR = EXAMPLES / "example_mr_sm.nii.gz"


def run_example(out_dir, device: str = "auto") -> list:
    """Run every step, write ``OUT/*.nii.gz`` and ``OUT/example.png``; return the lines to print."""
    from .anatomy import CT_LIVER_MODEL, MR_LIVER_MODEL, liver_ml
    from .pipeline import check_anatomy, segment, synthesize
    from .io.volume_files import check_writable, read_volume, write_volume

    from .errors import OutputPathError

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputPathError(f"cannot make the output folder {out_dir} ({error.strerror}): choose another "
                              "folder") from None
    outputs = {name: out_dir / f"{name}.nii.gz" for name in ("synthetic_mr", "liver_on_synthetic_mr", "liver_on_ct",
                                                              "liver_on_mr")}
    for path in outputs.values():
        check_writable(path)
    ct, mr = read_volume(EXAMPLE_CT), read_volume(EXAMPLE_MR)
    synthetic = synthesize(ct, device=device)
    liver_synthetic = segment(synthetic, MR_LIVER_MODEL, device=device, allow_modality_mismatch=True)
    liver_ct = segment(ct, CT_LIVER_MODEL, device=device)
    liver_mr = segment(mr, MR_LIVER_MODEL, device=device)
    anatomy = check_anatomy(ct, synthetic, liver_synthetic.array, device=device)
    for name, volume in (("synthetic_mr", synthetic), ("liver_on_synthetic_mr", liver_synthetic),
                         ("liver_on_ct", liver_ct), ("liver_on_mr", liver_mr)):
        write_volume(volume, outputs[name])
    picture = write_example_picture(ct, synthetic, liver_ct.array, liver_synthetic.array, mr, liver_mr.array,
                                    out_dir / "example.png")
    return [
        f"CT {EXAMPLE_CT.name}: liver {liver_ml(liver_ct.array, ct.spacing):.0f} mL ({CT_LIVER_MODEL})",
        f"synthetic MR of it: liver {liver_ml(liver_synthetic.array, ct.spacing):.0f} mL ({MR_LIVER_MODEL})",
        anatomy.warning() or anatomy.line(),
        f"MR {EXAMPLE_MR.name}: liver {liver_ml(liver_mr.array, mr.spacing):.0f} mL ({MR_LIVER_MODEL}; a T1-like scan, "
        f"not the T2 the model learned from)",
        f"wrote {', '.join(p.name for p in outputs.values())} and {picture.name} to {out_dir}",
    ]


def write_example_picture(ct, synthetic, liver_ct, liver_synthetic, mr, liver_mr, path, height: int = 240) -> Path:
    """Row 1: CT | synthetic MR | CT + its liver | synthetic MR + its liver, at the CT slice with the most liver.
    Row 2: the example MR | MR + its liver, at its slice with the most liver. Anterior up, patient right left."""
    from .geometry import CanonicalFrame
    from .preview import grey_rgb, physical_resize, save_sheet, window_of, with_liver

    rows = []
    for images, masks, volume in (((ct.array, synthetic.array), (liver_ct, liver_synthetic), ct),
                                  ((mr.array,), (liver_mr,), mr)):
        frame = CanonicalFrame.of(volume)
        canonical = [frame.to_canonical(image) for image in images]
        labels = [frame.to_canonical(mask) == 1 for mask in masks]
        k = int(np.argmax(labels[0].reshape(labels[0].shape[0], -1).sum(1)))
        _, row_mm, col_mm = frame.canonical_spacing(volume.spacing)
        # CT under a soft-tissue window (W 400, L 40); MR by its own percentiles
        windows = [(-160.0, 240.0) if volume is ct and number == 0 else window_of(image)
                   for number, image in enumerate(canonical)]
        greys = [grey_rgb(image[k], window) for image, window in zip(canonical, windows)]
        panels = greys + [with_liver(grey, label[k]) for grey, label in zip(greys, labels)]
        rows.append([physical_resize(panel, row_mm, col_mm, height) for panel in panels])
    return save_sheet(rows, path)
