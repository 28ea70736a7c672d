"""`ticketlab rst`: the Dual Lottery Ticket Hypothesis (Bai et al., ICLR 2022) as a method plug-in.

``config`` (the ``rst`` section), ``ratios`` (DLTH's per-layer pruned fractions, count rule and choice of
the pruned set), ``reg`` (the regularisation phase as a trainer callback), ``run`` (the phases); this
module declares the command and its presets.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Dict

from ticketlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig, convert
from ticketlab.method import Method, register_method
from ticketlab.method_help import METHOD_HELP
from ticketlab.methods.rst.config import ITERATIVE, VARIANTS, RSTConfig, RSTRunConfig
from ticketlab.methods.rst.run import RSTRun, check_rst, last_n_statistics, mini_config, open_rst, run_rst
from ticketlab.presets import cifar_config
from ticketlab.steps import Steps

# DLTH README, ResNet-56 on CIFAR-100: batch 128, wd 5e-4, 200 epochs at 0.1 -> 0.01 (100) -> 0.001 (150);
# stem and classifier dense, 70% of every block conv pruned. The one-shot command sets no --pick_pruned, so
# the pruned set is the smallest |w| of the initialisation (min); --rst.pick_pruned rand gives the paper's
# random sparse network. RST_Iter: 5 cycles, coefficient update every iteration, 10,000 stabilisation steps.
_CIFAR100 = cifar_config("cifar100", ModelConfig(name="resnet56"), 200, (100, 150), 5e-4)
_DLTH_README = replace(
    convert(_CIFAR100, RSTRunConfig), method="rst", rst=RSTConfig(stage_ratios=(0.0, 0.7, 0.7, 0.7, 0.0)),
    train=replace(_CIFAR100.train, schedule="piecewise", milestones=(), piecewise="0:0.1,100:0.01,150:0.001"))
_DLTH_README_ITER = replace(_DLTH_README, method="rst-iter", rst=replace(
    _DLTH_README.rst, num_cycles=5, update_reg_interval=1, stabilize_reg_interval=Steps(0, 10000),
    pick_pruned="iter_rand"))
# A CPU-sized RST on MNIST-1D: 90% of every layer of the MNIST-1D CNN pruned at random, a short
# regularisation phase (coefficient +1e-3 every iteration, ~1,000 updates, then 500 stabilisation steps),
# then SGD 0.1 -> 0.01 (20) -> 0.001 (30) for 40 epochs.
_MNIST1D = RSTRunConfig(
    method="rst",
    data=DataConfig(dataset="mnist1d", val_size=500),
    model=ModelConfig(name="mnist1d_cnn"),
    train=TrainConfig(steps=Steps(40), batch_size=64, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
                      schedule="piecewise", piecewise="0:0.1,20:0.01,30:0.001", eval_every=Steps(1)),
    rst=RSTConfig(layer_ratios="0-3:0.9", pick_pruned="rand", reg_granularity=1e-3, update_reg_interval=1,
                  stabilize_reg_interval=Steps(0, 500), test_interval=Steps(0, 250), save_interval=Steps(0, 500)),
)


def _cli_run(config: RunConfig, options: Dict[str, Any], ctx) -> Path:
    return run_rst(config, ctx)[0]


register_method(Method(
    name="rst", config=RSTRunConfig, run=_cli_run,
    help=METHOD_HELP["rst"],
    presets={"cifar100_resnet56_rst": _DLTH_README, "cifar100_resnet56_rst_iter": _DLTH_README_ITER,
             "mnist1d_cnn_rst": _MNIST1D}))

__all__ = ["RSTConfig", "RSTRunConfig", "RSTRun", "VARIANTS", "ITERATIVE", "check_rst", "open_rst", "run_rst",
           "mini_config", "last_n_statistics"]
