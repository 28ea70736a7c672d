"""The batch order: iterations per epoch, the examples each step sees, and the examples a span of
steps presents (shared by in-memory data and streamed image folders)."""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

from ticketlab.errors import ConfigError
from ticketlab.seeds import stream_generator

Device = Union[str, torch.device]


def iters_per_epoch(n: int, batch_size: int) -> int:
    """Batches per epoch: ceil(n / batch_size) (the last batch may be partial)."""
    if batch_size < 1:
        raise ConfigError(f"train.batch_size={batch_size} must be at least 1")
    return -(-n // batch_size)


def examples_seen(n: int, batch_size: int, start: int, end: int) -> int:
    """Training examples presented by steps ``start..end`` over a split of ``n`` (an epoch's last batch
    holds the remainder)."""
    ipe = iters_per_epoch(n, batch_size)

    def upto(step: int) -> int:  # examples of steps 0..step
        epochs, rest = divmod(max(step, 0), ipe)
        return epochs * n + rest * batch_size

    return upto(end) - upto(start) if end > start else 0


def epoch_permutation(n: int, seed: int, epoch: int, device: Device = "cpu") -> Tensor:
    """The example order of ``epoch``: batch b is ``perm[b*bs:(b+1)*bs]``; recomputable for resume."""
    return torch.randperm(n, generator=stream_generator(seed, epoch)).to(device)


__all__ = ["iters_per_epoch", "examples_seen", "epoch_permutation"]
