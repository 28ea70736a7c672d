"""Lottery Pools against the tickets it starts from, clean and under corruption, and the instability analysis.

Tickets: the IMP runs of `dst_comparison.py` to 5% (LeNet-300-100 on MNIST and Fashion-MNIST, 3 seeds,
10 levels of 20 epochs, global magnitude pruning of 25.9% a level, rewinding to the initialisation);
they are trained here if absent. For every level: Lottery Pools (3 tickets searched, alphas 0.05 ... 0.95,
a fresh magnitude mask at the ticket's count), its SWA and EMA (0.95) baselines over the same tickets,
each scored on the test set and on the nine corruptions of `ticketlab list corruptions` at severities 1-5
(`ticketlab eval`). Tickets are the levels' best-validation checkpoints, as Lottery Pools uses, so the
ticket columns are "test at best validation", clean and corrupted.

Instability (Frankle et al. 2020): at level 10 (5%) of the MNIST trunks rewound to step 0 and of trunks
rewound to the end of the first epoch (430 steps), a `reorder` branch retrains the level from the same
start weights and mask on another data order; `ticketlab lmc --lmc.pairs instability` measures the error
barrier between the two copies.

    python examples/pools_comparison.py [--workers 2] [--seeds 3] [--runs-dir runs/dst_comparison]
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from comparison import DATA, arguments, mean_std, run_all
from dst_comparison import config_for as imp_config
from ticketlab.analysis import collect
from ticketlab.analysis.robustness import evaluate_run
from ticketlab.config import convert, merge
from ticketlab.data.corruptions import CORRUPTIONS
from ticketlab.io import read_json
from ticketlab.methods import RunContext
from ticketlab.methods.branches import BranchRunConfig, run_branches
from ticketlab.methods.lmc import LMCRunConfig, run_lmc
from ticketlab.methods.lottery import run_lottery
from ticketlab.methods.pools import PoolsRunConfig, run_pools

DENSITY, LEVELS = 0.05, 10


def trunk(dataset, seed, roots, rewind="0it"):
    return merge(imp_config(dataset, DENSITY, "lottery", seed, roots), {"lottery": {"rewind": rewind}})


def pools_one(dataset, seed, roots, runs_dir):
    ctx = RunContext(runs_dir=runs_dir, device="cpu", progress=False)
    config = trunk(dataset, seed, roots)
    path, _ = run_lottery(config, LEVELS, ctx)
    run_pools(convert(config, PoolsRunConfig), None, ctx)
    evaluate_run(path, list(CORRUPTIONS), [1, 2, 3, 4, 5], checkpoint="best")  # Pools results: their final.pt
    return str(path)


def instability_one(dataset, seed, rewind, roots, runs_dir):
    ctx = RunContext(runs_dir=runs_dir, device="cpu", progress=False)
    config = trunk(dataset, seed, roots, rewind)
    run_lottery(config, LEVELS, ctx)
    run_branches(merge(convert(config, BranchRunConfig), {"branch": {"name": "reorder"}}), None, [LEVELS], ctx)
    path = run_lmc(merge(convert(config, LMCRunConfig), {"lmc": {"pairs": "instability"}}), [LEVELS], ctx)
    (result,) = path.glob(f"level_{LEVELS}/lmc_*/instability.json")
    return read_json(result)


def pools_table(paths) -> str:
    cells = defaultdict(list)  # (dataset, level, kind) -> values; kind "x:clean" or "x:corrupted"
    densities = {}
    for row in collect(paths):
        kind = "ticket" if row.branch == "trunk" else row.branch
        clean = row.best_val_test if kind == "ticket" else row.final_test
        cells[row.dataset, row.level, f"{kind}:clean"].append(clean)
        if row.corrupted is not None:
            cells[row.dataset, row.level, f"{kind}:corrupted"].append(row.corrupted)
        densities[row.dataset, row.level] = row.density
    lines = ["| data | level | density % | ticket | pools | swa | ema | pools, corrupted | ticket, corrupted |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (dataset, level), density in sorted(densities.items()):
        row = [mean_std(cells[dataset, level, f"{k}:clean"]) if cells[dataset, level, f"{k}:clean"] else "-"
               for k in ("ticket", "pools", "swa", "ema")]
        row += [mean_std(cells[dataset, level, f"{k}:corrupted"]) if cells[dataset, level, f"{k}:corrupted"] else "-"
                for k in ("pools", "ticket")]
        lines.append(f"| {dataset} | {level} | {100 * density:.2f} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    args, roots = arguments(__doc__, "runs/dst_comparison", lambda p: p.add_argument("--instability-runs-dir",
                                                                           default="runs/instability"))
    jobs = [(pools_one, (d, s), d, s, roots, args.runs_dir) for d in DATA for s in range(args.seeds)]
    jobs += [(instability_one, ("instability", r, s), "mnist", s, r, roots, args.instability_runs_dir)
             for r in ("0it", "1ep") for s in range(args.seeds)]
    results = run_all(jobs, args.workers)
    print(pools_table([p for k, p in results.items() if k[0] != "instability"]))
    print("\ninstability at level 10 (5%), MNIST: error barrier between two copies trained on other data orders")
    for rewind in ("0it", "1ep"):
        barriers = [results["instability", rewind, s]["error_barrier"] for s in range(args.seeds)]
        print(f"rewind {rewind}: barrier {mean_std(barriers)} points over {args.seeds} seeds "
              f"({', '.join(f'{100 * b:.2f}' for b in barriers)}); test accuracy of the copies "
              f"{statistics.fmean(100 * results['instability', rewind, s]['test_accuracy'][0] for s in range(args.seeds)):.2f}%")


if __name__ == "__main__":
    main()
