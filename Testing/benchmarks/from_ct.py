"""What users feel: ``segment <CHAOS CT sample DICOM folder> out.nii.gz --from-ct``, whole process, median of 3,
with the default synthesis model against another one given by path, run alternately in one session.

    .venv/bin/python Testing/benchmarks/from_ct.py OTHER_CT2MR.safetensors

(the model shipped before: ``git show f7d58c7:SlicerEssNet/models/essnet-ct2mr.safetensors``, and its .json).
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DICOM = REPO.parent / "shared" / "data" / "chaos_ct_sample" / "DICOM_anon"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    runs = {"other": ["--synthesis-model", sys.argv[1]], "default": []}
    times = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(3):
            for name, extra in runs.items():
                started = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "SlicerEssNet", "segment", str(DICOM),
                                       str(Path(folder) / "liver.nii.gz"), "--from-ct", "--quiet", *extra],
                                      capture_output=True, text=True, cwd=REPO)
                times[name].append(time.perf_counter() - started)
                if done.returncode:
                    print(done.stderr, file=sys.stderr)
                    return 1
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values):.1f} s ({', '.join(f'{v:.1f}' for v in values)})")
    print(f"default / other = {statistics.median(times['default']) / statistics.median(times['other']):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
