"""Convolutional networks: the Lottery Ticket paper's Conv-2/4/6 and the MNIST-1D CNN."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence, Tuple, Union

from torch import nn

from ticketlab.errors import ConfigError
from ticketlab.models.registry import register_model

POOL = "M"


class ConvNet(nn.Sequential):
    """3x3 convs (padding 1) + ReLU following a channel plan, then ReLU-separated Linear layers.

    ``plan`` lists conv widths with ``"M"`` for a 2x2 max-pool, e.g. ``(64, 64, "M")``. Modules are
    named ``conv1..``, ``pool1..``, ``fc1..``; the last ``fc`` is the classifier.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, plan: Sequence[Union[int, str]],
                 fc_widths: Sequence[int] = (256, 256)):
        channels, height, width = _image_shape(input_shape)
        pools = sum(1 for p in plan if p == POOL)
        if height % 2**pools or width % 2**pools:
            raise ConfigError(f"input {height}x{width} is not divisible by 2^{pools}={2**pools}, as "
                              f"{pools} max-pools need; use a matching data set or model")
        layers, channels, convs = plan_layers(channels, plan)
        layers.append(("flatten", nn.Flatten()))
        layers += _linear_stack(channels * (height // 2**pools) * (width // 2**pools), fc_widths, num_classes,
                                relu_offset=convs)
        super().__init__(OrderedDict(layers))
        self.output_layer = f"fc{len(fc_widths) + 1}"


class Conv1dNet(nn.Sequential):
    """Conv1d + ReLU layers of one width (kernel 5, stride 2, padding 1), flatten, one Linear.

    The MNIST-1D paper's CNN for input (1, 40) has three such layers of 25 channels (7,460 parameters).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: int = 25, depth: int = 3,
                 kernel: int = 5, stride: int = 2, padding: int = 1):
        if len(input_shape) != 2:
            raise ConfigError(f"this model needs 1-D input (C, L); the data has shape {tuple(input_shape)}")
        in_channels, length = input_shape
        layers = []
        for i in range(1, depth + 1):
            conv = nn.Conv1d(in_channels, channels, kernel, stride, padding)
            layers += [(f"conv{i}", conv), (f"relu{i}", nn.ReLU())]
            in_channels = channels
            length = (length + 2 * padding - kernel) // stride + 1
            if length < 1:
                raise ConfigError(f"input length {input_shape[1]} is too short for {depth} stride-{stride} convs")
        layers += [("flatten", nn.Flatten()), ("fc1", nn.Linear(channels * length, num_classes))]
        super().__init__(OrderedDict(layers))
        self.output_layer = "fc1"


def plan_layers(channels: int, plan: Sequence[Union[int, str]], batch_norm: bool = False,
                inplace: bool = False) -> Tuple[list, int, int]:
    """Named layers for a plan of 3x3 conv widths (padding 1, with bias; BatchNorm after each when
    ``batch_norm``; then ReLU, in place when ``inplace``) and ``POOL`` (2x2 max-pool):
    ``conv1, [bn1,] relu1, .., pool1, ..``.
    Returns the layers, the output channels and the number of convs."""
    layers, convs, pooled = [], 0, 0
    for entry in plan:
        if entry == POOL:
            pooled += 1
            layers.append((f"pool{pooled}", nn.MaxPool2d(2)))
            continue
        convs += 1
        layers.append((f"conv{convs}", nn.Conv2d(channels, entry, 3, padding=1)))
        if batch_norm:
            layers.append((f"bn{convs}", nn.BatchNorm2d(entry)))
        layers.append((f"relu{convs}", nn.ReLU(inplace=inplace)))
        channels = entry
    return layers, channels, convs


def _image_shape(input_shape: Sequence[int]) -> Tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(f"this model needs image input (C, H, W); the data has shape {tuple(input_shape)}")
    return tuple(input_shape)


def _linear_stack(fan_in: int, widths: Sequence[int], num_classes: int, relu_offset: int):
    """Named ``fc1..`` Linear layers with ReLUs between them (none after the classifier)."""
    layers, sizes = [], [fan_in, *widths, num_classes]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        layers.append((f"fc{i}", nn.Linear(a, b)))
        if i < len(sizes) - 1:
            layers.append((f"relu{relu_offset + i}", nn.ReLU()))
    return layers


_CONV_PLANS = {
    "conv2": (64, 64, POOL),
    "conv4": (64, 64, POOL, 128, 128, POOL),
    "conv6": (64, 64, POOL, 128, 128, POOL, 256, 256, POOL),
}


@register_model
def conv2(input_shape: Tuple[int, ...], num_classes: int) -> ConvNet:
    """Conv-2 (Frankle & Carbin 2019): 4,301,642 parameters on 32x32x3 (4,300,992 weights)."""
    return ConvNet(input_shape, num_classes, _CONV_PLANS["conv2"])


@register_model
def conv4(input_shape: Tuple[int, ...], num_classes: int) -> ConvNet:
    """Conv-4 (Frankle & Carbin 2019): 2,425,024 weights on 32x32x3."""
    return ConvNet(input_shape, num_classes, _CONV_PLANS["conv4"])


@register_model
def conv6(input_shape: Tuple[int, ...], num_classes: int) -> ConvNet:
    """Conv-6 (Frankle & Carbin 2019): 2,261,184 weights on 32x32x3."""
    return ConvNet(input_shape, num_classes, _CONV_PLANS["conv6"])


@register_model
def mnist1d_cnn(input_shape: Tuple[int, ...], num_classes: int) -> Conv1dNet:
    """The MNIST-1D paper's CNN: 3 x Conv1d(25, kernel 5, stride 2, padding 1), then Linear."""
    return Conv1dNet(input_shape, num_classes)
