"""`ticketlab lmc`: linear mode connectivity between tickets of a finished lottery run.

For each requested level (the trunk's flags, as ``ticketlab lottery``), the pair is

- ``adjacent``: the level's ticket and the next level's (Lottery Pools' ``liner_inter``), or
- ``instability``: the level's final weights and those of its ``reorder`` branch, the same start weights
  and mask trained on another data order (Frankle et al. 2020: a ticket is stable when the two are
  linearly connected; run ``ticketlab branch --branch reorder`` first).

Along ``(1 - alpha) A + alpha B`` at ``lmc.points`` evenly spaced alphas in [0, 1] (whole state dicts, no
re-pruning, BatchNorm recomputed over one augmented training pass unless ``--lmc.bn false``) it records
test accuracy and loss, and the **error barrier**: the largest rise of the test error above the straight
line between the ends, ``max_alpha err(alpha) - ((1 - alpha) err(0) + alpha err(1))``. Files:
``level_<k>/lmc_<hash>/<pair>.json``; the plot ``report/lmc_<pair>.{png,svg}`` (error along the path, one
line per level).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

from ticketlab import runlock
from ticketlab.analysis.table import render_table
from ticketlab.config import RunConfig, Section, content_hash, convert, option, run_config
from ticketlab.errors import ConfigError
from ticketlab.io import load_torch, read_json
from ticketlab.method import Flag, Method, register_method
from ticketlab.method_help import METHOD_HELP
from ticketlab.methods.branches import check_levels, parse_levels
from ticketlab.methods.experiment import Weights, masked
from ticketlab.methods.lottery import TRUNK_FLAGS, Lottery, LotteryConfig, LotteryRunConfig, open_lottery
from ticketlab.runs import CONFIG, ensure, save_json
from ticketlab.sparsity import Mask
from ticketlab.train import evaluate, interpolate, recompute_bn, training_batches, weights_path

LMC_STEP = 4 * 10**9  # augmentation stream of the BatchNorm passes


@dataclass(frozen=True)
class LMCConfig(Section):
    pairs: Literal["adjacent", "instability"] = option("adjacent", "adjacent levels' tickets, or a level and its "
                                                                   "reorder branch")
    points: int = option(11, "alphas evenly spaced in [0, 1], the ends included", within="[2, inf)")
    checkpoint: Literal["best", "final"] = option("final", "adjacent: each level's final or best-validation weights")
    bn: bool = option(True, "recompute BatchNorm statistics at every point")


LMCRunConfig = run_config("lmc", variants=("lottery",), lottery=LotteryConfig, lmc=LMCConfig)


def error_barrier(errors: Sequence[float], alphas: Sequence[float]) -> float:
    """``max_i errors[i] - ((1 - a_i) errors[0] + a_i errors[-1])`` (0 when the path is no worse than the line)."""
    return max(e - ((1 - a) * errors[0] + a * errors[-1]) for e, a in zip(errors, alphas))


def path_scores(lottery: Lottery, a: Weights, b: Weights, points: int, bn: bool = True) -> Dict[str, List[float]]:
    """Test accuracy and loss at ``points`` alphas from ``a`` (0) to ``b`` (1)."""
    model, data = lottery.model_with(a), lottery.data
    alphas = [i / (points - 1) for i in range(points)]
    accuracy, loss = [], []
    for alpha in alphas:
        model.load_state_dict({k: v.to(lottery.device) for k, v in interpolate(a, b, alpha).items()})
        if bn:
            recompute_bn(model, training_batches(data, lottery.config.train.batch_size, lottery.config.order_seed,
                                                 augment_step=LMC_STEP))
        scores = evaluate(model, data.test.x, data.test.y)
        accuracy.append(scores["accuracy"])
        loss.append(scores["loss"])
    return {"alphas": alphas, "test_accuracy": accuracy, "test_loss": loss}


def pair(lottery: Lottery, cfg: LMCConfig, level: int, finished: Sequence[int]) -> Tuple[Tuple[str, str], Weights, Weights]:
    """The two endpoints of ``level``'s pair, with their folders (relative to the run)."""
    folder = lottery.level_dir(level)
    if cfg.pairs == "adjacent":
        if level + 1 not in finished:
            raise ConfigError(f"level {level} has no finished next level to pair with; lower --levels or run "
                              f"`ticketlab lottery --levels {level + 1}`")
        ends = [lottery.level_dir(k) for k in (level, level + 1)]
        weights = [masked(load_torch(weights_path(d, cfg.checkpoint, "--lmc.checkpoint")), Mask.load(d / "mask.pt")) for d in ends]
    else:
        branches = sorted(p for p in folder.glob("branch_reorder_*") if (p / "summary.json").exists())
        if len(branches) != 1:
            found = "none" if not branches else ", ".join(p.name for p in branches)
            raise ConfigError(f"instability needs one finished reorder branch of level {level} (found {found}); run "
                              f"`ticketlab branch --branch reorder --levels {level}` with the trunk's flags"
                              + (" and remove the others" if branches else ""))
        ends = [folder, branches[0]]
        weights = [load_torch(d / "final.pt") for d in ends]
    names = tuple(str(d.relative_to(lottery.path)) for d in ends)
    return names, weights[0], weights[1]


