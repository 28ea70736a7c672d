"""Wide Residual Networks (Zagoruyko & Komodakis 2016), without dropout."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.errors import ConfigError
from ticketlab.models.conv import _image_shape
from ticketlab.models.registry import register_model


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 twice; where the shape changes, a 1x1 conv of the pre-activated input is the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        changes = stride != 1 or in_channels != out_channels
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False) if changes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-``depth``-``width``: 3x3 conv to 16 channels (``conv1``), stages ``layer1..layer3`` of
    (depth - 4) / 6 pre-activation blocks with 16k / 32k / 64k channels (k = ``width``; strides 1, 2, 2),
    then BN-ReLU (``bn``), global average pooling and ``fc`` (``self.output_layer``).
    """

    def __init__(self, input_shape: Tuple[int, ...], num_classes: int, depth: int = 28, width: int = 10):
        channels, _, _ = _image_shape(input_shape)
        if depth < 10 or (depth - 4) % 6:
            raise ConfigError(f"model.depth={depth} is not allowed for a Wide ResNet; it must be 6n+4 "
                              "with n >= 1 (10, 16, 22, 28, 40, ...)")
        if width < 1:
            raise ConfigError(f"model.width={width} is not allowed for a Wide ResNet; use a positive multiplier")
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(channels, 16, 3, 1, 1, bias=False)
        channels = 16
        for stage, (out_channels, stride) in enumerate(zip((16 * width, 32 * width, 64 * width), (1, 2, 2)), 1):
            blocks = []
            for i in range(n):
                blocks.append(PreActBlock(channels, out_channels, stride if i == 0 else 1))
                channels = out_channels
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self.output_layer = "fc"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(F.relu(self.bn(x))), 1))


@register_model
def wrn(input_shape: Tuple[int, ...], num_classes: int, depth: int = 28, width: int = 10) -> WideResNet:
    """Wide ResNet of any depth 6n+4 and width multiplier (default WRN-28-10)."""
    return WideResNet(input_shape, num_classes, depth, width)


@register_model
def wrn_28_10(input_shape: Tuple[int, ...], num_classes: int) -> WideResNet:
    """WRN-28-10: 36,479,194 parameters for 10 classes."""
    return WideResNet(input_shape, num_classes, 28, 10)


@register_model
def wrn_16_8(input_shape: Tuple[int, ...], num_classes: int) -> WideResNet:
    """WRN-16-8: 10,961,370 parameters for 10 classes."""
    return WideResNet(input_shape, num_classes, 16, 8)
