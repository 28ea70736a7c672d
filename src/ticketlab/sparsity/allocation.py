"""How many weights each layer keeps, and exact top-k selection.

The counting rule (the one rule every pruning path in ticketlab follows):

* ``round`` below is round-half-up, ``floor(x + 0.5)``, not Python's banker's rounding, so a count
  never depends on whether the integer below is even.
* scope ``"layer"``: layer ``l`` with ``n_l`` weights keeps ``round(d_l * n_l)``, at least 1, where
  ``d_l`` is ``density[name]`` for a dict or the one ``density`` otherwise. The total is the sum.
* scope ``"uniform"``: as ``"layer"``, but the first layer in order stays dense (RigL's "uniform").
* ERK / ER / explicit per-layer densities (`distributions.layer_densities`, `densities_from_globs`):
  pass the ``name -> density`` dict with scope ``"layer"``; the total is the sum of the layer counts.
* scope ``"global"``: the layers together keep ``round(d * n)`` with ``n = sum(n_l)``, chosen by one
  threshold over all layers; every layer keeps at least one weight (its best one), so the total is
  ``max(round(d * n), number of layers)``.
* Densities are always counted against the full layer sizes, not the weights still unpruned, so
  iterative pruning to ``(1 - f)^k`` keeps ``round((1 - f)^k * n)`` at every level.
* Ties are broken by flat index: among equal scores the lower index (position in the joined tensor for
  global scope) is kept, so selection is deterministic. Scores of ``-inf`` (already pruned) are never
  kept, even if that leaves fewer than the count; NaN scores count as ``-inf``.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Union

import torch

from ticketlab.errors import ConfigError
from ticketlab.sparsity.distributions import check_density, layer_densities

SCOPES = ("global", "layer", "uniform")
_SAMPLE = 1 << 16  # subsample size used to bracket the threshold of large tensors
_FEW = 16  # k <= numel / _FEW: select with topk, not a k-th value


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def keep_counts(sizes: Mapping[str, int], density: Union[float, Mapping[str, float]],
                scope: str) -> Union[Dict[str, int], int]:
    """Weights to keep: a dict ``name -> count`` (layer, uniform) or one total (global)."""
    if scope not in SCOPES:
        raise ConfigError(f"unknown pruning scope {scope!r}; choose one of: {', '.join(SCOPES)}")
    if scope == "global":
        if isinstance(density, Mapping):
            raise ConfigError("global pruning takes one density, not one per layer; use scope 'layer'")
        n = sum(sizes.values())
        return min(n, max(round_half_up(check_density(density) * n), len(sizes)))
    if not isinstance(density, Mapping):
        density = layer_densities({k: (n,) for k, n in sizes.items()}, density, scope)
    elif scope == "uniform" and sizes:
        density = {**density, next(iter(sizes)): 1.0}
    counts = {}
    for name, n in sizes.items():
        d = check_density(density[name], f"density of {name}")
        counts[name] = min(n, max(1, round_half_up(d * n)))
    return counts


def _top_candidates(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the entries of 1-D ``flat`` at or above a bound that at least ``k`` of them reach, so
    its ``k`` largest are among them (all of ``flat`` where the bound misses). The bound comes from a
    strided sample, with a margin of several standard deviations, so there are not many more than ``k``."""
    n = flat.numel()
    sample = flat[:: max(1, n // 4096)]
    m = sample.numel()
    r = k * m / n
    rank = int(r + 4 * math.sqrt(r) + 16) + 1  # from the top of the sample
    if rank < m:
        index = torch.nonzero(flat >= torch.kthvalue(sample, m - rank + 1).values).squeeze(1)
        if index.numel() >= k:
            return index
    return torch.arange(n, device=flat.device)


def _kth_largest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest value of 1-D ``flat`` (1 <= k <= numel), exactly.

    Large tensors first bracket the value with a strided subsample and select inside the bracket only,
    which is several times faster than a full ``kthvalue``; it falls back to that when the bracket misses.
    """
    n = flat.numel()
    if n > 8 * _SAMPLE:
        sample = flat[:: n // _SAMPLE]
        m = sample.numel()
        r = k * m / n
        margin = 8 * math.sqrt(m) + 16
        hi_rank, lo_rank = int(r - margin), int(r + margin) + 1  # ranks from the top of the sample
        hi = torch.kthvalue(sample, m - hi_rank + 1).values if hi_rank >= 1 else flat.new_tensor(math.inf)
        lo = torch.kthvalue(sample, m - lo_rank + 1).values if lo_rank <= m else flat.new_tensor(-math.inf)
        above = int(torch.count_nonzero(flat > hi))
        band = flat[(flat >= lo) & (flat <= hi)]
        k_band = k - above
        if 1 <= k_band <= band.numel():
            return torch.kthvalue(band, band.numel() - k_band + 1).values
    return torch.kthvalue(flat, n - k + 1).values


def _topk_flat(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask keeping the ``k`` largest finite entries of 1-D ``flat``; ties go to lower indices."""
    n = flat.numel()
    if k >= n:
        return flat > -math.inf
    if k <= 0:
        return torch.zeros_like(flat, dtype=torch.bool)
    if k * _FEW <= n:  # a few of many (DST's regrowth): select among the few candidates only
        index = _top_candidates(flat, k)
        values, chosen = flat[index].topk(k, sorted=False)
        t = values.min()
        if bool(t > -math.inf) and int(torch.count_nonzero(flat[index] == t)) == int(torch.count_nonzero(values == t)):
            keep = torch.zeros_like(flat, dtype=torch.bool)
            keep[index[chosen]] = True
            return keep  # no entry equal to the k-th left out: nothing for the index rule to decide
    else:
        t = _kth_largest(flat, k)
    keep = flat > t
    if bool(t == -math.inf):
        return keep
    need = k - int(torch.count_nonzero(keep))
    ties = torch.nonzero(flat == t).squeeze(1)[:need]
    keep[ties] = True
    return keep


def _flat_scores(tensors) -> torch.Tensor:
    """Join score tensors into one float (>= float32) vector, NaN -> -inf. Always a fresh tensor."""
    tensors = list(tensors)
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    flat = torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])
    return flat.nan_to_num_(nan=-math.inf, posinf=math.inf, neginf=-math.inf)


def select_topk(scores: Mapping[str, torch.Tensor], counts: Union[Mapping[str, int], int]
                ) -> Dict[str, torch.Tensor]:
    """Exact top-k masks: ``counts[name]`` entries per tensor, or ``counts`` entries over all tensors
    joined (int: global scope; each tensor's best entry is kept first). See the module docstring."""
    if not isinstance(counts, int):
        missing = set(scores) - set(counts)
        if missing:
            raise ValueError(f"select_topk: no count for {sorted(missing)}")
        return {k: _topk_flat(_flat_scores([s]), counts[k]).view(s.shape) for k, s in scores.items()}
    if not scores:
        return {}
    flat = _flat_scores(scores.values())
    sizes = [s.numel() for s in scores.values()]
    starts = torch.tensor([0] + sizes[:-1], device=flat.device).cumsum(0)
    best = torch.stack([seg.argmax() for seg in flat.split(sizes)]) + starts
    best = best[flat[best] > -math.inf]  # a fully pruned tensor has no best entry to keep
    flat[best] = -math.inf
    keep = _topk_flat(flat, counts - best.numel())
    keep[best] = True
    return {k: m.view(s.shape).clone() for (k, s), m in zip(scores.items(), keep.split(sizes))}
