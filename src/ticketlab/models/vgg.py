"""VGG-11/13/16/19 with BatchNorm for CIFAR-sized input, as in OpenLTH and DLTH.

Configurations A, B, D, E of Simonyan & Zisserman (2015); the three 4096-wide Linear layers of the
ImageNet VGG are replaced by global average pooling and one Linear classifier.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence, Tuple, Union

from torch import nn

from ticketlab.errors import ConfigError
from ticketlab.models.conv import POOL, _image_shape, plan_layers
from ticketlab.models.registry import register_model


class VGG(nn.Sequential):
    """(3x3 conv, padding 1, with bias) + BatchNorm + ReLU per plan entry, 2x2 max-pools at ``"M"``,
    global average pooling and one Linear classifier.

    Modules are named ``conv1.., bn1.., relu1.., pool1..``, then ``avgpool``, ``flatten`` and ``fc``
    (``self.output_layer``). At 32x32 the last max-pool leaves 1x1, so the average pool is the
    identity there; larger inputs (e.g. 64x64 Tiny-ImageNet) are averaged.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, plan: Sequence[Union[int, str]]):
        channels, height, width = _image_shape(input_shape)
        pools = sum(1 for p in plan if p == POOL)
        if min(height, width) < 2**pools:
            raise ConfigError(f"input {height}x{width} is smaller than {2**pools}x{2**pools}, which "
                              f"{pools} max-pools need; use a larger input or a smaller model")
        layers, channels, _ = plan_layers(channels, plan, batch_norm=True, inplace=True)
        layers += [("avgpool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
                   ("fc", nn.Linear(channels, num_classes))]
        super().__init__(OrderedDict(layers))
        self.output_layer = "fc"


_VGG_PLANS = {
    11: (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    13: (64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    16: (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL),
    19: (64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL,
         512, 512, 512, 512, POOL),
}


@register_model
def vgg11(input_shape: Tuple[int, ...], num_classes: int) -> VGG:
    """VGG-11 (configuration A) with BatchNorm: 9,231,114 parameters for 10 classes."""
    return VGG(input_shape, num_classes, _VGG_PLANS[11])


@register_model
def vgg13(input_shape: Tuple[int, ...], num_classes: int) -> VGG:
    """VGG-13 (configuration B) with BatchNorm: 9,416,010 parameters for 10 classes."""
    return VGG(input_shape, num_classes, _VGG_PLANS[13])


@register_model
def vgg16(input_shape: Tuple[int, ...], num_classes: int) -> VGG:
    """VGG-16 (configuration D) with BatchNorm: 14,728,266 parameters for 10 classes."""
    return VGG(input_shape, num_classes, _VGG_PLANS[16])


@register_model
def vgg19(input_shape: Tuple[int, ...], num_classes: int) -> VGG:
    """VGG-19 (configuration E) with BatchNorm: 20,040,522 parameters for 10 classes."""
    return VGG(input_shape, num_classes, _VGG_PLANS[19])
