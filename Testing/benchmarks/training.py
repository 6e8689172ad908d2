"""Training-step benchmark: samples/s of the EssNet and U-Net steps in fp32 and with bf16 autocast, side by side.

    .venv/bin/python Testing/benchmarks/training.py [--steps 20] [--preset cpu] [--wait short_spin|passive]

Both precisions start from the same seed and see the same batches, so the loss columns show whether bf16 changes
the optimisation over the first steps (a short curve, not a convergence study: the presets record which precision
they use and the reports show the full learning curves). The faster precision is worth using only where the two
curves agree. Each OpenMP wait policy (SlicerEssNet.runtime.WAIT_POLICIES) runs in its own process, one after the
other, so the tables compare them side by side. A last line compares the U-Net step in the NCHW and NHWC
(channels_last) memory layouts, same seed and batches: training uses NHWC.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from SlicerEssNet.runtime import WAIT_POLICIES, WAIT_VARIABLES, import_torch  # noqa: E402


def essnet_steps(options, crop: int, steps: int):
    import torch

    from Training.stages.essnet import EssNetModel

    model = EssNetModel(options, seed=0)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.rand(options.batch_size, 1, crop, crop, generator=generator) * 2 - 1,
                (torch.rand(options.batch_size, crop, crop, generator=generator) > 0.7).long(),
                torch.rand(options.batch_size, 1, crop, crop, generator=generator) * 2 - 1) for _ in range(steps)]
    model.step(*batches[0], 0, steps)  # warm-up: oneDNN primitives
    losses, start = [], time.perf_counter()
    for index, (ct, liver, mr) in enumerate(batches):
        losses.append(model.step(ct, liver, mr, index, steps)["G_total"])
    seconds = time.perf_counter() - start
    return steps * options.batch_size / seconds, losses


def unet_steps(options, crop: int, steps: int, bf16: bool, channels_last: bool = True):
    """Samples/s and losses of the stage-2 step; ``channels_last``: the NHWC layout training uses
    (``train_segmentation``), else NCHW, for the layout table."""
    import torch

    from Training.stages.segmentation_models import build_segmentation_model

    torch.manual_seed(0)
    network, loss_function = build_segmentation_model("classic", options)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    network = network.to(memory_format=layout)
    optimizer = torch.optim.Adam(network.parameters(), lr=options.lr)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.rand(options.batch_size, 1, crop, crop, generator=generator) * 2 - 1,
                (torch.rand(options.batch_size, crop, crop, generator=generator) > 0.7).long()) for _ in range(steps + 1)]

    def step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
        with context:
            logits = network(images.contiguous(memory_format=layout))
        loss = loss_function(logits, labels)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    step(*batches[0])
    losses, start = [], time.perf_counter()
    for images, labels in batches[1:]:
        losses.append(step(images, labels))
    return steps * options.batch_size / (time.perf_counter() - start), losses


def measure(preset_name: str, steps: int) -> list:
    """``[(title, {False: (rate, losses), True: (rate, losses)})]`` in this process (fp32 and bf16 autocast)."""
    from Training.study.presets import get_preset

    preset = get_preset(preset_name)
    rows = []
    synthesis = preset.synthesis
    for crop in sorted({synthesis.crop, preset.data.crop}):
        results = {bf16: essnet_steps(replace(synthesis, autocast_bf16=bf16), crop, steps) for bf16 in (False, True)}
        rows.append((f"EssNet step (2G + Seg + 2D), ngf {synthesis.ngf}, {crop} px, batch {synthesis.batch_size}",
                     results))
    segmentation = preset.segmentation
    results = {bf16: unet_steps(segmentation, segmentation.crop, steps, bf16) for bf16 in (False, True)}
    rows.append((f"U-Net step, base {segmentation.base}, {segmentation.crop} px, batch {segmentation.batch_size}",
                 results))
    return rows


def measure_layouts(preset_name: str, steps: int) -> dict:
    """``{channels_last: (rate, losses)}`` of the U-Net step with the preset's precision, NCHW then NHWC."""
    from Training.study.presets import get_preset

    segmentation = get_preset(preset_name).segmentation
    return {layout: unet_steps(segmentation, segmentation.crop, steps, segmentation.autocast_bf16, layout)
            for layout in (False, True)}


BUSY_NEIGHBOUR = "import time\nend = time.time() + 120\nwhile time.time() < end: pass\n"


def beside_busy_neighbour(preset_name: str, steps: int) -> float:
    """Samples/s of the stage-1 step (fp32, the preset's crop) with one CPU-bound process on the same cores."""
    from Training.study.presets import get_preset

    synthesis = get_preset(preset_name).synthesis
    neighbour = subprocess.Popen([sys.executable, "-c", BUSY_NEIGHBOUR])
    try:
        time.sleep(0.3)
        return essnet_steps(replace(synthesis, autocast_bf16=False), synthesis.crop, steps)[0]
    finally:
        neighbour.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--wait", choices=sorted(WAIT_POLICIES), default=None,
                        help="measure under this OpenMP wait policy only (default: each, in its own process)")
    args = parser.parse_args()
    if args.wait is None:
        # The wait policy is fixed when torch loads, so each one is measured in a fresh process.
        for wait in ("short_spin", "passive"):
            command = [sys.executable, __file__, "--steps", str(args.steps), "--preset", args.preset, "--wait", wait]
            # Each child measures exactly one policy: none of its variables is inherited from the caller's shell.
            if subprocess.run(command, env={k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}).returncode:
                return 1
        print("\nTraining uses short_spin (python -m Training sets it); the engine uses passive.")
        return 0
    torch = import_torch(wait=args.wait)
    rows = measure(args.preset, args.steps)
    policy = ", ".join(f"{k}={v}" for k, v in WAIT_POLICIES[args.wait].items())
    print(f"\n# Training steps, wait policy {args.wait} ({policy}); {args.preset} preset widths, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps each")
    print(f"{'step':62s} {'fp32 samples/s':>15s} {'bf16 samples/s':>15s} {'bf16/fp32':>9s} "
          f"{'loss fp32 (last 5)':>19s} {'loss bf16 (last 5)':>19s}")
    for title, results in rows:
        (rate32, loss32), (rate16, loss16) = results[False], results[True]
        tail32, tail16 = sum(loss32[-5:]) / 5, sum(loss16[-5:]) / 5
        print(f"{title:62s} {rate32:15.2f} {rate16:15.2f} {rate16 / rate32:8.2f}x {tail32:19.4f} {tail16:19.4f}",
              flush=True)
    layouts = measure_layouts(args.preset, args.steps)
    (nchw, loss_nchw), (nhwc, loss_nhwc) = layouts[False], layouts[True]
    print(f"U-Net step memory layout (the preset's precision): NCHW {nchw:.2f} samples/s, NHWC (channels_last, what "
          f"training uses) {nhwc:.2f} samples/s, {nhwc / nchw:.2f}x; loss of the last 5 steps "
          f"{sum(loss_nchw[-5:]) / 5:.4f} / {sum(loss_nhwc[-5:]) / 5:.4f}", flush=True)
    busy, quiet = beside_busy_neighbour(args.preset, args.steps), rows[0][1][False][0]
    print(f"{rows[0][0]}, fp32, beside one busy CPU-bound process: {busy:.2f} samples/s ({quiet / busy:.2f}x slower "
          "than quiet)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
