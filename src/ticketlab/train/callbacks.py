"""The trainer's extension points.

Every method hooks into the one training loop through these callbacks instead of copying it. The step
order (DESIGN.md): forward (`loss_term` may add to the loss) -> backward -> `after_backward` (dense
gradients; may add penalty gradients or record per-example results) -> gradients of pruned weights zeroed
-> optimizer step -> pruned weights and optimizer state zeroed -> `after_step` (may change the mask) ->
learning rate for the next step. Evaluation and checkpoints happen at step boundaries.

A callback that changes the mask calls ``state.trainer.enforcer.set_mask(mask, state.optimizer)``; one that
writes weights any other way, or loads optimizer state, calls
``state.trainer.enforcer.apply(state.optimizer)`` afterwards (the enforcer skips its own post-step multiply
once it cannot change anything; see `MaskEnforcer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch


@dataclass
class StepState:
    """What a callback sees. ``step`` counts optimizer steps taken so far in this training."""

    step: int
    epoch: int
    iters_per_epoch: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    trainer: Any
    x: Optional[torch.Tensor] = None
    y: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None  # example indices of the batch (into the training split)
    logits: Optional[torch.Tensor] = None
    loss: Optional[torch.Tensor] = None
    extra: Dict[str, Any] = field(default_factory=dict)


class Callback:
    """Base class: override the hooks you need; all default to doing nothing."""

    def on_train_start(self, state: StepState) -> None: ...

    def loss_term(self, state: StepState) -> Optional[torch.Tensor]:
        return None

    def after_backward(self, state: StepState) -> None: ...

    def after_step(self, state: StepState) -> None: ...

    def on_epoch_end(self, state: StepState) -> None: ...

    def on_eval(self, state: StepState, results: Dict[str, Dict[str, float]]) -> None: ...

    def on_train_end(self, state: StepState) -> None: ...

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None: ...
