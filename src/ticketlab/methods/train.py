"""`ticketlab train`: train one model, dense or under a fixed mask chosen at initialisation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from ticketlab import runlock
from ticketlab.config import RunConfig, adopt
from ticketlab.runfiles import TRAINER_KEYS, read_summary
from ticketlab.method import Method, register_method
from ticketlab.method_help import METHOD_HELP
from ticketlab.methods.context import RunContext
from ticketlab.methods.experiment import Experiment, prune_options, save_mask, scoring_batch
from ticketlab.runs import SUMMARY, RunDir, ensure
from ticketlab.sparsity import Mask, prune

MASK = "mask.pt"


@dataclass
class TrainRun(Experiment):
    """One training run; with ``prune.density < 1`` (or explicit layer densities) under a mask chosen at
    initialisation by ``prune.criterion`` and ``prune.scope``."""

    def validate(self) -> None:
        super().validate()  # the model: bad model settings fail here
        self.initial_mask()  # bad prune settings here

    @property
    def sparse(self) -> bool:
        p = self.config.prune
        return p.density < 1.0 or bool(p.layer_density)

    def initial_mask(self) -> Optional[Mask]:
        """The mask of a sparse run, computed from the initialisation (None for a dense run)."""
        if not self.sparse:
            return None
        config, p = self.config, self.config.prune
        model = self.initial_model()  # pruned at initialisation, or at --model.weights
        batch = scoring_batch(self.data, config.prune_seed, config.train.batch_size) \
            if p.criterion == "gradient" else None
        generator = torch.Generator().manual_seed(config.prune_seed)
        return prune(model, p.density, batch=batch, generator=generator, **prune_options(p, model))

    def run(self) -> Dict[str, Any]:
        mask = ensure(self.path / MASK, self.initial_mask, save=save_mask, load=Mask.load) if self.sparse else None
        density = mask.density() if mask is not None else 1.0
        extra = {"row": self.row(variant="train", level=0, density=density)}
        return self.train_phase(self.path, self.fresh_initial_weights, mask, self.config.train,
                                order_seed=self.config.order_seed, extra=extra)


@runlock.session()
def run_train(config: RunConfig, ctx: Optional[RunContext] = None) -> Tuple[RunDir, Dict[str, Any]]:
    """Train ``config`` (or return the finished run); returns (run directory, summary). Another command's
    config is taken by its core sections if its own are at their defaults, else refused (`adopt`)."""
    config = adopt(config, RunConfig)
    run = TrainRun.open(config, ctx or RunContext())
    summary = run.run()
    return RunDir(run.path, config), summary


def format_summary(summary: Dict[str, Any]) -> str:
    """The table `ticketlab train` prints: validation and test accuracy and loss, test at best validation."""
    from ticketlab.analysis.table import render_table

    def pct(value):
        return "-" if value is None else f"{100 * value:.2f}"

    final = summary.get("final", {})
    rows = [[split, pct(final.get(split, {}).get("accuracy")), f"{final[split]['loss']:.4f}" if split in final else "-"]
            for split in ("val", "test") if split in final]
    rows.append(["test @ best val", pct(summary.get("test_accuracy_at_best_val")), "-"])
    table = render_table(["split", "accuracy %", "loss"], rows)
    return (f"{table}\ndensity {100 * summary['density']:.2f}%, {summary['steps']} steps, "
            f"{summary['train_seconds']:.1f} s")


def _cli_run(config: RunConfig, options: Dict[str, Any], ctx: RunContext) -> Path:
    return run_train(config, ctx)[0].path


register_method(Method(
    name="train", help=METHOD_HELP["train"], config=RunConfig,
    run=_cli_run, show=lambda path: format_summary(read_summary(path / SUMMARY, TRAINER_KEYS))))
