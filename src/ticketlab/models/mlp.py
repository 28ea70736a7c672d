"""Fully connected networks: `MLP` and its registry entries (``mlp``, ``lenet_300_100``)."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence, Tuple

from torch import nn

from ticketlab.errors import ConfigError
from ticketlab.models.registry import register_model


class MLP(nn.Sequential):
    """Flatten -> (Linear + ReLU) per hidden width -> Linear.

    Layers are named ``fc1 .. fcN`` (the last is the classifier, ``self.output_layer``), so parameter
    names read ``fc1.weight`` in masks and reports.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (300, 100)):
        if any(int(w) < 1 for w in hidden):
            raise ConfigError(f"model.hidden={tuple(hidden)} has a width below 1; widths must be positive")
        widths = [math.prod(input_shape), *(int(w) for w in hidden), num_classes]
        layers = [("flatten", nn.Flatten())]
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
            layers.append((f"fc{i}", nn.Linear(fan_in, fan_out)))
            if i < len(widths) - 1:
                layers.append((f"relu{i}", nn.ReLU()))
        super().__init__(OrderedDict(layers))
        self.output_layer = f"fc{len(widths) - 1}"


@register_model
def mlp(input_shape: Tuple[int, ...], num_classes: int, hidden: Sequence[int] = (300, 100)) -> MLP:
    """MLP with the given hidden widths (any number, including none)."""
    return MLP(input_shape, num_classes, hidden)


@register_model
def lenet_300_100(input_shape: Tuple[int, ...], num_classes: int) -> MLP:
    """LeNet-300-100 of the Lottery Ticket paper (266,610 parameters on 28x28 input)."""
    return MLP(input_shape, num_classes, (300, 100))
