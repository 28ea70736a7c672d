"""When the topology changes and by how much: update steps, the death rate, the gradual density.

All three are pure functions of the step (like the learning-rate schedules), so a resumed run and an
uninterrupted one make the same decisions, and nothing of them is checkpointed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class UpdateSteps:
    """Topology updates after every ``every``-th optimizer step (Sup-tickets: ``steps % f == 0``), up to and
    including ``stop`` (0: no end), never after the last step of training."""

    every: int
    total: int
    stop: int = 0

    def __contains__(self, step: int) -> bool:
        return 0 < step < self.total and step % self.every == 0 and (not self.stop or step <= self.stop)

    def count(self) -> int:
        last = min(self.total - 1, self.stop or self.total - 1)
        return max(0, last // self.every)


@dataclass(frozen=True)
class DeathRate:
    """The fraction of each layer's active weights dropped (and regrown) at an update. ``cosine``:
    ``floor + (rate - floor) (1 + cos(pi t / T)) / 2`` over the whole run (t the step, T the total
    steps; Sup-tickets' CosineDecay stepped once a step); ``constant``: ``rate``."""

    rate: float
    total: int
    schedule: str = "cosine"
    floor: float = 0.005

    def __call__(self, step: int) -> float:
        if self.schedule == "constant":
            return self.rate
        return self.floor + (self.rate - self.floor) * (1.0 + math.cos(math.pi * step / max(self.total, 1))) / 2.0


@dataclass(frozen=True)
class GradualDensity:
    """GraNet's (and GMP's) cubic schedule over update indices ``i = step // every``.

    With ``i0 = start // every`` and ``i1 = end // every`` the density at update i is
    ``final + (initial - final) (1 - (i - i0) / (i1 - i0))^3``. ``exact`` prunes at i0 < i <= i1, so the
    last pruning (at ``end``) reaches ``final`` exactly, keeping ``round(d n)`` weights; ``reference``
    prunes at i0 <= i <= i1 - 1 and keeps ``int(d n) - 1`` (GraNet's code: a strict ``>`` against the
    k-th largest), ending at ``final + (initial - final) / (i1 - i0)^3`` less one weight.
    """

    initial: float
    final: float
    every: int
    start: int
    end: int
    reference: bool = False

    @property
    def window(self):
        i0, i1 = self.start // self.every, self.end // self.every
        return (i0, i1 - 1) if self.reference else (i0 + 1, i1)

    def density_at(self, step: int) -> Optional[float]:
        """The target density of the update at ``step``, or None when it does not prune gradually."""
        if step % self.every:
            return None
        i = step // self.every
        first, last = self.window
        if not first <= i <= last:
            return None
        i0, i1 = self.start // self.every, self.end // self.every
        return self.final + (self.initial - self.final) * (1.0 - (i - i0) / (i1 - i0)) ** 3

    def kept(self, n: int, density: float) -> int:
        """Weights kept of ``n`` at ``density``: ticketlab's rule, or the reference's (one fewer, floored)."""
        if self.reference:
            return max(0, int(n * density) - 1)
        return min(n, int(math.floor(density * n + 0.5)))

    def last_step(self) -> int:
        return self.window[1] * self.every
