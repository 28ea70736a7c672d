"""Train a ticket with PyTorch Lightning: `MaskCallback` keeps a mask's pruned weights at exactly 0.

Needs the ``lightning`` package (``pip install 'ticketlab[lightning]'``)::

    trainer = lightning.pytorch.Trainer(callbacks=[ticketlab.lightning.MaskCallback(mask)])
    trainer.fit(module)

The mask names the LightningModule's own parameters (``ticketlab.prune(module, ...)`` or a run's
``mask.pt`` for the model it wraps, given ``prefix="model."``). Like the trainer's enforcement: the
gradients of pruned weights are zeroed before every optimizer step (after Lightning's gradient
clipping), and the weights and their optimizer state after it.
"""

from __future__ import annotations

from typing import Any, Optional

from ticketlab.sparsity import Mask, MaskEnforcer

try:
    from lightning.pytorch import Callback
except ImportError:
    try:
        from pytorch_lightning import Callback
    except ImportError:
        raise ImportError("ticketlab.lightning needs the lightning package: pip install 'ticketlab[lightning]'"
                          ) from None


class MaskCallback(Callback):
    """Enforce ``mask`` on the LightningModule being fitted (``prefix`` is put before every mask name)."""

    def __init__(self, mask: Mask, prefix: str = ""):
        super().__init__()
        self.mask = Mask({prefix + name: keep for name, keep in mask.items()})
        self.enforcer: Optional[MaskEnforcer] = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        device = next(pl_module.parameters()).device  # on its training device by now
        self.enforcer = MaskEnforcer(pl_module, self.mask.to(device))
        for optimizer in trainer.optimizers:
            self.enforcer.apply(optimizer)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self.enforcer.mask_grads()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        for optimizer in trainer.optimizers:
            self.enforcer.apply(optimizer)


__all__ = ["MaskCallback"]
