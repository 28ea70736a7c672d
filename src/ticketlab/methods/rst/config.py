"""The ``rst`` section of `ticketlab rst` and its run-config class; DLTH's option names in brackets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Tuple

from ticketlab.config import Section, option, parse_piecewise, run_config
from ticketlab.errors import ConfigError
from ticketlab.steps import Steps

VARIANTS = ("rst", "rst-iter", "l1", "l1-iter", "l1-lth")  # `ticketlab rst --variant`; stored as `method`
ITERATIVE = ("rst-iter", "l1-iter", "l1-lth")


@dataclass(frozen=True)
class RSTConfig(Section):
    """DLTH's RST / RST_Iter and the L1 / L1_Iter baselines (`ticketlab rst`); DLTH's option names in brackets."""

    stage_ratios: Tuple[float, ...] = option(
        (), "fractions PRUNED per ResNet stage: stem, layer1.., classifier, e.g. 0,0.7,0.7,0.7,0 [stage_pr]",
        within="[0, 1]")
    layer_ratios: str = option("", "fractions PRUNED by Conv/Linear layer index, e.g. 0-4:0.5,5:0.6 (others 0)")
    ratio_globs: str = option("", "fractions PRUNED by layer-name glob, e.g. 'layer*:0.7' (last match wins, others 0)")
    pick_pruned: Literal["min", "max", "rand", "iter_rand"] = option(
        "min", "pruned set: smallest |w|, largest |w|, uniformly random, nested random (RST_Iter)")
    base: str = option("init", "weights pruned: init (this run's initialisation), trained (a dense model trained "
                               "first, in dense/), or the path of a state-dict file [base_model_path]")
    lr_prune: float = option(1e-3, "regularisation phase: SGD learning rate (momentum, weight decay from train)",
                             within="(0, inf)")
    batch_size_prune: int = option(64, "regularisation phase: batch size", within="[1, inf)")
    reg_granularity: float = option(1e-4, "regularisation: coefficient increment per update [reg_granularity_prune]",
                                    within="(0, inf)")
    reg_upper_limit: float = option(1.0, "regularisation: a layer is finished once its coefficient exceeds this",
                                    within="(0, inf)")
    update_reg_interval: int = option(5, "regularisation: iterations between coefficient updates", within="[1, inf)")
    stabilize_reg_interval: Steps = option(Steps(0, 40000), "regularisation: length of the stabilisation phase")
    reg_schedule: Literal["x", "x^2", "x^3"] = option(
        "x", "coefficient as a function of a linear counter (x, x^2, x^3) [RST_schedule]")
    block_loss_grad: bool = option(False, "regularisation: gradients are the penalty's only (loss gradient dropped)")
    num_cycles: int = option(0, "cycles of rst-iter / l1-iter / l1-lth (cumulative ratio 1-(1-p)^(c/C))",
                             within="[0, inf)")
    weight_delete: bool = option(False, "rst-iter: zero each cycle's pruned weights and keep them at 0 afterwards")
    iter_finetune: bool = option(False, "rst-iter: fine-tune steps_mini after every cycle but the last [RST_Iter_ft]")
    steps_mini: Steps = option(Steps(), "length of the training inside each cycle (l1-iter, l1-lth, rst-iter) "
                                        "[epochs_mini]")
    lr_ft_mini: str = option("", "piecewise lr 'epoch:lr,...' of the in-cycle training ('': constant train.lr)")
    test_interval: Steps = option(Steps(0, 2000), "regularisation phase: evaluation interval")
    save_interval: Steps = option(Steps(0, 2000), "regularisation phase: checkpoint interval", hash=False)
    last_n: int = option(5, "summary: mean and std of the test accuracy over the last N evaluations [last_n_epoch]",
                         within="[1, inf)")

    def validate(self) -> None:
        given = [bool(self.stage_ratios), bool(self.layer_ratios.strip()), bool(self.ratio_globs.strip())]
        if sum(given) > 1:
            raise ConfigError("give the pruned fractions one way: rst.stage_ratios, rst.layer_ratios or "
                              "rst.ratio_globs, not several")
        if self.lr_ft_mini:
            parse_piecewise(self.lr_ft_mini, "rst.lr_ft_mini")
        if self.test_interval.is_zero or self.save_interval.is_zero:
            raise ConfigError("rst.test_interval and rst.save_interval must be positive, e.g. 2000it")


RSTRunConfig = run_config("rst", variants=VARIANTS, rst=RSTConfig)
