"""`ticketlab branch`: ablations on a finished lottery trunk, stored under each level.

Each branch is a function ``(lottery, branch, level) -> Plan`` registered in `BRANCHES`; the shared
`run_branch` writes the plan's mask and start weights, then trains with the trunk's `Lottery.fit`.

- ``retrain`` (re-dense): the level's ticket from its start weights; at ``branch.regain`` the mask becomes
  all ones and the pruned weights train from exactly 0 with fresh optimizer state until ``branch.steps``;
- ``reinit``: the level's mask on a new initialisation, main schedule from the trunk's start step;
- ``random-prune``: the level's per-layer (or global) count at random positions, from the rewind point;
- ``oneshot``: the level-0 dense model pruned once to the level's density, retrained as the trunk does;
- ``reorder``: the level trained again, same start weights and mask, on another data order (seeded by
  ``branch.seed``): the second copy of Frankle et al.'s instability analysis (``ticketlab lmc``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence

import torch

from ticketlab import runlock
from ticketlab.config import RunConfig, Section, TrainConfig, content_hash, convert, option, run_config, to_jsonable
from ticketlab.errors import ConfigError
from ticketlab.io import load_torch, read_json
from ticketlab.method import Flag, Method, register_method
from ticketlab.method_help import METHOD_HELP
from ticketlab.methods.experiment import masked, save_mask, trainer_summary, with_summary_extra
from ticketlab.methods.lottery import TRUNK_FLAGS, Lottery, LotteryConfig, LotteryRunConfig, open_lottery
from ticketlab.registry import Registry
from ticketlab.runs import CONFIG, START, SUMMARY, ensure, save_json
from ticketlab.sparsity import Mask, select_topk
from ticketlab.steps import Steps
from ticketlab.train import Callback

BRANCHES: Registry = Registry("branch")


@dataclass(frozen=True)
class BranchConfig(Section):
    """An ablation on a finished lottery trunk; names the branch directory, not the trunk."""

    name: Literal["retrain", "reinit", "random-prune", "oneshot", "reorder"] = option("reinit", "which ablation")
    regain: Steps = option(Steps(), "retrain: step at which pruned weights become trainable (0: train.steps)")
    steps: Steps = option(Steps(), "retrain: total training length (0: twice train.steps)")
    layerwise: bool = option(True, "random-prune: keep each layer's count (false: only the global count)")
    seed: Optional[int] = option(None, "seed of the branch's new initialisation or random mask (default: derived)")


# The branch command holds the trunk's sections and its own; the trunk's run is the config without `branch`.
BranchRunConfig = run_config("branch", variants=("lottery",), lottery=LotteryConfig, branch=BranchConfig)


def branch_hash(branch: BranchConfig) -> str:
    return content_hash(branch, 8)


def trunk_config(config: RunConfig) -> RunConfig:
    """The lottery run a branch config's branches live in."""
    return convert(config, LotteryRunConfig)


@dataclass
class Plan:
    mask: Mask
    start: Dict[str, torch.Tensor]
    cfg: TrainConfig
    start_step: int
    callbacks: List[Callback] = field(default_factory=list)
    order_seed: Optional[int] = None  # None: the trunk's data order


def branch_dir(lottery: Lottery, branch: BranchConfig, level: int) -> Path:
    return lottery.level_dir(level) / f"branch_{branch.name}_{branch_hash(branch)}"


def check_levels(lottery: Lottery, levels: Sequence[int]) -> None:
    """Every requested level must be a finished trunk level (checked before any work)."""
    missing = [k for k in levels if not (lottery.level_dir(k) / SUMMARY).exists()]
    if missing:
        raise ConfigError(f"trunk levels {missing} of {lottery.path} are not finished; run `ticketlab lottery` with the "
                          f"same flags and --levels {max(missing)} first")


def run_branch(lottery: Lottery, branch: BranchConfig, level: int, plan: Optional[Plan] = None) -> Dict[str, Any]:
    """Train ``branch`` at ``level`` (its plan is made first, so bad settings fail before anything is written)."""
    out = branch_dir(lottery, branch, level)
    if (out / SUMMARY).exists():
        extra = branch_extra(lottery, branch, level, Mask.load(out / "mask.pt"))
        return with_summary_extra(out, trainer_summary(out / SUMMARY), extra)
    plan = plan or BRANCHES.get(branch.name)(lottery, branch, level)
    ensure(out / "branch.json", lambda: to_jsonable(branch), save=save_json, load=read_json)

    mask = ensure(out / "mask.pt", lambda: plan.mask, save=save_mask, load=Mask.load)
    start = lambda: ensure(out / START, lambda: masked(plan.start, mask))  # noqa: E731
    return lottery.fit(out, start, mask, plan.cfg, plan.start_step,
                       branch_extra(lottery, branch, level, mask), plan.callbacks, order_seed=plan.order_seed)


def branch_extra(lottery: Lottery, branch: BranchConfig, level: int, mask: Mask) -> Dict[str, Any]:
    options = {k: v for k, v in to_jsonable(branch).items() if k not in ("name", "seed")}
    return lottery.phase_extra(level, mask, branch=branch.name, branch_options=options)


def _seed(lottery: Lottery, branch: BranchConfig, level: int) -> int:
    base = branch.seed if branch.seed is not None else lottery.config.init_seed
    return lottery.seed(f"branch-{branch.name}:{level}", base)


def _main_schedule(lottery: Lottery):
    mode = lottery.config.lottery.retrain
    return lottery.config.train, (lottery.rewind_step if mode in ("rewind", "lr-rewind") else 0)


