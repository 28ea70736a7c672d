"""`ticketlab pools`: Lottery Pools (Yin et al., AAAI 2023): better tickets from a finished lottery run,
without training, by interpolating a ticket with its neighbours.

For a target level t of the trunk (the same flags as ``ticketlab lottery``), the candidates are the
other levels' tickets in the order t-1, t+1, t-2, t+2, ... (the denser first at equal distance;
``pools.search_num`` counts the target). Each ticket is a level's best-validation (or final) weights
under its mask. Greedy search: the current model starts as the target ticket with its validation
accuracy; for each candidate and each ``alpha`` in ``pools.alphas`` the model ``(1 - alpha) current +
alpha candidate`` (the whole state dict) is re-sparsified to the target's exact kept count by one global
magnitude threshold over the layers the target prunes (a fresh mask; ``--pools.mask ticket`` keeps the
target's own), given fresh BatchNorm statistics over one augmented pass of the training data, and scored
on the validation split; the best alpha is accepted only if it beats the current validation accuracy
strictly, else the current model stays as it is. Test accuracy is measured once, at the end. Level 0 (the
dense network) is never re-sparsified. Baselines over the same order, every candidate accepted: SWA (alpha
``1/(i+1)`` for the i-th candidate, a running average) and EMA (alpha ``pools.ema_value``).

Unlike the reference, the search starts from the ticket's *validation* accuracy (the reference compares
its first candidates against the ticket's test accuracy) and re-prunes to the ticket's exact count (the
reference's count is read back from a rounded percentage). Files, per target level:
``level_<t>/pools_<hash>/{pools,swa,ema}/`` with ``final.pt``, ``mask.pt`` and ``summary.json`` (its report
row: branch ``pools``, ``swa`` or ``ema``), and ``search.json`` (every candidate, alpha and accuracy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple


from ticketlab import runlock
from ticketlab.config import RunConfig, Section, content_hash, convert, option, run_config, to_jsonable
from ticketlab.errors import ConfigError
from ticketlab.io import load_torch, read_json, save_torch, write_json
from ticketlab.method import Flag, Method, register_method
from ticketlab.method_help import METHOD_HELP
from ticketlab.methods.branches import check_levels, parse_levels
from ticketlab.methods.experiment import Weights, masked, save_mask
from ticketlab.methods.lottery import TRUNK_FLAGS, Lottery, LotteryConfig, LotteryRunConfig, open_lottery
from ticketlab.runfiles import REBUILD, read_summary
from ticketlab.runs import CONFIG, SUMMARY, ensure, save_json
from ticketlab.sparsity import Mask, select_topk
from ticketlab.train import evaluate, interpolate, recompute_bn, training_batches, weights_path

POOL_STEP = 3 * 10**9  # augmentation stream of the BatchNorm passes
ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # the README's "interpolation" list


@dataclass(frozen=True)
class PoolsConfig(Section):
    checkpoint: Literal["best", "final"] = option("best", "each level's ticket: best-validation or final weights")
    search_num: int = option(3, "tickets searched per target, the target counted [search_num]", within="[1, inf)")
    alphas: Tuple[float, ...] = option(ALPHAS, "weights tried on each candidate (0.5 alone: Lottery Pools "
                                               "(average)) [interpolation_value_list]", within="(0, 1]")
    ema_value: float = option(0.95, "ema baseline: the weight of each new candidate [EMA_value]", within="(0, 1]")
    mask: Literal["fresh", "ticket"] = option("fresh", "re-sparsify by a fresh global magnitude mask at the "
                                                       "target's count, or keep the target's own mask")
    baselines: bool = option(True, "also the swa and ema baselines over the same candidates")

    def validate(self) -> None:
        if not self.alphas:
            raise ConfigError("pools.alphas is empty; give at least one weight in (0, 1], e.g. 0.5")


PoolsRunConfig = run_config("pools", variants=("lottery",), lottery=LotteryConfig, pools=PoolsConfig)


def candidate_order(target: int, levels: Sequence[int]) -> List[int]:
    """``[t, t-1, t+1, t-2, t+2, ...]`` over the available ``levels`` (the denser first at equal distance)."""
    available = set(levels)
    order, distance = [target], 1
    while len(order) < len(available):
        for level in (target - distance, target + distance):
            if level in available:
                order.append(level)
        distance += 1
    return order


def resparsify(weights: Weights, target: Mask, fresh: bool = True) -> Tuple[Weights, Mask]:
    """``weights`` pruned to ``target``'s kept count over the layers it prunes: by one global magnitude
    threshold (``fresh``) or by ``target`` itself. Layers the target keeps dense stay as they are."""
    pruned = [k for k, keep in target.items() if not bool(keep.all())]
    if not pruned:
        return dict(weights), target
    if fresh:
        count = sum(int(target[k].sum()) for k in pruned)
        keep = select_topk({k: weights[k].detach().abs().float() for k in pruned}, count)
        mask = Mask({**target, **keep})
    else:
        mask = target
    return masked(weights, mask), mask


@dataclass
class Pools:
    """The search over one lottery trunk (its experiment, settings and the finished levels)."""

    lottery: Lottery
    cfg: PoolsConfig
    levels: List[int]

    def __post_init__(self):
        self.model = self.lottery.model_with(self.lottery.initial_weights())
        self.folder_name = f"pools_{content_hash(self.cfg, 8)}"

    def ticket(self, level: int) -> Tuple[Weights, Mask]:
        folder = self.lottery.level_dir(level)
        mask = Mask.load(folder / "mask.pt")
        return masked(load_torch(weights_path(folder, self.cfg.checkpoint, "--pools.checkpoint")), mask), mask

    def score(self, weights: Weights, bn: bool = True) -> Dict[str, Optional[float]]:
        """Validation and test accuracy of ``weights`` (BatchNorm recomputed first when ``bn``)."""
        data = self.lottery.data
        device = self.lottery.device
        self.model.load_state_dict({k: v.to(device) for k, v in weights.items()})
        if bn:
            recompute_bn(self.model, training_batches(data, self.lottery.config.train.batch_size,
                                                      self.lottery.config.order_seed, augment_step=POOL_STEP))
        out: Dict[str, Optional[float]] = {}
        for split in ("val", "test"):
            part = getattr(data, split)
            out[split] = evaluate(self.model, part.x, part.y)["accuracy"] if part is not None and len(part) else None
        out["weights"] = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return out

    def mix(self, current: Weights, candidate: Weights, alpha: float, target: Mask) -> Tuple[Weights, Mask]:
        mixed = interpolate(current, candidate, alpha)
        return resparsify(mixed, target, fresh=self.cfg.mask == "fresh")

    def search(self, target: int) -> Dict[str, Any]:
        """The greedy search for ``target``: accepted candidates, alphas and the final model."""
        current, target_mask = self.ticket(target)
        start = self.score(current, bn=False)
        best_val, mask, history = _val(start), target_mask, []
        order = candidate_order(target, self.levels)[: self.cfg.search_num]
        for level in order[1:]:
            candidate, _ = self.ticket(level)
            top, by_alpha = None, {}
            for alpha in self.cfg.alphas:
                weights, candidate_mask = self.mix(current, candidate, alpha, target_mask)
                result = self.score(weights)
                by_alpha[str(alpha)] = result["val"]
                if top is None or _val(result) > _val(top[1]):  # strictly: the first of equal alphas wins
                    top = (alpha, result, candidate_mask)
            alpha, result, candidate_mask = top
            accepted = _val(result) > best_val
            history.append({"level": level, "accepted": accepted, "alpha": alpha, "val_by_alpha": by_alpha})
            if accepted:  # else the current model stays exactly as it was
                current, mask, best_val = result["weights"], candidate_mask, _val(result)
        final = self.score(current, bn=False) if any(h["accepted"] for h in history) else start
        return {"weights": current, "mask": mask, "val": final["val"], "test": final["test"], "history": history,
                "ticket": {"val": start["val"], "test": start["test"]}}

    def running(self, target: int, kind: str) -> Dict[str, Any]:
        """SWA or EMA over the same candidates, every one accepted."""
        current, target_mask = self.ticket(target)
        mask, history, result = target_mask, [], self.score(current, bn=False)
        for i, level in enumerate(candidate_order(target, self.levels)[1: self.cfg.search_num], start=1):
            alpha = 1.0 / (i + 1) if kind == "swa" else self.cfg.ema_value
            candidate, _ = self.ticket(level)
            weights, mask = self.mix(current, candidate, alpha, target_mask)
            result = self.score(weights)
            current = result["weights"]
            history.append({"level": level, "alpha": alpha, "val": result["val"], "test": result["test"]})
        return {"weights": current, "mask": mask, "val": result["val"], "test": result["test"], "history": history}

    def run(self, target: int) -> Path:
        """Every result for ``target`` (each kind skipped when its summary exists)."""
        out = self.lottery.level_dir(target) / self.folder_name
        ensure(out / "pools.json", lambda: to_jsonable(self.cfg), save=save_json, load=read_json)
        kinds = ["pools"] + (["swa", "ema"] if self.cfg.baselines else [])
        for kind in kinds:
            ensure(out / kind / SUMMARY, lambda: self.result(target, kind, out / kind), save=save_json,
                   load=lambda p: read_summary(p, fix=REBUILD))
        return out

    def result(self, target: int, kind: str, out: Path) -> Dict[str, Any]:
        found = self.search(target) if kind == "pools" else self.running(target, kind)
        save_torch(found["weights"], out / "final.pt")
        save_mask(found["mask"], out / "mask.pt")
        write_json(out / "search.json", found["history"])
        options = {k: v for k, v in to_jsonable(self.cfg).items() if k != "baselines"}
        density = found["mask"].density()
        row = self.lottery.row(variant=self.lottery.config.lottery.retrain, level=target, density=density,
                               branch=kind, branch_options=options)
        return {"row": row, "level": target, "kind": kind, "density": density, "final_test_accuracy": found["test"],
                "test_accuracy_at_best_val": found["test"], "final": {"val": {"accuracy": found["val"]},
                "test": {"accuracy": found["test"]}}, "ticket": found.get("ticket"), "candidates": found["history"]}


def _val(result: Dict[str, Any]) -> float:
    return result["val"] if result["val"] is not None else -math.inf


@runlock.session()
def run_pools(config: RunConfig, levels: Optional[Sequence[int]], ctx) -> Path:
    """Lottery Pools on the finished levels ``levels`` (default: all) of the lottery run of ``config``."""
    trunk = convert(config, LotteryRunConfig)
    if not (Path(ctx.runs_dir) / trunk.run_name / CONFIG).exists():
        raise ConfigError(f"no lottery trunk at {Path(ctx.runs_dir) / trunk.run_name}; run `ticketlab lottery` with "
                          "the same flags first")
    lottery = open_lottery(trunk, ctx, levels=max(levels or [0]))  # the trunk levels it reads (at least 0)
    finished = sorted(int(p.parent.name[6:]) for p in lottery.path.glob("level_*/summary.json"))
    targets = list(levels) if levels else finished
    check_levels(lottery, targets)
    if config.pools.alphas and not lottery.data.val:
        raise ConfigError("Lottery Pools accepts candidates on the validation split; set --data.val_size > 0")
    pools = Pools(lottery, config.pools, finished)
    for target in targets:
        pools.run(target)
    return lottery.path


def _cli_run(config: RunConfig, options: Dict[str, Any], ctx) -> Path:
    return run_pools(config, parse_levels(options["levels"]) if options["levels"] else None, ctx)


register_method(Method(
    name="pools", config=PoolsRunConfig, run=_cli_run, owns_runs=False,
    help=METHOD_HELP["pools"],
    run_dir=lambda config, runs_dir: runs_dir / convert(config, LotteryRunConfig).run_name,
    flags=(Flag("--levels", "target levels, e.g. 1,3-5 (default: every finished level)", metavar="LEVELS"),
           *TRUNK_FLAGS)))

__all__ = ["PoolsConfig", "PoolsRunConfig", "Pools", "candidate_order", "resparsify", "run_pools"]
