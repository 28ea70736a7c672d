"""Dynamic sparse training as a trainer callback: `DynamicSparse` and its variants.

At an update step (`UpdateSteps`), after the optimizer step of that step: gradual magnitude pruning to
the schedule's density (GraNet, GMP), then each layer's drop-and-grow at the current death rate (SET,
RigL, GraNet), then the new mask goes to the enforcer (`set_mask`: newly pruned weights and their
optimizer state become 0; a grown weight starts at exactly 0 with zeroed state; a position dropped and
grown back in the same update keeps its value, as in RigL and the reference). The variants differ only in
their grow scores and in whether they prune gradually, as JaxPruner's SET and RigL do:

- `RigL`: ``|gradient|`` of the update step's batch, the dense gradient, recorded in ``after_backward``
  (the window before pruned gradients are zeroed);
- `SET`: uniform scores drawn from (seed, layer, step), so a resumed run grows the same positions (the
  paper's random growth; the reference code's ``--growth random`` is ignored and grows by gradient);
- `GraNet`: RigL's growth plus gradual pruning; `GMP`: gradual pruning only; the base class alone: no change
  (static sparse training, the baseline).

The start, every update and the end log a ``"mask"`` record to ``metrics.jsonl`` (overall density, fraction
of positions ever active, death rate, positions moved, per-layer counts, the mask's digest) and, for masks of up to
`SAVE_LIMIT` weights, writes the mask itself to ``masks/step_<step>.pt`` (`Mask.packed`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch

from ticketlab import seeds
from ticketlab.io import save_torch
from ticketlab.methods.dst.schedules import DeathRate, GradualDensity, UpdateSteps
from ticketlab.methods.dst.topology import prune_to, update_layers
from ticketlab.sparsity import Mask
from ticketlab.sparsity.mask import resolve_parameters
from ticketlab.train import Callback

SAVE_LIMIT = 4_000_000  # masks of more managed weights are logged by counts and digest only


class DynamicSparse(Callback):
    """The mask of ``names`` (the layers the method manages) changes at the ``updates`` steps: gradually
    pruned when ``gradual`` is given, dropped and regrown when the class has a ``growth``. On its own
    (no growth, no gradual schedule) it keeps the initial mask and only records it."""

    name = "DynamicSparse"
    growth: Optional[str] = None  # "gradient" (RigL) or "random" (SET): the grow scores of drop-and-grow

    def __init__(self, names: List[str], *, updates: UpdateSteps, death: DeathRate,
                 gradual: Optional[GradualDensity] = None, gradual_scope: str = "global",
                 output_layer: Optional[str] = None, seed: int = 0, masks_dir: Optional[Path] = None,
                 explore: Optional[Mapping[int, float]] = None, grow_from: int = 0):
        """``explore``: extra drop-and-grow steps (epoch ends) with their own death rates (Sup-tickets'
        re-exploration at each cycle start), made in ``on_epoch_end``, after the regular update of that
        step and after every callback's ``after_step`` (a ticket taken there is the model before the
        re-exploration); they grow as the variant does, by gradient for a variant that does not grow.
        ``grow_from``: the first step of regular drop-and-grow (GraNet: where gradual pruning starts)."""
        self.names, self.updates, self.death, self.gradual = list(names), updates, death, gradual
        self.gradual_scope, self.output_layer, self.seed, self.masks_dir = gradual_scope, output_layer, seed, masks_dir
        self.explore, self.grow_from = dict(explore or {}), grow_from
        self.ever: Dict[str, torch.Tensor] = {}  # positions active at any point so far
        self.done_updates = 0
        self.grads: Optional[Dict[str, torch.Tensor]] = None

    # -- the hooks ------------------------------------------------------------------------------------
    def on_train_start(self, state) -> None:
        off = sorted(s for s in self.explore if s % state.trainer.ipe)
        if off:
            raise ValueError(f"re-exploration steps must end epochs (they run in on_epoch_end); got {off}")
        self.params = resolve_parameters(state.model, self.names)
        if not self.ever:
            self.ever = {k: state.trainer.enforcer.mask[k].clone() for k in self.names}
        if state.step == 0:
            self.record(state, rate=None, moved=0)

    def after_backward(self, state) -> None:
        step = state.step + 1
        if (self.growth == "gradient" and self.changes_at(step)) or (step in self.explore and self.growth != "random"):
            grads = {k: self.params[k].grad for k in self.names if self.params[k].grad is not None}
            self.grads = {k: g.detach().abs().clone() for k, g in grads.items()}  # the enforcer zeroes .grad next

    def after_step(self, state) -> None:
        step = state.step
        if self.changes_at(step):
            target = self.gradual.density_at(step) if self.gradual is not None else None
            growth = self.growth if step >= self.grow_from else None
            self.update(state, target, self.death(step) if growth else None, growth)
        if step not in self.explore:
            self.grads = None

    def on_epoch_end(self, state) -> None:
        step = state.step
        if step in self.explore:
            self.update(state, None, self.explore[step], self.growth or "gradient", suffix="_explore")
        self.grads = None

    def changes_at(self, step: int) -> bool:
        """Whether a regular update may change the mask after ``step``: an update step with growth (from
        ``grow_from`` on) or gradual pruning."""
        if step not in self.updates:
            return False
        grows = self.growth is not None and step >= self.grow_from
        return grows or (self.gradual is not None and self.gradual.density_at(step) is not None)

    def on_train_end(self, state) -> None:
        self.record(state, rate=None, moved=0, save=False)  # the mask the run ends with, for the curves
        state.add_summary(topology_updates=self.done_updates, explored=self.explored())

    def state_dict(self) -> Dict[str, Any]:
        return {"ever": {k: v.cpu() for k, v in self.ever.items()}, "updates": self.done_updates}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.ever = {k: v.clone() for k, v in state["ever"].items()}
        self.done_updates = state["updates"]

    # -- the update -------------------------------------------------------------------------------------
    def update(self, state, target: Optional[float], rate: Optional[float], growth: Optional[str],
               suffix: str = "") -> None:
        """Prune to ``target`` (gradual), then drop and grow at ``rate`` by ``growth``; install the mask
        (saved as ``masks/step_<step><suffix>.pt``)."""
        step, enforcer = state.step, state.trainer.enforcer
        masks = {k: enforcer.mask[k] for k in self.names}
        weights = {k: self.params[k].detach() for k in self.names}
        before, moved = masks, 0
        if target is not None:
            masks = prune_to(masks, weights, self.gradual.kept, target, self.gradual_scope, self.output_layer)
        if growth:
            masks, moved = update_layers(masks, weights, rate, lambda k: self.grow_scores(k, step, growth))
        if target is not None:  # pruned and perhaps regrown: count against the mask before both
            moved = sum(int(torch.count_nonzero(masks[k] != before[k])) for k in self.names)
        enforcer.set_mask(Mask({**enforcer.mask, **masks}), state.optimizer)
        for k in self.names:
            self.ever[k] = self.ever[k].to(masks[k].device) | masks[k]
        self.done_updates += 1
        self.record(state, rate=rate, moved=moved, suffix=suffix)

    def grow_scores(self, name: str, step: int, growth: str) -> torch.Tensor:
        """``|gradient|`` of the update step's batch (RigL), or uniform scores from (seed, layer, step) (SET)."""
        p = self.params[name]
        if growth == "random":
            generator = seeds.generator(self.seed, f"set-grow:{name}", step)
            return torch.rand(p.shape, generator=generator).to(p.device)
        grads = self.grads or {}
        return grads[name] if name in grads else torch.zeros_like(p)  # no gradient (unused layer): index order

    # -- records ----------------------------------------------------------------------------------------
    def explored(self) -> float:
        total = sum(v.numel() for v in self.ever.values())
        return sum(int(torch.count_nonzero(v)) for v in self.ever.values()) / total if total else 1.0

    def record(self, state, rate: Optional[float], moved: int, save: bool = True, suffix: str = "") -> None:
        enforcer = state.trainer.enforcer
        managed = Mask({k: enforcer.mask[k] for k in self.names})
        state.log("mask", density=enforcer.mask.density(), explored=self.explored(), death_rate=rate, moved=moved,
                  kept={k: int(torch.count_nonzero(v)) for k, v in managed.items()}, digest=managed.digest())
        if save and self.masks_dir is not None and managed.num_total() <= SAVE_LIMIT:
            save_torch(managed.packed(), self.masks_dir / f"step_{state.step:07d}{suffix}.pt")


class RigL(DynamicSparse):
    growth = "gradient"


class SET(DynamicSparse):
    growth = "random"


class GraNet(RigL):
    """RigL's drop-and-grow at every update, after gradual pruning inside the schedule's window."""


class GMP(DynamicSparse):
    """Gradual pruning only (give it a ``gradual`` schedule from a dense start)."""


CALLBACKS = {"rigl": RigL, "set": SET, "granet": GraNet, "gmp": GMP, "static": DynamicSparse}
