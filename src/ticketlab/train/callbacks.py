"""The trainer's extension points.

Every method hooks into the one training loop through these callbacks instead of copying it. The step
order (DESIGN.md): forward (`loss_term` may add to the loss) -> backward -> `after_backward` -> gradients
of pruned weights zeroed -> optimizer step -> pruned weights and optimizer state zeroed -> `after_step`
(may change the mask) -> `on_epoch_end` at the end of an epoch -> evaluation (`on_eval`) and checkpoint
when due. The learning rate of a step is set before its forward pass.

**Dense gradients.** ``after_backward`` is the one window where ``p.grad`` holds the gradient of every
weight, pruned ones included (what RigL grows by); the enforcer zeroes the pruned entries right after it.

**Changing the mask.** The trainer always owns a `MaskEnforcer` (all-ones on a dense start), so any hook
may call ``state.trainer.enforcer.set_mask(mask, state.optimizer)``: newly pruned weights become 0,
regrown ones start at exactly 0 with zeroed optimizer state. A callback that writes weights any other way,
or loads optimizer state, calls ``state.trainer.enforcer.apply(state.optimizer)`` afterwards (the enforcer
skips its own post-step multiply once it cannot change anything; see `MaskEnforcer`).

**Ending a phase.** ``state.request_stop()`` ends training at the next step boundary (after the current
step's hooks, with a final evaluation); the summary records ``stopped_at``. No checkpoint is written at the
stop step, so a run killed before its summary replays to the same stop.

**Logging.** ``state.log(split, **values)`` appends a record to ``metrics.jsonl`` (with step and epoch);
``state.add_summary(**values)`` adds keys to the phase's ``summary.json`` (kept across a resume).

**State.** A callback that overrides `state_dict` is checkpointed under its `name` (the class name unless
set); resuming with a stateful callback missing, added or renamed is an error, never a silent mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch


@dataclass
class StepState:
    """What a callback sees. ``step`` counts optimizer steps taken so far in this training (during a step's
    forward and backward it is the step being taken)."""

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
    stop_requested: bool = False
    extra: Dict[str, Any] = field(default_factory=dict)

    def request_stop(self) -> None:
        """End the phase at the next step boundary."""
        self.stop_requested = True

    def log(self, split: str, **values: Any) -> None:
        """Append ``{"step", "epoch", "split": split, **values}`` to the phase's metrics."""
        self.trainer.metrics.append(step=self.step, epoch=self.step / self.iters_per_epoch, split=split, **values)

    def add_summary(self, **values: Any) -> None:
        """Add ``values`` to the phase's summary (later calls win)."""
        self.trainer.summary_extra.update(values)


class Callback:
    """Base class: override the hooks you need; all default to doing nothing."""

    @property
    def name(self) -> str:
        """The key of this callback's state in checkpoints (the class name unless set); unique among a
        trainer's callbacks."""
        return getattr(self, "_name", None) or type(self).__name__

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    @property
    def stateful(self) -> bool:
        return type(self).state_dict is not Callback.state_dict

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
