"""Dynamic sparse training's cost: a RigL run against static sparse training of the same model, steps and density.

Both start from the same ERK mask at 5% (random positions) and the same weights, train on the same
in-memory random data with SGD (momentum 0.9) through the ticketlab trainer, and differ only in the
topology updates (drop-and-grow every ``interval`` steps, gradient growth, the dense gradient recorded on
update steps). Each case is warmed up, then the two runs alternate ``--repeats`` times; the table shows the
median CPU time per step of each, their ratio (1.00 = updates cost nothing), the median time of one update
(measured inside the RigL run) and the updates' share of the RigL run's time. Where a case has too few
steps for an update at the interval (ResNet-20 at 1000), the share is projected from the measured update
time and step time and the ratio column shows "-".

    python bench/dst_update.py [--repeats 5] [--threads 1] [--models lenet_300_100,resnet20]
"""

from __future__ import annotations

import copy
import sys
import time


import common
from ticketlab.config import ModelConfig, TrainConfig
from ticketlab.methods.dst.callback import DynamicSparse, RigL
from ticketlab.methods.dst.schedules import DeathRate, UpdateSteps
from ticketlab.models import build_model
from ticketlab.sparsity import MaskEnforcer, prune
from ticketlab.steps import Steps
from ticketlab.train import Trainer

DENSITY = 0.05


class TimedRigL(RigL):
    """RigL that measures its own updates."""

    name = "DynamicSparse"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.update_seconds = []

    def update(self, state, *args) -> None:
        began = time.process_time()
        super().update(state, *args)
        self.update_seconds.append(time.process_time() - began)


def run(model, mask, data, batch: int, steps: int, interval: int, dynamic: bool):
    cfg = TrainConfig(steps=Steps(0, steps), batch_size=batch, optimizer="sgd", lr=0.05, momentum=0.9,
                      eval_every=Steps(0, 10 ** 9))
    names = list(mask)
    schedule = dict(updates=UpdateSteps(interval, steps), death=DeathRate(0.3, steps, "constant"))
    callback = (TimedRigL if dynamic else DynamicSparse)(names, **schedule)
    with common.Clock() as clock:
        Trainer(model, data, cfg, order_seed=0, enforcer=MaskEnforcer(model, mask), callbacks=[callback],
                progress=False).fit()
    return clock.seconds(), getattr(callback, "update_seconds", [])


def main(argv=None) -> int:
    p = common.parser(__doc__, repeats=5)
    p.add_argument("--models", default="lenet_300_100,resnet20")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    common.steady_heap()
    mnist = common.random_bundle((1, 28, 28), 10, n_train=6000, n_test=64)
    cifar = common.random_bundle((3, 32, 32), 10, n_train=2048, n_test=64)
    # (model, data, batch, interval, steps, repeats): ResNet-20 steps cost ~0.45 s on one thread, so its
    # cases are the fewest steps that hold one update (interval 100) or none (1000: projected)
    few = min(args.repeats, 3)
    plan = [("lenet_300_100", mnist, 128, 100, 1000, args.repeats),
            ("lenet_300_100", mnist, 128, 1000, 3000, args.repeats),
            ("resnet20", cifar, 128, 100, 101, few), ("resnet20", cifar, 128, 1000, 20, few)]
    plan = [c for c in plan if c[0] in args.models.split(",")]
    title = common.header(f"topology updates: RigL / static sparse training, {DENSITY:.0%} ERK, SGD, cpu time, "
                          f"median of {args.repeats} interleaved runs ({few} for resnet20)", args.threads)
    print(title, flush=True)
    rows, records = [], []
    for model_name, data, batch, interval, steps, repeats in plan:
        template = build_model(ModelConfig(name=model_name), data.input_shape, data.num_classes, seed=0)
        mask = prune(template, DENSITY, criterion="random", scope="erk")
        updates = []

        def case(dynamic, n=steps):
            def go():
                seconds, timed = run(copy.deepcopy(template), mask, data, batch, n, interval, dynamic)
                updates.extend(timed)
                return seconds
            return go

        warm = min(steps, 20 if model_name == "lenet_300_100" else 3)
        samples = common.interleaved({"static": case(False), "rigl": case(True)}, repeats,
                                     warmups={"static": case(False, warm), "rigl": case(True, warm)})
        static, rigl = common.median(samples["static"]["cpu"]), common.median(samples["rigl"]["cpu"])
        n_updates = (steps - 1) // interval
        if not updates:  # none in this many steps: time one update on its own
            _, updates = run(copy.deepcopy(template), mask, data, batch, 2, 1, True)
        cost = common.median(updates)
        step_time = static / steps
        share = cost / (interval * step_time + cost)
        ratio = f"{rigl / static:.3f}" if n_updates else "-"
        row = [model_name, batch, interval, steps, n_updates, f"{1e3 * step_time:.2f}", f"{1e3 * rigl / steps:.2f}",
               ratio, f"{1e3 * cost:.1f}", f"{100 * share:.2f}%"]
        rows.append(row)
        common.print_row(row)
        records.append({"model": model_name, "batch": batch, "interval": interval, "steps": steps,
                        "updates": n_updates, "static_s": samples["static"], "rigl_s": samples["rigl"],
                        "ratio": rigl / static if n_updates else None, "update_s": cost, "share": share})
    worst = max((r for r in records if r["interval"] == 100), key=lambda r: r["share"], default=None)
    verdict = (f"largest update share at interval 100: {100 * worst['share']:.2f}% ({worst['model']}); "
               "target <= 3%") if worst else ""
    common.finish(args, "dst_update", title, ["model", "batch", "interval", "steps", "updates", "static ms/step",
                                              "rigl ms/step", "ratio", "update ms", "update share"],
                  rows, verdict, {"repeats": args.repeats, "density": DENSITY, "results": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
