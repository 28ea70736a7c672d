"""Training cost from the model's shapes and masks: floating-point operations of forward and backward.

The count is RigL's accounting: the multiply-adds of the Linear and Conv layers, two FLOPs each, over the
weights the mask keeps (a kept weight is used once per output position: per example for a Linear layer,
at every output pixel for a convolution); biases, normalisation, activations and pooling are left out. A
training step costs three forward passes (the forward, the gradient of the inputs, the gradient of the
weights) for each example of the batch.

A phase's cost follows its mask through time: the ``"mask"`` records of ``metrics.jsonl`` (dynamic sparse
training logs the kept count of every layer at every update) hold from their step on; otherwise the kept
counts the trainer wrote into the summary, or the phase's ``mask.pt``, hold throughout; a phase with none
of these trains dense.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ticketlab.data import examples_seen
from ticketlab.errors import CheckpointError
from ticketlab.sparsity import Mask
from ticketlab.sparsity.mask import PRUNABLE_MODULES

Kept = Mapping[str, int]  # weight name -> kept entries


def layer_positions(model: nn.Module, input_shape: Sequence[int]) -> Dict[str, Tuple[int, int]]:
    """``{weight name: (weights, output positions per example)}`` of every Linear and Conv layer, found
    by one forward pass of a zero example (a layer called twice counts its positions twice)."""
    positions: Dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_MODULES):
            def record(mod, inputs, output, key=f"{name}.weight" if name else "weight"):
                shape = output.shape  # (N, C, *spatial) for a conv, (N, *, features) for a linear
                count = shape[2:].numel() if isinstance(mod, nn.modules.conv._ConvNd) else shape[1:-1].numel()
                positions[key] = positions.get(key, 0) + int(count)
            hooks.append(module.register_forward_hook(record))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    weights = dict(model.named_parameters())
    return {k: (weights[k].numel(), n) for k, n in positions.items() if k in weights}


def forward_flops(layers: Mapping[str, Tuple[int, int]], kept: Optional[Kept] = None) -> int:
    """FLOPs of one example's forward pass: ``2 * kept * positions`` summed over the layers; a layer
    ``kept`` does not name is dense."""
    kept = kept or {}
    return sum(2 * int(kept.get(name, total)) * count for name, (total, count) in layers.items())


def step_flops(layers: Mapping[str, Tuple[int, int]], batch: int, kept: Optional[Kept] = None) -> int:
    """FLOPs of one training step on ``batch`` examples: three forward passes each."""
    return 3 * batch * forward_flops(layers, kept)


def kept_of(mask: Mask) -> Dict[str, int]:
    return {name: int(torch.count_nonzero(t)) for name, t in mask.items()}


def mask_timeline(folder: Path, summary: Optional[Mapping] = None) -> List[Tuple[int, Optional[Dict[str, int]]]]:
    """``[(from step, kept per layer or None for dense), ...]`` of a phase folder, in step order: the
    ``"mask"`` records of its metrics, else the kept counts its trainer put in ``summary``, else its
    ``mask.pt``, else dense."""
    folder = Path(folder)
    records = []
    metrics = folder / "metrics.jsonl"
    if metrics.is_file():
        with open(metrics) as fh:
            for line in fh:
                if '"mask"' not in line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line of a killed run
                if record.get("split") == "mask" and isinstance(record.get("kept"), dict):
                    records.append((int(record["step"]), {k: int(v) for k, v in record["kept"].items()}))
    if records:
        return sorted(records, key=lambda r: r[0])
    if summary is not None and isinstance(summary.get("kept"), dict):
        return [(0, {k: int(v) for k, v in summary["kept"].items()})]
    if (folder / "mask.pt").is_file():
        try:
            return [(0, kept_of(Mask.load(folder / "mask.pt")))]
        except (CheckpointError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{folder / 'mask.pt'} is not a readable mask ({exc})") from None
    return [(0, None)]


def phase_flops(layers: Mapping[str, Tuple[int, int]], timeline: Sequence[Tuple[int, Optional[Kept]]],
                start: int, end: int, n: int, batch: int) -> int:
    """Training FLOPs of steps ``start..end`` over a split of ``n`` examples in batches of ``batch`` (an
    epoch's last batch holds the remainder) under the masks of ``timeline``."""
    total = 0
    for i, (begin, kept) in enumerate(timeline):
        until = timeline[i + 1][0] if i + 1 < len(timeline) else end
        lo, hi = (max(begin, start) if i else start), min(until, end)
        if hi > lo:
            total += 3 * forward_flops(layers, kept) * examples_seen(n, batch, lo, hi)
    return total


def phase_cost(folder: Path, summary: Mapping, layers: Mapping[str, Tuple[int, int]], n: int,
               batch: int) -> Dict[str, int]:
    """``{"iterations", "examples", "flops"}`` of the training a finished phase did: a folder where the
    trainer ran (its ``metrics.jsonl`` beside the summary); nothing for a phase that only evaluates,
    combines or summarises others (Pools, a Sup-tickets result, a run's own summary). ``n``: its
    training split (a PrAC round's ``subset_size`` when it says)."""
    start, end = int(summary.get("start_step") or 0), int(summary.get("steps") or 0)
    n = int(summary.get("subset_size") or n)
    if end <= start or not (Path(folder) / "metrics.jsonl").is_file():
        return {"iterations": 0, "examples": 0, "flops": 0}
    return {"iterations": end - start, "examples": examples_seen(n, batch, start, end),
            "flops": phase_flops(layers, mask_timeline(folder, summary), start, end, n, batch)}


__all__ = ["layer_positions", "forward_flops", "step_flops", "kept_of", "mask_timeline", "phase_flops", "phase_cost"]
