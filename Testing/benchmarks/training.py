"""Training-step benchmark: samples/s of the EssNet and U-Net steps in fp32 and with bf16 autocast, side by side.

    .venv/bin/python Testing/benchmarks/training.py [--steps 20] [--preset cpu]

Both precisions start from the same seed and see the same batches, so the loss columns show whether bf16 changes
the optimisation over the first steps (a short curve, not a convergence study: the presets record which precision
they use and the reports show the full learning curves). The faster precision is worth using only where the two
curves agree.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from SlicerEssNet.runtime import import_torch  # noqa: E402


def essnet_steps(options, crop: int, steps: int):
    from Training.essnet import EssNetModel

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


def unet_steps(options, crop: int, steps: int, bf16: bool):
    from Training.segmentation_models import build_segmentation_model

    torch.manual_seed(0)
    network, loss_function = build_segmentation_model("classic", options)
    optimizer = torch.optim.Adam(network.parameters(), lr=options.lr)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.rand(options.batch_size, 1, crop, crop, generator=generator) * 2 - 1,
                (torch.rand(options.batch_size, crop, crop, generator=generator) > 0.7).long()) for _ in range(steps + 1)]

    def step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
        with context:
            logits = network(images)
        loss = loss_function(logits, labels)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    step(*batches[0])
    losses, start = [], time.perf_counter()
    for images, labels in batches[1:]:
        losses.append(step(images, labels))
    return steps * options.batch_size / (time.perf_counter() - start), losses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--preset", default="cpu")
    args = parser.parse_args()
    import_torch()
    from Training.presets import get_preset

    preset = get_preset(args.preset)
    rows = []
    synthesis = preset.synthesis
    for crop in sorted({synthesis.crop, preset.data.crop}):
        results = {}
        for bf16 in (False, True):
            results[bf16] = essnet_steps(replace(synthesis, autocast_bf16=bf16), crop, args.steps)
        rows.append((f"EssNet step (2G + Seg + 2D), ngf {synthesis.ngf}, {crop} px, batch {synthesis.batch_size}",
                     results))
    segmentation = preset.segmentation
    results = {bf16: unet_steps(segmentation, segmentation.crop, args.steps, bf16) for bf16 in (False, True)}
    rows.append((f"U-Net step, base {segmentation.base}, {segmentation.crop} px, batch {segmentation.batch_size}",
                 results))

    print(f"# Training-step benchmark ({args.preset} preset widths), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.steps} steps each")
    print(f"{'step':62s} {'fp32 samples/s':>15s} {'bf16 samples/s':>15s} {'bf16/fp32':>9s} "
          f"{'loss fp32 (last 5)':>19s} {'loss bf16 (last 5)':>19s}")
    for title, results in rows:
        (rate32, loss32), (rate16, loss16) = results[False], results[True]
        tail32, tail16 = sum(loss32[-5:]) / 5, sum(loss16[-5:]) / 5
        print(f"{title:62s} {rate32:15.2f} {rate16:15.2f} {rate16 / rate32:8.2f}x {tail32:19.4f} {tail16:19.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
