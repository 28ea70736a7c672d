"""Batched evaluation under `torch.inference_mode`: one host synchronisation per call."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Dict, Optional

import torch
import torch.nn.functional as F


def evaluate(model: Callable, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048, *,
             autocast: Callable[[], ContextManager] = contextlib.nullcontext,
             prepare: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
             mode_of: Optional[torch.nn.Module] = None) -> Dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``; restores the train/eval mode.

    ``model`` may be a compiled wrapper; ``mode_of`` is then the module whose train/eval mode is switched.
    """
    module = mode_of if mode_of is not None else model
    was_training = module.training
    module.eval()
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    chunks = x.eval_batches(batch_size) if hasattr(x, "eval_batches") else \
        (x[start:start + batch_size] for start in range(0, len(x), batch_size))  # a streamed split: decoded ahead
    with torch.inference_mode():
        for start, inputs in zip(range(0, len(x), batch_size), chunks):
            with autocast():
                logits = model(prepare(inputs)).float()
            target = y[start:start + batch_size]
            loss_sum += F.cross_entropy(logits, target, reduction="sum")
            correct += (logits.argmax(1) == target).sum()
    module.train(was_training)
    n = max(len(x), 1)
    return {"loss": loss_sum.item() / n, "accuracy": correct.item() / n}
