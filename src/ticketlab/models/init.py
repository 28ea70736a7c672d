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
_BATCH_NORMS = nn.modules.batchnorm._BatchNorm
_NORMS = (_BATCH_NORMS, nn.GroupNorm, nn.LayerNorm)

_SCHEMES: Dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "kaiming_normal": lambda w, g: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu", generator=g),
    "kaiming_uniform": lambda w, g: nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu", generator=g),
    "xavier_normal": lambda w, g: nn.init.xavier_normal_(w, generator=g),
    "xavier_uniform": lambda w, g: nn.init.xavier_uniform_(w, generator=g),
}
INIT_SCHEMES = tuple(_SCHEMES)
BN_INITS = ("ones", "uniform")


def init_weights(model: nn.Module, scheme: str, seed: int, bn_init: str = "ones") -> None:
    """Initialise ``model`` in place.

    Conv1d/2d/3d and Linear weights follow ``scheme`` (kaiming: fan_in with ReLU gain; xavier: gain 1);
    their biases become 0; BatchNorm/GroupNorm/LayerNorm weights 1 and biases 0. With
    ``bn_init="uniform"`` BatchNorm weights are drawn from U(0, 1) instead, from the same generator in
    module order, as OpenLTH does; "ones" draws nothing, so it leaves the other weights unchanged.
    Other parameters are left as they are.
    """
    if scheme not in _SCHEMES:
        raise ConfigError(f"model.init={scheme!r} is not allowed; choose one of: {', '.join(INIT_SCHEMES)}")
    if bn_init not in BN_INITS:
        raise ConfigError(f"model.bn_init={bn_init!r} is not allowed; choose one of: {', '.join(BN_INITS)}")
    draw = _SCHEMES[scheme]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _WEIGHTED):
                module.weight.copy_(draw(torch.empty(module.weight.shape, dtype=torch.float32), generator))
                _fill(module.bias, 0.0)
            elif isinstance(module, _NORMS):
                weight = getattr(module, "weight", None)
                if bn_init == "uniform" and weight is not None and isinstance(module, _BATCH_NORMS):
                    weight.copy_(torch.rand(weight.shape, dtype=torch.float32, generator=generator))
                else:
                    _fill(weight, 1.0)
                _fill(getattr(module, "bias", None), 0.0)


def _fill(tensor, value: float) -> None:
    if tensor is not None:
        tensor.fill_(value)
