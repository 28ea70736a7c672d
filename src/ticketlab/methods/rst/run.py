"""`ticketlab rst`: DLTH's Random Sparse network Transformation (RST) and its baselines, as phases over the trainer.

The variant is the run's ``method`` (``--variant``); C = ``rst.num_cycles`` for the iterative ones, else 1.
In cycle c every layer's pruned fraction is ``1 - (1 - p)^(c/C)`` of its target p (`sparsity.ratios`).

- ``rst``: from the base weights (the random initialisation by default, as DLTH's README), pick the pruned
  set (``rst.pick_pruned``; ``rand`` is the paper's random sparse network), run the regularisation phase
  (`rst_reg`: SGD at ``lr_prune``, batch ``batch_size_prune``, a growing L2 penalty on the pruned set, then
  stabilisation), zero the set and train the sparse network with ``train`` (e.g. the piecewise schedule).
- ``rst-iter``: C regularisation phases, each with fresh coefficients and optimizer, the pruned set growing
  (nested); ``weight_delete`` zeroes each cycle's set and keeps it at 0 in the next phase; ``iter_finetune``
  trains ``steps_mini`` under the mask after every cycle but the last.
- ``l1``: prune the base weights by the pick (``min``: magnitude; with base ``init`` magnitude at
  initialisation, with ``rand`` a random mask trained from scratch) and train. ``l1-iter``: C prunings of
  the current weights with ``steps_mini`` of fine-tuning between them. ``l1-lth``: each cycle trains the
  base weights under the last mask for ``steps_mini``, prunes them, and resets to the base (IMP rewinding
  to initialisation); the last mask on the base weights is the ticket.

Files (DLTH's checkpoint names in brackets); each phase is skipped when its output exists, and a phase with
a ``checkpoint.pt`` resumes from it, bit-identically:

    init.pt                 the initialisation [checkpoint_init]; dense/ the dense training of base=trained
    cycle_<c>/mask.pt       the cycle's mask (True = kept; drawn before the cycle's training), ratios.json
    cycle_<c>/reg/          rst: the regularisation phase; its update_done.pt [just_finished_update_reg]
    cycle_<c>/train/        training inside the cycle (l1-lth before pruning, l1-iter / rst-iter after)
    cycle_<c>/pruned.pt     the weights just pruned; prune.json: their losses before / after [just_finished_prune]
    level_<C>/              the sparse network's training [checkpoint.pt, checkpoint_best: best.pt, final.pt]
    summary.json            the level's summary with per-cycle figures and last-N statistics
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ticketlab import runlock
from ticketlab.config import RunConfig, TrainConfig, adopt
from ticketlab.data import iters_per_epoch
from ticketlab.errors import CheckpointError, ConfigError
from ticketlab.io import load_torch, write_json
from ticketlab.methods.experiment import Experiment, Weights, masked, save_mask
from ticketlab.methods.rst.config import ITERATIVE, VARIANTS, RSTRunConfig
from ticketlab.methods.rst.ratios import choose_pruned, cumulative_ratio, pruned_count, pruned_fractions
from ticketlab.methods.rst.reg import GrowingPenalty, expected_updates, phase_bound
from ticketlab.runs import SUMMARY, ensure, save_json
from ticketlab.runfiles import REBUILD, TRAINER_KEYS, read_object, read_summary
from ticketlab.sparsity import Mask, prunable_parameters
from ticketlab.status import note, phase
from ticketlab.steps import Steps
from ticketlab.train import FINAL, evaluate, read_metrics


@dataclass
class RSTRun(Experiment):
    """One `ticketlab rst` run: config, data, model factory and run directory."""

    def __post_init__(self):
        self.rst, self.variant = self.config.rst, self.config.method
        self.cycles = self.rst.num_cycles if self.variant in ITERATIVE else 1
        template = self.make_model(0)
        self.names = list(prunable_parameters(template))
        self.targets = pruned_fractions(template, stage_ratios=self.rst.stage_ratios,
                                        layer_ratios=self.rst.layer_ratios, ratio_globs=self.rst.ratio_globs)

    def validate(self) -> None:
        variant, rst = self.variant, self.rst
        if variant != "l1" and not any(self.targets.values()):
            raise ConfigError(f"--variant {variant} needs fractions to prune: --rst.stage_ratios, "
                              "--rst.layer_ratios or --rst.ratio_globs")
        if variant in ("rst", "rst-iter"):  # refuses a granularity too small to pass the ceiling
            expected_updates(rst.reg_granularity, rst.reg_upper_limit, rst.reg_schedule)
            self.check_batch_size("rst.batch_size_prune", rst.batch_size_prune)
        if rst.base not in ("init", "trained"):
            load_base(rst.base, self.make_model(0).state_dict())
        super().validate()

    def cycle_dir(self, c: int) -> Path:
        return self.path / f"cycle_{c}"

    def level_dir(self) -> Path:
        return self.path / f"level_{self.cycles}"

    # -- the run ----------------------------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        """Train the sparse network (its summary carries the report row), then the run's own summary."""
        if (self.path / SUMMARY).exists():
            note(f"{self.path.name} already finished", self.progress)
        mask = self.mask(self.cycles)
        density = mask.density()
        extra = {"level": self.cycles, "mode": self.variant, "ticket_density": density,
                 "row": self.row(variant=self.variant, level=self.cycles, density=density)}
        level = self.fit(self.level_dir(), lambda: self.pruned(self.cycles), mask, self.config.train,
                         self.config.order_seed, extra)

        def summarise() -> Dict[str, Any]:
            return {**{k: v for k, v in level.items() if k != "row"}, "variant": self.variant,
                    "cycles": [self.cycle_info(c) for c in range(1, self.cycles + 1)],
                    **last_n_statistics(self.level_dir(), self.rst.last_n)}

        return ensure(self.path / SUMMARY, summarise, save=save_json, load=lambda p: read_summary(p, fix=REBUILD))

    def cycle_info(self, c: int) -> Dict[str, Any]:
        self.pruned(c)  # writes prune.json (an intermediate cycle of rst-iter may hand on unpruned weights)
        folder = self.cycle_dir(c)
        remake = "delete it and {} and run the same command again to make both again"  # side files of those
        return {"cycle": c, **read_object(folder / "prune.json", fix=remake.format(folder / "pruned.pt")),
                "layers": read_object(folder / "ratios.json", fix=remake.format(folder / "mask.pt"))}

    # -- weights ----------------------------------------------------------------------------------------
    def base_weights(self) -> Weights:
        base = self.rst.base
        if base == "init":
            return self.initial_weights()
        if base == "trained":
            return self.fit(self.path / "dense", self.initial_weights(), None, self.config.train,
                            self.config.order_seed, {"phase": "dense"}, weights=True)
        return load_base(base, self.initial_weights())

    def start(self, c: int) -> Weights:
        """The weights cycle c starts from."""
        return self.base_weights() if c == 1 else self.end(c - 1)

    def end(self, c: int) -> Weights:
        """The weights cycle c hands on to the next one."""
        if self.variant in ("rst", "rst-iter"):
            if self.rst.iter_finetune and c < self.cycles:
                return self.cycle_training(c)
            return self.pruned(c) if self.rst.weight_delete else self.regularised(c)
        if self.variant == "l1-lth" or c == self.cycles or self.rst.steps_mini.is_zero:
            return self.pruned(c)
        return self.cycle_training(c)

    def scored(self, c: int) -> Weights:
        """The weights cycle c's pruned set is chosen from (l1-lth: after the cycle's training)."""
        return self.cycle_training(c) if self.variant == "l1-lth" else self.start(c)

    def source(self, c: int) -> Weights:
        """The weights the cycle's mask is applied to."""
        if self.variant in ("rst", "rst-iter"):
            return self.regularised(c)
        return self.base_weights() if self.variant == "l1-lth" else self.start(c)

    # -- phases -----------------------------------------------------------------------------------------
    def mask(self, c: int) -> Mask:
        """Cycle c's mask (its ``ratios.json`` beside it), drawn before the cycle's training."""
        def make() -> Mask:
            previous = self.mask(c - 1) if c > 1 else None
            ratios = {k: cumulative_ratio(r, c, self.cycles) for k, r in self.targets.items()}
            seed = self.config.derived_seed(f"pick{c}:{self.config.prune_seed}")
            scored = self.scored(c)
            mask = choose_pruned({k: scored[k] for k in self.names}, ratios, self.rst.pick_pruned,
                                 generator=torch.Generator().manual_seed(seed), previous=previous)
            layers = {k: {"ratio": ratios[k], "pruned": pruned_count(ratios[k], mask[k].numel()),
                          "total": mask[k].numel(), "density": int(mask[k].sum()) / mask[k].numel()}
                      for k in self.names}
            write_json(self.cycle_dir(c) / "ratios.json", layers)
            return mask

        return ensure(self.cycle_dir(c) / "mask.pt", make, save=save_mask, load=Mask.load)

    def regularised(self, c: int) -> Weights:
        """Cycle c's regularisation phase (rst, rst-iter); returns the weights at its end."""
        out, rst, mask = self.cycle_dir(c) / "reg", self.rst, self.mask(c)
        stabilize = rst.stabilize_reg_interval.to_iters(iters_per_epoch(len(self.data.train), rst.batch_size_prune))
        bound = phase_bound(rst.reg_granularity, rst.reg_upper_limit, rst.reg_schedule, rst.update_reg_interval,
                            stabilize)  # the penalty ends the phase t_s + stabilize + 1 steps in
        cfg = replace(self.config.train, optimizer="sgd", lr=rst.lr_prune, batch_size=rst.batch_size_prune,
                      steps=Steps(0, bound), schedule="constant", milestones=(), warmup=Steps(), nesterov=False,
                      eval_every=rst.test_interval, checkpoint_every=rst.save_interval)
        penalty = GrowingPenalty(mask, granularity=rst.reg_granularity, ceiling=rst.reg_upper_limit,
                                 interval=rst.update_reg_interval, schedule=rst.reg_schedule,
                                 block_loss_grad=rst.block_loss_grad, stabilize=stabilize,
                                 milestone=out / "update_done.pt")
        keep_zero = self.mask(c - 1) if rst.weight_delete and c > 1 else None
        extra = {"phase": "regularisation", "cycle": c}
        return self.fit(out, lambda: self.start(c), keep_zero, cfg, self.config.derived_seed(f"reg{c}"), extra,
                        [penalty], weights=True)

    def cycle_training(self, c: int) -> Weights:
        """Training inside cycle c: before pruning for l1-lth (under the last mask), after it otherwise."""
        if self.variant == "l1-lth":
            mask = self.mask(c - 1) if c > 1 else None
            start = self.pruned(c - 1) if c > 1 else self.base_weights()
        else:
            mask, start = self.mask(c), self.pruned(c)
        cfg = mini_config(self.config.train, self.rst)
        return self.fit(self.cycle_dir(c) / "train", start, mask, cfg, self.config.derived_seed(f"mini{c}"),
                        {"phase": "cycle-training", "cycle": c}, weights=True)

    def pruned(self, c: int) -> Weights:
        """The weights just pruned in cycle c; writes prune.json (losses before / after, largest pruned |w|)."""
        def make() -> Weights:
            mask, source = self.mask(c), self.source(c)
            after = masked(source, mask)
            dropped = [source[k][~mask[k]].abs() for k in self.names if not bool(mask[k].all())]
            info = {"density": mask.density(), "pruned_max_abs": float(max((d.max() for d in dropped), default=0.0)),
                    "before": self.losses(source), "after": self.losses(after)}
            if self.variant in ("rst", "rst-iter"):
                reg = read_summary(self.cycle_dir(c) / "reg" / SUMMARY, ("switch_step", *TRAINER_KEYS))
                info["switch_step"], info["reg_steps"] = reg["switch_step"], reg["steps"]
            write_json(self.cycle_dir(c) / "prune.json", info)
            return after

        return ensure(self.cycle_dir(c) / "pruned.pt", make)

    def losses(self, weights: Weights) -> Dict[str, Dict[str, float]]:
        model = self.model_with(weights)
        return {name: evaluate(model, split.x, split.y) for name, split in
                (("train", self.data.train), ("test", self.data.test))}

    # -- the trainer ------------------------------------------------------------------------------------
    def fit(self, out: Path, start: Weights, mask: Optional[Mask], cfg: TrainConfig, order_seed: int,
            extra: Dict[str, Any], callbacks=(), weights: bool = False):
        """Train into ``out`` (skipped when finished); returns the summary, or the final weights."""
        cycle = extra.get("cycle")
        where = ((f"cycle {cycle} of {self.cycles}", cycle - 1) if cycle else ("dense training", 0)
                 if out.name == "dense" else (f"final training after {self.cycles} cycle(s)", self.cycles))
        with phase(*where, self.cycles + 1):  # the bars say where the run is, and an overall ETA
            summary = self.train_phase(out, start, mask, cfg, order_seed=order_seed, extra=extra,
                                       callbacks=callbacks)
        return load_torch(out / FINAL) if weights else summary


