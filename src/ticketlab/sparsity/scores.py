"""Pruning scores: higher means more important (kept first).

A scorer is ``fn(params, *, model=None, batch=None, loss_fn=None, generator=None) -> {name: scores}``
with float score tensors of the parameters' shapes. Scorers never modify the model: no weights,
no ``.grad``, no BatchNorm statistics, no train/eval flags, and not the global RNG.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.errors import ConfigError
from ticketlab.registry import Registry

Scorer = Callable[..., Dict[str, torch.Tensor]]
SCORERS: Registry[Scorer] = Registry("pruning criterion")
register_scorer = SCORERS.register


@register_scorer
def magnitude(params: Mapping[str, torch.Tensor], **_) -> Dict[str, torch.Tensor]:
    """``|w|``."""
    return {k: p.detach().abs() for k, p in params.items()}


@register_scorer
def random(params: Mapping[str, torch.Tensor], *, generator: Optional[torch.Generator] = None,
           **_) -> Dict[str, torch.Tensor]:
    """Uniform [0, 1) scores drawn from ``generator`` (seeded 0 if None), in parameter order."""
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    return {k: torch.rand(p.shape, generator=generator, device=generator.device).to(p.device)
            for k, p in params.items()}


@register_scorer
def gradient(params: Mapping[str, torch.Tensor], *, model: Optional[nn.Module] = None, batch=None,
             loss_fn: Optional[Callable] = None, **_) -> Dict[str, torch.Tensor]:
    """``|w * dL/dw|`` on one batch ``(x, y)``, model in train mode (the SNIP-style saliency)."""
    if model is None or batch is None:
        raise ConfigError("the gradient criterion needs the model and one batch (x, y); pass model= and batch=")
    x, y = _unpack(batch)
    device = next(iter(params.values())).device
    x, y = x.to(device), y.to(device)
    loss_fn = loss_fn or F.cross_entropy
    names, tensors = list(params), list(params.values())
    with _untouched(model), torch.enable_grad():
        loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    return {k: (p.detach() * g).abs() if g is not None else torch.zeros_like(p, dtype=p.dtype).detach()
            for k, p, g in zip(names, tensors, grads)}


def _unpack(batch):
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    if hasattr(batch, "x") and hasattr(batch, "y"):
        return batch.x, batch.y
    raise ConfigError("a scoring batch must be a pair (inputs, targets) or have .x and .y")


@contextlib.contextmanager
def _untouched(model: nn.Module):
    """Run ``model`` in train mode, then restore its mode flags, buffers and the global RNG."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = sorted({b.device.index for b in list(model.parameters()) + [t for t, _ in buffers]
                      if b.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices):
            model.train()
            yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for m, mode in modes:
            m.training = mode
