"""Deterministic data order: the batch of iteration t is a pure function of (seed, t, rank).

That is what makes a killed run resume on exactly the same schedule, and what lets DDP ranks split each
global batch without talking to each other.
"""
from __future__ import annotations

import torch


def epoch_permutation(n_items: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_items, generator=generator)


def steps_per_epoch(n_items: int, global_batch: int) -> int:
    return max(1, n_items // global_batch)


def batch_indices(n_items: int, batch_size: int, iteration: int, seed: int, rank: int = 0,
                  world_size: int = 1) -> list:
    """Indices (into a list of ``n_items``) of this rank's part of the global batch of ``iteration``."""
    if n_items <= 0:
        raise ValueError("cannot draw batches from an empty set")
    global_batch = batch_size * world_size
    per_epoch = steps_per_epoch(n_items, global_batch)
    epoch, step = divmod(iteration, per_epoch)
    order = epoch_permutation(n_items, seed, epoch)
    if n_items < global_batch:  # tiny sets (tests, phantoms): wrap around
        order = order.repeat(global_batch // n_items + 1)
    chosen = order[step * global_batch : (step + 1) * global_batch]
    return chosen[rank::world_size].tolist()


def iteration_generator(seed: int, iteration: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    """A generator for the random choices of one iteration (augmentation, unpaired partner draw)."""
    return torch.Generator().manual_seed(((seed * 7919 + stream) * 1_000_003 + iteration) * 64 + rank)
