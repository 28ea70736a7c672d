"""PrAC's per-round bookkeeping: which examples the model gets right each epoch, how often each is forgotten,
when the would-be mask stops moving (early bird), and the next round's critical set.

- `ExampleRecord`: during a round, the training-mode prediction of every example of each batch, before the
  optimizer step, into an (epochs x N) int8 table on the device (1 correct, 0 wrong, -1 not seen that epoch;
  N = the full training split, so rounds on subsets stay comparable). No host synchronisation per step.
- `forgetting_counts`: the reference's state machine over a row: "not learned" at first; the first correct
  prediction makes it "learned" with count 0; every learned -> wrong adds 1 and returns to "not learned".
  Never correct: `NEVER_LEARNED` (maximally hard); never seen: -1. Unseen epochs are skipped (the
  reference checks only the first column).
- `EarlyBird`: after every epoch the mask that pruning now would give; the Hamming distance to the
  previous epoch's, over the round's remaining weights, in float32 as the reference computes it; recording
  starts the first time the distance exceeds eps; a FIFO of the last 5 distances (initialised with ones);
  when its maximum falls below eps the round stops and that epoch's mask is the ticket's.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from ticketlab.sparsity import Mask
from ticketlab.train import Callback

NEVER_LEARNED = 200_000


def forgetting_counts(record: torch.Tensor) -> torch.Tensor:
    """Per example (column) of an (epochs x N) record of {1, 0, -1}: forgetting events (module docstring)."""
    record = record.to(torch.int8)
    n = record.shape[1]
    learned = torch.zeros(n, dtype=torch.bool, device=record.device)
    ever = torch.zeros(n, dtype=torch.bool, device=record.device)
    seen = torch.zeros(n, dtype=torch.bool, device=record.device)
    counts = torch.zeros(n, dtype=torch.long, device=record.device)
    for column in record:
        present = column >= 0
        correct, wrong = present & (column == 1), present & (column == 0)
        counts += (learned & wrong).long()
        learned = (learned & ~wrong) | correct
        ever |= correct
        seen |= present
    counts = torch.where(ever, counts, torch.full_like(counts, NEVER_LEARNED))
    return torch.where(seen, counts, torch.full_like(counts, -1))


class ExampleRecord(Callback):
    """The correctness table of one round; ``positions[i]``: the full-split position of subset example i."""

    name = "ExampleRecord"

    def __init__(self, positions: torch.Tensor, total: int, epochs: int, out: Optional[Path] = None):
        self.positions, self.total, self.epochs, self.out = positions, total, epochs, out
        self.record: Optional[torch.Tensor] = None
        self._loaded: Optional[torch.Tensor] = None

    def on_train_start(self, state) -> None:
        device = state.logits.device if state.logits is not None else next(state.model.parameters()).device
        self.positions = self.positions.to(device)
        self.record = torch.full((self.epochs, self.total), -1, dtype=torch.int8, device=device)
        if self._loaded is not None:
            self.record.copy_(self._loaded.to(device))

    def after_backward(self, state) -> None:
        correct = (state.logits.detach().argmax(1) == state.y).to(torch.int8)
        row = state.epoch - state.trainer.start_step // state.iters_per_epoch
        self.record[row].index_put_((self.positions[state.index],), correct)

    def on_train_end(self, state) -> None:
        if self.out is not None:
            from ticketlab.io import save_torch

            save_torch(self.record.cpu(), self.out)

    def state_dict(self) -> Dict[str, Any]:
        return {"record": self.record.cpu() if self.record is not None else None}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._loaded = state["record"]


class EarlyBird(Callback):
    """Stops the round once the would-be mask has stopped moving (module docstring)."""

    name = "EarlyBird"

    def __init__(self, candidate: Callable[[Dict[str, torch.Tensor]], Mask], remaining: int, eps: float,
                 queue: int = 5, warmup: int = 0, out: Optional[Path] = None):
        self.candidate, self.remaining, self.eps, self.queue, self.warmup = candidate, remaining, eps, queue, warmup
        self.out = out
        self.previous: Optional[Mask] = None
        self.recording = False
        self.fifo = deque([1.0] * queue, maxlen=queue)
        self.distances: List[float] = []
        self.fired: Optional[int] = None

    def on_epoch_end(self, state) -> None:
        epoch = state.step // state.iters_per_epoch - 1  # the epoch just finished (0-based)
        mask = self.candidate({k: v.detach().cpu() for k, v in state.model.state_dict().items()})
        if self.previous is not None:
            changed = sum(int((mask[k] != self.previous[k]).sum()) for k in mask)
            distance = np.float32(changed) / np.float32(self.remaining)
            eps = np.float32(self.eps)
            self.distances.append(float(distance))
            if distance > eps:
                self.recording = True
            if self.recording and epoch > self.warmup:
                self.fifo.append(float(distance))
                if np.float32(max(self.fifo)) < eps:
                    self.fired = epoch
                    if self.out is not None:
                        mask.save(self.out)
                    state.add_summary(early_bird_epoch=epoch, early_bird_distances=self.distances)
                    state.request_stop()
        self.previous = mask

    def state_dict(self) -> Dict[str, Any]:
        return {"previous": self.previous.state_dict() if self.previous is not None else None,
                "recording": self.recording, "fifo": list(self.fifo), "distances": self.distances,
                "fired": self.fired}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.previous = Mask(state["previous"]) if state["previous"] is not None else None
        self.recording, self.distances, self.fired = state["recording"], list(state["distances"]), state["fired"]
        self.fifo = deque(state["fifo"], maxlen=self.queue)


class SaveWeightsAt(Callback):
    """Saves the model's weights after step ``step`` (PrAC's rewind point, taken during round 0); a round
    that stops before it (the early bird) saves its last weights instead and says so in the summary."""

    name = "SaveWeightsAt"

    def __init__(self, step: int, out: Path):
        self.step, self.out = step, out

    def after_step(self, state) -> None:
        if state.step == self.step:
            self.save(state)

    def on_train_end(self, state) -> None:
        if state.step < self.step:
            self.save(state)
            state.add_summary(rewind_taken_at=state.step)

    def save(self, state) -> None:
        from ticketlab.io import save_torch

        save_torch({k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()}, self.out)


def critical_set(counts: torch.Tensor, threshold: int = 0, keep: Optional[int] = None,
                 disagree: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sorted full-split positions of the next round: forgetting count above ``threshold`` (``keep``: the
    ``keep`` largest counts instead, ties to the lower index, never an unseen example), united with the
    positions where ``disagree`` (dense and sparse predictions differ) is true."""
    seen = counts >= 0
    if keep is None:
        chosen = seen & (counts > threshold)
    else:
        order = sorted(torch.nonzero(seen).flatten().tolist(), key=lambda i: (-int(counts[i]), i))[:keep]
        chosen = torch.zeros_like(seen)
        chosen[order] = True
    if disagree is not None:
        chosen |= disagree.to(chosen.device)
    return torch.nonzero(chosen).flatten()


__all__ = ["NEVER_LEARNED", "forgetting_counts", "ExampleRecord", "EarlyBird", "critical_set"]
