"""The topology updates themselves, as functions of masks, weights and scores (no trainer state).

`drop_and_grow` is one layer's prune-and-regrow (SET, RigL, GraNet): of the ``a`` active weights, the
``r = ceil(rate * a)`` of smallest ``|w|`` are dropped (among equal magnitudes the higher flat index goes
first), then ``r`` positions are grown among those inactive after the drop (a just-dropped position may
come back) by the largest grow score (ties to the lower index), so every layer keeps its count exactly.
`prune_to` is gradual magnitude pruning (GraNet, GMP): the weights still active keep the ``k`` largest
``|w|``, over all layers at once (global) or layer by layer.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Mapping, Optional, Tuple

import torch

from ticketlab.sparsity import select_topk

Masks = Dict[str, torch.Tensor]


def drop_count(rate: float, active: int) -> int:
    """``ceil(rate * active)``, immune to float noise such as ``0.3 * 10 = 3.0000000000000004``."""
    return min(active, math.ceil(round(rate * active, 9)))


def _keep_largest(keep: torch.Tensor, scores: torch.Tensor, k: int, magnitude: bool = False) -> torch.Tensor:
    """Of the positions ``keep`` marks, those with the ``k`` largest ``scores`` (``|scores|`` with
    ``magnitude``; ties: lower index first). Few positions: select among them alone; most of the tensor:
    mask the others out (cheaper there)."""
    flat_keep, flat = keep.reshape(-1), scores.reshape(-1)
    if 2 * int(torch.count_nonzero(flat_keep)) > flat_keep.numel():
        flat = flat.abs() if magnitude else flat
        return select_topk({"s": flat.masked_fill(~flat_keep, -math.inf)}, {"s": k})["s"].view_as(keep)
    index = flat_keep.nonzero().squeeze(1)
    chosen = select_topk({"s": flat[index].abs() if magnitude else flat[index]}, {"s": k})["s"]
    out = torch.zeros_like(flat_keep)
    out[index[chosen]] = True
    return out.view_as(keep)


def drop_and_grow(keep: torch.Tensor, weight: torch.Tensor, grow_score: torch.Tensor, rate: float
                  ) -> Tuple[torch.Tensor, int]:
    """One layer's update: (new mask, positions that changed state). A dense layer has nowhere to grow."""
    active = int(torch.count_nonzero(keep))
    r = drop_count(rate, active)
    if r == 0 or active == keep.numel():
        return keep, 0
    survivors = _keep_largest(keep, weight.detach(), active - r, magnitude=True)
    grown = _keep_largest(~survivors, grow_score, r)
    new = survivors | grown
    return new, int(torch.count_nonzero(new != keep))


def update_layers(masks: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor], rate: float,
                  grow_score: Callable[[str], torch.Tensor]) -> Tuple[Masks, int]:
    """`drop_and_grow` for every layer; ``grow_score(name)`` gives a layer's scores when asked."""
    out, moved = {}, 0
    for name, keep in masks.items():
        out[name], m = drop_and_grow(keep, weights[name], grow_score(name), rate)
        moved += m
    return out, moved


def prune_to(masks: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor], kept: Callable[[int, float], int],
             density: float, scope: str = "global", output: Optional[str] = None) -> Masks:
    """Gradual magnitude pruning to ``density`` of the layers in ``masks``; pruned weights never return.

    ``kept(n, d)`` is the count rule (see `GradualDensity.kept`). ``global``: one threshold over all layers
    (each keeps at least its best weight). ``layer``: every layer at ``density``, except that once the
    density is 0.2 or less the ``output`` layer is held at 0.2 and the others pay for it (GraNet_uniform's
    classifier rule). A layer already sparser than its target stays as it is."""
    scores = {k: weights[k].detach().abs().float().masked_fill(~m, -math.inf) for k, m in masks.items()}
    active = {k: int(torch.count_nonzero(m)) for k, m in masks.items()}
    sizes = {k: m.numel() for k, m in masks.items()}
    if scope == "global":
        n = sum(sizes.values())
        return select_topk(scores, min(sum(active.values()), kept(n, density)))
    targets = {k: density for k in masks}
    if output in masks and density <= 0.2 and len(masks) > 1:
        n, n_out = sum(sizes.values()), sizes[output]
        others = (n * density - 0.2 * n_out) / (n - n_out)
        targets = {k: (0.2 if k == output else max(others, 0.0)) for k in masks}
    counts = {k: min(active[k], max(1, kept(sizes[k], targets[k]))) for k in masks}
    return select_topk(scores, counts)
