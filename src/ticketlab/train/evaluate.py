"""Batched evaluation under `torch.inference_mode`: one host synchronisation per call.

On the CPU the batch is sized so that the largest activation of a batch stays near ``CPU_TARGET_BYTES``
(cache-sized): a batch of 2048 CIFAR images through ResNet-20 spends most of its time faulting in pages
for 128 MB activations, and batches of 64 are 2.5x faster; LeNet-300-100's activations are small, so it
gets batches of 1024. On other devices batches are large (``DEVICE_BATCH``).
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Dict, Optional

import torch
import torch.nn.functional as F


CPU_TARGET_BYTES = 4 << 20
CPU_BATCH_RANGE = (32, 2048)
DEVICE_BATCH = 2048


def eval_batch_size(module: torch.nn.Module, x: torch.Tensor) -> int:
    """The evaluation batch for ``module`` on ``x``'s device: on the CPU the power of two (32-2048) whose
    largest activation (one example probed through forward hooks) is closest below ``CPU_TARGET_BYTES``;
    cached on the module per input shape."""
    if x.device.type != "cpu" or not len(x):
        return DEVICE_BATCH
    if not isinstance(module, torch.nn.Module):  # a bare function: nothing to probe
        return 256
    key = (tuple(x.shape[1:]), x.dtype)
    cache = module.__dict__.setdefault("_ticketlab_eval_batch", {})
    if key not in cache:
        largest = [x[:1].numel() * x.element_size()]

        def record(_, __, output):
            if isinstance(output, torch.Tensor):
                largest.append(output.numel() * output.element_size())

        hooks = [m.register_forward_hook(record) for m in module.modules() if not list(m.children())]
        was_training = module.training
        try:
            module.eval()
            with torch.inference_mode():
                module(x[:1])
        finally:
            for hook in hooks:
                hook.remove()
            module.train(was_training)
        fit = max(1, CPU_TARGET_BYTES // max(largest))
        low, high = CPU_BATCH_RANGE
        cache[key] = min(max(1 << (fit.bit_length() - 1), low), high)
    return cache[key]


def evaluate(model: Callable, x: torch.Tensor, y: torch.Tensor, batch_size: Optional[int] = None, *,
             autocast: Callable[[], ContextManager] = contextlib.nullcontext,
             prepare: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
             mode_of: Optional[torch.nn.Module] = None) -> Dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``; restores the train/eval mode.

    ``model`` may be a compiled wrapper; ``mode_of`` is then the module whose train/eval mode is switched.
    """
    module = mode_of if mode_of is not None else model
    if batch_size is None:
        batch_size = eval_batch_size(module, x) if isinstance(x, torch.Tensor) else DEVICE_BATCH
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
