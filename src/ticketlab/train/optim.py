"""Optimizers and learning-rate schedules.

The learning rate is a pure function of the step (`lr_at`), set on the optimizer before every step.
That keeps no scheduler state to checkpoint, so a resumed run and a rewound level replay the schedule
exactly from any step.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable

import torch

from ticketlab.config import TrainConfig, parse_piecewise


def build_optimizer(params, cfg: TrainConfig, *, allow_fused: bool = True) -> torch.optim.Optimizer:
    """The torch optimizer ``cfg`` names. For float32/float64 parameters on the CPU it is the fused
    implementation: torch's default there updates one tensor at a time, and fused is 1.5x (SGD with
    momentum) to 2.7x (Adam) faster on LeNet-300-100 for the same update. Not for half-precision
    parameters (torch 2.13's fused CPU SGD mis-updates them) nor, with ``allow_fused=False``, for models
    with sparse gradients (fused kernels reject them). Elsewhere torch's own default (foreach on CUDA)."""
    params = [p for p in params if p.requires_grad]
    fusable = allow_fused and params and all(p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64)
                                             for p in params)
    fused = {"fused": True} if fusable else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay, **fused)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    raise ValueError(f"unknown optimizer {cfg.optimizer}")  # config validation makes this unreachable


def has_sparse_gradients(model: torch.nn.Module) -> bool:
    """Whether ``model`` has an embedding that produces sparse gradients."""
    return any(isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag)) and m.sparse for m in model.modules())


def lr_schedule(cfg: TrainConfig, iters_per_epoch: int) -> Callable[[int], float]:
    """Return ``lr_at(step)``: the learning rate used for the optimizer step taken at ``step``.

    multistep: ``lr * gamma ** (#milestones <= step)`` (the drop applies at the milestone itself);
    cosine: ``lr * (1 + cos(pi * step / total)) / 2``; piecewise: the value of the last key (in epochs)
    at or before the current epoch, or of the last key before the first one (DLTH's rule); warm-up
    multiplies by ``step / warmup`` until it reaches 1 (0 at step 0); cyclic (Sup-tickets' triangle):
    with ``t`` the position within the cycle in [0, 1), ``lr`` at t = 0 rising linearly to ``cycle_lr``
    at t = 0.5 and back.
    """
    total = cfg.steps.to_iters(iters_per_epoch)
    warmup = cfg.warmup.to_iters(iters_per_epoch)
    milestones = sorted(m.to_iters(iters_per_epoch) for m in cfg.milestones)
    pieces = parse_piecewise(cfg.piecewise) if cfg.schedule == "piecewise" else ()
    cycle = cfg.cycle.to_iters(iters_per_epoch)

    def base(step: int) -> float:
        if cfg.schedule == "multistep":
            return cfg.lr * cfg.gamma ** bisect.bisect_right(milestones, step)
        if cfg.schedule == "cosine":
            return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
        if cfg.schedule == "piecewise":
            epoch = step // iters_per_epoch
            keys = [k for k, _ in pieces]
            position = bisect.bisect_right(keys, epoch) - 1
            return pieces[position][1] if position >= 0 else pieces[-1][1]
        if cfg.schedule == "cyclic":
            t = (step % cycle) / cycle
            rise = 2 * t if t < 0.5 else 2 - 2 * t
            return cfg.lr * (1 - rise) + cfg.cycle_lr * rise
        return cfg.lr

    def lr_at(step: int) -> float:
        factor = min(1.0, step / warmup) if warmup > 0 else 1.0
        return base(step) * factor

    return lr_at


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
