"""Trainer overhead: the ticketlab trainer against a minimal bare PyTorch loop doing the same work.

Both train the same model from the same initial weights on the same in-memory tensors for a fixed number
of steps, with the same optimizer, batch size and batch order (one seeded permutation per epoch), and
both evaluate the small test split before and after training (the trainer always does). The masked bare
loop zeroes the gradients of pruned weights before the step, and the weights and optimizer state after
it, with one ``torch._foreach_mul_`` each (state lists built once, after the first step); the trainer
skips the second multiply where the optimizer keeps zeros at zero (`MaskEnforcer.after_step`). Cases:
LeNet-300-100 on MNIST-shaped data at batch 60 and 128, ResNet-20 on CIFAR-shaped data at batch 128
(fewer steps), each with SGD (momentum 0.9) and Adam, dense and at 20% and 2% density.

Each case is warmed up, then the two loops run alternately ``--repeats`` times, in one process with glibc's
heap trimming off (`common.steady_heap`; ``--default-heap`` leaves it on), so that page faults do not
land on one loop or the other at random. The table shows the
median time per step (process CPU time by default, see ``--clock``; set-up, both evaluations and the
trainer's bookkeeping included), the ratio ticketlab / bare of the medians (1.00 = no overhead), the
range of the round-by-round ratios, and whether both loops ended with bit-identical weights (they do
the same arithmetic, so they should).

    python bench/trainer_overhead.py [--repeats 7] [--lenet-steps 200] [--resnet-steps 4] [--threads 1]
"""

from __future__ import annotations

import copy
import sys
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

import common
from ticketlab.config import ModelConfig, TrainConfig
from ticketlab.data import DataBundle, epoch_permutation
from ticketlab.models import build_model
from ticketlab.sparsity import Mask, MaskEnforcer, prune
from ticketlab.steps import Steps
from ticketlab.train import Trainer

ORDER_SEED = 0
OPTIMIZERS = {"sgd": dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4),
              "adam": dict(optimizer="adam", lr=1e-3)}
DENSITIES = (1.0, 0.2, 0.02)


def make_optimizer(params, name: str) -> torch.optim.Optimizer:
    """The torch optimizer with the hyperparameters the trainer gets, fused as the trainer builds it on
    the CPU, so both loops do the same arithmetic (torch's unfused CPU default is measured by
    ``imp_vs_user_loop.py``, as what a user writes)."""
    kw = OPTIMIZERS[name]
    if name == "sgd":
        return torch.optim.SGD(params, lr=kw["lr"], momentum=kw["momentum"], weight_decay=kw["weight_decay"],
                               fused=True)
    return torch.optim.Adam(params, lr=kw["lr"], fused=True)


def bare_evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x)
        result = F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()
    model.train()
    return result


