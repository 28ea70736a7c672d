"""`ticketlab suptickets`: Sup-tickets (Yin et al., UAI 2022) as a plug-in on top of `ticketlab dst`.

``config`` (the ``suptickets`` section and the phase lengths), ``superpose`` (the arithmetic and the
ticket-taking callback), ``run`` (one training: the base DST phase, then the cyclic phase); this module
declares the command and its presets.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Dict

from ticketlab.config import ModelConfig, PruneConfig, RunConfig, TrainConfig, convert
from ticketlab.method import Method, register_method
from ticketlab.method_help import METHOD_HELP
from ticketlab.methods.dst.config import DSTConfig
from ticketlab.methods.suptickets.config import SupTicketsConfig, SupTicketsRunConfig, phase_epochs
from ticketlab.methods.suptickets.run import RESULT, SupTicketsRun, run_suptickets
from ticketlab.methods.suptickets.superpose import Superposition, reprune, superpose
from ticketlab.presets import cifar_config, get_preset
from ticketlab.steps import Steps

# Sup-tickets' README, CIFAR-100 ResNet-50 at 95% sparsity: 250 epochs, cycle rate 0.1 and cycles of 8 (226
# pre-train epochs, x0.1 at 113 and 169; 24 cyclic; 3 tickets), lr_1 0.001, lr_2 0.005, re-exploration at
# death rate 0.5, CAA, BatchNorm recomputed; the base updates every 1,000 steps at death rate 0.5 constant.
_README = SupTicketsConfig(cycle=8, cycle_rate=0.1, lr_1=0.001, lr_2=0.005, large_death_rate=0.5)
_CIFAR = replace(cifar_config("cifar100", ModelConfig(name="resnet50", stem="cifar"), 250, (113, 169), 5e-4),
                 prune=PruneConfig(scope="erk"))
_BASE = DSTConfig(update_every=Steps(0, 1000), death_rate=0.5, death_schedule="constant")


def _preset(base: RunConfig, dst: DSTConfig, suptickets: SupTicketsConfig) -> SupTicketsRunConfig:
    return replace(convert(base, SupTicketsRunConfig), dst=dst, suptickets=suptickets)


# CPU: LeNet-300-100 on MNIST, 20 epochs of SGD 0.05 (momentum 0.9, wd 5e-4; x0.1 at 8 and 12 of the 16
# pre-train epochs), RigL on ERK 5% every 100 steps; 4 cyclic epochs = 2 tickets of 2 epochs each.
_LENET = replace(get_preset("mnist_lenet_300_100"), prune=PruneConfig(scope="erk"), train=TrainConfig(
    steps=Steps(20), batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="multistep",
    milestones=(Steps(8), Steps(12)), eval_every=Steps(2)))
_CPU_BASE = DSTConfig(init_density=0.05, update_every=Steps(0, 100), death_rate=0.5)
_CPU = SupTicketsConfig(cycle=2, cycle_rate=0.2, lr_1=0.001, lr_2=0.005, large_death_rate=0.5)
PRESETS = {
    "cifar100_resnet50_suptickets_granet": _preset(_CIFAR, replace(_BASE, init_density=0.5, final_density=0.05,
                                                                   prune_end=Steps(110)),
                                                   replace(_README, base="granet")),
    "cifar100_resnet50_suptickets_rigl": _preset(_CIFAR, replace(_BASE, init_density=0.05), _README),
    "cifar100_resnet50_suptickets_set": _preset(_CIFAR, replace(_BASE, init_density=0.05),
                                                replace(_README, base="set")),
    "mnist_lenet_300_100_suptickets": _preset(_LENET, _CPU_BASE, _CPU),
    "mnist1d_cnn_suptickets": _preset(replace(get_preset("mnist1d_cnn"), prune=PruneConfig(scope="erk"), train=replace(
        _LENET.train, batch_size=100, eval_every=Steps(2))), replace(_CPU_BASE, init_density=0.1), _CPU),
}


def _cli_run(config: RunConfig, options: Dict[str, Any], ctx) -> Path:
    return run_suptickets(config, ctx)[0]


register_method(Method(
    name="suptickets", config=SupTicketsRunConfig, run=_cli_run, presets=PRESETS,
    help=METHOD_HELP["suptickets"]))

__all__ = ["SupTicketsConfig", "SupTicketsRunConfig", "SupTicketsRun", "Superposition", "superpose", "reprune",
           "phase_epochs", "run_suptickets", "RESULT"]
