"""Does RST beat training the same random sparse network from scratch? A CPU-sized check of the DLTH claim.

For each sparsity (every layer pruned alike) and seed, three runs from the same random initialisation:

- ``rst``: a uniformly random pruned set (``--rst.pick_pruned rand``), RST's regularisation phase, then
  training of the sparse network;
- ``scratch``: the same random mask (same seed, same draw) trained directly (``--variant l1`` with ``rand``);
- ``l1-init``: the smallest-|w| weights of the initialisation pruned (``--variant l1``, ``min``), then trained.

The regularisation phase is shorter than DLTH's (coefficient +1e-3 every iteration, so ~1,000 updates, and 500
stabilisation steps, against +1e-4 every 5 iterations and 40,000 steps): see the ``mnist1d_cnn_rst`` preset.
The final training is the same for all three. Prints a markdown table (mean ± std over seeds of the final test
accuracy and of the test accuracy at the best validation evaluation) and RST's paired gain over scratch.

    python examples/rst_vs_scratch.py                       # MNIST-1D CNN, 90% and 95%, 3 seeds
    python examples/rst_vs_scratch.py --setting lenet --data-root ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ticketlab.config import convert, merge
from ticketlab.methods import RunContext
from ticketlab.methods.rst import RSTRunConfig, run_rst
from ticketlab.presets import get_preset

METHODS = {"rst": ("rst", "rand"), "scratch": ("l1", "rand"), "l1-init": ("l1", "min")}
SETTINGS = {
    "mnist1d": ("mnist1d_cnn_rst", {}, "0-3"),
    # LeNet-300-100 on MNIST: 20 epochs of SGD 0.05 -> 0.005 (10) -> 0.0005 (15), batch 128, RST phase as above.
    "lenet": ("mnist_lenet_300_100", {"train": {"steps": "20ep", "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                                                "weight_decay": 5e-4, "batch_size": 128, "schedule": "piecewise",
                                                "piecewise": "0:0.05,10:0.005,15:0.0005", "eval_every": "1ep"},
                                      "rst": {"reg_granularity": 1e-3, "update_reg_interval": 1,
                                              "stabilize_reg_interval": "500it", "test_interval": "500it",
                                              "save_interval": "500it"}}, "0-2"),
}


def config_for(setting: str, method: str, sparsity: float, seed: int, data_root=None):
    preset, overrides, layers = SETTINGS[setting]
    variant, pick = METHODS[method]
    config = merge(convert(get_preset(preset), RSTRunConfig), overrides)
    extra = {"data": {"root": data_root}} if data_root else {}
    return merge(config, {"method": variant, "seed": seed, **extra,
                          "rst": {"layer_ratios": f"{layers}:{sparsity}", "pick_pruned": pick}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="mnist1d")
    parser.add_argument("--sparsities", default="0.9,0.95")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--runs-dir", default="runs/rst_vs_scratch")
    parser.add_argument("--data-root", default=None, help="folder of the data set's files (lenet: MNIST)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ctx = RunContext(runs_dir=args.runs_dir, device="cpu", progress=False)
    sparsities = [float(s) for s in args.sparsities.split(",")]
    results = {}
    began = time.perf_counter()
    for sparsity in sparsities:
        for seed in range(args.seeds):
            for method in METHODS:
                _, summary = run_rst(config_for(args.setting, method, sparsity, seed, args.data_root), ctx)
                results[sparsity, method, seed] = summary
                print(f"sparsity {sparsity:.2f} seed {seed} {method:<8} density {summary['density']:.4f} "
                      f"test {100 * summary['final_test_accuracy']:.2f}%", flush=True)
    print(f"\n{args.setting}: {args.seeds} seeds, {time.perf_counter() - began:.0f} s\n")
    print(table(results, sparsities, args.seeds))


def table(results, sparsities, seeds: int) -> str:
    def pm(values):
        values = [100 * v for v in values]
        return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"

    lines = ["| sparsity | method | density % | final test % | test @ best val % | RST - method (paired, final) |",
             "|---|---|---|---|---|---|"]
    for sparsity in sparsities:
        for method in METHODS:
            runs = [results[sparsity, method, s] for s in range(seeds)]
            gains = [results[sparsity, "rst", s]["final_test_accuracy"] - r["final_test_accuracy"]
                     for s, r in enumerate(runs)]
            wins = sum(g > 0 for g in gains)
            paired = "-" if method == "rst" else f"{pm(gains)} ({wins}/{seeds} seeds better)"
            lines.append(f"| {100 * sparsity:.0f}% | {method} | {100 * runs[0]['density']:.2f} | "
                         f"{pm([r['final_test_accuracy'] for r in runs])} | "
                         f"{pm([r['test_accuracy_at_best_val'] for r in runs])} | {paired} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
