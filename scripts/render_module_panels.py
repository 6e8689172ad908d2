"""Render docs/images/SlicerEssNetModules.png: the two module panels side by side, as built from their .ui files.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/render_module_panels.py [OUTPUT.png]

The widgets are real Qt (PySide6, offscreen) on the test suite's Slicer stand-ins and a real MRML scene; the
volumes are a BTCV CT and a CHAOS T2 MR from ../shared/data, and the Liver Segmentation panel has just run the
shipped liver U-Net (with test-time augmentation ticked) in this process, so its liver volume and status are real.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MODULES = ("CT2MRISynthesis", "LiverSegmentation")
PANEL_SIZE = (440, 545)


def volume_node(slicer, path: Path, name: str):
    import nibabel
    import numpy as np

    image = nibabel.load(str(path))
    array = np.asarray(image.get_fdata(dtype=np.float32)).transpose(2, 1, 0)  # NIfTI i, j, k -> Slicer k, j, i
    return slicer.util.addVolumeFromArray(np.ascontiguousarray(array).round().astype(np.int16), image.affine,
                                          name=name)


def main(output: Path) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("SLICERESSNET_HOME", tempfile.mkdtemp(prefix="essnet-panels-"))  # leave the cache alone
    sys.path[:0] = [str(REPO), str(REPO / "Testing" / "Python"), str(REPO / "CT2MRISynthesis")]
    import slicer_standins

    slicer_standins.install()
    modules = {name: slicer_standins.load_module(REPO / name / f"{name}.py") for name in MODULES}
    import slicer
    from PIL import Image

    from SlicerEssNet.jobs import InProcessJobRunner

    ct = volume_node(slicer, DATA / "btcv_ct" / "ct_00.nii.gz", "BTCV CT 00")
    mr = volume_node(slicer, DATA / "chaos_mr_t2" / "mr_t2_03.nii.gz", "CHAOS MR T2 03")
    widgets = {name: getattr(modules[name]._python_module, f"{name}Widget")() for name in MODULES}
    synthesis, liver = widgets["CT2MRISynthesis"], widgets["LiverSegmentation"]
    synthesis._parameterNode.inputVolume = ct
    synthesis.ui.liverSegmentationCheckBox.setChecked(True)
    liver._parameterNode.inputVolume = mr
    liver.ui.testTimeAugmentationCheckBox.setChecked(True)
    liver.logic.jobRunner = InProcessJobRunner()
    liver.ui.applyButton.click()
    while liver.runController.running:
        liver.runController.poll()
        slicer.app.processEvents()
        time.sleep(0.05)
    print(f"liver segmentation: {liver.ui.statusLabel.text()} {liver.ui.liverVolumeLabel.text()}")

    panels = []
    with tempfile.TemporaryDirectory() as folder:
        for name, widget in widgets.items():
            widget.parent.resize(*PANEL_SIZE)
            widget.parent.show()
            slicer.app.processEvents()
            path = Path(folder) / f"{name}.png"
            widget.parent.grab().save(str(path))
            panels.append(Image.open(path).convert("RGB"))
    gap = 20
    sheet = Image.new("RGB", (sum(p.width for p in panels) + gap, max(p.height for p in panels)), (240, 240, 240))
    left = 0
    for panel in panels:
        sheet.paste(panel, (left, 0))
        left += panel.width + gap
    sheet.save(output, optimize=True)
    print(f"wrote {output} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "images" / "SlicerEssNetModules.png")
