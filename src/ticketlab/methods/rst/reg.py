"""RST's regularisation phase: a growing L2 penalty on the weights about to be pruned, as a trainer callback.

With t the iteration within the phase (0-based; the trainer's ``state.step`` during the step), following
DLTH's ``_update_reg`` / ``_apply_reg``:

* While growing ("update_reg"), at every t divisible by ``interval``: each unfinished layer's hidden
  counter on its pruned weights grows by ``granularity`` (in float32, like DLTH's tensors), and the
  coefficient is ``lam = c``, ``c^2`` or ``c^3`` (schedule ``x``, ``x^2``, ``x^3``); kept weights keep
  ``lam = 0``. A layer is finished once ``max(lam) > ceiling``; a layer with nothing to prune is finished at
  the first update. When every layer is finished (at t_s) the phase turns to "stabilize_reg": ``lam``
  stays and training goes on for ``stabilize`` more iterations, so the phase is t_s + stabilize + 1 steps.
* After backward and before the optimizer step, ``grad += lam * w`` (the gradient of
  ``sum(lam * w^2) / 2``); SGD's weight decay comes on top. ``block_loss_grad``: ``grad = lam * w``.

Float32 matters: at granularity 1e-4 the counter first exceeds 1.0 at the 10,000th update (1.0000535),
not the 10,001st; ``c^2`` and ``c^3`` cross at the same update. The phase length is therefore not planned
in advance: the callback ends the phase itself (``state.request_stop()``) once the stabilisation steps
after the switch are done, and records t_s in the phase's summary (``switch_step``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ticketlab.errors import ConfigError
from ticketlab.io import save_torch
from ticketlab.sparsity.mask import Mask, resolve_parameters
from ticketlab.train import Callback

POWERS = {"x": 1, "x^2": 2, "x^3": 3}
MAX_UPDATES = 10**6


def coefficient(counter: torch.Tensor, power: int) -> torch.Tensor:
    """The coefficient from the hidden linear counter (the same tensor for the linear schedule)."""
    return counter if power == 1 else counter ** power


def expected_updates(granularity: float, ceiling: float, schedule: str = "x") -> int:
    """About how many updates the coefficient needs to exceed ``ceiling`` (``ceiling^(1/p) / granularity``,
    within a few of the float32 count); refuses settings under which it never would."""
    root = ceiling ** (1.0 / POWERS[schedule])
    if np.float32(root) + np.float32(granularity) == np.float32(root):
        raise ConfigError(f"rst.reg_granularity={granularity} is below float32 resolution at the coefficient "
                          f"{root:g}, so the coefficient would never pass rst.reg_upper_limit={ceiling}; raise it")
    updates = math.ceil(root / granularity)
    if updates > MAX_UPDATES:
        raise ConfigError(f"the coefficient does not pass rst.reg_upper_limit={ceiling} within {MAX_UPDATES} updates "
                          f"of rst.reg_granularity={granularity}; raise the granularity")
    return updates


def phase_bound(granularity: float, ceiling: float, schedule: str, interval: int, stabilize: int) -> int:
    """An upper bound on the phase length, for the trainer's schedule: the callback ends it sooner."""
    updates = expected_updates(granularity, ceiling, schedule)
    return (2 * updates + 10) * interval + stabilize + 1


