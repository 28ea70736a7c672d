"""Per-layer pruned fractions as DLTH specifies them, its count rule and its choice of the pruned set.

Unlike the rest of `ticketlab.sparsity`, whose numbers are densities (fractions kept), the values here are
**fractions pruned**, as in DLTH's ``--stage_pr``. Three ways to give them, one per model family:

* stage ratios (ResNet-style names): the stem conv ``conv1`` is stage 0, ``layerK.*`` (its downsample /
  shortcut convs included) stage K, the classifier the last stage + 1. ResNet-56 with ``0,0.7,0.7,0.7,0``:
  every block conv loses 70% of its own weights, stem and classifier stay dense.
* layer-index ranges (single-branch models): ``"0-4:0.5,5:0.6"`` over the Conv/Linear layers in module
  order (ranges inclusive; a downsample / shortcut conv shares the index of the layer before it); layers
  not named get 0.
* name globs: ``"layer*:0.7,linear:0"`` matched (`fnmatch`) against the module name or the parameter name;
  the last matching pattern wins, unmatched layers get 0, a pattern that matches nothing is an error.

**Count rule (an explicit exception to ticketlab's counting rule).** A layer of ``n`` weights with pruned
fraction ``r > 0`` loses ``min(ceil(r * n), n - 1)`` weights (DLTH never prunes a whole layer); ``r = 0``
loses none. ``r * n`` is rounded to 9 decimals before the ceiling, so float noise such as
``0.07 * 100 = 7.000000000000001`` does not add a weight (DLTH's code would prune 8 there).

**Choice of the pruned set** (`choose_pruned`): ``min`` the smallest ``|w|`` (DLTH's default, and what its
README's one-shot RST command uses), ``max`` the largest, ``rand`` uniformly at random (the paper's random
sparse network), ``iter_rand`` RST_Iter's nested random choice. Random draws come from a seeded
``torch.Generator`` (DLTH uses NumPy's unseeded global RNG). Given the previous cycle's mask, every pick
keeps the weights pruned there pruned and chooses only the additional ones, so iterative masks are nested
exactly (DLTH re-identifies its previous set as the currently smallest weights); ``rand`` and ``iter_rand``
then choose alike. Ties go as in `select_topk`: among equal scores the lower flat index is kept.
"""

from __future__ import annotations

import fnmatch
import math
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ticketlab.errors import ConfigError
from ticketlab.sparsity.allocation import select_topk
from ticketlab.sparsity.distributions import parse_pattern_values
from ticketlab.sparsity.mask import Mask, output_layer_name, prunable_parameters

PICKS = ("min", "max", "rand", "iter_rand")
_SHORTCUT_PARTS = ("downsample", "shortcut")
_STAGE = re.compile(r"^layer(\d+)(\.|$)")
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?:\s*([-+0-9.eE]+)\s*$")


# -- layers, indices, stages ----------------------------------------------------------------------------


def module_names(model: nn.Module) -> Dict[str, str]:
    """Prunable parameter name -> the name of its module (``"layer1.0.conv1.weight"`` -> ``"layer1.0.conv1"``)."""
    return {name: name[: -len(".weight")] if name.endswith(".weight") else "" for name in prunable_parameters(model)}


def _is_shortcut(module: str) -> bool:
    return any(part in _SHORTCUT_PARTS for part in module.split("."))


def layer_indices(model: nn.Module) -> Dict[str, int]:
    """Parameter name -> DLTH layer index: Conv/Linear layers counted from 0 in module order; a downsample
    or shortcut conv does not advance the count (it shares the index of the layer before it)."""
    out, index = {}, -1
    for name, module in module_names(model).items():
        if not _is_shortcut(module) or index < 0:
            index += 1
        out[name] = index
    return out


def layer_stages(model: nn.Module) -> Dict[str, int]:
    """Parameter name -> stage of a ResNet-style model: stem ``conv1`` 0, ``layerK.*`` K, classifier last + 1."""
    modules = module_names(model)
    classifier = output_layer_name(model)
    out: Dict[str, int] = {}
    for name, module in modules.items():
        match = _STAGE.match(module)
        if module == "conv1":
            out[name] = 0
        elif match:
            out[name] = int(match.group(1))
        elif module != classifier:
            raise ConfigError(f"stage ratios need ResNet-style layer names (conv1, layerK.*, the classifier); "
                              f"layer {module!r} is none of these; use --rst.layer_ratios or --rst.ratio_globs")
    last = max(out.values(), default=0)
    for name, module in modules.items():
        if module == classifier:
            out[name] = last + 1
    return out


# -- specs -> fractions ---------------------------------------------------------------------------------