@runlock.session()
def run_lmc(config: RunConfig, levels: Optional[Sequence[int]], ctx) -> Path:
    trunk = convert(config, LotteryRunConfig)
    if not (Path(ctx.runs_dir) / trunk.run_name / CONFIG).exists():
        raise ConfigError(f"no lottery trunk at {Path(ctx.runs_dir) / trunk.run_name}; run `ticketlab lottery` with "
                          "the same flags first")
    lottery, cfg = open_lottery(trunk, ctx, levels=max(levels or [0])), config.lmc  # the trunk levels it reads
    finished = sorted(int(p.parent.name[6:]) for p in lottery.path.glob("level_*/summary.json"))
    targets = list(levels) if levels else (finished[:-1] if cfg.pairs == "adjacent" else finished)
    check_levels(lottery, targets)
    plans = {level: pair(lottery, cfg, level, finished) for level in targets}  # all checked before any work
    results = {}
    for level, (names, a, b) in plans.items():
        out = lottery.level_dir(level) / f"lmc_{content_hash(cfg, 8)}" / f"{cfg.pairs}.json"

        def measure(names=names, a=a, b=b) -> Dict[str, Any]:
            scores = path_scores(lottery, a, b, cfg.points, cfg.bn)
            errors = [1 - acc for acc in scores["test_accuracy"]]
            return {"pair": list(names), **scores, "error_barrier": error_barrier(errors, scores["alphas"])}

        results[level] = ensure(out, measure, save=save_json, load=read_json)
    draw(lottery, cfg, results)
    return lottery.path


def draw(lottery: Lottery, cfg: LMCConfig, results: Dict[int, Dict[str, Any]]) -> None:
    from ticketlab.analysis.plots import new_axes, save_figure

    fig, ax = new_axes()
    for level, r in sorted(results.items()):
        ax.plot(r["alphas"], [100 * (1 - a) for a in r["test_accuracy"]], marker="o", markersize=3,
                label=f"level {level} (barrier {100 * r['error_barrier']:.2f} pts)")
    ax.set_xlabel("alpha (0: first of the pair, 1: second)")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"{lottery.path.name}: linear paths, {cfg.pairs} pairs")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    save_figure(fig, lottery.path / "report" / f"lmc_{cfg.pairs}")


def show(path: Path) -> str:
    rows = []
    for file in sorted(Path(path).glob("level_*/lmc_*/*.json")):
        r = read_json(file)
        rows.append([" <-> ".join(r["pair"]), f"{100 * r['test_accuracy'][0]:.2f}", f"{100 * r['test_accuracy'][-1]:.2f}",
                     f"{100 * min(r['test_accuracy']):.2f}", f"{100 * r['error_barrier']:.2f}"])
    return render_table(["pair", "test % at 0", "test % at 1", "lowest test %", "error barrier (pts)"], rows)


def _cli_run(config: RunConfig, options: Dict[str, Any], ctx) -> Path:
    return run_lmc(config, parse_levels(options["levels"]) if options["levels"] else None, ctx)


register_method(Method(
    name="lmc", config=LMCRunConfig, run=_cli_run, owns_runs=False, show=show,
    help=METHOD_HELP["lmc"],
    run_dir=lambda config, runs_dir: runs_dir / convert(config, LotteryRunConfig).run_name,
    flags=(Flag("--levels", "levels to pair, e.g. 1,3-5 (default: every finished level)", metavar="LEVELS"),
           *TRUNK_FLAGS)))

__all__ = ["LMCConfig", "LMCRunConfig", "error_barrier", "path_scores", "run_lmc"]