def mini_config(train: TrainConfig, rst) -> TrainConfig:
    """In-cycle training: ``steps_mini`` with the piecewise ``lr_ft_mini`` (or constant ``train.lr``)."""
    schedule = "piecewise" if rst.lr_ft_mini else "constant"
    return replace(train, steps=rst.steps_mini, schedule=schedule, piecewise=rst.lr_ft_mini, milestones=(),
                   warmup=Steps())


def load_base(path: str, like: Weights) -> Weights:
    """A state-dict file to prune (``rst.base``), checked against the model's keys and shapes."""
    if not Path(path).is_file():
        raise ConfigError(f"rst.base={path!r} is neither init, trained nor an existing state-dict file")
    weights = load_torch(path, fix="pass an intact state-dict file as rst.base")
    if isinstance(weights, dict) and "model" in weights and isinstance(weights["model"], dict):
        weights = weights["model"]  # a trainer checkpoint
    bad = not isinstance(weights, dict) or set(weights) != set(like) or any(
        tuple(weights[k].shape) != tuple(v.shape) for k, v in like.items())
    if bad:
        raise CheckpointError(f"{path} does not hold this model's weights; pass a final.pt of a run of the same model")
    return weights


def last_n_statistics(level: Path, n: int) -> Dict[str, Any]:
    """Mean and (population) std of the last ``n`` test accuracies, and the best one (DLTH's headline: model
    selection on the test set); the evaluation before training is left out."""
    accuracies = [r["accuracy"] for r in read_metrics(level / "metrics.jsonl") if r["split"] == "test" and r["step"]]
    last = accuracies[-n:]
    return {"last_n": len(last), "last_n_test_mean": statistics.fmean(last) if last else None,
            "last_n_test_std": statistics.pstdev(last) if last else None,
            "best_test_accuracy": max(accuracies) if accuracies else None}