def run_bare(model: torch.nn.Module, mask: Optional[Mask], data: DataBundle, optimizer_name: str,
             batch: int, steps: int) -> None:
    """The minimal loop."""
    optimizer = make_optimizer(model.parameters(), optimizer_name)
    masking = common.BareMasking(model, mask)
    x_all, y_all, n = data.train.x, data.train.y, len(data.train)
    ipe = -(-n // batch)
    bare_evaluate(model, data.test.x, data.test.y)
    for step in range(steps):
        epoch, offset = divmod(step, ipe)
        if offset == 0:
            perm = epoch_permutation(n, ORDER_SEED, epoch, x_all.device)
        index = perm[offset * batch:(offset + 1) * batch]
        loss = F.cross_entropy(model(x_all[index]), y_all[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        masking.grads()
        optimizer.step()
        masking.after_step(optimizer)
    bare_evaluate(model, data.test.x, data.test.y)


def run_trainer(model: torch.nn.Module, mask: Optional[Mask], data: DataBundle, optimizer_name: str,
                batch: int, steps: int) -> None:
    cfg = TrainConfig(steps=Steps(0, steps), batch_size=batch, eval_every=Steps(0, 10 ** 9),
                      **OPTIMIZERS[optimizer_name])
    enforcer = MaskEnforcer(model, mask) if mask is not None else None
    Trainer(model, data, cfg, order_seed=ORDER_SEED, enforcer=enforcer, progress=False).fit()


class Case:
    """One model + optimizer + batch size + density; fresh copies of the same initial weights per run."""

    def __init__(self, model_name: str, data: DataBundle, optimizer_name: str, batch: int, density: float):
        self.template = build_model(ModelConfig(name=model_name), data.input_shape, data.num_classes, seed=0)
        self.mask = prune(self.template, density) if density < 1 else None
        self.data, self.optimizer_name, self.batch = data, optimizer_name, batch
        self.last: Dict[str, torch.nn.Module] = {}

    def runner(self, loop, key: str, steps: int):
        def run() -> Dict[str, float]:
            model = copy.deepcopy(self.template)
            with common.Clock() as clock:
                loop(model, self.mask, self.data, self.optimizer_name, self.batch, steps)
            self.last[key] = model
            return clock.seconds()
        return run

    def identical(self) -> bool:
        a, b = self.last["bare"].state_dict(), self.last["ours"].state_dict()
        return all(torch.equal(a[k], b[k]) for k in a)


def main(argv=None) -> int:
    p = common.parser(__doc__, repeats=7)
    p.add_argument("--lenet-steps", type=int, default=200)
    p.add_argument("--resnet-steps", type=int, default=4)
    p.add_argument("--models", default="lenet_300_100,resnet20")
    p.add_argument("--default-heap", action="store_true",
                   help="leave glibc's heap trimming on (default: common.steady_heap for both loops)")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    steady = not args.default_heap and common.steady_heap()
    mnist = common.random_bundle((1, 28, 28), 10, n_train=6000, n_test=64)
    cifar = common.random_bundle((3, 32, 32), 10, n_train=1024, n_test=64)
    plan = [("lenet_300_100", mnist, batch, opt, args.lenet_steps) for opt in ("sgd", "adam") for batch in (60, 128)]
    plan += [("resnet20", cifar, 128, opt, args.resnet_steps) for opt in ("sgd", "adam")]
    plan = [c for c in plan if c[0] in args.models.split(",")]

    heap = "steady glibc heap" if steady else "default glibc heap"
    title = common.header(f"trainer overhead: ticketlab Trainer / bare PyTorch loop, {args.clock} time, median of "
                          f"{args.repeats} interleaved runs, {heap}", args.threads)
    print(title, flush=True)
    rows, records = [], []
    for model_name, data, batch, opt, steps in plan:
        for density in DENSITIES:
            case = Case(model_name, data, opt, batch, density)
            warm = steps if model_name == "lenet_300_100" else 1  # a ResNet-20 step takes ~0.4 s on CPU
            samples = common.interleaved(
                {"bare": case.runner(run_bare, "bare", steps), "ours": case.runner(run_trainer, "ours", steps)},
                args.repeats,
                warmups={"bare": case.runner(run_bare, "bare", warm), "ours": case.runner(run_trainer, "ours", warm)})
            bare_s, ours_s = samples["bare"][args.clock], samples["ours"][args.clock]
            bare, ours = common.median(bare_s), common.median(ours_s)
            paired = common.paired_ratios(ours_s, bare_s)
            label = "dense" if density == 1 else f"{density:.0%}"
            row = [model_name, opt, batch, label, steps, f"{1e3 * bare / steps:.2f}", f"{1e3 * ours / steps:.2f}",
                   f"{ours / bare:.3f}", f"{min(paired):.3f}-{max(paired):.3f}",
                   "yes" if case.identical() else "NO"]
            rows.append(row)
            common.print_row(row)
            records.append({"model": model_name, "optimizer": opt, "batch": batch, "density": density,
                            "steps": steps, "clock": args.clock, "bare_s": samples["bare"],
                            "trainer_s": samples["ours"], "bare_median_s": bare, "trainer_median_s": ours,
                            "ratio": ours / bare, "paired_ratios": paired,
                            "wall_ratio": common.median(samples["ours"]["wall"]) / common.median(samples["bare"]["wall"]),
                            "identical_weights": case.identical()})
    worst = max(records, key=lambda r: r["ratio"])
    summary = (f"largest ratio {worst['ratio']:.3f} ({worst['model']} {worst['optimizer']} b{worst['batch']} "
               f"density {worst['density']}); target <= 1.05")
    common.finish(args, "trainer_overhead", title, ["model", "optimizer", "batch", "density", "steps", "bare ms/step",
                                                    "ticketlab ms/step", "ratio", "round ratios", "same weights"],
                  rows, summary, {"repeats": args.repeats, "clock": args.clock, "steady_heap": steady,
                                  "results": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
