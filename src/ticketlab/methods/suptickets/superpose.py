"""Superposing cheap tickets: the arithmetic (`superpose`, `reprune`) and the trainer callback that takes a
ticket at each cycle end (`Superposition`).

At the end of the pre-train phase the model is saved (``pretrain_end.pt``, the first partner). At the end
of cycle k (k = 1..M) the training model is the k-th cheap ticket (``ticket_<k>.pt``; taken in
``after_step``, before the next cycle's re-exploration, which DST makes at the epoch's end); it is superposed
with the previous partner, ``theta = (1 - f) theta_prev + f theta_ticket`` over the whole state dict
(CAA: ``f = 1 / (k + 1)``, a running uniform average; CIMA: ``f = cima_factor``), re-pruned by one global
magnitude threshold over the managed layers to exactly the final density, given fresh BatchNorm
statistics over one augmented pass of the training data, evaluated, and saved (``superposed_<k>.pt`` with
``superposed_<k>_mask.pt``): it is the next partner. The previous partner of cycle k > 1 is therefore the
previous *superposed and re-pruned* model, not the raw tickets (the reference's rule). The training model
is never touched: it continues from its own weights.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from ticketlab.data import DataBundle
from ticketlab.io import load_torch, save_torch
from ticketlab.sparsity import Mask, round_half_up, select_topk
from ticketlab.train import Callback, evaluate, interpolate, recompute_bn, training_batches

Weights = Dict[str, torch.Tensor]
BN_STEP = 2 * 10**9  # augmentation stream of the BatchNorm passes, apart from training and scoring


def superpose(previous: Weights, ticket: Weights, k: int, method: str = "caa", factor: float = 0.5) -> Weights:
    """The k-th superposition (k = 1, 2, ...): CAA weighs the new ticket ``1 / (k + 1)``, CIMA ``factor``."""
    return interpolate(previous, ticket, 1.0 / (k + 1) if method == "caa" else factor)


def reprune(weights: Weights, names: List[str], density: float) -> Tuple[Weights, Mask]:
    """Keep the ``round(density * n)`` largest ``|w|`` over the layers ``names`` together (a fresh mask),
    zero the rest; other entries unchanged."""
    n = sum(weights[k].numel() for k in names)
    keep = select_topk({k: weights[k].detach().abs().float() for k in names}, round_half_up(density * n))
    out = dict(weights)
    for k in names:
        out[k] = weights[k] * keep[k].to(weights[k].dtype)
    return out, Mask(keep)


class Superposition(Callback):
    """Tickets at ``pretrain_end + k * cycle_steps`` (k = 1..tickets), superposed into one (module docstring)."""

    name = "Superposition"

    def __init__(self, out: Path, data: DataBundle, *, names: List[str], density: float, pretrain_end: int,
                 cycle_steps: int, tickets: int, method: str = "caa", factor: float = 0.5, update_bn: bool = True,
                 bn_batch: int = 128, bn_seed: int = 0):
        self.out, self.data, self.names, self.density = Path(out), data, list(names), density
        self.pretrain_end, self.cycle_steps, self.tickets = pretrain_end, cycle_steps, tickets
        self.method, self.factor, self.update_bn, self.bn_batch, self.bn_seed = method, factor, update_bn, bn_batch, bn_seed

    def after_step(self, state) -> None:
        step = state.step
        if step == self.pretrain_end:
            weights = _copy(state.model.state_dict())
            save_torch(weights, self.out / "pretrain_end.pt")
            self.record(state, "pretrain", 0, state.model, state.trainer.enforcer.mask.density())
        elif step > self.pretrain_end and (step - self.pretrain_end) % self.cycle_steps == 0:
            k = (step - self.pretrain_end) // self.cycle_steps
            if k <= self.tickets:
                self.take_ticket(state, k)

    def take_ticket(self, state, k: int) -> None:
        ticket = _copy(state.model.state_dict())
        save_torch(ticket, self.out / f"ticket_{k}.pt")
        self.record(state, "ticket", k, state.model, state.trainer.enforcer.mask.density())
        previous = load_torch(self.out / ("pretrain_end.pt" if k == 1 else f"superposed_{k - 1}.pt"))
        device = next(state.model.parameters()).device
        mixed, mask = reprune(superpose({n: v.to(device) for n, v in previous.items()}, ticket, k, self.method,
                                        self.factor), self.names, self.density)
        model = copy.deepcopy(state.model)
        model.load_state_dict(mixed)
        if self.update_bn:
            recompute_bn(model, training_batches(self.data, self.bn_batch, self.bn_seed, epoch=k,
                                                 augment_step=BN_STEP + k * 10**6))
        full = Mask({**state.trainer.enforcer.mask, **mask})  # the layers kept dense by design count too
        save_torch(_copy(model.state_dict()), self.out / f"superposed_{k}.pt")
        full.save(self.out / f"superposed_{k}_mask.pt")
        self.record(state, "superposed", k, model, full.density())

    def record(self, state, kind: str, cycle: int, model: torch.nn.Module, density: float) -> None:
        """Validation and test accuracy of a model of this phase, logged (``split`` = kind) and summarised."""
        scores: Dict[str, Optional[float]] = {}
        for split in ("val", "test"):
            part = getattr(self.data, split)
            scores[split] = evaluate(model, part.x, part.y)["accuracy"] if part is not None and len(part) else None
        state.log(kind, cycle=cycle, density=density, val_accuracy=scores["val"], test_accuracy=scores["test"])
        entries = list(state.trainer.summary_extra.get("superposition", []))
        entries = [e for e in entries if (e["kind"], e["cycle"]) != (kind, cycle)]  # a replayed step: once
        state.add_summary(superposition=entries + [{"kind": kind, "cycle": cycle, "density": density, **scores}])


def _copy(state: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}
