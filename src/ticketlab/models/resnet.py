"""Residual networks: the CIFAR ResNets of He et al. (2016) and ResNet-18/34/50.

One `ResNet` class covers both families: a stem (``conv1``, ``bn1``), stages ``layer1..layerN``
whose first block halves the resolution (except in ``layer1``), global average pooling and one Linear
classifier. The CIFAR ResNets name it ``linear`` (as DLTH, which reads stage numbers from these names,
expects) and default to parameter-free option-A shortcuts; ResNet-18/34/50 follow torchvision's names
(``fc``, ``layerK.B.downsample``), so their state dicts line up with torchvision's.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.errors import ConfigError
from ticketlab.models.conv import _image_shape
from ticketlab.models.registry import register_model

SHORTCUTS = ("A", "B")
STEMS = ("cifar", "imagenet")


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample with the block's stride and append zero channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


def _shortcut(in_channels: int, out_channels: int, stride: int, kind: str) -> Optional[nn.Module]:
    """None (identity) when the shape is unchanged, else option A (padding) or B (1x1 conv + BN)."""
    if stride == 1 and in_channels == out_channels:
        return None
    if kind == "A":
        return PadShortcut(in_channels, out_channels, stride)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with a residual connection; ReLU after the sum."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, shortcut: str = "B"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _shortcut(in_channels, width, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's "v1.5"), 1x1 expand by 4, each with BN."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, shortcut: str = "B"):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = _shortcut(in_channels, out_channels, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


Block = Union[Type[BasicBlock], Type[Bottleneck]]


class ResNet(nn.Module):
    """Stem, one stage ``layerK`` per entry of ``blocks`` (widths ``widths``), average pool, classifier.

    ``stem="cifar"``: 3x3 stride-1 conv; ``"imagenet"``: 7x7 stride-2 conv and a 3x3 stride-2
    max-pool. Either is followed by BN and ReLU. ``shortcut`` picks option A or B where a block changes
    shape; ``head`` names the classifier module (``self.output_layer``).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, block: Block, blocks: Sequence[int],
                 widths: Sequence[int], stem: str = "cifar", shortcut: str = "B", head: str = "fc"):
        channels, _, _ = _image_shape(input_shape)
        _check_choice("stem", stem, STEMS)
        _check_choice("shortcut", shortcut, SHORTCUTS)
        if min(widths) < 1:
            raise ConfigError(f"model.width gives stage widths {tuple(widths)}; widths must be positive")
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(channels, widths[0], 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else None
        channels = widths[0]
        for stage, (count, width) in enumerate(zip(blocks, widths), start=1):
            layers = []
            for i in range(count):
                layers.append(block(channels, width, 2 if stage > 1 and i == 0 else 1, shortcut))
                channels = width * block.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        setattr(self, head, nn.Linear(channels, num_classes))
        self.output_layer = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for stage in range(1, self.stages + 1):
            x = getattr(self, f"layer{stage}")(x)
        return getattr(self, self.output_layer)(torch.flatten(self.avgpool(x), 1))


def _check_choice(field: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"model.{field}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def cifar_resnet(input_shape: Tuple[int, ...], num_classes: int, n: int, width: int = 16,
                 shortcut: str = "A") -> ResNet:
    """CIFAR ResNet of depth 6n+2: three stages of n BasicBlocks, ``width``/2x/4x channels (16/32/64)."""
    return ResNet(input_shape, num_classes, BasicBlock, (n, n, n), (width, 2 * width, 4 * width),
                  stem="cifar", shortcut=shortcut, head="linear")


def torchvision_resnet(input_shape: Tuple[int, ...], num_classes: int, block: Block, blocks: Sequence[int],
                       width: int = 64, stem: str = "cifar") -> ResNet:
    """ResNet-18/34/50 layout: four stages of ``width``/2x/4x/8x base channels, 1x1 conv+BN shortcuts."""
    return ResNet(input_shape, num_classes, block, blocks, tuple(width * 2**i for i in range(4)),
                  stem=stem, shortcut="B", head="fc")


@register_model
def resnet20(input_shape: Tuple[int, ...], num_classes: int, width: int = 16, shortcut: str = "A") -> ResNet:
    """ResNet-20 for CIFAR: 269,722 parameters (option A, 10 classes)."""
    return cifar_resnet(input_shape, num_classes, 3, width, shortcut)


@register_model
def resnet32(input_shape: Tuple[int, ...], num_classes: int, width: int = 16, shortcut: str = "A") -> ResNet:
    """ResNet-32 for CIFAR: 464,154 parameters (option A, 10 classes)."""
    return cifar_resnet(input_shape, num_classes, 5, width, shortcut)


@register_model
def resnet44(input_shape: Tuple[int, ...], num_classes: int, width: int = 16, shortcut: str = "A") -> ResNet:
    """ResNet-44 for CIFAR: 658,586 parameters (option A, 10 classes)."""
    return cifar_resnet(input_shape, num_classes, 7, width, shortcut)


@register_model
def resnet56(input_shape: Tuple[int, ...], num_classes: int, width: int = 16, shortcut: str = "A") -> ResNet:
    """ResNet-56 for CIFAR: 853,018 parameters (option A, 10 classes)."""
    return cifar_resnet(input_shape, num_classes, 9, width, shortcut)


@register_model
def resnet110(input_shape: Tuple[int, ...], num_classes: int, width: int = 16, shortcut: str = "A") -> ResNet:
    """ResNet-110 for CIFAR: 1,727,962 parameters (option A, 10 classes)."""
    return cifar_resnet(input_shape, num_classes, 18, width, shortcut)


@register_model
def resnet18(input_shape: Tuple[int, ...], num_classes: int, width: int = 64, stem: str = "cifar") -> ResNet:
    """ResNet-18: 11,173,962 parameters (CIFAR stem, 10 classes); 11,689,512 as torchvision's ImageNet model."""
    return torchvision_resnet(input_shape, num_classes, BasicBlock, (2, 2, 2, 2), width, stem)


@register_model
def resnet34(input_shape: Tuple[int, ...], num_classes: int, width: int = 64, stem: str = "cifar") -> ResNet:
    """ResNet-34: 21,282,122 parameters (CIFAR stem, 10 classes)."""
    return torchvision_resnet(input_shape, num_classes, BasicBlock, (3, 4, 6, 3), width, stem)


@register_model
def resnet50(input_shape: Tuple[int, ...], num_classes: int, width: int = 64, stem: str = "cifar") -> ResNet:
    """ResNet-50 (Bottleneck): 23,520,842 parameters (CIFAR stem, 10 classes); 25,557,032 as torchvision's."""
    return torchvision_resnet(input_shape, num_classes, Bottleneck, (3, 4, 6, 3), width, stem)
