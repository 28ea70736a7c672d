"""Model registry and architectures.

``build_model(cfg, input_shape, num_classes, seed)`` builds any registered model; users add their own
with ``@register_model``. Importing this package registers the built-in families listed below.
"""

from ticketlab.models import conv, mlp, resnet, vgg, wrn  # noqa: F401  (registers the built-in models)
from ticketlab.models.conv import Conv1dNet, ConvNet
from ticketlab.models.init import BN_INITS, INIT_SCHEMES, init_weights
from ticketlab.models.mlp import MLP
from ticketlab.models.registry import MODELS, build_model, output_layer_name, register_model
from ticketlab.models.resnet import BasicBlock, Bottleneck, ResNet
from ticketlab.models.vgg import VGG
from ticketlab.models.wrn import WideResNet

__all__ = [
    "MODELS", "register_model", "build_model", "init_weights", "output_layer_name", "INIT_SCHEMES",
    "BN_INITS", "MLP", "ConvNet", "Conv1dNet", "VGG", "ResNet", "BasicBlock", "Bottleneck", "WideResNet",
]