@BRANCHES.register(name="reinit")
def reinit(lottery: Lottery, branch: BranchConfig, level: int) -> Plan:
    cfg, start_step = _main_schedule(lottery)
    fresh = lottery.make_model(_seed(lottery, branch, level)).state_dict()
    return Plan(lottery.level_mask(level), fresh, cfg, start_step)


@BRANCHES.register(name="random-prune")
def random_prune(lottery: Lottery, branch: BranchConfig, level: int) -> Plan:
    ticket = lottery.level_mask(level)
    generator = torch.Generator().manual_seed(_seed(lottery, branch, level))
    scores = {name: torch.rand(keep.shape, generator=generator) for name, keep in ticket.items()}
    counts = {name: int(keep.sum()) for name, keep in ticket.items()}
    kept = select_topk(scores, counts if branch.layerwise else sum(counts.values()))
    cfg, start_step = _main_schedule(lottery)
    return Plan(Mask(kept), lottery.rewind_weights(), cfg, start_step)


class RegainDense(Callback):
    """At step ``at`` make every weight trainable again: the mask becomes all ones (regrown weights at 0)."""

    def __init__(self, at: int):
        self.at = at

    def _regain(self, state) -> None:
        enforcer = state.trainer.enforcer
        if enforcer is not None and state.step >= self.at and enforcer.mask.num_kept() < enforcer.mask.num_total():
            enforcer.set_mask(Mask({k: torch.ones_like(v) for k, v in enforcer.mask.items()}), state.optimizer)

    on_train_start = after_step = _regain


@BRANCHES.register(name="retrain")
def retrain(lottery: Lottery, branch: BranchConfig, level: int) -> Plan:
    train = lottery.config.train
    total = branch.steps if not branch.steps.is_zero else Steps(2 * train.steps.ep, 2 * train.steps.it)
    regain = (branch.regain if not branch.regain.is_zero else train.steps).to_iters(lottery.ipe)
    cfg = replace(train, steps=total)
    _, start_step = lottery.level_schedule(level)
    if not start_step <= regain <= cfg.steps.to_iters(lottery.ipe):
        raise ConfigError(f"branch.regain ({branch.regain or train.steps}) must lie between the level's start step "
                          f"({start_step} it) and branch.steps ({total}); choose a regain step within the training")
    return Plan(lottery.level_mask(level), lottery.level_start(level), cfg, start_step, [RegainDense(regain)])


@BRANCHES.register(name="reorder")
def reorder(lottery: Lottery, branch: BranchConfig, level: int) -> Plan:
    """The level trained again from its own start weights and mask on another data order: its final
    weights and the level's are the pair of Frankle et al.'s instability analysis (`ticketlab lmc`)."""
    cfg, start_step = lottery.level_schedule(level)
    return Plan(lottery.level_mask(level), lottery.level_start(level), cfg, start_step,
                order_seed=_seed(lottery, branch, level))


@BRANCHES.register(name="oneshot")
def oneshot(lottery: Lottery, branch: BranchConfig, level: int) -> Plan:
    dense_final = lottery.final_weights(0)
    mask = lottery.prune_to(level, dense_final, None)
    mode = lottery.config.lottery.retrain
    if mode == "rewind":
        start = lottery.rewind_weights()
    elif mode == "scratch":
        start = lottery.make_model(lottery.scratch_seed(level)).state_dict()
    else:
        start = dense_final
    cfg, start_step = lottery.level_schedule(level)
    return Plan(mask, start, cfg, start_step)


def parse_levels(text: str) -> List[int]:
    """``"1,3-5"`` -> [1, 3, 4, 5]."""
    levels: List[int] = []
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        try:
            if "-" in part:
                low, high = (int(v) for v in part.split("-"))
                levels.extend(range(low, high + 1))
            else:
                levels.append(int(part))
        except ValueError:
            raise ConfigError(f"--levels {text!r} is not a list of levels; write e.g. 1,3-5") from None
    if not levels or min(levels) < 0:
        raise ConfigError(f"--levels {text!r} names no level; write e.g. 1,3-5")
    return sorted(set(levels))


@runlock.session()
def run_branches(config: RunConfig, branch: Optional[BranchConfig], levels: Sequence[int], ctx) -> Path:
    """Run ``branch`` (default: ``config.branch``) on the finished trunk levels ``levels`` of the lottery run
    of ``config``."""
    branch = branch if branch is not None else config.branch
    trunk = trunk_config(config)
    if not (Path(ctx.runs_dir) / trunk.run_name / CONFIG).exists():
        raise ConfigError(f"no lottery trunk at {Path(ctx.runs_dir) / trunk.run_name}; run `ticketlab lottery` with "
                          "the same flags first")
    lottery = open_lottery(trunk, ctx, levels=max(levels, default=0))  # the trunk levels it reads
    check_levels(lottery, levels)
    plans = {level: None if (branch_dir(lottery, branch, level) / SUMMARY).exists()
             else BRANCHES.get(branch.name)(lottery, branch, level) for level in levels}
    lottery.phases("level", levels, lambda k: branch_dir(lottery, branch, k),
                   lambda k: run_branch(lottery, branch, k, plans[k]), name=f"{lottery.path.name} {branch.name} branch")
    return lottery.path


def _cli_run(config: RunConfig, options: Dict[str, Any], ctx) -> Path:
    return run_branches(config, None, parse_levels(options["levels"]), ctx)


register_method(Method(
    name="branch", config=BranchRunConfig, run=_cli_run, owns_runs=False,
    help=METHOD_HELP["branch"],
    run_dir=lambda config, runs_dir: runs_dir / trunk_config(config).run_name,
    flags=(Flag("--levels", "finished trunk levels to branch from, e.g. 1,3-5", required=True, metavar="LEVELS"),
           Flag("--branch", "which ablation (same as --branch.name)", field="branch.name",
                metavar="NAME"), *TRUNK_FLAGS)))