def check_rst(config: RunConfig) -> None:
    """Refuse a bad `ticketlab rst` config before any work (ratios are checked when the run is built)."""
    rst, variant = config.rst, config.method
    if variant not in VARIANTS:
        raise ConfigError(f"unknown rst variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    if variant in ITERATIVE and rst.num_cycles < 1:
        raise ConfigError(f"--variant {variant} needs --rst.num_cycles >= 1 (DLTH's README uses 5)")
    if variant not in ITERATIVE and rst.num_cycles:
        raise ConfigError(f"rst.num_cycles applies to rst-iter, l1-iter and l1-lth, not {variant}; drop it or "
                          "pick an iterative --variant")
    if rst.steps_mini.is_zero and (variant == "l1-lth" or (variant == "rst-iter" and rst.iter_finetune)):
        raise ConfigError(f"--variant {variant} trains inside every cycle: set --rst.steps_mini, e.g. 10ep")
    if (rst.weight_delete or rst.iter_finetune) and variant != "rst-iter":
        raise ConfigError("rst.weight_delete and rst.iter_finetune apply to --variant rst-iter only")


def open_rst(config: RunConfig, ctx) -> RSTRun:
    """Load the data, check the config, open (or create) the run directory."""
    config = adopt(config, RSTRunConfig)
    check_rst(config)
    return RSTRun.open(config, ctx)


@runlock.session()
def run_rst(config: RunConfig, ctx) -> tuple:
    """Run one `ticketlab rst` experiment; returns (run path, summary)."""
    run = open_rst(config, ctx)
    return run.path, run.run()


__all__ = ["RSTRun", "open_rst", "run_rst", "check_rst", "mini_config", "last_n_statistics"]
