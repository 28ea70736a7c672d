"""Label noise on the training split (Sparse Double Descent's four kinds), seeded and vectorised.

The distributions follow the reference (``seed-algorithms.md``, "Label noise"); the draws come from
`torch.Generator` streams instead of NumPy RandomState, so exact labels differ from the reference:

- ``random``: exactly ceil(r*N) examples (a seeded permutation) get a label drawn uniformly from all C
  classes; the new label may equal the old one, so the effective flip rate is r*(C-1)/C.
- ``symmetric``: each label is kept with probability 1-r, else replaced by a uniformly chosen other class.
- ``pairflip``: each label is kept with probability 1-r, else replaced by (y+1) mod C.
- ``asymmetric``: for each class c in ``class_map``, exactly ceil(r*n_c) of its examples (seeded
  permutation, chosen by original label so swaps do not chain) are relabelled ``class_map[c]``.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch import Tensor

from ticketlab.errors import ConfigError
from ticketlab.seeds import stream_generator

NOISE_KINDS = ("none", "random", "symmetric", "pairflip", "asymmetric")
_STREAMS = {"labels": 0, "random": 1, "symmetric": 2, "pairflip": 3, "asymmetric": 4}


def noise_count(rate: float, n: int) -> int:
    """ceil(rate * n), immune to float error such as 0.7 * 10 = 7.000000000000001."""
    return min(n, math.ceil(round(rate * n, 9)))


def random_relabel_indices(n: int, rate: float, seed: int) -> Tensor:
    """The ceil(rate*n) example indices that ``random`` noise relabels with this seed."""
    perm = torch.randperm(n, generator=stream_generator(seed, _STREAMS["random"]))
    return perm[: noise_count(rate, n)]


def apply_label_noise(labels: Tensor, kind: str, rate: float, num_classes: int, seed: int,
                      class_map: Optional[Dict[int, int]] = None) -> Tensor:
    """Return a new, noisy copy of the int64 ``labels`` (on their device); the input is untouched."""
    if kind not in NOISE_KINDS:
        raise ConfigError(f"unknown label noise {kind!r}; choose one of: {', '.join(NOISE_KINDS)}")
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"label-noise rate {rate} is out of range; it must lie in [0, 1]")
    if kind == "asymmetric" and class_map is None:
        raise ConfigError("asymmetric label noise needs a class map (class -> class); "
                          "use random, symmetric or pairflip noise for this data set")
    if kind in ("symmetric", "pairflip") and num_classes < 2:
        raise ConfigError(f"{kind} label noise needs at least 2 classes; got {num_classes}")
    y = labels.detach().to("cpu", torch.int64)
    if kind == "none" or rate == 0.0 or len(y) == 0:
        return y.clone().to(labels.device)
    gen = stream_generator(seed, _STREAMS[kind])
    if kind == "random":
        chosen = random_relabel_indices(len(y), rate, seed)
        new = torch.randint(num_classes, (len(chosen),), generator=stream_generator(seed, _STREAMS["labels"]))
        out = y.clone()
        out[chosen] = new
    elif kind == "symmetric":
        flip = torch.rand(len(y), generator=gen) < rate
        offset = torch.randint(1, num_classes, (len(y),), generator=gen)  # never 0: another class
        out = torch.where(flip, (y + offset) % num_classes, y)
    elif kind == "pairflip":
        flip = torch.rand(len(y), generator=gen) < rate
        out = torch.where(flip, (y + 1) % num_classes, y)
    else:
        out = _asymmetric(y, rate, num_classes, class_map, gen)
    return out.to(labels.device)


def _asymmetric(y: Tensor, rate: float, num_classes: int, class_map: Dict[int, int],
                gen: torch.Generator) -> Tensor:
    out = y.clone()
    for source in sorted(class_map):  # a loop over classes, not examples
        target = class_map[source]
        if not (0 <= source < num_classes and 0 <= target < num_classes):
            raise ConfigError(f"class map entry {source}->{target} is outside the {num_classes} classes")
        members = (y == source).nonzero().flatten()
        chosen = members[torch.randperm(len(members), generator=gen)[: noise_count(rate, len(members))]]
        out[chosen] = target
    return out
