"""What the Python entry functions return: the tickets of a run, read lazily from its run directory.

``path, tickets = ticketlab.lottery(...)`` unpacks as before (a run path and one summary per level);
each `Ticket` is that level's summary (a dict, so ``ticket["final_test_accuracy"]`` still works) that
also hands out the level's mask, its weights and its figures as attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional

import torch

from ticketlab.io import load_torch
from ticketlab.sparsity import Mask
from ticketlab.train.trainer import weights_path

Weights = Dict[str, torch.Tensor]


class Ticket(dict):
    """One level's summary, plus its files: ``mask``, ``weights`` (final, pruned entries exactly 0),
    ``best_weights`` (at the best validation evaluation, when there was a validation split)."""

    def __init__(self, summary: Dict[str, Any], folder: Path):
        super().__init__(summary)
        self.folder = Path(folder)

    @property
    def level(self) -> int:
        return int(self.get("level", 0))

    @property
    def density(self) -> float:
        """The ticket's density: kept prunable weights over all prunable weights."""
        return float(self.get("ticket_density", self["density"]))

    @property
    def test_accuracy(self) -> Optional[float]:
        return self.get("final_test_accuracy")

    @property
    def val_accuracy(self) -> Optional[float]:
        return self.get("final", {}).get("val", {}).get("accuracy")

    @property
    def test_accuracy_at_best_val(self) -> Optional[float]:
        return self.get("test_accuracy_at_best_val")

    @property
    def mask(self) -> Mask:
        return Mask.load(self.folder / "mask.pt")

    @property
    def weights(self) -> Weights:
        return load_torch(self.folder / "final.pt")

    @property
    def best_weights(self) -> Weights:
        """The best-validation weights (the final ones for a phase without a validation split)."""
        return load_torch(weights_path(self.folder, "best"))

    def load_into(self, model: torch.nn.Module, best: bool = False) -> torch.nn.Module:
        """``model`` with this ticket's (final, or best-validation) weights loaded; returns it."""
        model.load_state_dict(self.best_weights if best else self.weights)
        return model

    def __repr__(self) -> str:
        acc = self.test_accuracy
        shown = "-" if acc is None else f"{100 * acc:.2f}%"
        return f"Ticket(level={self.level}, density={100 * self.density:.2f}%, test={shown}, folder={self.folder})"


class LotteryResult(NamedTuple):
    """``(path, tickets)``: the run directory and one `Ticket` per level, level 0 first."""

    path: Path
    tickets: List[Ticket]

    def ticket(self, level: int) -> Ticket:
        for ticket in self.tickets:
            if ticket.level == level:
                return ticket
        raise KeyError(f"no level {level} in {self.path}; levels: {[t.level for t in self.tickets]}")


def level_tickets(path: Path, summaries: List[Dict[str, Any]]) -> LotteryResult:
    """The result of a lottery run whose level k lives in ``path/level_<k>``."""
    path = Path(path)
    return LotteryResult(path, [Ticket(s, path / f"level_{s['level']}") for s in summaries])


__all__ = ["Ticket", "LotteryResult", "level_tickets"]
