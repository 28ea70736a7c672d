"""Pruning cost as models grow: global magnitude masks and ERK allocation, 0.27M to 25.6M parameters.

For each model (initialised weights, nothing trained) this times, as the median of ``--repeats`` rounds:

- ``global``: `ticketlab.prune(model, 0.2)`: global magnitude pruning to 20%, exact counts, ties by index;
- ``nested``: the next IMP level, `prune(model, 0.16, mask=<the 20% mask>)` (pruned weights score -inf);
- ``ERK densities``: `layer_densities(shapes, 0.2, "erk")` alone (the per-layer allocation);
- ``ERK mask``: `prune(model, 0.2, scope="erk")`: the allocation plus a magnitude top-k in every layer.

Times per million prunable weights show that the cost grows about linearly with the model: the small
models are dominated by fixed per-call work, the large ones by a few passes over one flat tensor.

    python bench/pruning_cost.py [--repeats 5] [--threads 1] [--models lenet_300_100,resnet20,...]
"""

from __future__ import annotations

import sys
from typing import Callable, Dict

import common
from ticketlab.config import ModelConfig
from ticketlab.models import build_model
from ticketlab.sparsity import prune
from ticketlab.sparsity.distributions import layer_densities
from ticketlab.sparsity.mask import prunable_parameters

# name -> (model config, input shape, classes)
MODELS = {
    "lenet_300_100": (ModelConfig(name="lenet_300_100"), (1, 28, 28), 10),
    "resnet20": (ModelConfig(name="resnet20"), (3, 32, 32), 10),
    "resnet56": (ModelConfig(name="resnet56"), (3, 32, 32), 10),
    "resnet18": (ModelConfig(name="resnet18"), (3, 32, 32), 10),
    "vgg16": (ModelConfig(name="vgg16"), (3, 32, 32), 10),
    "resnet50-imagenet": (ModelConfig(name="resnet50", stem="imagenet"), (3, 224, 224), 1000),
}
TARGET_S = 2.0  # global magnitude mask for 25M parameters, one thread


def timer(fn: Callable[[], object]) -> Callable[[], Dict[str, float]]:
    def run() -> Dict[str, float]:
        with common.Clock() as clock:
            fn()
        return clock.seconds()
    return run


def main(argv=None) -> int:
    p = common.parser(__doc__, repeats=5)
    p.add_argument("--models", default=",".join(MODELS))
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    title = common.header(f"pruning cost: median {args.clock} time of {args.repeats} rounds, density 0.2", args.threads)
    print(title, flush=True)
    rows, records = [], []
    for name in args.models.split(","):
        cfg, shape, classes = MODELS[name]
        model = build_model(cfg, shape, classes, seed=0)
        params = sum(p.numel() for p in model.parameters())
        prunable = prunable_parameters(model)
        shapes = {k: tuple(v.shape) for k, v in prunable.items()}
        weights = sum(v.numel() for v in prunable.values())
        first = prune(model, 0.2)
        samples = common.interleaved({
            "global": timer(lambda: prune(model, 0.2)),
            "nested": timer(lambda: prune(model, 0.16, mask=first)),
            "erk_densities": timer(lambda: layer_densities(shapes, 0.2, "erk")),
            "erk_mask": timer(lambda: prune(model, 0.2, scope="erk")),
        }, args.repeats)
        med = {k: common.median(v[args.clock]) for k, v in samples.items()}
        per_m = weights / 1e6
        row = [name, f"{params / 1e6:.2f}", f"{weights / 1e6:.2f}", len(shapes),
               f"{1e3 * med['global']:.1f}", f"{1e3 * med['global'] / per_m:.1f}", f"{1e3 * med['nested']:.1f}",
               f"{1e3 * med['erk_densities']:.2f}", f"{1e3 * med['erk_mask']:.1f}",
               f"{1e3 * med['erk_mask'] / per_m:.1f}"]
        rows.append(row)
        common.print_row(row)
        records.append({"model": name, "parameters": params, "prunable": weights, "layers": len(shapes),
                        "samples": samples, "median_s": med, "global_density": first.density()})
    largest = max(records, key=lambda r: r["prunable"])
    verdict = (f"global magnitude mask of {largest['model']} ({largest['parameters'] / 1e6:.1f}M parameters): "
               f"{largest['median_s']['global']:.2f} s (target < {TARGET_S:.0f} s)")
    common.finish(args, "pruning_cost", title, ["model", "params M", "prunable M", "layers", "global ms",
                                                "global ms/M", "nested ms", "ERK densities ms", "ERK mask ms",
                                                "ERK ms/M"],
                  rows, verdict, {"repeats": args.repeats, "clock": args.clock, "results": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
