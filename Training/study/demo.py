"""The end of the ``demo`` preset: the freshly trained models applied through the core CLI, as a user would."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def apply_models_with_cli(study, stream=None) -> dict:
    """``python -m SlicerEssNet synthesize`` on a held-out CT phantom and ``segment`` on a held-out MR phantom
    with the run's models; the segmentation is then scored against the phantom's label."""
    from SlicerEssNet.metrics import evaluate
    from SlicerEssNet.io.volume_files import read_volume

    stream = stream or sys.stderr
    models = study.run_dir / "models"
    out = study.run_dir / "cli_demo"
    out.mkdir(exist_ok=True)
    prefix = "" if study.preset.name == "cpu" else f"{study.preset.name}-"
    ct_case, mr_case = study.ct_val_cases[0], study.mr_val_cases[0]
    commands = [
        ["synthesize", ct_case.image, str(out / "synthetic_mr.nii.gz"), "--model",
         str(models / f"{prefix}essnet-ct2mr.safetensors")],
        ["segment", mr_case.image, str(out / "liver.nii.gz"), "--model",
         str(models / f"{prefix}liver-unet-mr.safetensors")],
    ]
    for arguments in commands:
        command = [sys.executable, "-m", "SlicerEssNet", *arguments]
        print("$ python -m SlicerEssNet " + " ".join(arguments), file=stream, flush=True)
        subprocess.run(command, cwd=REPO, check=True)
    scores = evaluate(read_volume(out / "liver.nii.gz"), read_volume(mr_case.label), label=1)
    ct = read_volume(ct_case.image)
    synthetic = read_volume(out / "synthetic_mr.nii.gz")
    same_grid = synthetic.same_geometry(ct, atol=1e-6)
    print(f"demo: synthetic MR written on the CT's grid ({'identical geometry' if same_grid else 'GEOMETRY DIFFERS'});"
          f" liver segmentation of {mr_case.patient}: 3D Dice {scores['dice']:.3f}, ASSD {scores['assd']:.2f} mm",
          file=stream, flush=True)
    return {"dice": scores["dice"], "assd": scores["assd"], "same_geometry": same_grid}
