"""`ticketlab dst`: dynamic sparse training (SET, RigL, GraNet, GMP) and static sparse training, as a plug-in.

``config`` (the ``dst`` section), ``schedules`` (update steps, death rate, the gradual density),
``topology`` (drop-and-grow and gradual pruning on masks), ``callback`` (the trainer callback and its
variants), ``run`` (the phase); this module declares the command and its presets.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Dict

from ticketlab.config import ModelConfig, PruneConfig, RunConfig, convert
from ticketlab.method import Method, register_method
from ticketlab.method_help import METHOD_HELP
from ticketlab.methods.dst.callback import CALLBACKS, DynamicSparse
from ticketlab.methods.dst.config import VARIANTS, DSTConfig, DSTRunConfig
from ticketlab.methods.dst.run import DSTRun, run_dst
from ticketlab.presets import cifar_config, get_preset
from ticketlab.steps import Steps

# Sup-tickets' README, CIFAR-100 ResNet-50 (3x3 stem) at 95% sparsity: ERK, update every 1000 steps, death
# rate 0.5 constant; GraNet from 50% to 5% over epochs 0-110; SGD 0.1, momentum 0.9, wd 5e-4, 250 epochs,
# x0.1 at 50% and 75% of them.
_CIFAR100_R50 = replace(cifar_config("cifar100", ModelConfig(name="resnet50", stem="cifar"), 250, (125, 187), 5e-4),
                        prune=PruneConfig(scope="erk"))
_README = DSTConfig(update_every=Steps(0, 1000), death_rate=0.5, death_schedule="constant")


def _dst(base: RunConfig, variant: str, dst: DSTConfig) -> DSTRunConfig:
    return replace(convert(base, DSTRunConfig), method=variant, dst=dst)


# CPU presets: OpenLTH's LeNet-300-100 recipe on MNIST (SGD 0.1, batch 128, 40 epochs) and the MNIST-1D CNN's,
# with RigL on an ERK mask at 5% (LeNet) or 10% (MNIST-1D), updates every 100 steps, cosine death rate 0.5.
_CPU = DSTConfig(update_every=Steps(0, 100), death_rate=0.5)
PRESETS = {
    "cifar100_resnet50_granet": _dst(_CIFAR100_R50, "granet", replace(_README, init_density=0.5, final_density=0.05,
                                                                      prune_end=Steps(110))),
    "cifar100_resnet50_rigl": _dst(_CIFAR100_R50, "rigl", replace(_README, init_density=0.05)),
    "cifar100_resnet50_set": _dst(_CIFAR100_R50, "set", replace(_README, init_density=0.05)),
    "mnist_lenet_300_100_dst": _dst(replace(get_preset("mnist_lenet_300_100"), prune=PruneConfig(scope="erk")),
                                    "rigl", replace(_CPU, init_density=0.05)),
    "mnist1d_cnn_dst": _dst(replace(get_preset("mnist1d_cnn"), prune=PruneConfig(scope="erk")), "rigl",
                            replace(_CPU, init_density=0.1)),
}


def _cli_run(config: RunConfig, options: Dict[str, Any], ctx) -> Path:
    return run_dst(config, ctx)[0]


register_method(Method(
    name="dst", config=DSTRunConfig, run=_cli_run, presets=PRESETS,
    help=METHOD_HELP["dst"]))

__all__ = ["DSTConfig", "DSTRunConfig", "DSTRun", "DynamicSparse", "CALLBACKS", "VARIANTS", "run_dst"]
