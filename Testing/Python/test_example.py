"""The main job on the bundled real scans: ``python -m SlicerEssNet example OUT`` (``bash scripts/example.sh``)."""
from __future__ import annotations

import numpy as np
import pytest

from test_cli import run_cli


def test_the_bundled_scans_are_the_apache_licensed_totalsegmentator_examples(repo_root, shared_data):
    folder = repo_root / "SlicerEssNet" / "examples"
    assert "Apache License" in (folder / "LICENSE").read_text() and "TotalSegmentator" in (folder / "README.md").read_text()
    for name in ("example_ct_sm.nii.gz", "example_mr_sm.nii.gz"):
        assert (folder / name).read_bytes() == (shared_data / "totalseg_examples" / name).read_bytes()


def test_example_writes_real_results_and_says_what_they_are(tmp_path):
    pytest.importorskip("torch")
    import nibabel

    from SlicerEssNet.example import EXAMPLE_CT, EXAMPLE_MR

    done = run_cli("example", tmp_path / "out", "--threads", "1", timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    ct = nibabel.load(str(EXAMPLE_CT))
    liver_ct = np.asarray(nibabel.load(str(tmp_path / "out" / "liver_on_ct.nii.gz")).dataobj)
    voxel_ml = abs(np.linalg.det(ct.affine[:3, :3])) / 1000.0
    assert lines[0] == f"CT example_ct_sm.nii.gz: liver {np.count_nonzero(liver_ct == 1) * voxel_ml:.0f} mL (liver-unet-ct)"
    assert 800 < np.count_nonzero(liver_ct == 1) * voxel_ml < 2500, "an adult liver"
    assert lines[2].startswith("anatomy kept: liver Dice") or "may not keep the anatomy" in lines[2]
    mr = nibabel.load(str(EXAMPLE_MR))
    liver_mr = np.asarray(nibabel.load(str(tmp_path / "out" / "liver_on_mr.nii.gz")).dataobj)
    assert f"liver {np.count_nonzero(liver_mr == 1) * abs(np.linalg.det(mr.affine[:3, :3])) / 1000.0:.0f} mL" in lines[3]
    synthetic = nibabel.load(str(tmp_path / "out" / "synthetic_mr.nii.gz"))
    np.testing.assert_allclose(synthetic.affine, ct.affine, atol=1e-4)
    assert synthetic.shape == ct.shape and np.asarray(synthetic.dataobj).std() > 10
    from PIL import Image

    picture = Image.open(tmp_path / "out" / "example.png")
    assert picture.size[0] > 600 and picture.size[1] > 400


def test_example_refuses_an_output_it_cannot_write_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("x")
    done = run_cli("example", tmp_path / "a_file")
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: ")
