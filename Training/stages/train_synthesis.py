"""Stage-1 loop: train EssNet (or, with ``seg_weight = 0``, the plain CycleGAN ablation) on unpaired slices."""
from __future__ import annotations

import dataclasses

from ..data.sampling import batch_indices, iteration_generator
from .essnet import EssNetModel
from .loop import job_done, mark_done, run_loop


def synthesis_options(preset, essnet: bool):
    """The stage-1 options of ``preset``; the ablation differs only by ``seg_weight = 0``."""
    return dataclasses.replace(preset.synthesis, seg_weight=preset.synthesis.seg_weight if essnet else 0.0)


def unpaired_step(model, ct_set, mr_set, options, augment, seed: int, iteration: int, total: int, context) -> dict:
    """One stage-1 step: a CT batch and an independent MR batch, both pure functions of (seed, iteration, rank)."""
    indices = batch_indices(len(ct_set), options.batch_size, iteration, seed, context.rank, context.world_size)
    generator = iteration_generator(seed, iteration, context.rank)
    real_ct, ct_liver = ct_set.batch(indices, options.crop, generator, augment)
    # Unpaired: the MR partners are an independent draw.
    partners = batch_indices(len(mr_set), options.batch_size, iteration, seed + 7, context.rank, context.world_size)
    real_mr, _ = mr_set.batch(partners, options.crop, generator, augment)
    return model.step(real_ct, ct_liver, real_mr, iteration, total)


def train_synthesis(job_dir, ct_set, mr_set, preset, seed: int, context, essnet: bool = True, device="cpu",
                    total=None):
    """Train (or resume, or just reload when finished) one synthesis model; returns the ``EssNetModel``."""
    options = synthesis_options(preset, essnet)
    total = int(total if total is not None else options.iterations)
    model = EssNetModel(options, context, device=device, seed=seed)
    augment = preset.data

    def step(iteration: int) -> dict:
        return unpaired_step(model, ct_set, mr_set, options, augment, seed, iteration, total, context)

    label = "essnet" if essnet else "cyclegan"
    finished = job_done(job_dir)
    final = run_loop(job_dir, label=label, total=total, step=step, get_state=model.state_dict,
                     set_state=model.load_state_dict, checkpoint_every=options.checkpoint_every, context=context)
    if finished is None and context.is_main:
        mark_done(job_dir, {"iterations": total, "essnet": essnet, "seed": seed, "seconds": final["seconds"]})
    model.history = final["history"]
    return model
