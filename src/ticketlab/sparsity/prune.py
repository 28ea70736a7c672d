"""`prune`: score the prunable weights of a model and keep a given density of them.

Scoring (`scores.SCORERS`), counting and selection (`allocation`, `distributions`) stay separate; this
module only joins them and handles the things between: already-pruned weights (score ``-inf``, never
kept again, so successive masks are nested), the output layer's own rate and a dense first layer.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Optional

import torch
from torch import nn

from ticketlab.errors import ConfigError
from ticketlab.sparsity.allocation import SCOPES, keep_counts, select_topk
from ticketlab.sparsity.distributions import check_density, layer_densities
from ticketlab.sparsity.mask import Mask, output_layer_name, prunable_parameters, warn_unprunable
from ticketlab.sparsity.scores import SCORERS

PRUNE_SCOPES = SCOPES + ("erk", "er")


def prune(model: nn.Module, density: float, *, criterion: str = "magnitude", scope: str = "global",
          output_rate: float = 1.0, mask: Optional[Mask] = None, batch=None,
          loss_fn: Optional[Callable] = None, generator: Optional[torch.Generator] = None,
          include_output: bool = True, erk_power: float = 1.0, include_first: bool = True,
          layer_density: Optional[Mapping[str, float]] = None, erk_budget: str = "density") -> Mask:
    """A new mask keeping ``density`` of the prunable weights of ``model`` (the model is not modified).

    ``scope``: "global" (one threshold), "layer", "uniform" (first layer dense), "erk" or "er"
    (per-layer densities from `distributions.layer_densities`, raw scores raised to ``erk_power``, the
    budget counted by ``erk_budget``: "density" or RigL's "rigl").
    Within each layer the ``criterion`` picks the weights, with exact counts: ``scope="erk"`` with
    ``criterion="random"`` is RigL / Sup-tickets' random ERK init, except that each layer keeps exactly
    ``round(d_l * n_l)`` weights where the reference draws Bernoulli(d_l) per weight.
    ``include_first=False`` keeps the first prunable layer dense and outside the budget (Sup-tickets'
    ``--rm-first``). ``layer_density`` (``name -> density``, e.g. from `densities_from_globs`) replaces
    the scope: each named layer keeps its own density, unnamed layers stay dense, ``density`` is unused.

    The density counts against all prunable weights (not the ones ``mask`` still keeps), so pruning
    iteratively to ``(1 - f)^k`` keeps exactly ``round((1 - f)^k * n)`` (see `allocation`). Weights
    pruned in ``mask`` are never kept again. ``output_rate`` r scales the output layer's pruning rate:
    its density is ``1 - r * (1 - density)``, chosen within that layer alone, except r = 1, where the
    output layer is treated like every other layer of the scope (in the global budget for "global").
    """
    density = check_density(density, "prune density")
    if not 0.0 <= output_rate <= 1.0:
        raise ConfigError(f"prune output_rate must lie in [0, 1], got {output_rate}")
    if scope not in PRUNE_SCOPES:
        raise ConfigError(f"unknown pruning scope {scope!r}; choose one of: {', '.join(PRUNE_SCOPES)}")
    params = prunable_parameters(model, include_output)
    if not params:
        raise ConfigError(f"{type(model).__name__} has no prunable (Linear/Conv) weights")
    warn_unprunable(model)
    if layer_density is not None:
        _check_layer_density(layer_density, params, output_rate)
    if generator is None:
        generator = torch.Generator().manual_seed(0)

    shapes = {k: p.shape for k, p in params.items()}
    aside = set() if include_first else {next(iter(shapes))}  # dense, outside every budget
    counts = _plan(shapes, density, scope, _output_weight(model, params), output_rate, aside, erk_power,
                   layer_density, erk_budget)
    if mask is not None:
        _check_previous(mask, params, counts)
    scores = SCORERS.get(criterion)(params, model=model, batch=batch, loss_fn=loss_fn, generator=generator)
    if mask is not None:
        for name, keep in mask.items():
            if name in scores:
                scores[name] = scores[name].masked_fill(~keep.to(scores[name].device), -math.inf)
    kept = {}
    for names, count in counts:
        kept.update(select_topk({k: scores[k] for k in names}, count))
    return Mask({k: kept[k] for k in params})


def _plan(shapes, density, scope, out_name, output_rate, aside, power, layer_density, erk_budget="density"):
    """Groups ``(names, counts)``: per-layer counts (a dict), or a global pool sharing one count."""
    sizes = {k: s.numel() for k, s in shapes.items()}
    if layer_density is not None:
        dens = {k: 1.0 if k in aside else float(layer_density.get(k, 1.0)) for k in shapes}
        return [(list(shapes), keep_counts(sizes, dens, "layer"))]
    first = next(iter(shapes))
    split = (out_name is not None and output_rate != 1.0 and out_name not in aside
             and not (scope == "uniform" and out_name == first))
    own = set(aside) | ({out_name} if split else set())  # layers outside the scope's budget
    if scope == "global":
        fixed = {k: 1.0 for k in aside}
        pool = [k for k in shapes if k not in own]
        groups = [(pool, keep_counts({k: sizes[k] for k in pool}, density, "global"))] if pool else []
    else:
        fixed = layer_densities(shapes, density, scope, power=power, exclude=own, budget=erk_budget)
        groups = []
    if split:
        fixed[out_name] = 1.0 - output_rate * (1.0 - density)
    if fixed:
        groups.append((list(fixed), keep_counts({k: sizes[k] for k in fixed}, fixed, "layer")))
    return groups


def _check_layer_density(layer_density, params, output_rate) -> None:
    unknown = sorted(set(layer_density) - set(params))
    if unknown:
        raise ConfigError(f"layer densities name unknown layer(s) {', '.join(unknown)}; "
                          f"prunable layers are: {', '.join(params)}")
    for name, d in layer_density.items():
        check_density(d, f"layer density of {name}")
    if output_rate != 1.0:
        raise ConfigError("output_rate does not apply with explicit layer densities; "
                          "give the output layer's density in the layer densities instead")


def _output_weight(model: nn.Module, params) -> Optional[str]:
    """Parameter name of the output layer's weight, if it is among ``params``."""
    try:
        name = output_layer_name(model)
    except ValueError:
        return None
    key = f"{name}.weight" if name else "weight"
    return key if key in params else None


def _check_previous(mask: Mask, params, groups) -> None:
    """Pruned weights are never regrown: refuse counts above what ``mask`` still keeps."""
    def kept(name):
        return int(torch.count_nonzero(mask[name])) if name in mask else params[name].numel()

    for names, count in groups:
        if isinstance(count, int):
            have = sum(kept(k) for k in names)
            if count > have:
                total = sum(params[k].numel() for k in names)
                raise ConfigError(f"prune density {count / total:.6g} exceeds the density {have / total:.6g} of "
                                  "the given mask; pruned weights are never regrown, so choose a density at most "
                                  "the mask's")
            continue
        for name, c in count.items():
            if c > kept(name):
                raise ConfigError(f"layer {name} would keep {c} weights but the given mask keeps only {kept(name)}; "
                                  "pruned weights are never regrown, so choose a density at most the mask's")


def prune_remaining(model: nn.Module, mask: Mask, fraction: float, rule: str, include_output: bool = True) -> Mask:
    """One level of global magnitude pruning counted as another tool counts it, nested in ``mask``:

    - ``"openlth"`` (OpenLTH's ``sparse_global``): ``k = ceil(fraction * R)`` with R every weight ``mask``
      keeps, the output layer included even when it is not pruned; the threshold is the (k+1)-th smallest
      magnitude among the kept weights of the pruned layers, and every weight at or below it goes (k + 1
      weights, more on ties);
    - ``"torch"`` (``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured``, applied again on
      each level): ``round(fraction * R)`` of the R kept weights of the pruned layers, the smallest
      magnitudes, ties broken as ``torch.topk`` breaks them.

    ``include_output=False`` leaves the output layer as it is (OpenLTH's ``pruning_layers_to_ignore``)."""
    params = prunable_parameters(model, include_output)
    warn_unprunable(model)
    names = [k for k in params if k in mask]
    scores = torch.cat([params[k].detach().abs().flatten()[mask[k].flatten().to(params[k].device)] for k in names])
    if rule == "openlth":
        cut = math.ceil(fraction * mask.num_kept())
        if cut >= len(scores):
            raise ConfigError(f"prune.rule=openlth would prune all {len(scores)} remaining weights; stop at an "
                              "earlier level")
        threshold = scores.sort().values[cut]
        new = {k: mask[k] & (params[k].detach().abs() > threshold).to(mask[k].device) for k in names}
    elif rule == "torch":
        cut = round(fraction * len(scores))
        flat = torch.cat([params[k].detach().abs().flatten() for k in names])
        keep = torch.cat([mask[k].flatten().to(flat.device) for k in names])
        flat = flat.masked_fill(~keep, math.inf)  # pruned entries are not candidates again
        pruned = torch.zeros_like(keep)
        if cut:
            pruned[torch.topk(flat, cut, largest=False).indices] = True
        new, start = {}, 0
        for k in names:
            n = params[k].numel()
            new[k] = mask[k] & ~pruned[start:start + n].view(params[k].shape).to(mask[k].device)
            start += n
    else:
        raise ConfigError(f"unknown prune.rule {rule!r}; choose exact, openlth or torch")
    return Mask({**dict(mask.items()), **new})