def _check_ratio(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{what} must be a fraction pruned in [0, 1], got {value!r}")
    return float(value)


def parse_index_ratios(text: str) -> List[Tuple[int, int, float]]:
    """``"0-4:0.5,5:0.6"`` -> [(0, 4, 0.5), (5, 5, 0.6)] (inclusive index ranges, fractions pruned)."""
    out = []
    for item in [p for p in text.replace("[", "").replace("]", "").split(",") if p.strip()]:
        match = _RANGE.match(item)
        if not match:
            raise ConfigError(f"layer-ratio entry {item.strip()!r} is not INDEX:RATIO or FIRST-LAST:RATIO; "
                              "write e.g. 0-4:0.5,5:0.6")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:
            raise ConfigError(f"layer-ratio range {item.strip()!r} runs backwards; write FIRST-LAST with FIRST <= LAST")
        try:
            ratio = float(match.group(3))
        except ValueError:
            raise ConfigError(f"layer-ratio entry {item.strip()!r} has no number after ':'") from None
        out.append((first, last, _check_ratio(ratio, f"layer ratio of {item.strip()!r}")))
    return out


def _parse_globs(text: str) -> List[Tuple[str, float]]:
    pairs = parse_pattern_values(text, "ratio glob {item} is not PATTERN:RATIO; write e.g. 'layer*:0.7,linear:0'")
    return [(pattern, _check_ratio(ratio, f"ratio of {pattern!r}")) for pattern, ratio in pairs]


def pruned_fractions(model: nn.Module, *, stage_ratios: Sequence[float] = (), layer_ratios: str = "",
                     ratio_globs: str = "") -> Dict[str, float]:
    """Fraction pruned of every prunable parameter (all 0 when no spec is given); at most one spec."""
    given = [bool(stage_ratios), bool(layer_ratios.strip()), bool(ratio_globs.strip())]
    if sum(given) > 1:
        raise ConfigError("give the pruned fractions one way: --rst.stage_ratios, --rst.layer_ratios or "
                          "--rst.ratio_globs, not several")
    names = list(module_names(model))
    if stage_ratios:
        stages = layer_stages(model)
        needed = max(stages.values()) + 1
        if len(stage_ratios) != needed:
            raise ConfigError(f"--rst.stage_ratios has {len(stage_ratios)} entries but this model has {needed} "
                              f"stages (stem, layer1..layer{needed - 2}, classifier); e.g. "
                              + ",".join(["0"] + ["0.7"] * (needed - 2) + ["0"]))
        ratios = [_check_ratio(r, "a stage ratio") for r in stage_ratios]
        return {name: ratios[stages[name]] for name in names}
    if layer_ratios.strip():
        indices = layer_indices(model)
        top = max(indices.values(), default=-1)
        out = {name: 0.0 for name in names}
        for first, last, ratio in parse_index_ratios(layer_ratios):
            if last > top:
                raise ConfigError(f"--rst.layer_ratios names layer {last} but the model's layers are 0-{top}")
            for name, index in indices.items():
                if first <= index <= last:
                    out[name] = ratio
        return out
    if ratio_globs.strip():
        modules = module_names(model)
        rules = _parse_globs(ratio_globs)
        unused = [p for p, _ in rules if not any(_matches(p, n, modules[n]) for n in names)]
        if unused:
            raise ConfigError(f"ratio glob(s) {', '.join(map(repr, unused))} match no prunable layer; layers are: "
                              f"{', '.join(modules[n] for n in names)}")
        out = {}
        for name in names:
            out[name] = 0.0
            for pattern, ratio in rules:
                if _matches(pattern, name, modules[name]):
                    out[name] = ratio
        return out
    return {name: 0.0 for name in names}


def _matches(pattern: str, name: str, module: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(module, pattern)


# -- counts, cycles, choice ----------------------------------------------------------------------------


def pruned_count(ratio: float, n: int) -> int:
    """DLTH's count: ``min(ceil(r * n), n - 1)`` weights pruned (none for r = 0); see the module docstring."""
    if ratio <= 0.0 or n <= 1:
        return 0
    return min(math.ceil(round(ratio * n, 9)), n - 1)


def cumulative_ratio(ratio: float, cycle: int, cycles: int) -> float:
    """Fraction pruned after ``cycle`` of ``cycles`` cycles: ``1 - (1 - r)^(cycle / cycles)``; exactly ``r`` at the end."""
    if not 1 <= cycle <= cycles:
        raise ValueError(f"cycle {cycle} outside 1..{cycles}")
    if cycle == cycles:
        return float(ratio)
    return 1.0 - (1.0 - ratio) ** (cycle / cycles)


def choose_pruned(weights: Mapping[str, torch.Tensor], ratios: Mapping[str, float], pick: str = "min", *,
                  generator: Optional[torch.Generator] = None, previous: Optional[Mask] = None) -> Mask:
    """The mask (True = kept) that prunes ``pruned_count(ratios[name], n)`` weights of each tensor.

    ``weights``: name -> the current weights (scored for ``min`` / ``max``); ``previous``: the last
    cycle's mask, whose pruned weights stay pruned. Random picks draw one uniform score per weight, tensor
    by tensor in ``weights`` order, from ``generator`` (seeded 0 if None).
    """
    if pick not in PICKS:
        raise ConfigError(f"unknown pick {pick!r}; choose one of: {', '.join(PICKS)}")
    if pick in ("rand", "iter_rand") and generator is None:
        generator = torch.Generator().manual_seed(0)
    scores, counts = {}, {}
    for name, w in weights.items():
        w = w.detach()
        if pick == "min":
            score = w.abs().float()
        elif pick == "max":
            score = -w.abs().float()
        else:
            score = torch.rand(w.shape, generator=generator).to(w.device)
        if previous is not None and name in previous:
            keep = previous[name].to(w.device)
            score = score.masked_fill(~keep, -math.inf)
            if pruned_count(ratios.get(name, 0.0), w.numel()) < int((~keep).sum()):
                raise ValueError(f"{name}: the new ratio prunes fewer weights than the previous mask")
        scores[name] = score
        counts[name] = w.numel() - pruned_count(ratios.get(name, 0.0), w.numel())
    return Mask(select_topk(scores, counts))
