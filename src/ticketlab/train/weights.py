"""Operations on whole state dicts that several methods share: interpolating and averaging weights,
recomputing BatchNorm statistics after weights were combined, and predicting labels.

Combining follows the seed repositories: every floating-point entry (weights, biases, BatchNorm affine
parameters and running statistics) is combined; integer entries (BatchNorm's ``num_batches_tracked``)
are taken from the first state dict. Statistics of combined weights are stale anyway, so a method calls
`recompute_bn` after combining.
"""

from __future__ import annotations

import itertools
from typing import Dict, Iterable, Mapping, Optional, Sequence

import torch
from torch import nn

from ticketlab.data import DataBundle, Split, epoch_permutation

Weights = Dict[str, torch.Tensor]
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _check_same_keys(states: Sequence[Mapping[str, torch.Tensor]]) -> None:
    first = set(states[0])
    for other in states[1:]:
        if set(other) != first:
            missing = sorted(first ^ set(other))[:3]
            raise ValueError(f"state dicts differ in their entries (e.g. {missing}); combine states of one model")


def interpolate(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float) -> Weights:
    """``(1 - alpha) * a + alpha * b`` entry by entry (``alpha = 0`` gives ``a``, 1 gives ``b``)."""
    _check_same_keys([a, b])
    out = {}
    for name, x in a.items():
        y = b[name].to(x.device)
        out[name] = torch.lerp(x, y.to(x.dtype), alpha) if x.is_floating_point() else x.clone()
    return out


def average(states: Sequence[Mapping[str, torch.Tensor]], weights: Optional[Sequence[float]] = None) -> Weights:
    """The weighted mean ``sum_i w_i * state_i / sum_i w_i`` (uniform without ``weights``), in float64 and
    cast back, so the order of the states does not change the result beyond one rounding."""
    if not states:
        raise ValueError("average needs at least one state dict")
    _check_same_keys(states)
    weights = [1.0] * len(states) if weights is None else [float(w) for w in weights]
    if len(weights) != len(states) or sum(weights) <= 0:
        raise ValueError(f"average needs one positive weight per state dict; got {weights}")
    total = sum(weights)
    out = {}
    for name, x in states[0].items():
        if not x.is_floating_point():
            out[name] = x.clone()
            continue
        acc = torch.zeros_like(x, dtype=torch.float64)
        for state, w in zip(states, weights):
            acc.add_(state[name].to(x.device, torch.float64), alpha=w / total)
        out[name] = acc.to(x.dtype)
    return out


def recompute_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Reset every BatchNorm layer's running statistics and recompute them as the cumulative average over
    ``batches`` (``momentum=None``: each batch counts equally), with the model in training mode and no
    gradients. Restores momentum and train/eval mode; returns the number of batches seen (0: the model
    has no BatchNorm and ``batches`` is not consumed). No batches for a model with BatchNorm is an error,
    raised before any statistics are reset."""
    layers = [m for m in model.modules() if isinstance(m, BN_TYPES) and m.track_running_stats]
    if not layers:
        return 0
    batches = iter(batches)
    first = next(batches, None)
    if first is None:  # before anything is reset
        raise ValueError("recompute_bn got no batches; pass at least one batch of training inputs")
    batches = itertools.chain([first], batches)
    momenta = [m.momentum for m in layers]
    modes = [(m, m.training) for m in model.modules()]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    count = 0
    model.train()
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
                count += 1
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        for m, mode in modes:
            m.training = mode
    return count


def training_batches(data: DataBundle, batch_size: int, seed: int, epoch: int = 0, augment_step: int = 0):
    """One epoch of training inputs in the order of (``seed``, ``epoch``), augmented as in training (batch
    b drawn as step ``augment_step + b``) when the data has augmentation: what `recompute_bn` averages over."""
    x, augment = data.train.x, data.augment
    order = epoch_permutation(len(x), seed, epoch, x.device)
    for b, start in enumerate(range(0, len(x), batch_size)):
        batch = x[order[start:start + batch_size]]
        yield augment(batch, augment_step + b) if augment is not None else batch


def predict(model: nn.Module, split: Split, batch_size: int = 1024) -> torch.Tensor:
    """The predicted label of every example of ``split`` (eval mode, restored afterwards)."""
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(split), batch_size):
            out.append(model(split.x[start:start + batch_size]).argmax(1))
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=split.x.device)


__all__ = ["interpolate", "average", "recompute_bn", "training_batches", "predict", "Weights"]
