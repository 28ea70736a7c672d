"""PrAC against plain IMP to the same density, on CPU: training iterations spent and the ticket's accuracy.

Plain IMP: the lottery runs of `dst_comparison.py` to 5% (LeNet-300-100 on MNIST and Fashion-MNIST, 3
seeds, 10 levels of 20 epochs, SGD 0.05 with momentum and a cosine schedule, global magnitude pruning of
25.9% a level, rewinding to the initialisation), trained here if absent. PrAC: the same settings with
`ticketlab prac`: round 0 on the full split, then each round on the previous round's critical set for
proportionally fewer epochs, rounds stopped by the early bird (eps 0.08); its level-10 ticket retrained on
the full split with the full schedule from the initialisation (`prac.evaluate last`), which is what IMP's
level 10 is. Iterations are optimizer steps of the search (every level; PrAC's evaluation reported apart).
`--rewind 1ep` makes both rewind to the end of the first epoch instead (the PrAC README rewinds its IMP
to 3 epochs); `--data mnist` keeps to one data set. Those MNIST IMP trunks are `pools_comparison.py`'s.

    python examples/prac_comparison.py [--workers 2] [--seeds 3] [--runs-dir runs/dst_comparison]
                                       [--rewind 1ep] [--data mnist,fashion]
"""

from __future__ import annotations

import statistics

from comparison import DATA, arguments, mean_std, run_all
from dst_comparison import config_for as imp_config
from ticketlab.config import convert, merge
from ticketlab.io import read_json
from ticketlab.methods import RunContext
from ticketlab.methods.lottery import run_lottery
from ticketlab.methods.prac import PracRunConfig, run_prac

DENSITY, LEVELS = 0.05, 10


def one(dataset, seed, method, rewind, roots, runs_dir):
    ctx = RunContext(runs_dir=runs_dir, device="cpu", progress=False)
    imp = merge(imp_config(dataset, DENSITY, "lottery", seed, roots), {"lottery": {"rewind": rewind}})
    if method == "imp":
        path, levels = run_lottery(imp, LEVELS, ctx)
        ticket = levels[-1]
    else:
        path, levels = run_prac(merge(convert(imp, PracRunConfig), {"prac": {"eb_eps": 0.08}}), LEVELS, ctx)
        ticket = read_json(path / f"level_{LEVELS}" / "evaluate" / "summary.json")
    steps = sum(s["steps"] - s["start_step"] for s in levels)
    return {"steps": steps, "test": ticket["final_test_accuracy"],
            "best": ticket["test_accuracy_at_best_val"], "density": ticket["density"],
            "subsets": [s.get("subset_size") for s in levels], "early": [s.get("early_bird_epoch") for s in levels],
            "evaluation_steps": ticket["steps"] if method == "prac" else 0}


def main() -> None:
    def options(parser):
        parser.add_argument("--rewind", default="0it", help="rewind point of IMP and PrAC, e.g. 1ep")
        parser.add_argument("--data", default=",".join(DATA), help="data sets, of: " + ", ".join(DATA))

    args, roots = arguments(__doc__, "runs/dst_comparison", options)
    datasets = [d for d in DATA if d in args.data.split(",")]
    jobs = [(one, (d, s, m), d, s, m, args.rewind, roots, args.runs_dir) for m in ("imp", "prac") for d in datasets
            for s in range(args.seeds)]
    results = run_all(jobs, args.workers)
    print(f"rewind {args.rewind}")
    print("| data | method | search iterations | saving | ticket test % (5%) | test @ best val % |")
    print("|---|---|---|---|---|---|")
    for dataset in datasets:
        imp_steps = statistics.fmean(results[dataset, s, "imp"]["steps"] for s in range(args.seeds))
        for method in ("imp", "prac"):
            runs = [results[dataset, s, method] for s in range(args.seeds)]
            steps = statistics.fmean(r["steps"] for r in runs)
            saving = f"{100 * (1 - steps / imp_steps):.1f}%" if method == "prac" else "-"
            print(f"| {dataset} | {method} | {steps:,.0f} | {saving} | {mean_std([r['test'] for r in runs])} | "
                  f"{mean_std([r['best'] for r in runs])} |")
    for dataset in datasets:
        for s in range(args.seeds):
            r = results[dataset, s, "prac"]
            print(f"{dataset} seed {s}: subset sizes {r['subsets']}, early-bird epochs {r['early']}, "
                  f"evaluation {r['evaluation_steps']} steps")


if __name__ == "__main__":
    main()
