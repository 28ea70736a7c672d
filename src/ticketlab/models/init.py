"""Seeded weight initialisation that leaves torch's global RNG alone.

Values are drawn on CPU in float32 from one `torch.Generator` (modules visited in ``named_modules``
order) and then copied into the parameters, so the same seed gives the same weights on every device
and dtype.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch
from torch import nn

from ticketlab.errors import ConfigError

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)

_SCHEMES: Dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "kaiming_normal": lambda w, g: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu", generator=g),
    "kaiming_uniform": lambda w, g: nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu", generator=g),
    "xavier_normal": lambda w, g: nn.init.xavier_normal_(w, generator=g),
    "xavier_uniform": lambda w, g: nn.init.xavier_uniform_(w, generator=g),
}
INIT_SCHEMES = tuple(_SCHEMES)


def init_weights(model: nn.Module, scheme: str, seed: int) -> None:
    """Initialise ``model`` in place.

    Conv1d/2d/3d and Linear weights follow ``scheme`` (kaiming: fan_in with ReLU gain; xavier: gain 1);
    their biases become 0; BatchNorm/GroupNorm/LayerNorm weights 1 and biases 0. Other parameters are
    left as they are.
    """
    if scheme not in _SCHEMES:
        raise ConfigError(f"model.init={scheme!r} is not allowed; choose one of: {', '.join(INIT_SCHEMES)}")
    draw = _SCHEMES[scheme]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _WEIGHTED):
                values = draw(torch.empty(module.weight.shape, dtype=torch.float32), generator)
                module.weight.copy_(values)
                _fill(module.bias, 0.0)
            elif isinstance(module, _NORMS):
                _fill(getattr(module, "weight", None), 1.0)
                _fill(getattr(module, "bias", None), 0.0)


def _fill(tensor, value: float) -> None:
    if tensor is not None:
        tensor.fill_(value)
