"""REPORT.md and figures from a run folder's results.json (regenerate: ``python -m Training report RUN_DIR``)."""
from __future__ import annotations

from pathlib import Path


def write_report(run_dir, out=None) -> Path:
    import json

    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    out = Path(out) if out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# report", ""]
    for arm, metrics in results["summary"].items():
        lines.append(f"- {arm}: " + ", ".join(f"{k} {v['mean']:.4f}" for k, v in metrics.items()))
    path = out / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    return path
