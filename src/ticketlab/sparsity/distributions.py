"""Per-layer densities: ERK, ER, uniform, layer-wise, or explicit densities by name glob.

Every allocator has one signature (JaxPruner's ``sparsity_distributions``): layer shapes and a target
density in, ``name -> density`` out. Counts follow from `allocation.keep_counts` with scope "layer"
(``round_half_up(d_l * n_l)``, at least 1), so the realised total is the sum of the layer counts.

ERK and ER (RigL; Sup-tickets' ``Masking.init``), computed in float64 as the reference does:

* raw score ``r_l = (sum(dims) / prod(dims)) ** power``; ERK uses all dims ``(out, in, kh, kw)``,
  ER only ``(out, in)`` (no kernel term).
* ``eps = (sum_{free} D n_l - sum_{dense} (1 - D) n_l) / sum_{free} r_l n_l``: the free layers share
  the budget ``D * N`` left after the dense layers take their full size (``N``: the weights in the
  budget), and layer l gets ``d_l = eps * r_l``.
* While ``eps * max r_l > 1``, every free layer whose ``r_l`` equals that maximum becomes dense
  (``d_l = 1``) and eps is solved again.

``budget="rigl"`` counts the budget as RigL's ``sparse_utils`` and JaxPruner's
``get_sparsities_erdos_renyi`` do: each layer contributes ``n_l - floor(s n_l)`` kept weights (``s = 1 - D``)
if free, and takes ``floor(s n_l)`` from the others if dense, so
``eps = (sum_{free} (n_l - floor(s n_l)) - sum_{dense} floor(s n_l)) / sum_{free} r_l n_l``. The two rules
differ by the rounding of each layer's share (at most one weight a layer before the final counts are
rounded again); the default, ``"density"``, is Sup-tickets', the repository ticketlab's DST comes from.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
from typing import Dict, Iterable, Mapping, Sequence, Set, Tuple, Union

from ticketlab.errors import ConfigError

DISTRIBUTIONS = ("erk", "er", "uniform", "layer")
BUDGETS = ("density", "rigl")
_SPEC_EXAMPLE = "'conv1.*:1.0,layer*.weight:0.1,fc.weight:0.5'"


def check_density(d, what: str = "density") -> float:
    """``d`` as a float in (0, 1], else `ConfigError` (NaN and booleans included)."""
    if isinstance(d, bool) or not isinstance(d, numbers.Real) or not 0.0 < float(d) <= 1.0:
        raise ConfigError(f"{what} must lie in (0, 1], got {d!r}")
    return float(d)


def layer_densities(shapes: Mapping[str, Sequence[int]], density: float, method: str, *,
                    power: float = 1.0, exclude: Iterable[str] = (), dense: Iterable[str] = (),
                    budget: str = "density") -> Dict[str, float]:
    """Density of every layer in ``shapes`` (in its order) for target ``density``.

    ``method``: "erk", "er" (see the module docstring), "layer" (every layer at ``density``) or
    "uniform" (as "layer", but the first layer of ``shapes`` dense, as in RigL). ``exclude``: layers
    kept dense and left out of the budget (Sup-tickets' ``--rm-first`` for the first layer).
    ``dense``: layers kept dense inside the budget (for ERK/ER the other layers get sparser to pay
    for them; "layer"/"uniform" have no shared budget, so there it only sets them to 1).
    ``power`` scales the ERK/ER raw scores (``erk_power_scale``; 0 gives every free layer one density).
    ``budget``: how ERK/ER count the weights the free layers share ("density" or "rigl"; module docstring).
    """
    density = check_density(density)
    if method not in DISTRIBUTIONS:
        raise ConfigError(f"unknown layer-density method {method!r}; choose one of: {', '.join(DISTRIBUTIONS)}")
    if budget not in BUDGETS:
        raise ConfigError(f"unknown ERK budget rule {budget!r}; choose one of: {', '.join(BUDGETS)}")
    if isinstance(power, bool) or not isinstance(power, numbers.Real) or not 0.0 <= power < math.inf:
        raise ConfigError(f"ERK power must be a finite number >= 0, got {power!r}")
    exclude, dense = _known(exclude, shapes, "exclude"), _known(dense, shapes, "dense")
    out = {name: 1.0 for name in shapes}
    budget_shapes = {k: tuple(int(x) for x in s) for k, s in shapes.items() if k not in exclude}
    if method in ("layer", "uniform"):
        first = next(iter(shapes), None)
        out.update({k: density for k in budget_shapes
                    if k not in dense and not (method == "uniform" and k == first)})
    elif density < 1.0 and budget_shapes:
        out.update(_erdos_renyi(budget_shapes, density, float(power), dense & set(budget_shapes),
                                kernel=method == "erk", rule=budget))
    return out


def _known(names: Iterable[str], shapes: Mapping[str, Sequence[int]], what: str) -> Set[str]:
    names = {names} if isinstance(names, str) else set(names)
    unknown = sorted(names - set(shapes))
    if unknown:
        raise ConfigError(f"{what} names unknown layer(s) {', '.join(unknown)}; choose from: {', '.join(shapes)}")
    return names


def raw_score(shape: Tuple[int, ...], kernel: bool = True) -> float:
    """ERK's ``sum(dims) / prod(dims)`` (``kernel=False``: ER's ``(out + in) / (out * in)``)."""
    dims = shape if kernel else shape[:2]
    if not dims or math.prod(dims) == 0:
        raise ValueError(f"cannot allocate a density to a tensor of shape {tuple(shape)}")
    return sum(dims) / math.prod(dims)


def _erdos_renyi(shapes: Dict[str, Tuple[int, ...]], density: float, power: float, dense: Set[str],
                 kernel: bool, rule: str = "density") -> Dict[str, float]:
    sizes = {k: math.prod(s) for k, s in shapes.items()}
    try:
        raw = {k: raw_score(s, kernel) ** power for k, s in shapes.items()}
    except OverflowError:
        raw = {}
    total = sum(raw[k] * sizes[k] for k in raw)
    if len(raw) < len(shapes) or not all(0.0 < r < math.inf for r in raw.values()) or not 0.0 < total < math.inf:
        raise ConfigError(f"ERK power {power:g} makes the layer scores overflow or vanish (score ** power); use a "
                          "smaller --prune.erk_power, e.g. 1 (RigL's) or 0 (one density for every layer)")
    if rule == "rigl":  # kept and removed counts per layer, as RigL / JaxPruner round them
        removed = {k: math.floor(round((1.0 - density) * n, 9)) for k, n in sizes.items()}
        kept = {k: n - removed[k] for k, n in sizes.items()}
    else:
        kept = {k: density * n for k, n in sizes.items()}
        removed = {k: (1.0 - density) * n for k, n in sizes.items()}
    forced, dense = sorted(dense), set(dense)
    eps = 0.0
    while True:
        free = [k for k in shapes if k not in dense]
        if not free:
            break
        rhs = sum(kept[k] for k in free) - sum(removed[k] for k in dense)
        if rhs <= 0:
            raise ConfigError(f"the layers forced dense ({', '.join(forced)}) hold more weights than density "
                              f"{density} allows; raise the density or force fewer layers dense")
        eps = rhs / sum(raw[k] * sizes[k] for k in free)
        top = max(raw[k] for k in free)
        if eps * top <= 1.0:
            break
        dense.update(k for k in free if raw[k] == top)
    return {k: 1.0 if k in dense else eps * raw[k] for k in shapes}


def densities_from_globs(names: Iterable[str], spec: Union[Mapping[str, float], str],
                         default: float = 1.0) -> Dict[str, float]:
    """``name -> density`` from glob patterns (`fnmatch`, case-sensitive); the last matching
    pattern wins, names matched by none get ``default``. ``spec`` is a dict ``pattern -> density``
    or a string such as ``"conv1.*:1.0,layer*.weight:0.1"``. A pattern that matches no name is an
    error (most likely a typo)."""
    names = list(names)
    default = check_density(default, "default layer density")
    rules = _parse_spec(spec)
    unused = [p for p, _ in rules if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unused:
        raise ConfigError(f"layer-density pattern(s) {', '.join(map(repr, unused))} match no prunable layer; "
                          f"layers are: {', '.join(names)}")
    out = {}
    for name in names:
        out[name] = default
        for pattern, d in rules:
            if fnmatch.fnmatchcase(name, pattern):
                out[name] = d
    return out


def parse_pattern_values(text: str, problem: str) -> list:
    """``"PATTERN:VALUE,PATTERN:VALUE"`` -> ``[(pattern, float)]`` (patterns may hold colons; the value is
    after the last one). An ill-formed entry raises ConfigError(``problem.format(item=repr(entry))``)."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        pattern, sep, value = item.rpartition(":")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not pattern.strip() or number is None:
            raise ConfigError(problem.format(item=repr(item)))
        pairs.append((pattern.strip(), number))
    return pairs


def _parse_spec(spec) -> list:
    if isinstance(spec, str):
        pairs = parse_pattern_values(spec, "ill-formed layer-density entry {item}; write PATTERN:DENSITY pairs "
                                           f"separated by commas, e.g. {_SPEC_EXAMPLE}")
    elif isinstance(spec, Mapping):
        pairs = list(spec.items())
        if any(not isinstance(p, str) or not p for p, _ in pairs):
            raise ConfigError(f"layer-density patterns must be non-empty strings, e.g. {_SPEC_EXAMPLE}")
    else:
        raise ConfigError(f"layer densities must be a dict or a string such as {_SPEC_EXAMPLE}, "
                          f"got {type(spec).__name__}")
    return [(p, check_density(d, f"layer density of {p!r}")) for p, d in pairs]
