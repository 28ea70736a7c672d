"""`ticketlab prac`: PrAC (Zhang et al., ICML 2021): lottery tickets found on a pruning-aware critical subset.

A lottery run (the ``lottery`` and ``prune`` settings as `ticketlab lottery`) whose rounds differ:

- round 0 trains on the full training split from the initialisation, with the full schedule, and keeps its
  weights after ``lottery.rewind`` steps as the rewind point (``rewind.pt``); every round records each example's training-mode
  correctness (`record.ExampleRecord`) and stops early when the would-be mask stabilises
  (`record.EarlyBird`, ``prac.eb_eps``), that epoch's mask being the next level's;
- round k >= 1 trains only on the critical set left by round k-1: the examples forgotten at least once or
  never learned (forgetting count > ``prac.threshold``; ``--prac.selection top``: the
  ``int(N (1 - data_rate)^k)`` most forgotten, the reference's ``constent``), united from round 2 on with
  the examples the dense model (level 0, best validation) and round k-1's ticket (best validation) predict
  differently; with epochs, milestones and warm-up scaled by ``rho = |S| / N`` with ``int`` truncation
  (at least one epoch; a milestone never truncated to 0), from step 0 of that schedule (no rate rewinding,
  as the reference's PrAC script), from the rewind weights;
- ``prac.evaluate`` (``last``, ``all``, ``none``): the found ticket trained again on the full split with the
  standard schedule from its rewind weights (the reference's ``main_train.py``), in ``level_<k>/evaluate/``.

Every level's summary records its cost: ``subset_size``, ``epochs``, ``steps`` and ``examples_seen``.
An empty critical set (every example learned for good and nothing forgotten by pruning) is a documented
choice: the next round trains on the full split and says so (``subset_fallback``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Literal, Tuple

import torch

from ticketlab import runlock
from ticketlab.config import (ModelConfig, RunConfig, Section, TrainConfig, adopt, convert, merge, option,
                              run_config)
from ticketlab.data import DataBundle, examples_seen, iters_per_epoch
from ticketlab.errors import ConfigError
from ticketlab.io import load_torch
from ticketlab.method import Flag, Method, register_method
from ticketlab.method_help import METHOD_HELP
from ticketlab.methods.experiment import masked, save_mask, with_summary_extra
from ticketlab.methods.lottery import Lottery, LotteryConfig, LotteryRunConfig
from ticketlab.methods.prac.record import EarlyBird, ExampleRecord, SaveWeightsAt, critical_set, forgetting_counts
from ticketlab.presets import cifar_config, get_preset, register_preset
from ticketlab.runs import SUMMARY, ensure
from ticketlab.sparsity import Mask
from ticketlab.steps import Steps
from ticketlab.train import predict, weights_path


@dataclass(frozen=True)
class PracConfig(Section):
    eb_eps: float = option(0.08, "early bird: stop a round once the last 5 mask distances are all below this "
                                 "[eb_eps]", within="(0, 1]")
    early_bird: bool = option(True, "stop rounds early when the would-be mask stabilises")
    queue: int = option(5, "early bird: distances in the FIFO [queue_length]", within="[1, 1000]")
    warmup: int = option(0, "early bird: epochs before distances count [warmup]", within="[0, inf)")
    selection: Literal["forgotten", "top"] = option(
        "forgotten", "forgotten: every example forgotten more than threshold times; top: the most forgotten "
                     "int(N (1 - data_rate)^k) [data_prune zero_out | constent]")
    threshold: int = option(0, "forgotten: the forgetting count an example must exceed [threshold]", within="[0, inf)")
    data_rate: float = option(0.2, "top: the fraction dropped per round [data_rate]", within="[0, 1)")
    disagreement: bool = option(True, "add the examples the dense model and the last ticket predict differently")
    evaluate: Literal["last", "all", "none"] = option("last", "retrain found tickets on the full split with the "
                                                              "standard schedule (main_train.py)")


PracRunConfig = run_config("prac", lottery=LotteryConfig, prac=PracConfig)


def scaled_schedule(train: TrainConfig, rho: float) -> TrainConfig:
    """Epochs, milestones and warm-up (in epochs) times ``rho``, truncated as the reference does, never to 0."""
    def scale(steps: Steps) -> Steps:
        return Steps(max(1, int(steps.ep * rho))) if not steps.is_zero else steps

    return replace(train, steps=scale(train.steps), milestones=tuple(scale(m) for m in train.milestones),
                   warmup=Steps(int(train.warmup.ep * rho)) if not train.warmup.is_zero else train.warmup)


@dataclass
class PracRun(Lottery):
    @property
    def mode(self) -> str:
        return "prac"

    @property
    def prac(self) -> PracConfig:
        return self.config.prac

    def validate(self) -> None:
        train = self.config.train
        if train.steps.it or any(m.it for m in train.milestones) or train.warmup.it:
            raise ConfigError("prac scales whole epochs: give --train.steps, --train.milestones and --train.warmup "
                              "in epochs")
        if self.prac.disagreement and train.keep_weights != "all":
            raise ConfigError("prac.disagreement compares the best-validation weights of the dense model and the "
                              "ticket, so it needs them kept: drop --train.keep-weights final, or give --prac.disagreement false")
        if self.config.lottery.retrain not in ("rewind",):
            raise ConfigError("prac rewinds every round to the rewind point (--retrain rewind, with --rewind 0 or "
                              "a step); other retrain modes do not apply")
        super().validate()

    # -- a round's data, schedule and mask --------------------------------------------------------------
    def positions(self, level: int) -> torch.Tensor:
        """Full-split positions of round ``level``'s training examples."""
        n = len(self.data.train)
        if level == 0:
            return torch.arange(n)
        return ensure(self.level_dir(level - 1) / "critical.pt", lambda: self.critical(level - 1))

    def round_data(self, level: int) -> Tuple[DataBundle, torch.Tensor]:
        positions = self.positions(level)
        if len(positions) == len(self.data.train):
            return self.data, positions
        return self.data.subset(positions), positions

    def level_schedule(self, level: int) -> tuple:
        if level == 0:  # the full schedule from step 0: round 0 is also where the rewind point is taken
            return self.config.train, 0
        rho = len(self.positions(level)) / len(self.data.train)
        return scaled_schedule(self.config.train, rho), 0

    def start_weights(self, level: int) -> Dict[str, torch.Tensor]:
        return self.initial_weights() if level == 0 else self.rewind_weights()

    def rewind_weights(self) -> Dict[str, torch.Tensor]:
        """The initialisation, or the weights round 0 had after ``lottery.rewind`` steps."""
        if self.rewind_step == 0:
            return self.initial_weights()
        self.train_level(0)
        return load_torch(self.level_dir(0) / "rewind.pt")

    def level_mask(self, level: int) -> Mask:
        def make() -> Mask:
            if level == 0:
                return Mask.ones(self.make_model(0), include_output=True)
            early = self.level_dir(level - 1) / "eb_mask.pt"
            self.train_level(level - 1)
            if early.exists():
                return Mask.load(early)
            return self.prune_to(level, self.final_weights(level - 1), self.level_mask(level - 1))

        return ensure(self.level_dir(level) / "mask.pt", make, save=save_mask, load=Mask.load)

    def critical(self, level: int) -> torch.Tensor:
        """The critical set round ``level`` leaves for the next one (module docstring)."""
        counts = forgetting_counts(load_torch(self.level_dir(level) / "record.pt"))
        n = len(self.data.train)
        keep = int(n * (1 - self.prac.data_rate) ** (level + 1)) if self.prac.selection == "top" else None
        disagree = None
        if self.prac.disagreement and level >= 1:
            dense, ticket = (self.model_with(load_torch(weights_path(self.level_dir(k), "best"))) for k in (0, level))
            disagree = (predict(dense, self.data.train) != predict(ticket, self.data.train)).cpu()
        chosen = critical_set(counts.cpu(), self.prac.threshold, keep, disagree)
        return chosen if len(chosen) else torch.arange(n)

    # -- the round --------------------------------------------------------------------------------------
    def train_level(self, level: int) -> Dict[str, Any]:
        out = self.level_dir(level)
        mask = self.level_mask(level)
        data, positions = self.round_data(level)
        cfg, start_step = self.level_schedule(level)
        ipe = iters_per_epoch(len(data.train), cfg.batch_size)
        epochs = -(-cfg.steps.to_iters(ipe) // ipe) - start_step // ipe
        callbacks = [ExampleRecord(positions, len(self.data.train), epochs, out / "record.pt")]
        if level == 0 and self.rewind_step:
            callbacks.append(SaveWeightsAt(self.rewind_step, out / "rewind.pt"))
        if self.prac.early_bird:
            candidate = lambda weights: self.prune_to(level + 1, weights, mask)  # noqa: E731
            callbacks.append(EarlyBird(candidate, mask.num_kept(), self.prac.eb_eps, self.prac.queue,
                                       self.prac.warmup, out / "eb_mask.pt"))
        extra = self.phase_extra(level, mask)
        summary = self.train_phase(out, self._train_start(level), mask, cfg, order_seed=self.config.order_seed, extra=extra,
                                   callbacks=callbacks, start_step=start_step, data=data)
        cost = {"subset_size": len(positions), "epochs": cfg.steps.ep,
                "examples_seen": examples_seen(len(data.train), cfg.batch_size, start_step, summary["steps"]),
                "subset_fallback": level > 0 and len(positions) == len(self.data.train)}
        return with_summary_extra(out, summary, cost)

    def evaluate_ticket(self, level: int) -> Dict[str, Any]:
        """The ticket of ``level`` trained again on the full split with the standard schedule."""
        mask = self.level_mask(level)
        out = self.level_dir(level) / "evaluate"
        extra = self.phase_extra(level, mask, branch="evaluate")
        return self.train_phase(out, lambda: masked(self.rewind_weights(), mask), mask, self.config.train,
                                order_seed=self.config.order_seed, extra=extra)

    def evaluated(self, levels: int) -> List[int]:
        """The levels whose tickets a run of levels 0..``levels`` evaluates (``prac.evaluate``)."""
        return {"last": [levels], "all": list(range(levels + 1)), "none": []}[self.prac.evaluate]

    def is_finished(self) -> bool:
        return super().is_finished() and all((self.level_dir(k) / "evaluate" / SUMMARY).exists()
                                             for k in self.evaluated(self.levels))

    def run(self, levels: int) -> List[Dict[str, Any]]:
        summaries = self.phases("level", range(levels + 1), self.level_dir,
                                self.train_level)
        for level in self.evaluated(levels):
            self.evaluate_ticket(level)
        return summaries


@runlock.session()
def run_prac(config: RunConfig, levels: int, ctx) -> tuple:
    """PrAC levels 0..``levels``; returns (run path, level summaries)."""
    if levels < 0:
        raise ConfigError(f"--levels must be 0 or more, got {levels}")
    run = PracRun.open(adopt(config, PracRunConfig), ctx, levels=levels)
    return run.path, run.run(levels)


def _cli_run(config: RunConfig, options: Dict[str, Any], ctx) -> Path:
    return run_prac(config, options["levels"], ctx)[0]


# PrAC's README, CIFAR-10 ResNet-20 (option A): SGD 0.1, momentum 0.9, wd 1e-4, batch 128, 182 epochs x0.1 at
# 91 and 136; global magnitude pruning of 20% a round over the conv weights only (the classifier dense and
# out of the count); rewinding to the weights after 3 epochs (rewind_epoch 2); early bird at eps 0.08. Run
# with --levels 15 (16 prunings). The vanilla IMP baseline of the same command is cifar10_resnet20_prac_imp.
_IMP = replace(convert(cifar_config("cifar10", ModelConfig(name="resnet20"), 182, (91, 136), 1e-4, output_rate=0.0),
                       LotteryRunConfig), lottery=LotteryConfig(rewind=Steps(3)))
register_preset("cifar10_resnet20_prac_imp", _IMP)
# CPU: LeNet-300-100 on MNIST (the classifier dense, as OpenLTH), SGD 0.1 momentum 0.9, wd 1e-4, 20 epochs x0.1
# at 10 and 15, rewinding to the end of the first epoch; and the MNIST-1D CNN with its own recipe.
_LENET = merge(convert(get_preset("mnist_lenet_300_100"), PracRunConfig), {
    "train": {"steps": "20ep", "momentum": 0.9, "weight_decay": 1e-4, "schedule": "multistep",
              "milestones": "10ep,15ep"}, "lottery": {"rewind": "1ep"}})
PRESETS = {"cifar10_resnet20_prac": convert(_IMP, PracRunConfig), "mnist_lenet_300_100_prac": _LENET,
           "mnist1d_cnn_prac": merge(convert(get_preset("mnist1d_cnn"), PracRunConfig),
                                     {"train": {"steps": "40ep", "schedule": "multistep", "milestones": "20ep,30ep"},
                                      "prune": {"output_rate": 0.0}})}

register_method(Method(
    name="prac", config=PracRunConfig, run=_cli_run, presets=PRESETS, distributed=False,
    help=METHOD_HELP["prac"],
    flags=(Flag("--levels", "prune N times (levels 0..N), as ticketlab lottery", default=1, type=int, metavar="N"),
           Flag("--rewind", "rewind step, e.g. 3ep (same as --lottery.rewind)", field="lottery.rewind",
                metavar="STEPS"))))

__all__ = ["PracConfig", "PracRunConfig", "PracRun", "run_prac", "scaled_schedule"]
