"""Sup-tickets against its base dynamic sparse training run, for the same total epochs, on CPU.

LeNet-300-100 on MNIST and Fashion-MNIST at 5% and 2% density, 3 seeds, 20 epochs for every run (SGD
0.05, momentum 0.9, weight decay 5e-4, batch 128; 5,000 validation images held out):

- rigl / granet: `ticketlab dst` for 20 epochs, x0.1 at epochs 10 and 15 (RigL on an ERK mask at the
  density; GraNet from ERK 50% to the density over epochs 0-10, growing as RigL), updates every 100 steps
  at a cosine death rate from 0.5;
- sup-rigl / sup-granet: `ticketlab suptickets` over the same base: 16 pre-train epochs (x0.1 at 8 and 12),
  then 2 cycles of 2 epochs (cycle rate 0.2) at the triangular rate 0.001 -> 0.005 -> 0.001, each cycle
  starting with a re-exploration at death rate 0.5 and ending with a cheap ticket, the tickets averaged
  (CAA) and re-pruned to the density. LeNet has no BatchNorm, so there is nothing to recompute.

    python examples/suptickets_comparison.py [--workers 2] [--seeds 3] [--runs-dir runs/suptickets_comparison]
                                             [--ablation]   # also without the re-explorations

Results are final test accuracy (%), mean ± std over seeds (for Sup-tickets: of the last superposed
model); a rerun reuses finished runs and prints the tables again, the last one splitting each Sup-tickets
run into its pre-train-end model, its tickets (mean) and its superposed models (mean). Measured figures:
README ("Sup-tickets").
"""

from __future__ import annotations

import statistics
import time

from comparison import DATA, arguments, mean_std, run_all, table
from ticketlab.config import convert, merge
from ticketlab.methods import RunContext
from ticketlab.methods.dst import DSTRunConfig, run_dst
from ticketlab.methods.suptickets import SupTicketsRunConfig, run_suptickets
from ticketlab.presets import get_preset

DENSITIES = (0.05, 0.02)
METHODS = ("rigl", "sup-rigl", "granet", "sup-granet")
NO_RE_EXPLORE = "/no-re-explore"  # --ablation: Sup-tickets without the re-exploration at each cycle start
TRAIN = {"steps": "20ep", "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
         "schedule": "multistep", "batch_size": 128, "eval_every": "2ep"}


def config_for(dataset: str, density: float, method: str, seed: int, roots):
    preset, _ = DATA[dataset]
    base = method.removeprefix("sup-").removesuffix(NO_RE_EXPLORE)
    dst = {"update_every": "100it", "death_rate": 0.5, "death_schedule": "cosine"}
    dst.update({"init_density": 0.5, "final_density": density, "prune_end": "10ep"} if base == "granet"
               else {"init_density": density})
    common = {"seed": seed, "data": {"root": str(roots[dataset])}, "prune": {"scope": "erk", "output_rate": 1.0},
              "dst": dst}
    if method == base:
        return merge(convert(get_preset(preset), DSTRunConfig),
                     {**common, "method": base, "train": {**TRAIN, "milestones": "10ep,15ep"}})
    return merge(convert(get_preset(preset), SupTicketsRunConfig), {
        **common, "train": {**TRAIN, "milestones": "8ep,12ep"},
        "suptickets": {"base": base, "cycle": 2, "cycle_rate": 0.2, "lr_1": 0.001, "lr_2": 0.005,
                       "large_death_rate": 0.5, "re_explore": not method.endswith(NO_RE_EXPLORE)}})


def train_one(dataset, density, method, seed, roots, runs_dir):
    config = config_for(dataset, density, method, seed, roots)
    ctx = RunContext(runs_dir=runs_dir, device="cpu", progress=False)
    began = time.perf_counter()
    summary = (run_suptickets if method.startswith("sup-") else run_dst)(config, ctx)[1]
    print(f"{dataset:<8} {100 * density:.0f}% {method:<24} seed {seed}: density {100 * summary['density']:.2f}% "
          f"test {100 * summary['final_test_accuracy']:.2f}% ({time.perf_counter() - began:.0f} s)", flush=True)
    return summary


def main() -> None:
    args, roots = arguments(__doc__, "runs/suptickets_comparison", lambda parser: parser.add_argument(
        "--ablation", action="store_true", help="also Sup-tickets without re-exploration"))
    methods = METHODS + (("sup-rigl" + NO_RE_EXPLORE, "sup-granet" + NO_RE_EXPLORE) if args.ablation else ())
    jobs = [(train_one, (d, p, m, s), d, p, m, s, roots, args.runs_dir) for m in methods for d in DATA
            for p in DENSITIES for s in range(args.seeds)]
    results = run_all(jobs, args.workers)
    rows = [(d, p) for d in DATA for p in DENSITIES]
    print(table(results, rows, methods, args.seeds))
    print("\npaired gain of superposition over its base run (points), mean ± std over seeds:")
    print(paired_gains(results, rows, args.seeds))
    print("\nwhere it goes: test % (mean over seeds) of the base run, the pre-train-end model, the tickets "
          "and the superposed models")
    print(stages(results, rows, args.seeds))


def paired_gains(results, rows, seeds: int) -> str:
    lines = ["| data | density | sup-rigl - rigl | sup-granet - granet |", "|---|---|---|---|"]
    for dataset, density in rows:
        cells = []
        for base in ("rigl", "granet"):
            gains = [results[dataset, density, f"sup-{base}", s]["final_test_accuracy"]
                     - results[dataset, density, base, s]["final_test_accuracy"] for s in range(seeds)]
            cells.append(f"{mean_std(gains)} ({sum(g > 0 for g in gains)}/{seeds} better)")
        lines.append(f"| {dataset} | {100 * density:.0f}% | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stages(results, rows, seeds: int) -> str:
    lines = ["| data | density | Sup-tickets over | base run | pre-train end | tickets | superposed |",
             "|---|---|---|---|---|---|---|"]
    for dataset, density in rows:
        for base in ("rigl", "granet"):
            runs = [results[dataset, density, f"sup-{base}", s]["superposition"] for s in range(seeds)]
            kinds = {kind: [100 * statistics.mean(e["test"] for e in run if e["kind"] == kind) for run in runs]
                     for kind in ("pretrain", "ticket", "superposed")}
            plain = [100 * results[dataset, density, base, s]["final_test_accuracy"] for s in range(seeds)]
            cells = [statistics.mean(plain)] + [statistics.mean(kinds[k]) for k in ("pretrain", "ticket", "superposed")]
            lines.append(f"| {dataset} | {100 * density:.0f}% | {base} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
