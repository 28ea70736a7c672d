"""Every seed and random generator in ticketlab, derived from a seed, a purpose and a step.

Each source of randomness (initialisation, batch order, label noise, augmentation, pruning, a method's
own draws) gets its own stream, so changing one never shifts another, and a stream is a pure function of
its inputs, so a resumed run draws exactly what an uninterrupted one drew.

- `derive_seed(seed, purpose)`: a 31-bit seed for one purpose of a master seed (SHA-256 of ``"seed:purpose"``).
- `stream_generator(seed, stream)`: a CPU generator for one numbered stream of a seed (splits, label noise,
  batch order per epoch).
- `step_generator(seed, step)`: a CPU generator for one step of a seed (augmentation, per-step mask draws),
  mixed with splitmix64 so neighbouring seeds and steps do not overlap.
- `generator(seed, purpose, step)`: the two combined, for new code: one call per random draw.

torch is imported inside the functions, so the config (which derives seeds) loads without it.
These formulas name the numbers that every existing run drew; changing one changes results.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported inside the functions at run time
    import torch

_MASK64 = (1 << 64) - 1


def derive_seed(seed: int, purpose: str) -> int:
    """A stable 31-bit seed for ``purpose`` derived from the master ``seed``."""
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def stream_generator(seed: int, stream: int = 0) -> "torch.Generator":
    """A CPU generator seeded by a stable function of (seed, stream), so streams do not overlap."""
    import torch

    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(stream)) & (2**63 - 1))


def step_generator(seed: int, step: int) -> "torch.Generator":
    """A CPU generator for (seed, step): a splitmix64 mix, so neighbouring seeds and steps do not overlap."""
    import torch

    z = (int(seed) * 0x9E3779B97F4A7C15 + int(step) + 0x632BE59BD9B4E019) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return torch.Generator().manual_seed((z ^ (z >> 31)) & ((1 << 63) - 1))


def generator(seed: int, purpose: str, step: int = 0) -> "torch.Generator":
    """The CPU generator for one draw: ``purpose`` of master ``seed`` at ``step`` (e.g. a mask update)."""
    return step_generator(derive_seed(seed, purpose), step)


__all__ = ["derive_seed", "stream_generator", "step_generator", "generator"]
