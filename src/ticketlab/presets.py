"""Named starting configurations. Presets are data: each is a `RunConfig` derived from a family base.

Resolution order is preset, then config file, then command-line flags (see `ticketlab.cli`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, List

from ticketlab.config import DataConfig, ModelConfig, PruneConfig, RunConfig, TrainConfig
from ticketlab.errors import ConfigError
from ticketlab.registry import Registry
from ticketlab.steps import Steps

PRESETS: Registry = Registry("preset")


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


def describe_presets() -> Dict[str, str]:
    """One line per preset: data set, model, optimizer and length."""
    out = {}
    for name in list_presets():
        c = get_preset(name)
        out[name] = (f"{c.data.dataset} / {c.model.name} / {c.train.optimizer} lr {c.train.lr} "
                     f"batch {c.train.batch_size} / {c.train.steps}")
    return out


__all__ = ["PRESETS", "register_preset", "get_preset", "list_presets", "describe_presets", "ConfigError"]
