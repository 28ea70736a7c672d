"""`prune`: score the prunable weights of a model and keep a given density of them.

Scoring (`scores.SCORERS`), counting and selection (`allocation`) stay separate; this module only
joins them and handles the two things between: already-pruned weights (score ``-inf``, never kept
again, so successive masks are nested) and the output layer's own rate.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Dict, Optional

import torch
from torch import nn

from ticketlab.errors import ConfigError
from ticketlab.sparsity.allocation import SCOPES, keep_counts, round_half_up, select_topk
from ticketlab.sparsity.mask import Mask, output_layer_name, prunable_parameters
from ticketlab.sparsity.scores import SCORERS


def prune(model: nn.Module, density: float, *, criterion: str = "magnitude", scope: str = "global",
          output_rate: float = 1.0, mask: Optional[Mask] = None, batch=None,
          loss_fn: Optional[Callable] = None, generator: Optional[torch.Generator] = None,
          include_output: bool = True) -> Mask:
    """A new mask keeping ``density`` of the prunable weights of ``model`` (the model is not modified).

    The density counts against all prunable weights (not the ones ``mask`` still keeps), so pruning
    iteratively to ``(1 - f)^k`` keeps exactly ``round((1 - f)^k * n)`` (see `allocation`). Weights
    pruned in ``mask`` are never kept again. ``output_rate`` r scales the output layer's pruning rate:
    its density is ``1 - r * (1 - density)``, chosen within that layer alone, except r = 1, where the
    output layer is treated like every other layer of the scope (in the global budget for "global").
    """
    if not isinstance(density, numbers.Real) or not 0.0 < float(density) <= 1.0:
        raise ConfigError(f"prune density must lie in (0, 1], got {density}")
    density = float(density)
    if not 0.0 <= output_rate <= 1.0:
        raise ConfigError(f"prune output_rate must lie in [0, 1], got {output_rate}")
    if scope not in SCOPES:
        raise ConfigError(f"unknown pruning scope {scope!r}; choose one of: {', '.join(SCOPES)}")
    params = prunable_parameters(model, include_output)
    if not params:
        raise ConfigError(f"{type(model).__name__} has no prunable (Linear/Conv) weights")
    if mask is not None:
        _check_previous(mask, params, density)
    if generator is None:
        generator = torch.Generator().manual_seed(0)

    scores = SCORERS.get(criterion)(params, model=model, batch=batch, loss_fn=loss_fn, generator=generator)
    if mask is not None:
        for name, keep in mask.items():
            if name in scores:
                scores[name] = scores[name].masked_fill(~keep.to(scores[name].device), -math.inf)

    out_name = _output_weight(model, params)
    sizes = {k: p.numel() for k, p in params.items()}
    if out_name is None or output_rate == 1.0 or (scope == "uniform" and out_name == next(iter(sizes))):
        return Mask(_select(scores, sizes, density, scope))
    out_density = 1.0 - output_rate * (1.0 - density)
    rest = {k: v for k, v in sizes.items() if k != out_name}
    kept = _select({k: scores[k] for k in rest}, rest, density, scope) if rest else {}
    kept.update(select_topk({out_name: scores[out_name]},
                            keep_counts({out_name: sizes[out_name]}, out_density, "layer")))
    return Mask({k: kept[k] for k in params})


def _select(scores, sizes, density, scope) -> Dict[str, torch.Tensor]:
    return select_topk(scores, keep_counts(sizes, density, scope))


def _output_weight(model: nn.Module, params) -> Optional[str]:
    """Parameter name of the output layer's weight, if it is among ``params``."""
    try:
        name = output_layer_name(model)
    except ValueError:
        return None
    key = f"{name}.weight" if name else "weight"
    return key if key in params else None


def _check_previous(mask: Mask, params, density: float) -> None:
    kept = total = 0
    for name, p in params.items():
        total += p.numel()
        kept += int(torch.count_nonzero(mask[name])) if name in mask else p.numel()
    if round_half_up(density * total) > kept:
        raise ConfigError(f"prune density {density} exceeds the density {kept / total:.6g} of the given mask; "
                          "pruned weights are never regrown, so choose a density at most the mask's")
