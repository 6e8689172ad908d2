"""Stage-2 loop: a liver U-Net on real MR slices, optionally mixed with synthetic MR; best on validation."""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from SlicerEssNet.runtime import convolution_memory_format

from ..data.augment import bias_field_jitter, organ_contrast_jitter, random_appearance
from ..data.sampling import batch_indices, iteration_generator
from .checkpoint import load_checkpoint, save_checkpoint
from .deep_supervision import DeepSupervisionLoss, WithDeepSupervision
from .distributed import unwrap
from .loop import job_done, mark_done, run_loop
from .organ_head import OrganLoss, WithOrganHead
from .precision import bf16_autocast
from .schedule import OPTIMIZERS, set_learning_rate
from .segmentation_models import build_segmentation_model
from .weight_average import WeightAverage


def train_segmentation(job_dir, real_set, synthetic_set, preset, seed: int, context, kind: str = "classic",
                       validate=None, device="cpu", total=None, restyle_synthetic: bool = False):
    """Train one arm; ``validate(network) -> float`` (mean 3D Dice on validation patients) picks the best
    checkpoint. Returns ``(best network, history, best record)``; resumes from the job folder.
    ``restyle_synthetic``: the synthetic set is CT slices (the ``real+ct`` arm): each gets a random appearance,
    and they make up ``ct_fraction`` of each batch instead of ``synthetic_fraction``."""
    options = preset.segmentation
    total = int(total if total is not None else options.iterations)
    job_dir = Path(job_dir)
    torch.manual_seed(seed)
    network, loss_function = build_segmentation_model(kind, options)
    organ_loss = None
    if options.organ_weight > 0 and kind == "classic":  # the MONAI peer keeps its own standard recipe
        network, organ_loss = WithOrganHead(network, real_set.organ_classes()), OrganLoss(options.dice_weight)
    deep_loss = None
    if options.deep_supervision > 0 and kind == "classic":
        if organ_loss is not None:
            raise ValueError("segmentation.deep_supervision and organ_weight cannot be combined: set one to 0")
        network, deep_loss = WithDeepSupervision(network, options.deep_supervision), DeepSupervisionLoss(loss_function)
    # NHWC: about 1.15x faster U-Net steps on these CPUs (bf16, 1-2 threads; Testing/benchmarks/training.py).
    memory_format = convolution_memory_format(device)
    network = context.wrap(network.to(device, memory_format=memory_format))
    optimizer = build_optimizer(network.parameters(), options)

    def segmenter():
        """The U-Net alone: what is validated, averaged, kept as best and shipped (never a training-only head)."""
        trained = unwrap(network)
        return trained.segmenter if isinstance(trained, (WithOrganHead, WithDeepSupervision)) else trained

    average = WeightAverage(segmenter(), options.ema_decay) if options.ema_decay > 0 else None
    best = {"score": -1.0, "iteration": 0}
    best_path = job_dir / "best.pt"
    fraction = options.ct_fraction if restyle_synthetic else options.synthetic_fraction
    n_synthetic = int(round(options.batch_size * fraction)) if synthetic_set else 0
    n_real = options.batch_size - n_synthetic

    def autocast():
        return bf16_autocast(options.autocast_bf16, device)

    def step(iteration: int) -> dict:
        lr = set_learning_rate(optimizer, options.lr, iteration, options.decay_from, total)
        generator = iteration_generator(seed, iteration, context.rank, stream=1)
        organs = organ_loss is not None
        mixing = n_synthetic > 0 and (options.synthetic_until <= 0 or iteration < options.synthetic_until)
        real_count = n_real if mixing else options.batch_size
        parts = []
        if real_count:
            parts.append(real_set.batch(
                batch_indices(len(real_set), real_count, iteration, seed, context.rank, context.world_size),
                options.crop, generator, preset.data, elastic=True, organs=organs))
        if mixing:
            parts.append(synthetic_set.batch(
                batch_indices(len(synthetic_set), n_synthetic, iteration, seed + 13, context.rank,
                              context.world_size), options.crop, generator, preset.data, elastic=True, organs=organs))
        # (images, labels[, organ labels]) of the real slices, then the synthetic ones
        images, labels, *organ_labels = (torch.cat(column) for column in zip(*parts))
        if preset.data.organ_contrast > 0 or preset.data.organ_gamma > 0:
            images = organ_contrast_jitter(images, labels, generator, preset.data.organ_contrast,
                                           preset.data.organ_gamma)
        if preset.data.bias_field > 0:  # drawn only when asked for: runs without it keep their random stream
            images = bias_field_jitter(images, generator, preset.data.bias_field)
        if preset.data.random_appearance > 0:
            images[:real_count] = random_appearance(images[:real_count], generator, share=preset.data.random_appearance)
        if mixing and restyle_synthetic:
            images[real_count:] = random_appearance(images[real_count:], generator)
        network.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = network(images.to(device).contiguous(memory_format=memory_format))
        if organs:
            logits, organ_logits = logits
        if deep_loss is not None:
            logits, coarser = logits
            loss = deep_loss(logits, coarser, labels.to(device))
        else:
            loss = loss_function(logits, labels.to(device))
        if organs:
            loss = loss + options.organ_weight * organ_loss(organ_logits, organ_labels[0].to(device))
        loss.backward()
        optimizer.step()
        if average is not None:
            average.update(segmenter())
        return {"loss": float(loss.detach()), "lr": lr}

    def scored_network():
        return average.network if average is not None else segmenter()

    def after_step(done: int, _record: dict):
        if validate is None or (done % options.eval_every and done != total):
            return None
        score = validate(scored_network()) if context.is_main else None
        score = context.broadcast_object(score)
        if score > best["score"]:
            best.update(score=score, iteration=done)
            if context.is_main:
                save_checkpoint({"network": scored_network().state_dict(), **best}, best_path)
        return {"val_dice": score, "best_val_dice": best["score"]}

    def get_state():
        state = {"network": unwrap(network).state_dict(), "optimizer": optimizer.state_dict(), "best": dict(best)}
        if average is not None:
            state["average"] = average.state_dict()
        return state

    def set_state(state):
        unwrap(network).load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        best.update(state["best"])
        if average is not None:
            average.load_state_dict(state["average"])

    finished = job_done(job_dir)
    final = run_loop(job_dir, label=job_dir.name, total=total, step=step, get_state=get_state, set_state=set_state,
                     checkpoint_every=options.checkpoint_every, context=context, after_step=after_step)
    result = copy.deepcopy(scored_network()).eval()
    saved = load_checkpoint(best_path)
    if saved is not None:
        result.load_state_dict(saved["network"])
        best.update(score=float(saved["score"]), iteration=int(saved["iteration"]))
    if finished is None and context.is_main:
        mark_done(job_dir, {"iterations": total, "kind": kind, "seed": seed, "best": best,
                            "seconds": final["seconds"]})
    return result, final["history"], dict(best)


def build_optimizer(parameters, options):
    """``options.optimizer``: "adam" (the preset's) or "sgd", nnU-Net's SGD (Nesterov, momentum 0.99)."""
    if options.optimizer == "sgd":
        return torch.optim.SGD(list(parameters), lr=options.lr, momentum=0.99, nesterov=True,
                               weight_decay=options.weight_decay)
    if options.optimizer != "adam":
        choices = ", ".join(OPTIMIZERS)
        raise ValueError(f"segmentation.optimizer {options.optimizer!r} is not one of {choices}")
    return adam(parameters, options)


def adam(parameters, options):
    """Adam with the fused kernel where this torch has it, the per-tensor loop otherwise: one pass over all
    tensors instead of ~10 small ops per tensor (cpu-preset U-Net step, batch 4 at 96 px, bf16, 2 cores:
    0.084 s with the loop, 0.077 s with foreach, 0.068 s fused)."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=options.lr, weight_decay=options.weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(parameters, lr=options.lr, weight_decay=options.weight_decay)
