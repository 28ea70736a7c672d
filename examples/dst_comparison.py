"""Dynamic sparse training against static sparse training, gradual pruning and a lottery ticket on CPU.

LeNet-300-100 on MNIST and Fashion-MNIST at 5% and 2% density (of all its 266,200 weights), 3 seeds,
every method trained for the same 20 epochs (SGD 0.05, momentum 0.9, weight decay 5e-4, cosine schedule,
batch 128; 5,000 validation images held out):

- static: an ERK mask at random positions, never changed; set / rigl: the same start, drop-and-grow every
  100 steps at a cosine death rate from 0.5; granet: ERK at 50%, pruned gradually to the density over the
  first 15 epochs while growing as RigL; gmp: dense, pruned gradually the same way;
- lottery: iterative magnitude pruning (global), rewinding to the initialisation, 10 levels (5%) or 12
  levels (2%) of 20 epochs each, the ticket's level reported.

    python examples/dst_comparison.py [--workers 2] [--seeds 3] [--runs-dir runs/dst_comparison]

Measured run time: see the README ("Dynamic sparse training"). A rerun reuses finished runs and prints the
table again. Results are final test accuracy (%), mean ± std over seeds.
"""

from __future__ import annotations

import time

from comparison import DATA, arguments, run_all, table
from ticketlab.config import convert, merge
from ticketlab.methods import RunContext
from ticketlab.methods.dst import DSTRunConfig, run_dst
from ticketlab.methods.lottery import LotteryRunConfig, run_lottery
from ticketlab.presets import get_preset

DENSITIES = {0.05: 10, 0.02: 12}  # density -> lottery levels
METHODS = ("static", "set", "rigl", "granet", "gmp", "lottery")
TRAIN = {"steps": "20ep", "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
         "schedule": "cosine", "batch_size": 128, "eval_every": "2ep"}


def config_for(dataset: str, density: float, method: str, seed: int, roots):
    preset, _ = DATA[dataset]
    common = {"seed": seed, "train": TRAIN, "data": {"root": str(roots[dataset])}}
    if method == "lottery":
        fraction = 1 - density ** (1 / DENSITIES[density])
        return merge(convert(get_preset(preset), LotteryRunConfig),
                     {**common, "method": "lottery", "prune": {"scope": "global", "output_rate": 1.0,
                                                                "fraction": fraction}})
    dst = {"update_every": "100it", "death_rate": 0.5, "death_schedule": "cosine"}
    if method == "granet":
        dst.update(init_density=0.5, final_density=density)
    elif method == "gmp":
        dst.update(final_density=density)
    else:
        dst.update(init_density=density)
    prune = {"scope": "global" if method == "gmp" else "erk", "output_rate": 1.0}
    return merge(convert(get_preset(preset), DSTRunConfig), {**common, "method": method, "prune": prune, "dst": dst})


def train_one(dataset, density, method, seed, roots, runs_dir):
    config = config_for(dataset, density, method, seed, roots)
    ctx = RunContext(runs_dir=runs_dir, device="cpu", progress=False)
    began = time.perf_counter()
    if method == "lottery":
        summary = run_lottery(config, DENSITIES[density], ctx)[1][-1]
    else:
        summary = run_dst(config, ctx)[1]
    print(f"{dataset:<8} {100 * density:.0f}% {method:<8} seed {seed}: density {100 * summary['density']:.2f}% "
          f"test {100 * summary['final_test_accuracy']:.2f}% ({time.perf_counter() - began:.0f} s)", flush=True)
    return summary


def main() -> None:
    args, roots = arguments(__doc__, "runs/dst_comparison")
    jobs = [(train_one, (d, p, m, s), d, p, m, s, roots, args.runs_dir) for m in ("lottery",) + METHODS[:-1]
            for d in DATA for p in DENSITIES for s in range(args.seeds)]  # the long lottery runs first
    results = run_all(jobs, args.workers)
    print(table(results, [(d, p) for d in DATA for p in DENSITIES], METHODS, args.seeds))


if __name__ == "__main__":
    main()
