"""Batched evaluation under `torch.inference_mode`: one host synchronisation per call."""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> Dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``; restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size]).float()
            target = y[start:start + batch_size]
            loss_sum += F.cross_entropy(logits, target, reduction="sum")
            correct += (logits.argmax(1) == target).sum()
    model.train(was_training)
    n = max(len(x), 1)
    return {"loss": loss_sum.item() / n, "accuracy": correct.item() / n}
