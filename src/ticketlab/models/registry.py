"""The model registry and `build_model` (and `output_layer_name`, defined in `ticketlab.sparsity.mask`).

A model entry is a function ``fn(input_shape, num_classes, **kwargs) -> nn.Module`` registered with
``@register_model``. Every ticketlab model sets ``self.output_layer`` to the module name of its
classifier, which `sparsity` reads to decide whether the output layer is pruned.
"""

from __future__ import annotations

import functools
import inspect
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from ticketlab.config import ModelConfig
from ticketlab.errors import ConfigError
from ticketlab.models.init import init_weights
from ticketlab.registry import Registry
from ticketlab.resources import check_model_size
from ticketlab.sparsity.mask import output_layer_name  # noqa: F401  (one definition, re-exported)

MODELS: Registry = Registry("model")
ARCHITECTURE_FIELDS = ("hidden", "depth", "width", "shortcut", "stem")  # ModelConfig fields passed as keywords
register_model = MODELS.register


def build_model(cfg: ModelConfig, input_shape: Sequence[int], num_classes: int, seed: int) -> nn.Module:
    """Build ``cfg.name`` on CPU and initialise it with ``cfg.init`` from ``seed``.

    Deterministic: the same seed gives bit-identical parameters and buffers. Construction runs under a
    forked, seeded CPU RNG, so neither construction nor init changes torch's global RNG state.
    """
    fn, kwargs = _constructor(cfg)
    count = parameter_count(cfg, tuple(input_shape), num_classes)
    if count is not None:
        check_model_size(count)  # before allocating: a model that cannot fit is one line, not a failed allocation
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # covers anything init_weights does not set
        model = fn(tuple(input_shape), num_classes, **kwargs)
    init_weights(model, cfg.init, seed, bn_init=cfg.bn_init)
    return model


def _constructor(cfg: ModelConfig):
    """The registered function of ``cfg.name`` and the architecture keywords ``cfg`` sets for it."""
    fn = MODELS.get(cfg.name)
    kwargs = {}
    for key in ARCHITECTURE_FIELDS:
        value = getattr(cfg, key)
        if value in ((), 0, ""):
            continue  # the model's own default
        if not _accepts(fn, key):
            hint = " (hidden widths apply only to MLPs; use --model.name mlp)" if key == "hidden" else ""
            raise ConfigError(f"model.{key} does not apply to model {cfg.name!r}{hint}; drop --model.{key}")
        kwargs[key] = tuple(value) if isinstance(value, tuple) else value
    return fn, kwargs


@functools.lru_cache(maxsize=64)
def parameter_count(cfg: ModelConfig, input_shape: Tuple[int, ...], num_classes: int) -> Optional[int]:
    """Parameters of the model ``cfg`` describes, counted on the meta device (nothing allocated); None for a
    model that cannot be built there (a user's model that makes real tensors while it is built)."""
    fn, kwargs = _constructor(cfg)
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = fn(input_shape, num_classes, **kwargs)
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001  (the real build reports whatever is wrong with it)
        return None
    return sum(p.numel() for p in model.parameters())


def _accepts(fn, keyword: str) -> bool:
    params = inspect.signature(fn).parameters.values()
    return any(p.name == keyword or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
