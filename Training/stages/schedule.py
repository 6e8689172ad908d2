"""Learning-rate schedule of CycleGAN/EssNet: constant, then linear decay to zero (per iteration here)."""
from __future__ import annotations

OPTIMIZERS = ("adam", "sgd")  # the choices of segmentation.optimizer


def linear_decay_factor(iteration: int, decay_from: int, total: int) -> float:
    """Multiplier of the base LR at ``iteration`` (0-based): 1 until ``decay_from``, then linearly to 0 at
    ``total``."""
    if iteration < decay_from or total <= decay_from:
        return 1.0
    return max(0.0, 1.0 - (iteration - decay_from) / float(total - decay_from))


def set_learning_rate(optimizer, base_lr: float, iteration: int, decay_from: int, total: int) -> float:
    lr = base_lr * linear_decay_factor(iteration, decay_from, total)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
