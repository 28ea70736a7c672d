"""Named starting configurations. Presets are data: each is a `RunConfig` derived from a family base.

The presets here hold the core sections only, so every command can start from them. A method's own
presets (with its sections and variant) are declared with the method (`ticketlab.method.Method.presets`);
used by another command, such a preset gives its core sections only. Resolution order is preset, then
config file, then command-line flags (see `ticketlab.cli`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, List

from ticketlab.config import DataConfig, ModelConfig, PruneConfig, RunConfig, TrainConfig
from ticketlab.errors import ConfigError
from ticketlab.registry import Registry
from ticketlab.steps import Steps

PRESETS: Registry = Registry("preset")  # the core presets below, then the methods' own (see the end)


def register_preset(name: str, config: RunConfig) -> RunConfig:
    PRESETS.register(config, name=name)
    return config


def get_preset(name: str) -> RunConfig:
    return PRESETS.get(name)


def list_presets() -> List[str]:
    return PRESETS.names()


# -- small offline sets -----------------------------------------------------------------------------
register_preset("digits_mlp", RunConfig(
    data=DataConfig(dataset="digits", val_size=180),
    model=ModelConfig(name="mlp", hidden=(100, 100)),
    train=TrainConfig(steps=Steps(30), batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9,
                      schedule="cosine", eval_every=Steps(5)),
))

_MNIST1D_TRAIN = TrainConfig(steps=Steps(60), batch_size=100, optimizer="adam", lr=1e-3, weight_decay=0.0,
                             eval_every=Steps(5))
register_preset("mnist1d_mlp", RunConfig(
    data=DataConfig(dataset="mnist1d", val_size=500),
    model=ModelConfig(name="mlp", hidden=(100, 100)),
    train=_MNIST1D_TRAIN,
))
register_preset("mnist1d_cnn", RunConfig(
    data=DataConfig(dataset="mnist1d", val_size=500),
    model=ModelConfig(name="mnist1d_cnn"),
    train=_MNIST1D_TRAIN,
))

# -- LeNet-300-100 on MNIST and Fashion-MNIST ---------------------------------------------------------
# OpenLTH's mnist_lenet_300_100 defaults: SGD 0.1 without momentum, batch 128, 40 epochs, magnitude pruning
# of 20% per level over all layers globally, the output layer not pruned.
_OPENLTH = RunConfig(
    data=DataConfig(dataset="mnist", val_size=5000),
    model=ModelConfig(name="lenet_300_100"),
    train=TrainConfig(steps=Steps(40), batch_size=128, optimizer="sgd", lr=0.1),
    prune=PruneConfig(scope="global", fraction=0.2, output_rate=0.0),
)
# OpenLTH's job exactly: all 60,000 training images (no validation split), OpenLTH's counting (prune.rule
# openlth: the output layer counted in the budget but not pruned), the test set evaluated every epoch.
register_preset("openlth_mnist_lenet_300_100", RunConfig(
    data=DataConfig(dataset="mnist", val_size=0),
    model=ModelConfig(name="lenet_300_100"),
    train=TrainConfig(steps=Steps(40), batch_size=128, optimizer="sgd", lr=0.1, eval_every=Steps(1)),
    prune=PruneConfig(scope="global", fraction=0.2, output_rate=0.0, rule="openlth"),
))
# The Lottery Ticket paper (Frankle & Carbin 2019): Adam 1.2e-3, batch 60, 50,000 iterations, layer-wise
# pruning of 20% per round, the output layer at half that rate.
_LTH = RunConfig(
    data=DataConfig(dataset="mnist", val_size=5000),
    model=ModelConfig(name="lenet_300_100"),
    train=TrainConfig(steps=Steps(0, 50000), batch_size=60, optimizer="adam", lr=1.2e-3, eval_every=Steps(1)),
    prune=PruneConfig(scope="layer", fraction=0.2, output_rate=0.5),
)
for _prefix, _dataset in (("mnist", "mnist"), ("fashion", "fashion_mnist")):
    for _suffix, _base in (("", _OPENLTH), ("_lth", _LTH)):
        register_preset(f"{_prefix}_lenet_300_100{_suffix}",
                        replace(_base, data=replace(_base.data, dataset=_dataset)))


# -- CIFAR, Tiny-ImageNet ---------------------------------------------------------------------------
def cifar_config(dataset: str, model: ModelConfig, epochs: int, milestones, weight_decay: float, **prune) -> RunConfig:
    """SGD 0.1, momentum 0.9, batch 128, x0.1 at the milestones; pad-crop + flip; 5,000 validation images."""
    return RunConfig(
        data=DataConfig(dataset=dataset, val_size=5000, augment=True),
        model=model,
        train=TrainConfig(steps=Steps(epochs), batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
                          weight_decay=weight_decay, schedule="multistep",
                          milestones=tuple(Steps(m) for m in milestones), amp="bf16"),
        prune=PruneConfig(**prune),
    )


# Sparse Double Descent / OpenLTH cifar_resnet_20: 160 epochs, 80/120, wd 1e-4; global magnitude pruning
# of 20% per level including the output layer. Option-A shortcuts as in DLTH and PrAC (--model.shortcut B: OpenLTH).
register_preset("cifar10_resnet20", cifar_config("cifar10", ModelConfig(name="resnet20"), 160, (80, 120), 1e-4))
# PrAC's IMP schedule (182 epochs, 91/136, wd 1e-4) on its option-A ResNet-56.
register_preset("cifar10_resnet56", cifar_config("cifar10", ModelConfig(name="resnet56"), 182, (91, 136), 1e-4))
# Sparse Double Descent cifar_vgg_16: 160 epochs, 80/120, wd 1e-4, output layer (fc) not pruned.
register_preset("cifar10_vgg16", cifar_config("cifar10", ModelConfig(name="vgg16"), 160, (80, 120), 1e-4, output_rate=0.0))
# PrAC / Lottery Pools CIFAR-100 IMP schedule on option-A ResNet-32.
register_preset("cifar100_resnet32", cifar_config("cifar100", ModelConfig(name="resnet32"), 182, (91, 136), 1e-4))
# DLTH README setting (ResNet-56, CIFAR-100): wd 5e-4, 200 epochs with lr 0.1 -> 0.01 at 100 -> 0.001 at 150.
register_preset("cifar100_resnet56", cifar_config("cifar100", ModelConfig(name="resnet56"), 200, (100, 150), 5e-4,
                                            scope="layer"))
# Sparse Double Descent cifar_pytorch_resnet_18 (3x3 stem, no max-pool): 160 epochs, 80/120, wd 1e-4.
register_preset("cifar100_resnet18", cifar_config("cifar100", ModelConfig(name="resnet18", stem="cifar"), 160, (80, 120),
                                            1e-4))
# PrAC / Lottery Pools Tiny-ImageNet ResNet-18 (64x64 images from an imagefolder tree, 10,000 validation
# images as PrAC's 90k/10k split): 182 epochs, 91/136, wd 1e-4.
register_preset("tiny_imagenet_resnet18", replace(
    cifar_config("imagefolder", ModelConfig(name="resnet18", stem="cifar"), 182, (91, 136), 1e-4),
    data=DataConfig(dataset="imagefolder", val_size=10000, augment=True)))


def describe_presets() -> Dict[str, str]:
    """One line per preset: data set, model, optimizer and length, and the command of a method's preset."""
    out = {}
    for name in list_presets():
        c = get_preset(name)
        command = type(c).command
        variant = f", variant {c.method}" if c.method != command else ""
        command = "" if type(c) is RunConfig else f" (ticketlab {command}{variant})"
        out[name] = (f"{c.data.dataset} / {c.model.name} / {c.train.optimizer} lr {c.train.lr} "
                     f"batch {c.train.batch_size} / {c.train.steps}{command}")
    return out


PRESETS.builtins_from("ticketlab.methods")  # the methods' presets, imported on first use

__all__ = ["PRESETS", "register_preset", "cifar_config", "get_preset", "list_presets", "describe_presets", "ConfigError"]