class GrowingPenalty(Callback):
    """The regularisation phase's coefficients and penalty gradient for the pruned set of ``mask``.

    ``mask``: True = kept (the future mask); the penalty grows on the False entries. ``stabilize``: the
    steps after t_s before the callback ends the phase (None: it never does); ``milestone``: where the
    weights are saved at t_s (DLTH's ``just_finished_update_reg``). ``state_dict`` holds the counters,
    finished layers and t_s, so a killed phase resumes bit-identically.
    """

    def __init__(self, mask: Mask, *, granularity: float, ceiling: float, interval: int, schedule: str = "x",
                 block_loss_grad: bool = False, stabilize: Optional[int] = None,
                 milestone: Optional[Path] = None):
        self.mask, self.granularity, self.ceiling, self.interval = mask, granularity, ceiling, interval
        self.power, self.block_loss_grad = POWERS[schedule], block_loss_grad
        self.stabilize, self.milestone = stabilize, milestone
        self.names: List[str] = list(mask)
        self.finished: set = set()
        self.switch_step: Optional[int] = None
        self.counters: Dict[str, torch.Tensor] = {}
        self.lambdas: Dict[str, torch.Tensor] = {}
        self._loaded: Optional[Dict[str, Any]] = None

    @property
    def phase(self) -> str:
        return "update_reg" if self.switch_step is None else "stabilize_reg"

    # -- set-up and persistence ---------------------------------------------------------------------
    def build(self, model: torch.nn.Module) -> None:
        """Allocate the per-weight tensors like the model's weights (device, memory format)."""
        self.params = resolve_parameters(model, self.names)
        self.pruned, self.has_pruned = {}, {}
        for name, p in self.params.items():
            drop = ~self.mask[name].to(p.device)
            self.pruned[name] = torch.zeros_like(p, dtype=torch.float32).masked_fill_(drop, 1.0)
            self.has_pruned[name] = bool(drop.any())
            self.counters[name] = torch.zeros_like(p, dtype=torch.float32)
        self._restore()

    def _restore(self) -> None:
        if self._loaded is not None:
            for name, value in self._loaded["counters"].items():
                self.counters[name].copy_(value)
            self.finished, self.switch_step = set(self._loaded["finished"]), self._loaded["switch_step"]
            self._loaded = None
        self.lambdas = {name: coefficient(c, self.power) for name, c in self.counters.items()}

    def on_train_start(self, state) -> None:
        self.build(state.model)
        if self.stabilize is not None and self.switch_step is not None:
            state.trainer.progress.set_total(self.switch_step + self.stabilize + 1)

    def after_step(self, state) -> None:
        """End the phase once the stabilisation steps after t_s are done (t_s + stabilize + 1 steps in all)."""
        if self.stabilize is not None and self.switch_step is not None \
                and state.step >= self.switch_step + self.stabilize + 1:
            state.request_stop()

    def on_train_end(self, state) -> None:
        if self.stabilize is not None and self.switch_step is None:
            raise RuntimeError(f"the regularisation phase reached its bound of {state.step} steps without every "
                               "layer's coefficient passing the ceiling")

    def state_dict(self) -> Dict[str, Any]:
        return {"counters": {k: v.detach().cpu().clone() for k, v in self.counters.items()},
                "finished": sorted(self.finished), "switch_step": self.switch_step}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a checkpoint (applied when the tensors exist: now, or at `build`)."""
        self._loaded = state
        if self.counters:
            self._restore()

    # -- the step ---------------------------------------------------------------------------------------
    def after_backward(self, state) -> None:
        if self.switch_step is None and state.step % self.interval == 0:
            self.update(state)
            if self.switch_step is not None:
                state.add_summary(switch_step=self.switch_step)
                if self.stabilize is not None:
                    state.trainer.progress.set_total(self.switch_step + self.stabilize + 1)
        self.penalise()

    def update(self, state) -> None:
        """One coefficient update (DLTH's ``_update_reg``); switches the phase when every layer is finished."""
        active = [n for n in self.names if n not in self.finished]
        self.finished.update(n for n in active if not self.has_pruned[n])
        grow = [n for n in active if self.has_pruned[n]]
        if grow:
            with torch.no_grad():
                torch._foreach_add_([self.counters[n] for n in grow], [self.pruned[n] for n in grow],
                                    alpha=self.granularity)
                if self.power > 1:
                    for n in grow:
                        torch.pow(self.counters[n], self.power, out=self.lambdas[n])
                maxima = torch.stack([self.lambdas[n].max() for n in grow]).tolist()
            self.finished.update(n for n, top in zip(grow, maxima) if top > self.ceiling)
        if len(self.finished) == len(self.names):
            self.switch_step = state.step
            if self.milestone is not None:
                save_torch(state.model.state_dict(), self.milestone)

    def penalise(self) -> None:
        """``grad += lam * w`` on layers with pruned weights (``grad = lam * w`` everywhere with block_loss_grad)."""
        names = [n for n in self.names if self.params[n].grad is not None
                 and (self.block_loss_grad or self.has_pruned[n])]
        if not names:
            return
        grads = [self.params[n].grad for n in names]
        weights = [self.params[n].detach() for n in names]
        lambdas = [self.lambdas[n] for n in names]
        with torch.no_grad():
            if self.block_loss_grad:
                torch._foreach_zero_(grads)
            torch._foreach_addcmul_(grads, lambdas, weights)
