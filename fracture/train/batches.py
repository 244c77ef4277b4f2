"""Which training items each step sees: the epoch order and each rank's share of a batch.

Images come out of :class:`fracture.cache.ImageCache` as one uint8 array per
batch; the conversion to network input lives in :mod:`fracture.serve.inference`
(one forward path for training, evaluation and prediction).

Under ``torchrun`` every rank draws the *same* epoch order from the same
seeded generator and takes its slice of each global batch
(:func:`rank_slice`), so a run on N processes sees the same batches, in the
same order, as a run on one: ``batch_size`` is the global batch, and the
learning-rate schedule does not depend on the number of processes.
"""
from __future__ import annotations

import numpy as np
import torch


def epoch_indices(
    n_items: int,
    *,
    shuffle: bool,
    generator: torch.Generator,
    sample_weights: np.ndarray | None = None,
) -> np.ndarray:
    """Order of items for one epoch; with weights, a class-balanced draw with replacement."""
    if sample_weights is not None:
        weights = torch.as_tensor(sample_weights, dtype=torch.double)
        return torch.multinomial(weights, n_items, replacement=True, generator=generator).numpy()
    if shuffle:
        return torch.randperm(n_items, generator=generator).numpy()
    return np.arange(n_items)


def rank_slice(n_items: int, rank: int, world_size: int) -> slice:
    """This rank's contiguous share of ``n_items`` (the first ``n % world`` ranks take one more).

    With fewer items than ranks a rank's share is empty; :func:`pad_to_world`
    prevents that for training batches.
    """
    base, extra = divmod(n_items, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def pad_to_world(positions: np.ndarray, world_size: int) -> np.ndarray:
    """A batch with at least one item per rank (the first items repeated), as DDP needs
    every rank to step; a no-op on one process."""
    if len(positions) >= world_size:
        return positions
    return np.resize(positions, world_size)
